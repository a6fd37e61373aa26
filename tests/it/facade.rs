//! The WeChat-compatible facade and the API gateway, with the real binary and the
//! simulator as WeChat: WeChat's token and ticket endpoints answered from our tokens,
//! calls forwarded with the current token, the retry after a rejected token, media
//! streamed, untied requests refused, client rates.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::apps::{self, four_apps};
use crate::helpers::{TestSim, wait_until};
use crate::process::Server;

/// A client key allowed the shop app through the gateway, at 5 requests/s.
const SHOP_KEY: &str = "shop-gateway-key-0123456789";

struct Setup {
    sim: TestSim,
    server: Server,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start() -> Setup {
    let sim = apps::sim().await;
    let text = apps::config(&four_apps(sim.addr))
        + &format!(
            r#"
[clients.shop-backend]
key = "{SHOP_KEY}"
apps = ["shop"]
tokens = ["access_token"]
rate = 5
"#
        );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let server = Server::start(&path).await;
    let http = reqwest::Client::new();
    let setup = Setup {
        sim,
        server,
        http,
        _dir: dir,
    };
    // Every token fetched (the facade answers "not fetched yet" before).
    wait_until(
        "every token is fetched",
        Duration::from_secs(10),
        || async {
            setup.sim.calls("/cgi-bin/ticket/get").await >= 1
                && setup.sim.calls("/cgi-bin/get_jsapi_ticket").await >= 1
                && setup.sim.calls("/cgi-bin/ticket/getticket").await >= 3
        },
    )
    .await;
    setup
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base)
    }

    async fn get(&self, path: &str) -> Value {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.unwrap()
    }

    async fn token_calls(&self) -> u64 {
        let mut total = 0;
        for path in [
            "/cgi-bin/token",
            "/cgi-bin/stable_token",
            "/cgi-bin/gettoken",
        ] {
            total += self.sim.calls(path).await;
        }
        total
    }
}

