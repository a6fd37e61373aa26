// wechat-api (npm) pointed at wechat-token-server: the README's line, then real calls.
// Usage: node wechat_api_check.js BASE APPID SECRET; prints one JSON object.
const path = require('path');
const API = require(path.join(process.env.SDK_NODE_MODULES, 'wechat-api'));
const [base, appid, secret] = process.argv.slice(2);

const api = new API(appid, secret);
api.endpoint = base; // --- the line a user changes (README "Point your SDK at us") ---

const call = (fn, ...args) => new Promise((resolve, reject) =>
  fn.call(api, ...args, (err, result) => (err ? reject(err) : resolve(result))));

(async () => {
  const out = {};
  const token = await call(api.getAccessToken);
  out.access_token = token.accessToken;
  out.menu = await call(api.getMenu);
  out.ticket = (await call(api.getTicket)).ticket;
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
