//! The JSON API `/v1`: shapes, times, force refresh, status, error codes.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::apps::{self, config, four_apps, get, get_anonymous, post, value};
use crate::helpers::{SECRET, TestApp};

async fn four() -> TestApp {
    let sim = apps::sim().await;
    let text = config(&four_apps(sim.addr));
    TestApp::spawn_with(sim, &text).await
}

fn time(body: &Value, field: &str) -> SystemTime {
    humantime::parse_rfc3339(body[field].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{field} is not RFC 3339: {e}: {body}"))
}

#[tokio::test]
async fn a_token_comes_with_its_app_name_lifetime_and_rfc3339_times() {
    let app = four().await;
    let (status, body) = get(&app, "/v1/tokens/office/access_token", SECRET).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let object = body.as_object().unwrap();
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "app",
            "expires_at",
            "expires_in",
            "name",
            "refreshed_at",
            "value"
        ]
    );
    assert_eq!(body["app"], "office");
    assert_eq!(body["name"], "access_token");
    assert!(app.sim.token_valid(body["value"].as_str().unwrap()).await);
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((7100..=7200).contains(&expires_in), "{expires_in}");
    let (expires_at, refreshed_at) = (time(&body, "expires_at"), time(&body, "refreshed_at"));
    let lifetime = expires_at.duration_since(refreshed_at).unwrap();
    assert!(
        lifetime.abs_diff(Duration::from_secs(7200)) <= Duration::from_secs(1),
        "{lifetime:?}"
    );
    let now = SystemTime::now();
    assert!(
        refreshed_at <= now && now.duration_since(refreshed_at).unwrap() < Duration::from_secs(60)
    );
}

#[tokio::test]
async fn refresh_gives_a_newer_token_and_a_stale_that_is_not_current_costs_nothing() {
    let app = four().await;
    let old = value(&app, "shop", "access_token").await;
    let path = "/v1/tokens/shop/access_token/refresh";

    let (status, body) = post(&app, path, SECRET, Some(json!({"stale": old}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new = body["value"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(app.sim.token_valid(&new).await);
    assert_eq!(body["app"], "shop");
    let calls = app.sim.calls("/cgi-bin/token").await;
    assert_eq!(calls, 2);

    // `old` is no longer current: answered with `new`, no call.
    let (status, body) = post(&app, path, SECRET, Some(json!({"stale": old}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["value"], new.as_str());
    // Without stale, moments after a refresh: 429 with Retry-After, no call.
    let response = app
        .client
        .post(format!("{}{path}", app.base))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(app.sim.calls("/cgi-bin/token").await, calls);
}

#[tokio::test]
async fn errors_carry_a_stable_code_and_a_message() {
    let app = four().await;
    let cases: Vec<(StatusCode, &str, (StatusCode, Value))> = vec![
        (
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            get_anonymous(&app, "/v1/tokens/shop/access_token").await,
        ),
        (
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            get_anonymous(
                &app,
                &format!("/v1/tokens/shop/access_token?secret={SECRET}"),
            )
            .await,
        ),
        (
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            get(&app, "/v1/status", "wrong").await,
        ),
        (
            StatusCode::NOT_FOUND,
            "not_found",
            get(&app, "/v1/tokens/shop/nope", SECRET).await,
        ),
        (
            StatusCode::NOT_FOUND,
            "not_found",
            get(&app, "/v1/tokens/nope/access_token", SECRET).await,
        ),
        (
            StatusCode::NOT_FOUND,
            "not_found",
            get(&app, "/v1/nothing/here", SECRET).await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            post(
                &app,
                "/v1/tokens/shop/access_token/refresh",
                SECRET,
                Some(json!({"stal": "x"})),
            )
            .await,
        ),
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            post(
                &app,
                "/v1/tokens/shop/access_token/refresh",
                SECRET,
                Some(json!([1])),
            )
            .await,
        ),
    ];
    for (status, code, (got_status, body)) in cases {
        assert_eq!(got_status, status, "{body}");
        assert_eq!(body["error"], code, "{body}");
        assert!(!body["message"].as_str().unwrap().is_empty(), "{body}");
    }
}

#[tokio::test]
async fn a_refused_refresh_is_a_502_upstream_error_with_wechats_errcode() {
    let app = four().await;
    let old = value(&app, "shop", "access_token").await;
    app.sim
        .fault(
            "/cgi-bin/token",
            1,
            json!({"errcode": 40164, "errmsg": "invalid ip"}),
        )
        .await;
    let (status, body) = post(
        &app,
        "/v1/tokens/shop/access_token/refresh",
        SECRET,
        Some(json!({"stale": old})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"], "upstream_error");
    assert_eq!(body["errcode"], 40164);
    // Status shows the failure, and still no value.
    let (status, body) = get(&app, "/v1/status", SECRET).await;
    assert_eq!(status, StatusCode::OK);
    let shop = body["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"] == "shop")
        .unwrap();
    let token = shop["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "access_token")
        .unwrap();
    assert_eq!(token["state"], "ok");
    assert_eq!(token["last_error"]["errcode"], 40164);
    assert!(!body.to_string().contains(&old));
}

#[tokio::test]
async fn status_lists_every_app_and_token_without_values() {
    let app = four().await;
    let (status, body) = get(&app, "/v1/status", SECRET).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let apps: Vec<(&str, Value, usize)> = body["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["app"].as_str().unwrap(),
                a["platform"].clone(),
                a["tokens"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        apps,
        [
            ("blog", json!("mp"), 2),
            ("hr", json!("wecom"), 1),
            ("office", json!("wecom"), 3),
            ("shop", json!("mp"), 3)
        ]
    );
    let text = body.to_string();
    for (app_name, name) in [
        ("shop", "access_token"),
        ("office", "agent_config_ticket"),
        ("blog", "jsapi_ticket"),
    ] {
        let value = value(&app, app_name, name).await;
        assert!(
            !text.contains(&value),
            "{app_name}/{name} value leaked into status"
        );
    }
    for token in body["apps"][0]["tokens"].as_array().unwrap() {
        assert_eq!(token["state"], "ok");
        assert!(token["expires_in"].as_u64().unwrap() > 7000);
        assert_eq!(token["last_error"], Value::Null);
        assert!(token.get("value").is_none());
    }
}

#[tokio::test]
async fn the_openapi_document_is_served_without_auth() {
    let app = four().await;
    let (status, body) = get_anonymous(&app, "/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let kept: Value = serde_json::from_str(include_str!("../../openapi/v1.json")).unwrap();
    assert_eq!(body, kept);
}

#[tokio::test]
async fn a_wrong_method_gets_405_with_a_json_body_in_the_route_familys_style() {
    let app = four().await;
    let cases = [
        (
            reqwest::Method::GET,
            "/v1/tokens/shop/access_token/refresh",
            "method_not_allowed",
            "POST",
        ),
        (
            reqwest::Method::DELETE,
            "/v1/status",
            "method_not_allowed",
            "GET",
        ),
        (
            reqwest::Method::POST,
            "/wechat/token",
            "method not allowed",
            "GET",
        ),
    ];
    for (method, path, error, allow) in cases {
        let response = app
            .client
            .request(method.clone(), format!("{}{path}", app.base))
            .bearer_auth(SECRET)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let allowed = response.headers()["allow"].to_str().unwrap().to_owned();
        assert!(allowed.contains(allow), "{method} {path}: Allow: {allowed}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], error, "{method} {path}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(path),
            "{method} {path}: {body}"
        );
    }
}
