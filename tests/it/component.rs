//! The Open Platform (第三方平台) end to end: the real binary, the simulator as WeChat
//! and its pushes (verify tickets, authorisations, revocations), on the embedded store
//! across SIGKILL and on a cluster of three on Redis.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha1::Digest as _;
use wechat_token_server::simulator::{
    DEMO_COMPONENT_AES_KEY, DEMO_COMPONENT_APPID, DEMO_COMPONENT_SECRET, DEMO_COMPONENT_TOKEN,
    SimConfig,
};

use crate::helpers::{MEMORY_STORE, SECRET, TestApp, TestSim, config_with, wait_until};
use crate::process::Server;
use crate::redis_server::RedisServer;

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const PLATFORM: &str = "platform";
const WAIT: Duration = Duration::from_secs(15);

/// The `[apps.platform]` table of the simulator's demo component.
fn platform_table(sim: &TestSim) -> String {
    format!(
        r#"
[apps.{PLATFORM}]
platform = "component"
component_appid = "{DEMO_COMPONENT_APPID}"
component_appsecret = "{DEMO_COMPONENT_SECRET}"
token = "{DEMO_COMPONENT_TOKEN}"
encoding_aes_key = "{DEMO_COMPONENT_AES_KEY}"
authorizer_tickets = ["jsapi"]
api_base = ["http://{}"]
"#,
        sim.addr
    )
}

fn write_config(dir: &Path, store: &str, sim: &TestSim) -> std::path::PathBuf {
    let path = dir.join("platform.toml");
    std::fs::write(&path, config_with(store, "", &platform_table(sim))).unwrap();
    path
}

fn events_url(server: &Server) -> String {
    format!("{}/wechat/component/{PLATFORM}/events", server.base)
}

