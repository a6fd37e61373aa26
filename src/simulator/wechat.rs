//! WeChat's rules, endpoint by endpoint, as pure functions of the state and the request.
//!
//! No HTTP here: `routes.rs` turns a request into a [`Request`] and the result into
//! WeChat's reply. Order of checks per endpoint: parameters, credentials, quota, then
//! the work; only a call that does the work spends quota, as WeChat counts only successes.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::accounts::CorpRefusal;
use super::endpoint::Endpoint;
use super::state::{Kind, Lookup, Owner, Replace, State};

/// Forced stable_token refreshes allowed per app and WeChat day.
pub const FORCED_PER_DAY: u32 = 20;
/// Minimum spacing of two forced stable_token refreshes of one app.
pub const FORCED_SPACING: Duration = Duration::from_secs(30);

/// Addresses `/cgi-bin/getcallbackip` answers with: documentation ranges, not WeChat's.
const CALLBACK_IPS: [&str; 3] = ["192.0.2.10", "198.51.100.0/24", "203.0.113.7"];

/// A WeChat error reply: `{"errcode": code, "errmsg": msg}` with HTTP 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WxError {
    /// WeChat's error code.
    pub code: i64,
    /// WeChat's wording.
    pub msg: &'static str,
}

const fn err(code: i64, msg: &'static str) -> WxError {
    WxError { code, msg }
}

pub(super) const NOT_LATEST: WxError = err(
    40001,
    "invalid credential, access_token is invalid or not latest",
);
const BAD_CORPSECRET: WxError = err(40001, "invalid credential, corpsecret is wrong");
const BAD_GRANT_TYPE: WxError = err(40002, "invalid grant_type");
pub(super) const BAD_APPID: WxError = err(40013, "invalid appid");
const BAD_CORPID: WxError = err(40013, "invalid corpid");
pub(super) const BAD_TOKEN: WxError = err(40014, "invalid access_token");
pub(super) const BAD_ARGS: WxError = err(40097, "invalid args");
pub(super) const BAD_SECRET: WxError = err(40125, "invalid appsecret");
pub(super) const NO_TOKEN: WxError = err(41001, "access_token missing");
pub(super) const NO_APPID: WxError = err(41002, "appid missing");
const NO_CORPID: WxError = err(41002, "corpid missing");
pub(super) const NO_SECRET: WxError = err(41004, "appsecret missing");
const NO_CORPSECRET: WxError = err(41004, "corpsecret missing");
pub(super) const EXPIRED: WxError = err(42001, "access_token expired");
const QUOTA: WxError = err(45009, "reach max api daily quota limit");
pub(super) const BAD_DATA: WxError = err(47001, "data format error");
const BAD_CGI_PATH: WxError = err(76021, "cgi_path not found, please check");

/// The tokens of an Official Account / Mini Program: its own, and those a component got
/// for it as an authorizer.
const OA_TOKENS: [Kind; 3] = [Kind::Token, Kind::StableToken, Kind::AuthorizerToken];

/// A call's parameters: the query string, and the JSON body of POST endpoints.
#[derive(Debug, Default)]
pub struct Request {
    query: HashMap<String, String>,
    /// `None` when the body is not a JSON object (empty, malformed, an array...).
    pub(super) json: Option<Map<String, Value>>,
}

impl Request {
    /// Parses a raw query string (first occurrence of a name wins) and a body.
    pub fn new(raw_query: Option<&str>, body: &[u8]) -> Self {
        let mut query = HashMap::new();
        for (k, v) in form_urlencoded::parse(raw_query.unwrap_or("").as_bytes()) {
            query
                .entry(k.into_owned())
                .or_insert_with(|| v.into_owned());
        }
        let json = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| match v {
                Value::Object(map) => Some(map),
                _ => None,
            });
        Self { query, json }
    }

    /// A query parameter; empty counts as missing, as at WeChat.
    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.query
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A string field of the JSON body; a field of another type is a format error.
    pub(super) fn field(&self, name: &str) -> Result<Option<&str>, WxError> {
        match self.json.as_ref().ok_or(BAD_DATA)?.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str()).filter(|s| !s.is_empty())),
            Some(_) => Err(BAD_DATA),
        }
    }
}

/// The success reply of a token endpoint.
fn token_reply(token: String, life: Duration) -> Value {
    json!({"access_token": token, "expires_in": life.as_secs()})
}

/// The success reply of a ticket endpoint (these carry errcode 0).
fn ticket_reply(ticket: String, life: Duration) -> Value {
    json!({"errcode": 0, "errmsg": "ok", "ticket": ticket, "expires_in": life.as_secs()})
}

