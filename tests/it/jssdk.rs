//! `GET /v1/jssdk/{app}/signature`: checked by recomputing SHA-1 from the ticket the
//! server serves (the algorithm's published vectors are unit tests in `src/jssdk.rs`).

use reqwest::StatusCode;
use serde_json::Value;
use sha1::{Digest, Sha1};

use crate::apps::{self, config, four_apps, get, value};
use crate::helpers::{SECRET, TestApp};

fn sha1_hex(text: &str) -> String {
    Sha1::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn expected(ticket: &str, signed: &Value, url: &str) -> String {
    sha1_hex(&format!(
        "jsapi_ticket={ticket}&noncestr={}&timestamp={}&url={url}",
        signed["nonceStr"].as_str().unwrap(),
        signed["timestamp"].as_u64().unwrap()
    ))
}

async fn four() -> TestApp {
    let sim = apps::sim().await;
    let text = config(&four_apps(sim.addr));
    TestApp::spawn_with(sim, &text).await
}

fn encode(url: &str) -> String {
    form_urlencoded::byte_serialize(url.as_bytes()).collect()
}

#[tokio::test]
async fn an_official_account_page_gets_a_signature_of_its_url_without_the_fragment() {
    let app = four().await;
    let page = "https://shop.example.com/pay?id=1&b=中#/cart";
    let (status, body) = get(
        &app,
        &format!("/v1/jssdk/shop/signature?url={}", encode(page)),
        SECRET,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let signed_url = "https://shop.example.com/pay?id=1&b=中";
    assert_eq!(body["url"], signed_url);
    assert_eq!(body["appId"], "wx_shop");
    assert!(body.get("agentConfig").is_none());
    let ticket = value(&app, "shop", "jsapi_ticket").await;
    assert!(app.sim.ticket_valid(&ticket).await);
    assert_eq!(
        body["signature"],
        expected(&ticket, &body, signed_url).as_str()
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(body["timestamp"].as_u64().unwrap()) < 60);
    // Each call gets its own nonce.
    let (_, again) = get(
        &app,
        &format!("/v1/jssdk/shop/signature?url={}", encode(page)),
        SECRET,
    )
    .await;
    assert_ne!(again["nonceStr"], body["nonceStr"]);
}

#[tokio::test]
async fn a_wecom_app_with_an_agent_config_ticket_also_gets_the_agent_config_signature() {
    let app = four().await;
    let page = "https://office.example.com/";
    let (status, body) = get(
        &app,
        &format!("/v1/jssdk/office/signature?url={}", encode(page)),
        SECRET,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["appId"], "ww_office");
    let corp_ticket = value(&app, "office", "jsapi_ticket").await;
    assert_eq!(
        body["signature"],
        expected(&corp_ticket, &body, page).as_str()
    );
    let agent = &body["agentConfig"];
    assert_eq!(agent["corpid"], "ww_office");
    assert_eq!(agent["agentid"], 1_000_002);
    let agent_ticket = value(&app, "office", "agent_config_ticket").await;
    assert_eq!(
        agent["signature"],
        expected(&agent_ticket, agent, page).as_str()
    );
    assert_ne!(agent["signature"], body["signature"]);
}

#[tokio::test]
async fn apps_without_a_jsapi_ticket_and_bad_urls_are_refused() {
    let app = four().await;
    for (path, status, code) in [
        (
            "/v1/jssdk/hr/signature?url=https%3A%2F%2Fa.example%2F",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/v1/jssdk/nope/signature?url=https%3A%2F%2Fa.example%2F",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/v1/jssdk/shop/signature",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/v1/jssdk/shop/signature?url=%2Fpay",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/v1/jssdk/shop/signature?url=javascript%3Aalert(1)",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ] {
        let (got, body) = get(&app, path, SECRET).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["error"], code, "{path}: {body}");
    }
}

/// The shipped example config, as a newcomer uses it (only the WeChat host, the
/// listen address and the store folder changed): signatures work on the documented
/// path, and the seed route serves the preset's ticket as `type=ticket`.
#[tokio::test]
async fn the_example_config_signs_pages_on_the_documented_path() {
    let sim = crate::helpers::TestSim::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let example = include_str!("../../wechat-token-server.example.toml");
    let commented_base =
        r#"# api_base = ["https://api.weixin.qq.com", "https://api2.weixin.qq.com"]"#;
    assert!(example.contains(commented_base));
    let text = example
        .replacen(
            commented_base,
            &format!("api_base = [\"http://{}\"]", sim.addr),
            1,
        )
        .replacen("bind = \"0.0.0.0:12123\"", "bind = \"127.0.0.1:0\"", 1)
        .replacen(
            "path = \"./data\"",
            &format!("path = {:?}", dir.path().join("data").display().to_string()),
            1,
        )
        .replace(
            "${WECHAT_APPID}",
            wechat_token_server::simulator::DEMO_APPID,
        )
        .replace(
            "${WECHAT_SECRET}",
            wechat_token_server::simulator::DEMO_SECRET,
        )
        .replace("${WTS_REQUEST_SECRET}", SECRET);
    let app = TestApp::spawn_with(sim, &text).await;
    let page = "https://shop.example.com/pay?id=1";
    let (status, signed) = get(
        &app,
        &format!("/v1/jssdk/shop/signature?url={}", encode(page)),
        SECRET,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{signed}");
    let ticket = value(&app, "shop", "jsapi_ticket").await;
    assert_eq!(signed["signature"], expected(&ticket, &signed, page));
    let (status, seed) = app.get("/wechat/token?type=ticket").await;
    assert_eq!(status, StatusCode::OK, "{seed}");
    assert_eq!(seed["ticket"], ticket.as_str(), "{seed}");
}
