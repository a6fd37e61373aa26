"""wechatpy pointed at wechat-token-server: the README's lines, then real calls.

Usage: python wechatpy_check.py BASE APPID SECRET  (BASE like http://127.0.0.1:12123)
Prints one JSON object with what the SDK got.
"""
import json
import sys

from wechatpy import WeChatClient

BASE, APPID, SECRET = sys.argv[1], sys.argv[2], sys.argv[3]


# --- the lines a user changes (README "Point your SDK at us") ---
class Client(WeChatClient):
    API_BASE_URL = BASE + "/cgi-bin/"

    def fetch_access_token(self):  # wechatpy writes WeChat's token URL in here
        return self._fetch_access_token(
            url=self.API_BASE_URL + "token",
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
        )
# --- end ---


client = Client(APPID, SECRET)
out = {"access_token": client.access_token}
out["menu"] = client.menu.get()
out["ticket"] = client.jsapi.get_jsapi_ticket()
payload = bytes(range(256)) * 4096  # 1 MiB
upload = client.media.upload("image", ("pic.jpg", payload, "image/jpeg"))
out["media_id"] = upload["media_id"]
downloaded = client.media.download(upload["media_id"])
out["download_equal"] = downloaded.content == payload
print(json.dumps(out))
