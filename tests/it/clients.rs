//! `[clients.NAME]`: keys as Bearer and `secret=`, scopes and networks enforced on the
//! seed routes and on `/v1`.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::apps::{self, config, four_apps, get, post, seed, value};
use crate::helpers::{SECRET, TestApp};

const READER: &str = "reader-key-0123456789";
const REFRESHER: &str = "refresher-key-0123456789";
const FAR: &str = "far-away-key-0123456789";
const NEAR: &str = "near-key-0123456789";

async fn with_clients() -> TestApp {
    let sim = apps::sim().await;
    let hashed: String = Sha256::digest(REFRESHER.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let text = config(&format!(
        r#"
{}
[clients.reader]
key = "{READER}"
apps = ["shop"]
tokens = ["access_token"]

[clients.refresher]
key_sha256 = "{hashed}"
apps = "*"
tokens = ["access_token", "jsapi_ticket"]
refresh = true

[clients.far]
key = "{FAR}"
apps = "*"
tokens = "*"
networks = ["10.0.0.0/8"]

[clients.near]
key = "{NEAR}"
apps = "*"
tokens = "*"
networks = ["10.0.0.0/8", "127.0.0.0/8", "::1/128"]
"#,
        four_apps(sim.addr)
    ));
    TestApp::spawn_with(sim, &text).await
}

fn assert_forbidden_seed((status, body): (StatusCode, Value)) {
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "forbidden", "{body}");
}

fn assert_forbidden_v1((status, body): (StatusCode, Value)) {
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "forbidden", "{body}");
}

#[tokio::test]
async fn a_client_reads_what_its_scope_allows_on_both_route_families() {
    let app = with_clients().await;
    let token = value(&app, "shop", "access_token").await;
    let (status, body) = seed(&app, "/wechat/token?app=shop&type=access_token", READER).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["access_token"], token.as_str());
    let (status, body) = get(&app, "/v1/tokens/shop/access_token", READER).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["value"], token.as_str());
    // As a Bearer on the seed route too.
    let response = app
        .client
        .get(format!(
            "{}/wechat/token?app=shop&type=access_token",
            app.base
        ))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_client_outside_its_scope_gets_403_on_both_route_families() {
    let app = with_clients().await;
    // Another token of its app, an app it may not use, a refresh it may not do.
    assert_forbidden_seed(seed(&app, "/wechat/token?app=shop&type=jsapi_ticket", READER).await);
    assert_forbidden_seed(seed(&app, "/wechat/token?app=shop&type=ticket", READER).await);
    assert_forbidden_seed(seed(&app, "/wechat/token?app=office&type=access_token", READER).await);
    assert_forbidden_seed(
        seed(
            &app,
            "/wechat/token/forcerefresh?app=shop&type=access_token",
            READER,
        )
        .await,
    );
    // Scope is checked before existence: nothing is learnt about other apps.
    assert_forbidden_seed(
        seed(
            &app,
            "/wechat/token?app=secret-app&type=access_token",
            READER,
        )
        .await,
    );
    assert_forbidden_v1(get(&app, "/v1/tokens/shop/jsapi_ticket", READER).await);
    assert_forbidden_v1(get(&app, "/v1/tokens/office/access_token", READER).await);
    assert_forbidden_v1(post(&app, "/v1/tokens/shop/access_token/refresh", READER, None).await);
    assert_forbidden_v1(
        get(
            &app,
            "/v1/jssdk/shop/signature?url=https://a.example/",
            READER,
        )
        .await,
    );
    assert_forbidden_v1(get(&app, "/v1/tokens/office/agent_config_ticket", REFRESHER).await);
    let calls = app.sim.calls("/cgi-bin/token").await;
    assert_eq!(calls, 1, "no refused request reached WeChat");
}

#[tokio::test]
async fn a_client_with_the_refresh_right_may_force_refresh_in_its_scope() {
    let app = with_clients().await;
    let old = value(&app, "office", "jsapi_ticket").await;
    let (status, body) = post(
        &app,
        "/v1/tokens/office/jsapi_ticket/refresh",
        REFRESHER,
        Some(json!({"stale": old})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(body["value"], old.as_str());
    let old = value(&app, "blog", "access_token").await;
    let (status, body) = seed(
        &app,
        &format!("/wechat/token/forcerefresh?app=blog&type=access_token&stale={old}"),
        REFRESHER,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn networks_are_enforced_from_the_tcp_peer_address() {
    let app = with_clients().await;
    // 127.0.0.1 is not in 10.0.0.0/8.
    assert_forbidden_seed(seed(&app, "/wechat/token?app=shop&type=access_token", FAR).await);
    assert_forbidden_v1(get(&app, "/v1/tokens/shop/access_token", FAR).await);
    assert_forbidden_v1(get(&app, "/v1/status", FAR).await);
    // A forged X-Forwarded-For changes nothing.
    let response = app
        .client
        .get(format!("{}/v1/tokens/shop/access_token", app.base))
        .bearer_auth(FAR)
        .header("x-forwarded-for", "10.1.2.3")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // A client allowed on loopback is served.
    let (status, _) = seed(&app, "/wechat/token?app=shop&type=access_token", NEAR).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get(&app, "/v1/tokens/shop/access_token", NEAR).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_keys_keep_the_seed_401_and_get_unauthorized_on_v1() {
    let app = with_clients().await;
    for key in ["", "reader-key-012345678", "READER-KEY-0123456789"] {
        let (status, body) = seed(&app, "/wechat/token?app=shop&type=access_token", key).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body, json!({"error": "invalid request"}));
        let (status, body) = get(&app, "/v1/tokens/shop/access_token", key).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "unauthorized");
    }
    // The SHA-256 of a key is not a key.
    let hashed: String = Sha256::digest(REFRESHER.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (status, _) = get(&app, "/v1/tokens/shop/access_token", &hashed).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn status_shows_a_client_only_its_scope_and_the_request_secret_everything() {
    let app = with_clients().await;
    let (status, body) = get(&app, "/v1/status", READER).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let apps = body["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 1, "{body}");
    assert_eq!(apps[0]["app"], "shop");
    assert_eq!(apps[0]["tokens"].as_array().unwrap().len(), 1);
    let (_, body) = get(&app, "/v1/status", SECRET).await;
    assert_eq!(body["apps"].as_array().unwrap().len(), 4);
}