#[tokio::test]
async fn wechats_token_and_ticket_endpoints_answer_our_tokens_with_wechats_shapes() {
    let s = start().await;
    let before = s.token_calls().await;

    // Official Account: /cgi-bin/token with the app's own secret, then its tickets.
    let reply = s
        .get("/cgi-bin/token?grant_type=client_credential&appid=wx_shop&secret=shop_secret")
        .await;
    let token = reply["access_token"].as_str().unwrap().to_owned();
    assert!(reply["expires_in"].as_u64().unwrap() > 7000, "{reply}");
    assert!(s.sim.token_valid(&token).await);
    // The same token with a client key allowed for the app.
    let reply = s
        .get(&format!(
            "/cgi-bin/token?grant_type=client_credential&appid=wx_shop&secret={SHOP_KEY}"
        ))
        .await;
    assert_eq!(reply["access_token"], token.as_str());
    for kind in ["jsapi", "wx_card"] {
        let reply = s
            .get(&format!(
                "/cgi-bin/ticket/getticket?access_token={token}&type={kind}"
            ))
            .await;
        assert_eq!(reply["errcode"], 0, "{reply}");
        assert!(s.sim.ticket_valid(reply["ticket"].as_str().unwrap()).await);
    }

    // Mini Program on stable_token: normal mode and force_refresh.
    let stable = |force: bool| json!({"grant_type": "client_credential", "appid": "wx_blog", "secret": "blog_secret", "force_refresh": force});
    let reply: Value = s
        .http
        .post(s.url("/cgi-bin/stable_token"))
        .json(&stable(false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let blog = reply["access_token"].as_str().unwrap().to_owned();
    assert!(s.sim.token_valid(&blog).await);

    // WeCom: gettoken, the corp ticket and the agent ticket.
    let reply = s
        .get("/cgi-bin/gettoken?corpid=ww_office&corpsecret=office_secret")
        .await;
    assert_eq!(reply["errcode"], 0);
    let office = reply["access_token"].as_str().unwrap().to_owned();
    assert!(s.sim.token_valid(&office).await);
    let reply = s
        .get(&format!("/cgi-bin/get_jsapi_ticket?access_token={office}"))
        .await;
    assert!(
        s.sim.ticket_valid(reply["ticket"].as_str().unwrap()).await,
        "{reply}"
    );
    let reply = s
        .get(&format!(
            "/cgi-bin/ticket/get?access_token={office}&type=agent_config"
        ))
        .await;
    assert!(
        s.sim.ticket_valid(reply["ticket"].as_str().unwrap()).await,
        "{reply}"
    );
    assert_eq!(
        s.token_calls().await,
        before,
        "the facade never calls WeChat's token APIs"
    );

    // WeChat's errors.
    for (path, code) in [
        (
            "/cgi-bin/token?grant_type=client_credential&appid=wx_nope&secret=x",
            40013,
        ),
        (
            "/cgi-bin/token?grant_type=client_credential&appid=wx_shop&secret=wrong",
            40125,
        ),
        (
            "/cgi-bin/token?grant_type=client_credential&secret=x",
            41002,
        ),
        (
            "/cgi-bin/token?grant_type=client_credential&appid=wx_shop",
            41004,
        ),
        ("/cgi-bin/gettoken?corpid=ww_office&corpsecret=wrong", 40001),
        ("/cgi-bin/gettoken?corpid=ww_nope&corpsecret=x", 40013),
        (
            "/cgi-bin/ticket/getticket?access_token=not-ours&type=jsapi",
            40001,
        ),
    ] {
        let reply = s.get(path).await;
        assert_eq!(reply["errcode"], code, "{path}: {reply}");
        assert!(reply.get("access_token").is_none() && reply.get("ticket").is_none());
    }
    // A token of another app does not get this app's ticket... and a WeCom token is
    // not an Official Account's.
    let reply = s
        .get(&format!(
            "/cgi-bin/ticket/getticket?access_token={office}&type=jsapi"
        ))
        .await;
    assert_ne!(reply["errcode"], 0, "{reply}");

    // force_refresh: a report about the current token; one refresh, a new valid token.
    let reply: Value = s
        .http
        .post(s.url("/cgi-bin/stable_token"))
        .json(&stable(true))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let newer = reply["access_token"].as_str().unwrap();
    assert!(s.sim.token_valid(newer).await, "{reply}");
}

/// The `/cgi-bin/menu/get` call through the gateway with `token`.
async fn menu(s: &Setup, token: &str) -> Value {
    s.get(&format!("/cgi-bin/menu/get?access_token={token}"))
        .await
}

#[tokio::test]
async fn calls_are_forwarded_with_the_current_token_and_a_rejected_token_is_retried_once() {
    let s = start().await;
    let token = s
        .get("/cgi-bin/token?grant_type=client_credential&appid=wx_shop&secret=shop_secret")
        .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = menu(&s, &token).await;
    assert!(reply["menu"]["button"].is_array(), "{reply}");
    assert_eq!(s.sim.calls("/cgi-bin/menu/get").await, 1);

    // A POST with a JSON body, and a Mini Program call with a binary reply.
    let reply: Value = s
        .http
        .post(s.url(&format!(
            "/cgi-bin/message/custom/send?access_token={token}"
        )))
        .json(&json!({"touser": "OPENID", "msgtype": "text", "text": {"content": "hi"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["errcode"], 0, "{reply}");
    let image = s
        .http
        .post(s.url(&format!("/wxa/getwxacodeunlimit?access_token={token}")))
        .json(&json!({"scene": "a=1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(image.headers()["content-type"], "image/png");
    assert!(image.bytes().await.unwrap().ends_with(b"a=1"));

    // 20 calls meet an injected 40001: one refresh, every caller gets the retry's reply.
    let before = s.sim.calls("/cgi-bin/token").await;
    s.sim
        .fault("/cgi-bin/menu/get", 20, json!({"errcode": 40001}))
        .await;
    // The shared refresh answers after 1.5 s, so that every first attempt meets one of
    // the 20 faults before any retry is made (a busy machine spreads the 20 out).
    s.sim
        .fault("/cgi-bin/token", 1, json!({"delay_ms": 1500}))
        .await;
    let replies = futures_util::future::join_all((0..20).map(|_| menu(&s, &token))).await;
    for reply in &replies {
        assert!(
            reply["menu"]["button"].is_array(),
            "the caller saw WeChat's 40001: {reply}"
        );
    }
    assert_eq!(
        s.sim.calls("/cgi-bin/token").await - before,
        1,
        "one upstream token call for the burst"
    );
    // The old token stays usable for the grace: it is the one the business server holds.
    let reply = menu(&s, &token).await;
    assert!(reply["menu"]["button"].is_array(), "{reply}");
    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"wts_gateway_requests_total{app="shop",outcome="retried"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn untied_requests_are_refused_and_not_forwarded_and_client_rates_hold() {
    let s = start().await;
    // A token WeChat knows, but this server did not hand out.
    let direct: Value =
        s.http
            .get(s.sim.url(
                "/cgi-bin/token?grant_type=client_credential&appid=wx_shop&secret=shop_secret",
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let direct = direct["access_token"].as_str().unwrap();
    for request in [
        s.http.get(s.url("/cgi-bin/menu/get")),
        s.http.get(s.url("/cgi-bin/menu/get?access_token=made-up")),
        s.http
            .get(s.url(&format!("/cgi-bin/menu/get?access_token={direct}"))),
        s.http
            .get(s.url("/cgi-bin/menu/get"))
            .header("X-WTS-App", "shop"),
        s.http
            .get(s.url("/cgi-bin/menu/get"))
            .header("X-WTS-App", "shop")
            .bearer_auth("wrong-key-0123456789"),
        s.http
            .get(s.url("/cgi-bin/menu/get"))
            .header("X-WTS-App", "office")
            .bearer_auth(SHOP_KEY),
    ] {
        let reply: Value = request.send().await.unwrap().json().await.unwrap();
        assert_eq!(reply["errcode"], 40001, "{reply}");
    }
    assert_eq!(
        s.sim.calls("/cgi-bin/menu/get").await,
        0,
        "nothing was forwarded"
    );

    // X-WTS-App with the client key: forwarded; rate 5/s: a burst of 20 gets 429s.
    let mut ok = 0;
    let mut limited = 0;
    for _ in 0..20 {
        let response = s
            .http
            .get(s.url("/cgi-bin/menu/get"))
            .header("X-WTS-App", "shop")
            .bearer_auth(SHOP_KEY)
            .send()
            .await
            .unwrap();
        match response.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(response.headers().contains_key("retry-after"));
                limited += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!((5..=7).contains(&ok), "{ok} passed");
    assert_eq!(ok + limited, 20);
    assert_eq!(s.sim.calls("/cgi-bin/menu/get").await, ok);
}

/// Peak resident memory of process `pid`, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn media_upload_and_download_stream_without_memory_growing_with_the_file() {
    let s = start().await;
    let token = s
        .get("/cgi-bin/token?grant_type=client_credential&appid=wx_shop&secret=shop_secret")
        .await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let size = 12 * 1024 * 1024;
    let file: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let before = vm_hwm_kib(s.server.pid());
    let boundary = "wtsBoundary7MA4YWxkTrZu0gW";
    let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"media\"; filename=\"big.mp4\"\r\nContent-Type: video/mp4\r\n\r\n").into_bytes();
    body.extend_from_slice(&file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let reply: Value = s
        .http
        .post(s.url(&format!(
            "/cgi-bin/media/upload?access_token={token}&type=video"
        )))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let media_id = reply["media_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{reply}"))
        .to_owned();
    let response = s
        .http
        .get(s.url(&format!(
            "/cgi-bin/media/get?access_token={token}&media_id={media_id}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "video/mp4");
    let got = response.bytes().await.unwrap();
    assert!(
        got[..] == file[..],
        "the downloaded file differs ({} bytes)",
        got.len()
    );
    let grown = vm_hwm_kib(s.server.pid()).saturating_sub(before);
    assert!(
        grown * 1024 < (size as u64) / 3,
        "peak RSS grew by {grown} KiB for a {size}-byte file, both ways"
    );
}