impl State {
    /// The app a call is about, for per-app stats: a known appid/corpid it names, or the
    /// owner of a token the simulator issued.
    pub fn app_of(&self, endpoint: Endpoint, req: &Request) -> Option<String> {
        let named = match endpoint {
            Endpoint::Token => req.param("appid"),
            Endpoint::StableToken => req.field("appid").ok().flatten(),
            Endpoint::CorpToken => req.param("corpid"),
            e if e.is_component() => return self.component_of(req),
            _ => {
                let token = req.param("access_token")?;
                return match self.lookup(token, true) {
                    Lookup::Valid(c, _) | Lookup::Expired(c) | Lookup::Replaced(c) => {
                        Some(c.owner.id.clone())
                    }
                    Lookup::Unknown => None,
                };
            }
        }?;
        self.accounts.knows(named).then(|| named.to_owned())
    }

    /// Serves one (unfaulted) call of `endpoint`.
    pub fn serve(&mut self, endpoint: Endpoint, req: &Request) -> Result<Value, WxError> {
        if endpoint.is_component() {
            return self.serve_component(endpoint, req);
        }
        match endpoint {
            Endpoint::Token => self.token(req),
            Endpoint::StableToken => self.stable_token(req),
            Endpoint::GetTicket => self.getticket(req),
            // WeCom serves the same path for its own tokens.
            Endpoint::CallbackIp => {
                let owner = self.valid_token(
                    req,
                    &[
                        Kind::Token,
                        Kind::StableToken,
                        Kind::CorpToken,
                        Kind::AuthorizerToken,
                    ],
                )?;
                self.spend(&owner, endpoint)?;
                Ok(json!({"ip_list": CALLBACK_IPS}))
            }
            Endpoint::QuotaGet => self.quota_get(req),
            // Served with their bodies by `apis`; reached here only by mistake.
            Endpoint::MenuGet
            | Endpoint::CustomSend
            | Endpoint::MediaUpload
            | Endpoint::MediaGet
            | Endpoint::WxaCode => Err(BAD_ARGS),
            // Served by `serve_component` above.
            Endpoint::StartPushTicket
            | Endpoint::ComponentToken
            | Endpoint::PreAuthCode
            | Endpoint::QueryAuth
            | Endpoint::AuthorizerToken
            | Endpoint::AuthorizerList => Err(BAD_ARGS),
            Endpoint::CorpToken => self.corp_token(req),
            Endpoint::CorpTicket => {
                let owner = self.valid_token(req, &[Kind::CorpToken])?;
                self.spend(&owner, endpoint)?;
                // One corp ticket per corp, whichever of its secrets fetched it.
                let corp = Owner { secret: 0, ..owner };
                let (ticket, life) =
                    self.issue(endpoint, corp, Kind::CorpTicket, Replace::AfterGrace);
                Ok(ticket_reply(ticket, life))
            }
            Endpoint::AgentTicket => {
                let owner = self.valid_token(req, &[Kind::CorpToken])?;
                if req.param("type") != Some("agent_config") {
                    return Err(BAD_ARGS);
                }
                self.spend(&owner, endpoint)?;
                let (ticket, life) =
                    self.issue(endpoint, owner, Kind::AgentTicket, Replace::AfterGrace);
                Ok(ticket_reply(ticket, life))
            }
        }
    }

    /// Checks grant_type, appid and secret as `/cgi-bin/token` and stable_token do.
    fn check_app(
        &self,
        grant_type: Option<&str>,
        appid: Option<&str>,
        secret: Option<&str>,
    ) -> Result<Owner, WxError> {
        if grant_type != Some("client_credential") {
            return Err(BAD_GRANT_TYPE);
        }
        let appid = appid.ok_or(NO_APPID)?;
        let secret = secret.ok_or(NO_SECRET)?;
        match self.accounts.app_secret_matches(appid, secret) {
            None => return Err(BAD_APPID),
            Some(false) => return Err(BAD_SECRET),
            Some(true) => {}
        }
        Ok(Owner {
            id: appid.to_owned(),
            secret: 0,
        })
    }

    /// The owner of the request's `access_token`, if it is valid and of one of `kinds`.
    pub(super) fn valid_token(&self, req: &Request, kinds: &[Kind]) -> Result<Owner, WxError> {
        let token = req.param("access_token").ok_or(NO_TOKEN)?;
        match self.lookup(token, true) {
            Lookup::Valid(c, _) if kinds.contains(&c.kind) => Ok(c.owner.clone()),
            Lookup::Expired(c) if kinds.contains(&c.kind) => Err(EXPIRED),
            Lookup::Replaced(c) if kinds.contains(&c.kind) => Err(NOT_LATEST),
            // Never issued, or a token of the other platform: WeChat has never seen it.
            _ => Err(BAD_TOKEN),
        }
    }

    /// Spends one call of today's quota, or refuses with 45009 when none is left.
    pub(super) fn spend(&mut self, owner: &Owner, endpoint: Endpoint) -> Result<(), WxError> {
        if !self.quota_left(&owner.id, endpoint) {
            return Err(QUOTA);
        }
        self.spend_quota(&owner.id, endpoint);
        Ok(())
    }

