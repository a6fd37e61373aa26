//! Open Platform (第三方平台): the component endpoints and `/sim/component/*`, by raw HTTP,
//! with a real receiver that opens every pushed event with `wxcrypt`.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Query;
use axum::routing::post;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use wechat_token_server::simulator::ComponentAccount;
use wechat_token_server::wxcrypt::{CryptError, Fields, MsgCrypt};

use super::*;

const C: &str = DEMO_COMPONENT_APPID;
/// How long a test waits for a push it expects.
const PUSH_WAIT: Duration = Duration::from_secs(5);

/// One push as the receiver saw it: its query string and what opening it gave.
struct Received {
    query: HashMap<String, String>,
    opened: Result<Fields, CryptError>,
}

impl Received {
    fn fields(&self) -> &Fields {
        self.opened
            .as_ref()
            .expect("the push opens with the component's key")
    }

    fn get(&self, name: &str) -> &str {
        self.fields().get(name).map_or("", String::as_str)
    }
}

/// A component's event URL: opens each push (checking msg_signature, decrypting,
/// checking the appid), records it, and answers `success` (400 if it did not open).
struct Receiver {
    url: String,
    pushes: Mutex<mpsc::UnboundedReceiver<Received>>,
    shutdown: CancellationToken,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Receiver {
    async fn start(crypt: MsgCrypt) -> Receiver {
        let (tx, rx) = mpsc::unbounded_channel();
        let handler = move |Query(query): Query<HashMap<String, String>>, body: Bytes| {
            let (tx, crypt) = (tx.clone(), crypt.clone());
            async move {
                let param = |k: &str| query.get(k).cloned().unwrap_or_default();
                let opened = crypt.open(
                    &param("timestamp"),
                    &param("nonce"),
                    &param("msg_signature"),
                    &body,
                );
                let ok = opened.is_ok();
                let _ = tx.send(Received { query, opened });
                if ok {
                    (StatusCode::OK, "success")
                } else {
                    (StatusCode::BAD_REQUEST, "refused")
                }
            }
        };
        let app = Router::new().route("/events", post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("its address");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Receiver {
            url: format!("http://{addr}/events?app=platform"),
            pushes: Mutex::new(rx),
            shutdown,
        }
    }

    async fn demo() -> Receiver {
        Self::start(
            ComponentAccount::demo()
                .crypt()
                .expect("the demo key is valid"),
        )
        .await
    }

    /// The next push, waiting at most [`PUSH_WAIT`].
    async fn next(&self) -> Received {
        let mut pushes = self.pushes.lock().await;
        tokio::time::timeout(PUSH_WAIT, pushes.recv())
            .await
            .expect("a push within the deadline")
            .expect("the receiver is running")
    }

    /// No push is waiting now.
    async fn none_waiting(&self) -> bool {
        self.pushes.lock().await.try_recv().is_err()
    }
}

/// The component endpoint `name` with a component_access_token.
fn with_token(name: &str, token: &str) -> String {
    format!("/cgi-bin/component/{name}?component_access_token={token}")
}

impl Sim {
    /// `/sim/component/*`, expecting 200.
    async fn admin(&self, route: &str, body: Value) -> Value {
        let (status, reply) = self
            .post(&format!("/sim/component/{route}"), &body.to_string())
            .await;
        assert_eq!(status, StatusCode::OK, "{route}: {reply}");
        reply
    }

    /// Pushes a ticket to the receiver; returns it and its CreateTime.
    async fn push(&self, to: &Receiver, extra: Value) -> (String, u64) {
        let mut body = json!({"component_appid": C, "url": to.url});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let reply = self.admin("push_ticket", body).await;
        assert_eq!(
            (reply["status"].as_u64(), reply["reply"].as_str()),
            (Some(200), Some("success")),
            "{reply}"
        );
        let got = to.next().await;
        assert_eq!(got.get("InfoType"), "component_verify_ticket");
        let ticket = reply["ticket"].as_str().expect("a ticket").to_owned();
        assert_eq!(got.get("ComponentVerifyTicket"), ticket);
        (ticket, reply["create_time"].as_u64().expect("create_time"))
    }

    async fn component_token_reply(&self, ticket: &str) -> Value {
        let body = json!({"component_appid": C, "component_appsecret": DEMO_COMPONENT_SECRET, "component_verify_ticket": ticket});
        self.wx_post("/cgi-bin/component/api_component_token", body)
            .await
    }

    async fn component_token(&self, ticket: &str) -> String {
        let reply = self.component_token_reply(ticket).await;
        assert_eq!(reply["expires_in"], LIFE, "{reply}");
        reply["component_access_token"]
            .as_str()
            .expect("a component token")
            .to_owned()
    }

    /// Authorises `authorizer`, exchanges the code: (authorizer token, refresh token).
    async fn authorize(&self, to: &Receiver, ctoken: &str, authorizer: &str) -> (String, String) {
        let reply = self
            .admin(
                "authorize",
                json!({"component_appid": C, "authorizer_appid": authorizer, "url": to.url}),
            )
            .await;
        let code = reply["authorization_code"]
            .as_str()
            .expect("a code")
            .to_owned();
        assert_eq!(to.next().await.get("AuthorizationCode"), code);
        let info = self.query_auth(ctoken, &code).await;
        let info = &info["authorization_info"];
        (
            info["authorizer_access_token"]
                .as_str()
                .expect("a token")
                .to_owned(),
            info["authorizer_refresh_token"]
                .as_str()
                .expect("a refresh token")
                .to_owned(),
        )
    }

    async fn query_auth(&self, ctoken: &str, code: &str) -> Value {
        let body = json!({"component_appid": C, "authorization_code": code});
        self.wx_post(&with_token("api_query_auth", ctoken), body)
            .await
    }

    async fn authorizer_token(&self, ctoken: &str, authorizer: &str, refresh: &str) -> Value {
        let body = json!({"component_appid": C, "authorizer_appid": authorizer, "authorizer_refresh_token": refresh});
        self.wx_post(&with_token("api_authorizer_token", ctoken), body)
            .await
    }

    async fn list(&self, ctoken: &str, offset: u64, count: u64) -> Value {
        let body = json!({"component_appid": C, "offset": offset, "count": count});
        self.wx_post(&with_token("api_get_authorizer_list", ctoken), body)
            .await
    }
}

#[tokio::test]
async fn the_whole_component_flow_works_over_http() {
    let (sim, to) = (spawn_default().await, Receiver::demo().await);
    let (ticket, create_time) = sim.push(&to, json!({})).await;
    let ctoken = sim.component_token(&ticket).await;

    let reply = sim
        .wx_post(
            &with_token("api_create_preauthcode", &ctoken),
            json!({"component_appid": C}),
        )
        .await;
    assert_eq!(reply["expires_in"], 1800, "{reply}");
    let pre_auth = reply["pre_auth_code"]
        .as_str()
        .expect("a pre_auth_code")
        .to_owned();

    let reply = sim
        .admin(
            "authorize",
            json!({"component_appid": C, "authorizer_appid": "wxmerchant1", "url": to.url}),
        )
        .await;
    assert_eq!(
        (reply["status"].as_u64(), reply["reply"].as_str()),
        (Some(200), Some("success"))
    );
    let code = reply["authorization_code"]
        .as_str()
        .expect("a code")
        .to_owned();
    let event = to.next().await;
    assert_eq!(
        event.query.get("encrypt_type").map(String::as_str),
        Some("aes")
    );
    assert_eq!(
        event.query.get("app").map(String::as_str),
        Some("platform"),
        "the URL's own query is kept"
    );
    assert_eq!(event.get("InfoType"), "authorized");
    assert_eq!(event.get("AppId"), C);
    assert_eq!(event.get("AuthorizerAppid"), "wxmerchant1");
    assert_eq!(event.get("AuthorizationCode"), code);
    assert_eq!(event.get("PreAuthCode"), pre_auth);
    let created: u64 = event.get("CreateTime").parse().expect("CreateTime");
    let expires: u64 = event
        .get("AuthorizationCodeExpiredTime")
        .parse()
        .expect("expiry");
    assert_eq!(expires, created + 3600);
    assert!(created >= create_time);

    let info = sim.query_auth(&ctoken, &code).await;
    let info = &info["authorization_info"];
    assert_eq!(info["authorizer_appid"], "wxmerchant1", "{info}");
    assert_eq!(info["expires_in"], LIFE);
    assert!(info["func_info"].is_array());
    let first = info["authorizer_access_token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let refresh = info["authorizer_refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_owned();
    assert_eq!(
        sim.query_auth(&ctoken, &code).await["errcode"],
        61009,
        "an authorization code is single-use"
    );

    let reply = sim.authorizer_token(&ctoken, "wxmerchant1", &refresh).await;
    assert_eq!(
        reply["authorizer_refresh_token"],
        refresh.as_str(),
        "no rotation by default"
    );
    let token = reply["authorizer_access_token"]
        .as_str()
        .expect("a token")
        .to_owned();
    assert_ne!(token, first);
    let jsapi = sim.ticket(&token, "jsapi").await;
    assert_eq!(
        sim.probe(&token).await,
        0,
        "getcallbackip accepts an authorizer token"
    );

    let verdict = sim.valid(&format!("access_token={token}")).await;
    assert_eq!(
        (verdict["valid"].as_bool(), verdict["kind"].as_str()),
        (Some(true), Some("authorizer_access_token")),
        "{verdict}"
    );
    assert_eq!(verdict["app"], "wxmerchant1");
    let verdict = sim.valid(&format!("access_token={ctoken}")).await;
    assert_eq!(
        (verdict["valid"].as_bool(), verdict["kind"].as_str()),
        (Some(true), Some("component_access_token")),
        "{verdict}"
    );
    assert_eq!(sim.valid(&format!("ticket={jsapi}")).await["valid"], true);
    assert_eq!(
        sim.probe(&ctoken).await,
        40014,
        "a component token is not an account's token"
    );

    let stats = sim.stats().await;
    for (path, n) in [
        ("/cgi-bin/component/api_component_token", 1),
        ("/cgi-bin/component/api_create_preauthcode", 1),
        ("/cgi-bin/component/api_query_auth", 2),
        ("/cgi-bin/component/api_authorizer_token", 1),
        ("/cgi-bin/component/api_get_authorizer_list", 0),
    ] {
        assert_eq!(stats["calls"][path], n, "{path}: {stats}");
    }
    assert_eq!(
        stats["apps"][C]["/cgi-bin/component/api_query_auth"], 2,
        "{stats}"
    );
    assert!(to.none_waiting().await);
}

#[tokio::test]
async fn a_rotated_refresh_token_is_refused_at_once_with_61023() {
    let sim = spawn(SimConfig {
        component_rotate_every: 2,
        ..SimConfig::default()
    })
    .await;
    let to = Receiver::demo().await;
    let (ticket, _) = sim.push(&to, json!({})).await;
    let ctoken = sim.component_token(&ticket).await;
    let (_, r0) = sim.authorize(&to, &ctoken, "wxm").await;
    let refresh = |reply: Value| {
        reply["authorizer_refresh_token"]
            .as_str()
            .expect("refresh")
            .to_owned()
    };
    assert_eq!(refresh(sim.authorizer_token(&ctoken, "wxm", &r0).await), r0);
    let r1 = refresh(sim.authorizer_token(&ctoken, "wxm", &r0).await);
    assert_ne!(r1, r0, "the second call rotates");
    assert_eq!(
        sim.authorizer_token(&ctoken, "wxm", &r0).await["errcode"],
        61023
    );
    assert_eq!(
        sim.handle.sim.authorizer_refresh_token(C, "wxm"),
        Some(r1.clone())
    );

    sim.admin(
        "rotate",
        json!({"component_appid": C, "authorizer_appid": "wxm"}),
    )
    .await;
    let r2 = refresh(sim.authorizer_token(&ctoken, "wxm", &r1).await);
    assert_ne!(r2, r1);
    assert_eq!(
        sim.authorizer_token(&ctoken, "wxm", &r1).await["errcode"],
        61023
    );
    assert_eq!(
        sim.authorizer_token(&ctoken, "wxm", "made-up").await["errcode"],
        61023
    );
    assert_eq!(
        sim.authorizer_token(&ctoken, "wx-never", &r2).await["errcode"],
        61003
    );
    let (status, body) = sim
        .post(
            "/sim/component/rotate",
            &json!({"component_appid": C, "authorizer_appid": "wx-never"}).to_string(),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_authorizer"))
    );
}

#[tokio::test]
async fn unauthorize_pushes_the_event_and_invalidates_the_authorizers_tokens() {
    let (sim, to) = (spawn_default().await, Receiver::demo().await);
    let (ticket, _) = sim.push(&to, json!({})).await;
    let ctoken = sim.component_token(&ticket).await;
    let (token, refresh) = sim.authorize(&to, &ctoken, "wxgone").await;
    let jsapi = sim.ticket(&token, "jsapi").await;
    let reply = sim
        .admin(
            "unauthorize",
            json!({"component_appid": C, "authorizer_appid": "wxgone", "url": to.url}),
        )
        .await;
    assert_eq!(reply["reply"], "success");
    let event = to.next().await;
    assert_eq!(
        (event.get("InfoType"), event.get("AuthorizerAppid")),
        ("unauthorized", "wxgone")
    );
    assert_eq!(
        sim.valid(&format!("access_token={token}")).await["valid"],
        false
    );
    assert_eq!(sim.valid(&format!("ticket={jsapi}")).await["valid"], false);
    assert_eq!(sim.probe(&token).await, 40001);
    assert_eq!(
        sim.authorizer_token(&ctoken, "wxgone", &refresh).await["errcode"],
        61003
    );
    assert_eq!(sim.list(&ctoken, 0, 10).await["total_count"], 0);
    let (status, _) = sim
        .post(
            "/sim/component/unauthorize",
            &json!({"component_appid": C, "authorizer_appid": "wxgone", "url": to.url}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "already gone");
}

#[tokio::test]
async fn only_the_two_newest_tickets_work_and_only_for_twelve_hours() {
    let (sim, to) = (spawn_default().await, Receiver::demo().await);
    let (t1, now) = sim.push(&to, json!({})).await;
    let (t2, _) = sim.push(&to, json!({"create_time": now + 1})).await;
    let (t3, _) = sim.push(&to, json!({"create_time": now + 2})).await;
    assert_eq!(
        sim.component_token_reply(&t1).await["errcode"],
        61006,
        "superseded twice"
    );
    sim.component_token(&t2).await;
    sim.component_token(&t3).await;
    assert_eq!(
        sim.component_token_reply("ticket@@@made-up").await["errcode"],
        61006
    );
    // A late delivery of an older ticket does not displace the newer ones.
    let (late, _) = sim
        .push(
            &to,
            json!({"create_time": now - 600, "ticket": "ticket@@@late"}),
        )
        .await;
    assert_eq!(late, "ticket@@@late");
    assert_eq!(sim.component_token_reply(&late).await["errcode"], 61006);
    sim.component_token(&t2).await;
    sim.advance(12 * 3600 + 2); // t3 was created 2 s after `now`
    assert_eq!(sim.component_token_reply(&t3).await["errcode"], 61005);

    // On a fresh simulator, a ticket pushed with a CreateTime 13 hours back is already
    // expired.
    let sim = spawn_default().await;
    let (old, _) = sim.push(&to, json!({"create_time": now - 13 * 3600})).await;
    assert_eq!(sim.component_token_reply(&old).await["errcode"], 61005);
}

#[tokio::test]
async fn component_tokens_follow_the_usual_token_rules() {
    let (sim, to) = (spawn_default().await, Receiver::demo().await);
    let (ticket, _) = sim.push(&to, json!({})).await;
    let path = "/cgi-bin/component/api_component_token";
    let errcode = |reply: Value| reply["errcode"].as_i64().unwrap_or(0);
    for (body, want) in [
        (
            json!({"component_appid": C, "component_appsecret": "wrong", "component_verify_ticket": ticket}),
            40125,
        ),
        (
            json!({"component_appid": "wx-nope", "component_appsecret": DEMO_COMPONENT_SECRET, "component_verify_ticket": ticket}),
            40013,
        ),
        (
            json!({"component_appsecret": DEMO_COMPONENT_SECRET, "component_verify_ticket": ticket}),
            41002,
        ),
        (
            json!({"component_appid": C, "component_verify_ticket": ticket}),
            41004,
        ),
        (
            json!({"component_appid": C, "component_appsecret": DEMO_COMPONENT_SECRET}),
            61006,
        ),
    ] {
        assert_eq!(
            errcode(sim.wx_post(path, body.clone()).await),
            want,
            "{body}"
        );
    }
    let (status, reply) = sim.post(path, "not json").await;
    assert_eq!(
        (status, reply["errcode"].as_i64()),
        (StatusCode::OK, Some(47001))
    );

    let old = sim.component_token(&ticket).await;
    let new = sim.component_token(&ticket).await;
    let pre_auth = |t: &str| with_token("api_create_preauthcode", t);
    let body = json!({"component_appid": C});
    assert_eq!(
        errcode(sim.wx_post(&pre_auth(&old), body.clone()).await),
        0,
        "in its grace"
    );
    sim.advance(GRACE);
    assert_eq!(
        errcode(sim.wx_post(&pre_auth(&old), body.clone()).await),
        40001
    );
    assert_eq!(
        errcode(sim.wx_post(&pre_auth("never"), body.clone()).await),
        40014
    );
    assert_eq!(
        errcode(
            sim.wx_post("/cgi-bin/component/api_create_preauthcode", body.clone())
                .await
        ),
        41001
    );
    assert_eq!(
        errcode(
            sim.wx_post(&pre_auth(&new), json!({"component_appid": "wx-other"}))
                .await
        ),
        40013
    );
    sim.advance(LIFE);
    assert_eq!(errcode(sim.wx_post(&pre_auth(&new), body).await), 42001);
    let expired_code = sim
        .admin(
            "authorize",
            json!({"component_appid": C, "authorizer_appid": "wxlate", "url": to.url}),
        )
        .await;
    to.next().await;
    let (ticket, _) = sim.push(&to, json!({})).await;
    let ctoken = sim.component_token(&ticket).await;
    sim.advance(3600);
    let code = expired_code["authorization_code"].as_str().expect("a code");
    assert_eq!(sim.query_auth(&ctoken, code).await["errcode"], 61010);
    assert_eq!(
        sim.query_auth(&ctoken, "queryauthcode@@@nope").await["errcode"],
        61009
    );
}

#[tokio::test]
async fn the_authorizer_list_pages_in_a_stable_order_and_refuses_more_than_500() {
    let (sim, to) = (spawn_default().await, Receiver::demo().await);
    let (ticket, _) = sim.push(&to, json!({})).await;
    let ctoken = sim.component_token(&ticket).await;
    let names = ["wxe", "wxa", "wxd", "wxb", "wxc"];
    for name in names {
        sim.authorize(&to, &ctoken, name).await;
    }
    let mut seen = Vec::new();
    for offset in [0, 2, 4] {
        let page = sim.list(&ctoken, offset, 2).await;
        assert_eq!(page["total_count"], 5, "{page}");
        for item in page["list"].as_array().expect("a list") {
            let appid = item["authorizer_appid"].as_str().expect("an appid");
            assert_eq!(
                item["refresh_token"].as_str(),
                sim.handle.sim.authorizer_refresh_token(C, appid).as_deref()
            );
            assert!(
                item["auth_time"]
                    .as_u64()
                    .is_some_and(|t| t > 1_600_000_000)
            );
            seen.push(appid.to_owned());
        }
    }
    let mut sorted: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    sorted.sort();
    assert_eq!(seen, sorted);
    assert_eq!(sim.list(&ctoken, 5, 500).await["list"], json!([]));
    assert_eq!(sim.list(&ctoken, 0, 501).await["errcode"], 40097);
    assert_eq!(sim.list(&ctoken, 0, 0).await["errcode"], 40097);
}

#[tokio::test]
async fn faults_apply_to_component_endpoints() {
    let (sim, to) = (spawn_default().await, Receiver::demo().await);
    let (ticket, _) = sim.push(&to, json!({})).await;
    let path = "/cgi-bin/component/api_component_token";
    sim.fault(json!({"endpoint": path, "errcode": -1, "count": 1}))
        .await;
    sim.fault(json!({"endpoint": path, "http_status": 502}))
        .await;
    assert_eq!(sim.stats().await["faults_pending"][path], 2);
    assert_eq!(sim.component_token_reply(&ticket).await["errcode"], -1);
    let resp = sim
        .http
        .post(sim.url(path))
        .body(json!({"component_appid": C, "component_appsecret": DEMO_COMPONENT_SECRET, "component_verify_ticket": ticket}).to_string())
        .send()
        .await
        .expect("a response");
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    sim.component_token(&ticket).await;
    assert_eq!(
        sim.stats().await["issued"][path],
        1,
        "faulted calls issue nothing"
    );
}

#[tokio::test]
async fn start_push_ticket_pushes_to_the_remembered_url() {
    let (sim, to) = (spawn_default().await, Receiver::demo().await);
    let start = "/cgi-bin/component/api_start_push_ticket";
    let body = json!({"component_appid": C, "component_secret": DEMO_COMPONENT_SECRET});
    assert_eq!(
        sim.wx_post(start, body.clone()).await["errcode"],
        0,
        "no URL known yet: nothing to push"
    );
    sim.admin("url", json!({"component_appid": C, "url": to.url}))
        .await;
    let wrong = json!({"component_appid": C, "component_secret": "wrong"});
    assert_eq!(sim.wx_post(start, wrong).await["errcode"], 40125);
    let reply = sim.wx_post(start, body).await;
    assert_eq!(
        (reply["errcode"].as_i64(), reply["errmsg"].as_str()),
        (Some(0), Some("ok"))
    );
    let event = to.next().await;
    assert_eq!(event.get("InfoType"), "component_verify_ticket");
    sim.component_token(event.get("ComponentVerifyTicket"))
        .await;
    assert!(to.none_waiting().await, "one push per call");
}

#[tokio::test]
async fn push_every_pushes_fresh_tickets_to_the_remembered_url() {
    let sim = spawn(SimConfig {
        component_push_every: Some(Duration::from_millis(50)),
        ..SimConfig::default()
    })
    .await;
    let to = Receiver::demo().await;
    sim.handle
        .sim
        .set_component_url(C, &to.url)
        .expect("a known component");
    let first = to.next().await.get("ComponentVerifyTicket").to_owned();
    let second = to.next().await.get("ComponentVerifyTicket").to_owned();
    assert_ne!(first, second);
    sim.component_token(&second).await;
}

#[tokio::test]
async fn a_listed_component_uses_its_own_key_and_the_demo_is_gone() {
    let key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    let account = ComponentAccount::new("wxmine", "mysecret", "mytoken", key);
    let sim = spawn(SimConfig {
        components: vec![account.clone()],
        ..SimConfig::default()
    })
    .await;
    let to = Receiver::start(account.crypt().expect("valid")).await;
    let pushed = sim
        .handle
        .sim
        .push_ticket("wxmine", &to.url)
        .await
        .expect("pushed");
    assert_eq!(pushed.reply, "success");
    let got = to.next().await;
    assert_eq!(got.get("AppId"), "wxmine");
    let body = json!({"component_appid": "wxmine", "component_appsecret": "mysecret", "component_verify_ticket": got.get("ComponentVerifyTicket")});
    assert!(
        sim.wx_post("/cgi-bin/component/api_component_token", body)
            .await["component_access_token"]
            .is_string()
    );
    // The demo receiver can't open the listed component's pushes.
    let demo = Receiver::demo().await;
    let pushed = sim
        .handle
        .sim
        .push_ticket("wxmine", &demo.url)
        .await
        .expect("delivered");
    assert_eq!(pushed.status, 400);
    assert!(matches!(
        demo.next().await.opened,
        Err(CryptError::BadSignature)
    ));
    let (status, body) = sim
        .post(
            "/sim/component/push_ticket",
            &json!({"component_appid": C, "url": to.url}).to_string(),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_component"))
    );
}

#[tokio::test]
async fn admin_mistakes_get_clear_errors() {
    let sim = spawn_default().await;
    let cases = [
        (
            json!({"component_appid": C, "url": "ftp://x"}),
            StatusCode::BAD_REQUEST,
            "bad_url",
        ),
        (
            json!({"component_appid": C}),
            StatusCode::BAD_REQUEST,
            "bad_url",
        ),
        (
            json!({"component_appid": C, "url": "x", "bogus": 1}),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ];
    for (body, status, code) in cases {
        let (got, reply) = sim
            .post("/sim/component/push_ticket", &body.to_string())
            .await;
        assert_eq!(
            (got, reply["error"].as_str()),
            (status, Some(code)),
            "{body}: {reply}"
        );
    }
    // Nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let body = json!({"component_appid": C, "url": format!("http://127.0.0.1:{port}/events")});
    let (status, reply) = sim
        .post("/sim/component/push_ticket", &body.to_string())
        .await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("push_failed")),
        "{reply}"
    );
}
