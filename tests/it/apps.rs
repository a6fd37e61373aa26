//! Helpers for tests of presets, clients and `/v1`: configs with several apps on one
//! simulator, Bearer requests, direct calls to the simulator.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use wechat_token_server::simulator::SimConfig;

use crate::helpers::{SECRET, TestApp, TestSim};

/// Official Accounts the simulator knows.
pub const MP_APPS: [(&str, &str); 2] = [("wx_shop", "shop_secret"), ("wx_blog", "blog_secret")];
/// WeCom apps (corp, secret) the simulator knows.
pub const CORPS: [(&str, &str); 2] = [("ww_office", "office_secret"), ("ww_hr", "hr_secret")];

/// A simulator that knows [`MP_APPS`] and [`CORPS`].
pub async fn sim() -> TestSim {
    TestSim::start(SimConfig {
        apps: MP_APPS
            .iter()
            .map(|(a, s)| ((*a).into(), (*s).into()))
            .collect(),
        corps: CORPS
            .iter()
            .map(|(a, s)| ((*a).into(), (*s).into()))
            .collect(),
        ..SimConfig::default()
    })
    .await
}

/// `[server]`, `[store]` (memory) and `[refresh]` with fast retries, then `rest`.
pub fn config(rest: &str) -> String {
    crate::helpers::config_with(
        crate::helpers::MEMORY_STORE,
        crate::helpers::FAST_RETRIES,
        rest,
    )
}

/// Two mp apps (one on stable_token) and two WeCom apps, every ticket, on `sim`.
pub fn four_apps(sim: SocketAddr) -> String {
    format!(
        r#"
[apps.shop]
platform = "mp"
appid = "wx_shop"
secret = "shop_secret"
tickets = ["jsapi", "wx_card"]
api_base = "http://{sim}"

[apps.blog]
platform = "mp"
appid = "wx_blog"
secret = "blog_secret"
stable_token = true
tickets = ["jsapi"]
api_base = ["http://{sim}"]

[apps.office]
platform = "wecom"
corpid = "ww_office"
corpsecret = "office_secret"
agentid = 1000002
tickets = ["jsapi", "agent_config"]
api_base = ["http://{sim}"]

[apps.hr]
platform = "wecom"
corpid = "ww_hr"
corpsecret = "hr_secret"
api_base = "http://{sim}"
"#
    )
}

/// A loopback port with nothing listening on it.
pub async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

async fn reply(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// GET `path` with `Authorization: Bearer key`.
pub async fn get(app: &TestApp, path: &str, key: &str) -> (StatusCode, Value) {
    let request = app
        .client
        .get(format!("{}{path}", app.base))
        .bearer_auth(key);
    reply(request.send().await.unwrap()).await
}

/// GET `path` with no credentials.
pub async fn get_anonymous(app: &TestApp, path: &str) -> (StatusCode, Value) {
    reply(
        app.client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// POST `path` with a Bearer key and an optional JSON body.
pub async fn post(
    app: &TestApp,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app
        .client
        .post(format!("{}{path}", app.base))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    reply(request.send().await.unwrap()).await
}

/// The value of `/v1/tokens/{app}/{name}` as the request secret sees it.
pub async fn value(app: &TestApp, app_name: &str, name: &str) -> String {
    let (status, body) = get(app, &format!("/v1/tokens/{app_name}/{name}"), SECRET).await;
    assert_eq!(status, StatusCode::OK, "{app_name}/{name}: {body}");
    body["value"].as_str().unwrap().to_owned()
}

/// A seed request with `secret=` in the query.
pub async fn seed(app: &TestApp, path_and_query: &str, secret: &str) -> (StatusCode, Value) {
    let url = format!("{}{path_and_query}&secret={secret}", app.base);
    reply(app.client.get(url).send().await.unwrap()).await
}

/// A stable_token call straight to the simulator, as another server of the same app
/// would make it.
pub async fn stable_token_directly(
    sim: &TestSim,
    appid: &str,
    secret: &str,
    force: bool,
) -> String {
    let reply: Value = sim
        .client
        .post(sim.url("/cgi-bin/stable_token"))
        .json(&json!({"grant_type": "client_credential", "appid": appid, "secret": secret, "force_refresh": force}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    reply["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("stable_token refused: {reply}"))
        .to_owned()
}

/// Credentials the simulator has issued for `endpoint`.
pub async fn issued(sim: &TestSim, endpoint: &str) -> u64 {
    sim.issued(endpoint).await
}

/// Waits until `/v1/tokens/{app}/{name}` answers 200.
pub async fn wait_served(app: &TestApp, app_name: &str, name: &str) {
    let path = format!("/v1/tokens/{app_name}/{name}");
    crate::helpers::wait_until(
        &format!("{path} is served"),
        Duration::from_secs(10),
        || async { get(app, &path, SECRET).await.0 == StatusCode::OK },
    )
    .await;
}