/// A simulator admin call; its JSON answer.
async fn sim_admin(sim: &TestSim, path: &str, body: Value) -> Value {
    let response = sim
        .client
        .post(sim.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

/// Pushes a verify ticket to `server`; asserts it answered `success`.
async fn push_ticket(sim: &TestSim, server: &Server) -> Value {
    let pushed = sim_admin(
        sim,
        "/sim/component/push_ticket",
        json!({"component_appid": DEMO_COMPONENT_APPID, "url": events_url(server)}),
    )
    .await;
    assert_eq!(pushed["status"], 200, "{pushed}");
    assert_eq!(pushed["reply"], "success", "{pushed}");
    pushed
}

/// Authorises `appid` through the simulator, which pushes the event to `server`.
async fn authorize(sim: &TestSim, server: &Server, appid: &str) {
    let pushed = sim_admin(
        sim,
        "/sim/component/authorize",
        json!({"component_appid": DEMO_COMPONENT_APPID, "authorizer_appid": appid, "url": events_url(server)}),
    )
    .await;
    assert_eq!(pushed["status"], 200, "{pushed}");
    assert_eq!(pushed["reply"], "success", "{pushed}");
}

/// Withdraws `appid` through the simulator, which pushes the event to `server`.
async fn unauthorize(sim: &TestSim, server: &Server, appid: &str) {
    let pushed = sim_admin(
        sim,
        "/sim/component/unauthorize",
        json!({"component_appid": DEMO_COMPONENT_APPID, "authorizer_appid": appid, "url": events_url(server)}),
    )
    .await;
    assert_eq!(pushed["reply"], "success", "{pushed}");
}

async fn get(server: &Server, path: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", server.base))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn token(server: &Server, app: &str, name: &str) -> Option<String> {
    let (status, body) = get(server, &format!("/v1/tokens/{app}/{name}")).await;
    (status == StatusCode::OK).then(|| body["value"].as_str().unwrap().to_owned())
}

/// Waits until `server` serves `app`/`name` and the simulator accepts it.
async fn valid_token(sim: &TestSim, server: &Server, app: &str, name: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = token(server, app, name).await {
            let valid = if name.ends_with("_ticket") {
                sim.ticket_valid(&value).await
            } else {
                sim.token_valid(&value).await
            };
            if valid {
                return value;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{app}/{name} not served and valid within {WAIT:?}; logs:\n{}",
            server.logs.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn force_refresh(server: &Server, app: &str, stale: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/tokens/{app}/access_token/refresh",
            server.base
        ))
        .bearer_auth(SECRET)
        .json(&json!({"stale": stale}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "force refresh of {app}: {body}");
    let value = body["value"].as_str().unwrap().to_owned();
    assert_ne!(value, stale, "{app}: a force refresh gives a new token");
    value
}

/// WeChat's own list of the demo component's authorizers (with refresh tokens).
async fn wechat_list(sim: &TestSim, component_token: &str) -> Value {
    sim.client
        .post(sim.url(&format!(
            "/cgi-bin/component/api_get_authorizer_list?component_access_token={component_token}"
        )))
        .json(&json!({"component_appid": DEMO_COMPONENT_APPID, "offset": 0, "count": 500}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every api_authorizer_token call issued a token: no refresh token was ever sent
/// after WeChat had rotated it away (that call would be a 61023).
async fn assert_every_authorizer_call_worked(sim: &TestSim) {
    const PATH: &str = "/cgi-bin/component/api_authorizer_token";
    let (calls, issued) = (sim.calls(PATH).await, sim.issued(PATH).await);
    assert!(calls > 0);
    assert_eq!(
        calls, issued,
        "{calls} authorizer-token calls, {issued} issued"
    );
}

async fn listed_authorizers(server: &Server) -> Vec<String> {
    let (status, body) = get(server, &format!("/v1/components/{PLATFORM}/authorizers")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["authorizers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["authorizer_appid"].as_str().unwrap().to_owned())
        .collect()
}

async fn post_event(server: &Server, query: &str, body: &str) -> (StatusCode, String) {
    let response = reqwest::Client::new()
        .post(format!("{}?{query}", events_url(server)))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn push_authorize_rotate_sigkill_and_unauthorize_with_the_binary() {
    // Every authorizer-token call rotates the refresh token: the old one is dead at
    // once, so one lost rotation would show as a refresh that fails.
    let sim = TestSim::start(SimConfig {
        component_rotate_every: 1,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "backend = \"embedded\"\npath = \"{}\"",
        dir.path().join("data").display()
    );
    let config = write_config(dir.path(), &store, &sim);
    let server = Server::start(&config).await;

    // No ticket yet: the component token waits for the push.
    push_ticket(&sim, &server).await;
    let component = valid_token(&sim, &server, PLATFORM, "component_access_token").await;

    for appid in ["wxauthorizer1", "wxauthorizer2"] {
        authorize(&sim, &server, appid).await;
    }
    let (mut tokens, mut tickets) = (Vec::new(), Vec::new());
    for appid in ["wxauthorizer1", "wxauthorizer2"] {
        let app = format!("{PLATFORM}.{appid}");
        tokens.push(valid_token(&sim, &server, &app, "access_token").await);
        tickets.push(valid_token(&sim, &server, &app, "jsapi_ticket").await);
    }
    let ticket = &tickets[0];
    assert_ne!(tokens[0], tokens[1]);
    // The seed route and JS-SDK signatures know authorizers too.
    let seed = reqwest::get(format!(
        "{}/wechat/token?app={PLATFORM}.wxauthorizer1&type=access_token&secret={SECRET}",
        server.base
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(seed.contains(&tokens[0]), "{seed}");
    // And WeChat's own token endpoint, by the authorizer's appid, with our key.
    let facade: Value = reqwest::get(format!(
        "{}/cgi-bin/token?grant_type=client_credential&appid=wxauthorizer1&secret={SECRET}",
        server.base
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(facade["access_token"], tokens[0].as_str(), "{facade}");
    let (status, signature) = get(
        &server,
        &format!("/v1/jssdk/{PLATFORM}.wxauthorizer1/signature?url=https://shop.example/page"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{signature}");
    assert_eq!(signature["appId"], "wxauthorizer1", "{signature}");
    let signed = format!(
        "jsapi_ticket={ticket}&noncestr={}&timestamp={}&url=https://shop.example/page",
        signature["nonceStr"].as_str().unwrap(),
        signature["timestamp"]
    );
    let expected: String = sha1::Sha1::digest(signed.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        signature["signature"],
        expected.as_str(),
        "signed with the authorizer's ticket"
    );

    // The list never shows a refresh token.
    assert_eq!(
        listed_authorizers(&server).await,
        ["wxauthorizer1", "wxauthorizer2"]
    );
    let (_, shown) = get(&server, &format!("/v1/components/{PLATFORM}/authorizers")).await;
    let list = wechat_list(&sim, &component).await;
    for item in list["list"].as_array().unwrap() {
        let refresh_token = item["refresh_token"].as_str().unwrap();
        assert!(!shown.to_string().contains(refresh_token), "{shown}");
    }

    // Each force refresh rotates the refresh token; SIGKILL right after one.
    let rotated = force_refresh(&server, &format!("{PLATFORM}.wxauthorizer1"), &tokens[0]).await;
    assert!(sim.token_valid(&rotated).await);
    server.kill_9();
    let server = Server::start(&config).await;
    for (appid, old) in [("wxauthorizer1", &rotated), ("wxauthorizer2", &tokens[1])] {
        let app = format!("{PLATFORM}.{appid}");
        let served = valid_token(&sim, &server, &app, "access_token").await;
        let fresh = force_refresh(&server, &app, &served).await;
        assert!(
            sim.token_valid(&fresh).await,
            "{app} refreshed after the restart"
        );
        assert_ne!(&fresh, old);
    }

    // A push that does not open changes nothing.
    let (status, text) = post_event(
        &server,
        "timestamp=1&nonce=2&msg_signature=0000&encrypt_type=aes",
        "<xml><AppId><![CDATA[x]]></AppId><Encrypt><![CDATA[AAAA]]></Encrypt></xml>",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");

    // Revoked: no longer served, no longer listed.
    unauthorize(&sim, &server, "wxauthorizer2").await;
    let (status, _) = get(
        &server,
        &format!("/v1/tokens/{PLATFORM}.wxauthorizer2/access_token"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(listed_authorizers(&server).await, ["wxauthorizer1"]);
    assert_every_authorizer_call_worked(&sim).await;
}

#[tokio::test]
async fn a_cluster_of_three_on_redis_agrees_on_tickets_authorizers_and_rotations() {
    let sim = TestSim::start(SimConfig {
        component_rotate_every: 1,
        ..SimConfig::default()
    })
    .await;
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "backend = \"redis\"\nredis_url = \"{}\"\nencryption_key = \"{KEY}\"",
        redis.url()
    );
    let config = write_config(dir.path(), &store, &sim);
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(Server::start(&config).await);
    }

    // The ticket reaches one instance, the authorisation another; all three serve.
    let pushed = push_ticket(&sim, &servers[0]).await;
    let ticket = pushed["ticket"].as_str().unwrap().to_owned();
    let component = valid_token(&sim, &servers[2], PLATFORM, "component_access_token").await;
    authorize(&sim, &servers[1], "wxclustered").await;
    let app = format!("{PLATFORM}.wxclustered");
    let first = valid_token(&sim, &servers[0], &app, "access_token").await;
    for server in &servers {
        wait_until(
            "every instance serves the same authorizer token",
            WAIT,
            || async {
                token(server, &app, "access_token").await.as_deref() == Some(first.as_str())
            },
        )
        .await;
        assert_eq!(
            token(server, PLATFORM, "component_access_token")
                .await
                .as_deref(),
            Some(component.as_str())
        );
    }
    // Redis holds no refresh token in the clear.
    let dump = redis.cli(&["--scan"]).await;
    let list = wechat_list(&sim, &component).await;
    let refresh_token = list["list"][0]["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for key in dump.lines() {
        let kind = redis.cli(&["type", key]).await;
        let content = match kind.trim() {
            "string" => redis.cli(&["get", key]).await,
            "hash" => redis.cli(&["hgetall", key]).await,
            "zset" => redis.cli(&["zrange", key, "0", "-1"]).await,
            "list" => redis.cli(&["lrange", key, "0", "-1"]).await,
            _ => String::new(),
        };
        assert!(
            !content.contains(&refresh_token),
            "{key} holds the refresh token"
        );
        assert!(!content.contains(&ticket), "{key} holds the verify ticket");
    }

    // A rotation by one instance, which is then killed: the others refresh with the
    // rotated refresh token.
    let rotated = force_refresh(&servers[2], &app, &first).await;
    servers.pop().unwrap().kill_9();
    let again = force_refresh(&servers[0], &app, &rotated).await;
    assert!(sim.token_valid(&again).await);
    for server in &servers {
        wait_until("the instances agree after the rotation", WAIT, || async {
            token(server, &app, "access_token").await.as_deref() == Some(again.as_str())
        })
        .await;
    }

    // A new instance refreshes the component token with the ticket it read, sealed,
    // from Redis.
    servers.push(Server::start(&config).await);
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/tokens/{PLATFORM}/component_access_token/refresh",
            servers[2].base
        ))
        .bearer_auth(SECRET)
        .json(&json!({"stale": component}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(sim.token_valid(body["value"].as_str().unwrap()).await);

    // Authorised through one instance and withdrawn at once through another, before
    // that one followed the registry: the withdrawal still removes it everywhere.
    authorize(&sim, &servers[0], "wxracer").await;
    unauthorize(&sim, &servers[1], "wxracer").await;
    for server in &servers {
        wait_until(
            "the withdrawn authorizer is gone everywhere",
            WAIT,
            || async {
                get(server, &format!("/v1/apps/{PLATFORM}.wxracer")).await.0
                    == StatusCode::NOT_FOUND
            },
        )
        .await;
    }

    // Revoked through one instance: gone from all.
    unauthorize(&sim, &servers[0], "wxclustered").await;
    for server in &servers {
        wait_until(
            "the authorizer is gone from every instance",
            WAIT,
            || async {
                get(server, &format!("/v1/tokens/{app}/access_token"))
                    .await
                    .0
                    == StatusCode::NOT_FOUND
            },
        )
        .await;
    }
    assert_eq!(
        sim.stats().await["errors"]["61023"].as_u64().unwrap_or(0),
        0
    );
}

/// Polls `f` every 20 ms until it gives a value; panics after `deadline`.
async fn poll<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = f().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out after {deadline:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An in-process server with the demo platform on the memory store, not waiting for
/// readiness (there is no verify ticket until one is pushed).
async fn in_process(sim: TestSim) -> TestApp {
    let table = platform_table(&sim);
    TestApp::start(sim, &config_with(MEMORY_STORE, "", &table)).await
}

fn app_events(app: &TestApp) -> String {
    format!("{}/wechat/component/{PLATFORM}/events", app.base)
}

async fn app_token(app: &TestApp, name: &str, path_app: &str) -> Option<String> {
    let response = app
        .client
        .get(format!("{}/v1/tokens/{path_app}/{name}", app.base))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    if response.status() != StatusCode::OK {
        return None;
    }
    let body: Value = response.json().await.unwrap();
    body["value"].as_str().map(str::to_owned)
}

/// The demo platform on `app` gets a verify ticket pushed; its event URL.
async fn with_ticket(sim: &TestSim, app: &TestApp) -> String {
    let events = app_events(app);
    sim_admin(
        sim,
        "/sim/component/push_ticket",
        json!({"component_appid": DEMO_COMPONENT_APPID, "url": events}),
    )
    .await;
    events
}

/// The demo platform on `app` gets its verify ticket and the authorizer `appid`
/// through the simulator's pushes; the authorizer's first access token.
async fn with_authorizer(sim: &TestSim, app: &TestApp, appid: &str) -> String {
    let events = with_ticket(sim, app).await;
    sim_admin(
        sim,
        "/sim/component/authorize",
        json!({"component_appid": DEMO_COMPONENT_APPID, "authorizer_appid": appid, "url": events}),
    )
    .await;
    let name = format!("{PLATFORM}.{appid}");
    poll("the authorizer's token is served", WAIT, || {
        app_token(app, "access_token", &name)
    })
    .await
}

/// The verify ticket the server holds.
fn held_ticket(app: &TestApp) -> Option<String> {
    let cred = app
        .refresher
        .credential(PLATFORM, "component_verify_ticket")?;
    let now = app.refresher.clock().now();
    cred.live_token(now).map(|t| t.value.clone())
}

#[tokio::test]
async fn the_newest_verify_ticket_wins_whatever_order_pushes_arrive_in() {
    let sim = TestSim::start(SimConfig::default()).await;
    let app = in_process(sim.clone()).await;
    let (status, readiness) = app.readiness().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        readiness
            .to_string()
            .contains("component_verify_ticket: not pushed yet"),
        "{readiness}"
    );
    let events = app_events(&app);
    let push = |body: Value| sim_admin(&sim, "/sim/component/push_ticket", body);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let newer = push(json!({"component_appid": DEMO_COMPONENT_APPID, "url": events, "create_time": now - 10, "ticket": "ticket-newer"})).await;
    assert_eq!(newer["reply"], "success", "{newer}");
    assert_eq!(held_ticket(&app).as_deref(), Some("ticket-newer"));
    // A late, older push (WeChat's retry of an earlier one) is acknowledged, not used.
    let older = push(json!({"component_appid": DEMO_COMPONENT_APPID, "url": events, "create_time": now - 600, "ticket": "ticket-older"})).await;
    assert_eq!(older["reply"], "success", "{older}");
    assert_eq!(held_ticket(&app).as_deref(), Some("ticket-newer"));
    // The same directly: older is reported as such.
    let accepted = app
        .refresher
        .accept_pushed(
            PLATFORM,
            "component_verify_ticket",
            "ticket-older-2",
            std::time::UNIX_EPOCH + Duration::from_secs(now - 300),
        )
        .await
        .unwrap();
    assert_eq!(accepted, wechat_token_server::refresh::Accepted::Older);
    assert_eq!(held_ticket(&app).as_deref(), Some("ticket-newer"));
    // A push signed for another platform (another Token and key) is refused.
    let (status, text) = {
        let other = wechat_token_server::wxcrypt::MsgCrypt::new(
            "another-token",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
            DEMO_COMPONENT_APPID,
        )
        .unwrap();
        let inner = format!(
            "<xml><AppId><![CDATA[{DEMO_COMPONENT_APPID}]]></AppId><CreateTime>{now}</CreateTime><InfoType><![CDATA[component_verify_ticket]]></InfoType><ComponentVerifyTicket><![CDATA[ticket-forged]]></ComponentVerifyTicket></xml>"
        );
        let (body, signature) = other.seal(&inner, &now.to_string(), "nonce1", [7; 16]);
        let response = app
            .client
            .post(format!(
                "{events}?timestamp={now}&nonce=nonce1&encrypt_type=aes&msg_signature={signature}"
            ))
            .body(body)
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    };
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(held_ticket(&app).as_deref(), Some("ticket-newer"));
}

#[tokio::test]
async fn a_rotation_whose_reply_was_lost_is_recovered_from_wechats_list() {
    // WeChat rotates the refresh token on every call and the reply of one is lost:
    // the server holds a dead refresh token and must find the live one.
    let sim = TestSim::start(SimConfig {
        component_rotate_every: 1,
        ..SimConfig::default()
    })
    .await;
    let app = in_process(sim.clone()).await;
    let first = with_authorizer(&sim, &app, "wxlost").await;
    let name = format!("{PLATFORM}.wxlost");
    sim.fault(
        "/cgi-bin/component/api_authorizer_token",
        1,
        json!({"issue_then_drop": true}),
    )
    .await;
    // The first force refresh meets the lost reply; the server's retry finds its
    // refresh token refused and reads the live one from WeChat's list.
    let response = app
        .client
        .post(format!(
            "{}/v1/tokens/{name}/access_token/refresh",
            app.base
        ))
        .bearer_auth(SECRET)
        .json(&json!({"stale": first}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let fresh = poll(
        "a new authorizer token is served",
        Duration::from_secs(30),
        || async {
            app_token(&app, "access_token", &name)
                .await
                .filter(|t| *t != first)
        },
    )
    .await;
    assert!(sim.token_valid(&fresh).await, "after {status}: {text}");
    assert!(
        sim.calls("/cgi-bin/component/api_get_authorizer_list")
            .await
            >= 1
    );
}

/// How many authorizers the scale test registers on one platform.
const MANY: usize = 1_000;

#[tokio::test]
async fn a_thousand_authorizers_are_imported_by_sync_served_and_restored_without_a_call() {
    let sim = TestSim::start(SimConfig::default()).await;
    // Authorised on WeChat's side while the server was away: the pushes go nowhere,
    // and `sync` is how the server learns of them.
    let nowhere = format!(
        "http://127.0.0.1:{}/events",
        crate::apps::closed_port().await
    );
    for i in 0..MANY {
        let response = sim
            .client
            .post(sim.url("/sim/component/authorize"))
            .json(&json!({"component_appid": DEMO_COMPONENT_APPID, "authorizer_appid": format!("wxmany{i:04}"), "url": nowhere}))
            .send()
            .await
            .unwrap();
        // The authorizer exists; only the push failed.
        assert_ne!(response.status(), StatusCode::BAD_REQUEST);
    }
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "backend = \"embedded\"\npath = \"{}\"",
        dir.path().join("data").display()
    );
    let config = write_config(dir.path(), &store, &sim);
    let server = Server::start(&config).await;
    push_ticket(&sim, &server).await;
    valid_token(&sim, &server, PLATFORM, "component_access_token").await;

    let response = reqwest::Client::new()
        .post(format!("{}/v1/components/{PLATFORM}/sync", server.base))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let summary: Value = response.json().await.unwrap();
    assert_eq!(summary["created"], MANY, "{summary}");
    let ready = |server: &Server| {
        let url = format!("{}/readyz", server.base);
        async move {
            reqwest::get(url)
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        }
    };
    wait_until(
        "every authorizer token is served",
        Duration::from_secs(120),
        || ready(&server),
    )
    .await;
    // Every page of the list, never a refresh token.
    let mut seen = 0;
    let mut after = String::new();
    loop {
        let (status, page) = get(
            &server,
            &format!("/v1/components/{PLATFORM}/authorizers?limit=1000&after={after}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen += page["authorizers"].as_array().unwrap().len();
        assert!(!page.to_string().contains("refresh_token"));
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, MANY);
    // Imported with WeChat's auth_time: an older unauthorized push cannot remove them.
    let (_, shown) = get(&server, &format!("/v1/apps/{PLATFORM}.wxmany0000")).await;
    assert!(shown["authorized_at"].as_u64().is_some(), "{shown}");
    let sample = format!("{PLATFORM}.wxmany0999");
    valid_token(&sim, &server, &sample, "jsapi_ticket").await;

    // A restart serves them all from the store, with no call to WeChat.
    const TOKEN_CALL: &str = "/cgi-bin/component/api_authorizer_token";
    let calls = sim.calls(TOKEN_CALL).await;
    assert_eq!(calls, MANY as u64, "one token call per authorizer");
    server.kill_9();
    let server = Server::start(&config).await;
    wait_until(
        "the restart serves every token",
        Duration::from_secs(30),
        || ready(&server),
    )
    .await;
    assert_eq!(sim.calls(TOKEN_CALL).await, calls);
    valid_token(&sim, &server, &sample, "access_token").await;
}

#[tokio::test]
async fn a_fresh_start_asks_wechat_to_push_a_ticket_and_an_update_keeps_the_authorizer() {
    let sim = TestSim::start(SimConfig::default()).await;
    // WeChat knows the platform's event URL (the console's setting) before the server
    // ever ran.
    let port = crate::redis_server::free_port();
    let events = format!("http://127.0.0.1:{port}/wechat/component/{PLATFORM}/events");
    sim_admin(
        &sim,
        "/sim/component/url",
        json!({"component_appid": DEMO_COMPONENT_APPID, "url": events}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_with(MEMORY_STORE, "", &platform_table(&sim)).replace(
        "bind = \"127.0.0.1:0\"",
        &format!("bind = \"127.0.0.1:{port}\""),
    );
    let config = dir.path().join("platform.toml");
    std::fs::write(&config, text).unwrap();
    let server = Server::start(&config).await;
    // No push was sent by hand: the server asked for it.
    valid_token(&sim, &server, PLATFORM, "component_access_token").await;
    assert_eq!(
        sim.calls("/cgi-bin/component/api_start_push_ticket").await,
        1
    );

    authorize(&sim, &server, "wxupdated").await;
    let app = format!("{PLATFORM}.wxupdated");
    let before = valid_token(&sim, &server, &app, "access_token").await;
    let updated = sim_admin(
        &sim,
        "/sim/component/authorize",
        json!({"component_appid": DEMO_COMPONENT_APPID, "authorizer_appid": "wxupdated", "url": events, "update": true}),
    )
    .await;
    assert_eq!(updated["reply"], "success", "{updated}");
    assert_eq!(listed_authorizers(&server).await, ["wxupdated"]);
    let fresh = force_refresh(&server, &app, &before).await;
    assert!(sim.token_valid(&fresh).await);
}

#[tokio::test]
async fn an_authorisation_is_registered_even_when_wechat_stops_waiting_for_the_answer() {
    // api_query_auth answers after WeChat's 5 s push timeout: WeChat has given up on
    // the answer (and would push again), and the code it exchanged, spent now, must
    // still end as a registered authorizer without a second exchange.
    let sim = TestSim::start(SimConfig::default()).await;
    let app = in_process(sim.clone()).await;
    let events = with_ticket(&sim, &app).await;
    sim.fault(
        "/cgi-bin/component/api_query_auth",
        1,
        json!({"delay_ms": 6000}),
    )
    .await;
    let response = sim
        .client
        .post(sim.url("/sim/component/authorize"))
        .json(&json!({"component_appid": DEMO_COMPONENT_APPID, "authorizer_appid": "wxslow", "url": events}))
        .send()
        .await
        .unwrap();
    let pushed: Value = response.json().await.unwrap();
    assert_ne!(pushed["reply"], "success", "the push timed out: {pushed}");
    let name = format!("{PLATFORM}.wxslow");
    let token = poll("the authorizer is registered and served", WAIT, || {
        app_token(&app, "access_token", &name)
    })
    .await;
    assert!(sim.token_valid(&token).await);
    // Exchanged once: no second look-up in WeChat's list was needed.
    assert_eq!(sim.calls("/cgi-bin/component/api_query_auth").await, 1);
    assert_eq!(
        sim.calls("/cgi-bin/component/api_get_authorizer_list")
            .await,
        0
    );
}

/// Seals `inner` as the demo component's push and posts it to `events`.
async fn post_sealed(client: &reqwest::Client, events: &str, inner: &str) -> (StatusCode, String) {
    let crypt = wechat_token_server::wxcrypt::MsgCrypt::new(
        DEMO_COMPONENT_TOKEN,
        DEMO_COMPONENT_AES_KEY,
        DEMO_COMPONENT_APPID,
    )
    .unwrap();
    let (body, signature) = crypt.seal(inner, "1700000000", "replaynonce", [3; 16]);
    let response = client
        .post(format!(
            "{events}?timestamp=1700000000&nonce=replaynonce&encrypt_type=aes&msg_signature={signature}"
        ))
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn an_unauthorized_push_older_than_the_last_authorisation_is_ignored() {
    let sim = TestSim::start(SimConfig::default()).await;
    let app = in_process(sim.clone()).await;
    let events = app_events(&app);
    with_authorizer(&sim, &app, "wxreplayed").await;
    let name = format!("{PLATFORM}.wxreplayed");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let unauthorized = |created: u64| {
        format!(
            "<xml><AppId><![CDATA[{DEMO_COMPONENT_APPID}]]></AppId><CreateTime>{created}</CreateTime><InfoType><![CDATA[unauthorized]]></InfoType><AuthorizerAppid><![CDATA[wxreplayed]]></AuthorizerAppid></xml>"
        )
    };
    // An earlier withdrawal, delivered again (replayed, or WeChat's late retry): the
    // merchant authorised after it, so nothing changes.
    let (status, text) = post_sealed(&app.client, &events, &unauthorized(now - 3600)).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "success"));
    assert!(app_token(&app, "access_token", &name).await.is_some());
    // A withdrawal after the authorisation removes it.
    let (status, text) = post_sealed(&app.client, &events, &unauthorized(now + 5)).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "success"));
    assert!(app_token(&app, "access_token", &name).await.is_none());

    // The names PLATFORM.* are the authorizers': another app cannot take one.
    let response = app
        .client
        .put(format!("{}/v1/apps/{PLATFORM}.wxsquatter", app.base))
        .bearer_auth(SECRET)
        .json(&json!({"platform": "mp", "appid": "wxsquatter", "secret": "s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("belong to the authorizers"),
        "{body}"
    );
    // Nor can a platform be added at runtime: its keys belong in the config file.
    let response = app
        .client
        .put(format!("{}/v1/apps/another", app.base))
        .bearer_auth(SECRET)
        .json(&json!({"platform": "component", "component_appid": DEMO_COMPONENT_APPID}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_authorisation_pushed_again_after_a_withdrawal_is_acknowledged_and_changes_nothing() {
    let sim = TestSim::start(SimConfig::default()).await;
    let app = in_process(sim.clone()).await;
    let events = with_ticket(&sim, &app).await;
    let authorized = sim_admin(
        &sim,
        "/sim/component/authorize",
        json!({"component_appid": DEMO_COMPONENT_APPID, "authorizer_appid": "wxwithdrawn", "url": events}),
    )
    .await;
    let code = authorized["authorization_code"]
        .as_str()
        .unwrap()
        .to_owned();
    sim_admin(
        &sim,
        "/sim/component/unauthorize",
        json!({"component_appid": DEMO_COMPONENT_APPID, "authorizer_appid": "wxwithdrawn", "url": events}),
    )
    .await;
    assert!(listed_in_process(&app).await.is_empty());
    // WeChat's late retry of the authorisation: its code is spent and the account is
    // gone from WeChat's list, so it is acknowledged (a 503 would only be pushed
    // again), and nothing is registered.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let inner = format!(
        "<xml><AppId><![CDATA[{DEMO_COMPONENT_APPID}]]></AppId><CreateTime>{now}</CreateTime><InfoType><![CDATA[authorized]]></InfoType><AuthorizerAppid><![CDATA[wxwithdrawn]]></AuthorizerAppid><AuthorizationCode><![CDATA[{code}]]></AuthorizationCode></xml>"
    );
    let (status, text) = post_sealed(&app.client, &events, &inner).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "success"));
    assert!(listed_in_process(&app).await.is_empty());
}

async fn listed_in_process(app: &TestApp) -> Vec<Value> {
    let body: Value = app
        .client
        .get(format!("{}/v1/components/{PLATFORM}/authorizers", app.base))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["authorizers"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_new_refresh_token_ends_the_slow_retries_of_a_refused_one() {
    let sim = TestSim::start(SimConfig::default()).await;
    let app = in_process(sim.clone()).await;
    let events = with_ticket(&sim, &app).await;
    // Imported before the merchant authorised: WeChat refuses it (61003), an error
    // that needs a person, retried only every 5 minutes.
    let response = app
        .client
        .put(format!(
            "{}/v1/components/{PLATFORM}/authorizers/wxearly",
            app.base
        ))
        .bearer_auth(SECRET)
        .json(&json!({"refresh_token": "not-yet-authorised"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    wait_until("the refusal needs a person", WAIT, || async {
        let (_, readiness) = app.readiness().await;
        readiness.to_string().contains("needs a person")
    })
    .await;
    // The merchant authorises: the new refresh token is used at once.
    sim_admin(
        &sim,
        "/sim/component/authorize",
        json!({"component_appid": DEMO_COMPONENT_APPID, "authorizer_appid": "wxearly", "url": events}),
    )
    .await;
    let name = format!("{PLATFORM}.wxearly");
    let token = poll("the authorizer is served", WAIT, || {
        app_token(&app, "access_token", &name)
    })
    .await;
    assert!(sim.token_valid(&token).await);
}