    fn token(&mut self, req: &Request) -> Result<Value, WxError> {
        let owner = self.check_app(
            req.param("grant_type"),
            req.param("appid"),
            req.param("secret"),
        )?;
        self.spend(&owner, Endpoint::Token)?;
        let (token, life) = self.issue(Endpoint::Token, owner, Kind::Token, Replace::AfterGrace);
        Ok(token_reply(token, life))
    }

    /// Normal mode returns the current token until its last `grace` (WeChat: 5 minutes),
    /// then a new one, leaving the old to expire on its own. Forced mode replaces it at
    /// once, at most [`FORCED_PER_DAY`] times a day and [`FORCED_SPACING`] apart; beyond
    /// that it behaves as normal mode, as WeChat does.
    fn stable_token(&mut self, req: &Request) -> Result<Value, WxError> {
        let force = match req.json.as_ref().ok_or(BAD_DATA)?.get("force_refresh") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(BAD_DATA),
        };
        let owner = self.check_app(
            req.field("grant_type")?,
            req.field("appid")?,
            req.field("secret")?,
        )?;
        self.spend(&owner, Endpoint::StableToken)?;
        let (now, today) = (self.clock.now(), self.clock.day());
        let forced = self.forced.entry(owner.id.clone()).or_default();
        if forced.day != today {
            *forced = Default::default();
            forced.day = today;
        }
        let spaced = forced.last.is_none_or(|last| now - last >= FORCED_SPACING);
        if force && forced.count < FORCED_PER_DAY && spaced {
            forced.count += 1;
            forced.last = Some(now);
            let (token, life) = self.issue(
                Endpoint::StableToken,
                owner,
                Kind::StableToken,
                Replace::Now,
            );
            return Ok(token_reply(token, life));
        }
        match self.current(&owner, Kind::StableToken) {
            Some((token, left)) if left > self.config.grace => Ok(token_reply(token, left)),
            _ => {
                let (token, life) = self.issue(
                    Endpoint::StableToken,
                    owner,
                    Kind::StableToken,
                    Replace::Never,
                );
                Ok(token_reply(token, life))
            }
        }
    }

    fn getticket(&mut self, req: &Request) -> Result<Value, WxError> {
        let owner = self.valid_token(req, &OA_TOKENS)?;
        let kind = match req.param("type") {
            Some("jsapi") => Kind::JsapiTicket,
            Some("wx_card") => Kind::WxCardTicket,
            _ => return Err(BAD_ARGS),
        };
        self.spend(&owner, Endpoint::GetTicket)?;
        let (ticket, life) = self.issue(Endpoint::GetTicket, owner, kind, Replace::AfterGrace);
        Ok(ticket_reply(ticket, life))
    }

    fn corp_token(&mut self, req: &Request) -> Result<Value, WxError> {
        let corpid = req.param("corpid").ok_or(NO_CORPID)?;
        let secret = req.param("corpsecret").ok_or(NO_CORPSECRET)?;
        let index =
            self.accounts
                .corp_secret_index(corpid, secret)
                .map_err(|refusal| match refusal {
                    CorpRefusal::UnknownCorp => BAD_CORPID,
                    CorpRefusal::WrongSecret => BAD_CORPSECRET,
                })?;
        let owner = Owner {
            id: corpid.to_owned(),
            secret: index,
        };
        self.spend(&owner, Endpoint::CorpToken)?;
        let (token, life) = self.issue(
            Endpoint::CorpToken,
            owner,
            Kind::CorpToken,
            Replace::AfterGrace,
        );
        let mut reply = token_reply(token, life);
        reply["errcode"] = json!(0);
        reply["errmsg"] = json!("ok");
        Ok(reply)
    }

    fn quota_get(&mut self, req: &Request) -> Result<Value, WxError> {
        let owner = self.valid_token(req, &OA_TOKENS)?;
        let path = req.field("cgi_path")?.ok_or(BAD_ARGS)?;
        let endpoint = Endpoint::from_path(path).ok_or(BAD_CGI_PATH)?;
        self.spend(&owner, Endpoint::QuotaGet)?;
        let limit = self.config.daily_quota;
        let used = self.quota_used(&owner.id, endpoint);
        Ok(json!({
            "errcode": 0,
            "errmsg": "ok",
            "quota": {"daily_limit": limit, "used": used, "remain": limit.saturating_sub(used)},
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_keep_the_first_value_and_treat_empty_as_missing() {
        let req = Request::new(Some("appid=a&appid=b&secret=&x=%E4%B8%AD"), b"");
        assert_eq!(req.param("appid"), Some("a"));
        assert_eq!(req.param("secret"), None);
        assert_eq!(req.param("x"), Some("中"));
    }

    #[test]
    fn a_body_that_is_not_a_json_object_is_a_format_error() {
        for body in [&b""[..], b"[1]", b"{\"appid\": 5}", b"{bad"] {
            let req = Request::new(None, body);
            assert_eq!(req.field("appid"), Err(BAD_DATA));
        }
    }
}
