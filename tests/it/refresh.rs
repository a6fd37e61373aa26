//! The refresher: ahead of expiry, retries with backoff, dependency refresh, lifetime cap.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use wechat_token_server::simulator::{DEMO_APPID, DEMO_SECRET};

use crate::helpers::{MEMORY_STORE, TestApp, TestSim, config_with, wait_until};

/// Queries `name` until `distinct` different values were served, checking each one
/// against the simulator the moment it is served. Returns the values in order.
async fn observe_rotation(
    app: &TestApp,
    name: &str,
    distinct: usize,
    deadline: Duration,
) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let start = Instant::now();
    while seen.len() < distinct {
        assert!(
            start.elapsed() < deadline,
            "only {} distinct values within {deadline:?}",
            seen.len()
        );
        let (status, body) = app.get(&format!("/wechat/token?type={name}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let value = body[name].as_str().unwrap().to_owned();
        let valid = if name == "access_token" {
            app.sim.token_valid(&value).await
        } else {
            app.sim.ticket_valid(&value).await
        };
        assert!(
            valid,
            "served an invalid {name} (after {} distinct)",
            seen.len()
        );
        if seen.last() != Some(&value) {
            seen.push(value);
        }
        tokio::time::sleep(Duration::from_millis(25)).await; // pacing of the client, not synchronisation
    }
    seen
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed_ahead_of_expiry_and_always_valid() {
    // 5 s tokens: refreshed 1 s early, which leaves a loaded machine room to do it.
    let sim = TestSim::with_lifetime(5, 2).await;
    let app = TestApp::spawn_on(sim, "").await;
    let tokens = observe_rotation(&app, "access_token", 3, Duration::from_secs(20)).await;
    assert_eq!(tokens.len(), 3);
    // Not refreshed continuously: about one call per lifetime.
    let calls = app.sim.calls("/cgi-bin/token").await;
    assert!(calls <= 4, "{calls} token calls for 3 tokens");
    let tickets = observe_rotation(&app, "ticket", 2, Duration::from_secs(15)).await;
    assert_eq!(tickets.len(), 2);
}

#[tokio::test]
async fn failures_are_retried_while_the_current_token_keeps_being_served() {
    // 10 s tokens: refreshed 2 s early, room for four failures and their backoff.
    let sim = TestSim::with_lifetime(10, 2).await;
    let app = TestApp::spawn_on(sim, "").await;
    let first = app.token("access_token").await;
    let calls_before = app.sim.calls("/cgi-bin/token").await;
    for fault in [
        json!({"errcode": -1}),
        json!({"http_status": 502}),
        json!({"garbage": true}),
        json!({"drop": true}),
    ] {
        app.sim.fault("/cgi-bin/token", 1, fault).await;
    }
    let tokens = observe_rotation(&app, "access_token", 2, Duration::from_secs(25)).await;
    assert_eq!(tokens[0], first);
    // Four failed attempts, then one success.
    assert!(app.sim.calls("/cgi-bin/token").await >= calls_before + 5);
    let status = app
        .refresher
        .credential("default", "access_token")
        .unwrap()
        .status();
    assert_eq!(status.consecutive_failures, 0);
    assert!(
        status.last_error.is_some(),
        "the last error is kept for the status page"
    );
}

#[tokio::test]
async fn a_ticket_call_rejected_for_its_access_token_refreshes_the_token_and_retries() {
    let app = TestApp::spawn().await;
    let token = app.token("access_token").await;
    let ticket = app.token("ticket").await;
    // A rogue caller fetches a token behind our back; five minutes later ours is dead.
    app.sim.issue_token_directly().await;
    app.sim.advance(301).await;
    assert!(!app.sim.token_valid(&token).await);
    let token_calls = app.sim.calls("/cgi-bin/token").await;
    let ticket_calls = app.sim.calls("/cgi-bin/ticket/getticket").await;

    let (status, body) = app.force("ticket", Some(&ticket)).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let new_ticket = body["ticket"].as_str().unwrap();
    assert!(app.sim.ticket_valid(new_ticket).await);
    let new_token = app.token("access_token").await;
    assert_ne!(new_token, token);
    assert!(app.sim.token_valid(&new_token).await);
    assert_eq!(app.sim.calls("/cgi-bin/token").await, token_calls + 1);
    assert_eq!(
        app.sim.calls("/cgi-bin/ticket/getticket").await,
        ticket_calls + 2
    );
}

#[tokio::test]
async fn token_expire_time_caps_the_served_lifetime() {
    let sim = TestSim::start(Default::default()).await;
    let app = TestApp::spawn_on(sim, "token_expire_time = 100").await;
    let (_, body) = app.get("/wechat/token?type=access_token").await;
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((95..=100).contains(&expires_in), "{expires_in}");
}

#[tokio::test]
async fn readiness_follows_the_tokens() {
    let sim = TestSim::with_lifetime(2, 1).await;
    let app = TestApp::spawn_on(sim, "").await;
    assert_eq!(app.readiness().await.0, StatusCode::OK);
    // WeChat fails from now on: once the tokens die, the instance is not ready.
    app.sim
        .fault("/cgi-bin/token", 10_000, json!({"errcode": -1}))
        .await;
    app.sim
        .fault("/cgi-bin/ticket/getticket", 10_000, json!({"errcode": -1}))
        .await;
    wait_until("readyz turns 503", Duration::from_secs(10), || async {
        app.readiness().await.0 == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let (_, body) = app.readiness().await;
    let problems = body["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains("default/access_token")),
        "{body}"
    );
    // Readiness turns false a little before expiry (the margin); once the token has
    // died it is never served.
    wait_until(
        "the expired token is no longer served",
        Duration::from_secs(5),
        || async {
            app.get("/wechat/token?type=access_token").await.0 == StatusCode::SERVICE_UNAVAILABLE
        },
    )
    .await;
}

#[tokio::test]
async fn generic_sources_post_json_bodies_and_read_renamed_fields() {
    // Any token API of this shape works without a preset: stable_token as a POST with a
    // JSON body, and a ticket under another name read from the reply's `ticket` field.
    let sim = TestSim::start(Default::default()).await;
    let sources = format!(
        r#"
[sources.access_token]
url = "http://{sim}/cgi-bin/stable_token"
method = "POST"
body = {{ grant_type = "client_credential", appid = "{DEMO_APPID}", secret = "{DEMO_SECRET}", force_refresh = false }}
[sources.jsapi]
url = "http://{sim}/cgi-bin/ticket/getticket"
args = {{ type = "jsapi", access_token = "{{{{access_token}}}}" }}
token_field = "ticket"
"#,
        sim = sim.addr
    );
    let text = config_with(MEMORY_STORE, "", &sources);
    let app = TestApp::spawn_with(sim, &text).await;
    let token = app.token("access_token").await;
    let ticket = app.token("jsapi").await;
    assert!(app.sim.token_valid(&token).await);
    assert!(app.sim.ticket_valid(&ticket).await);
    assert_eq!(app.sim.calls("/cgi-bin/stable_token").await, 1);
    assert_eq!(app.sim.calls("/cgi-bin/token").await, 0);
}

/// A token API that is not WeChat's: form-encoded POST, its own field names, and (for
/// `/bare`) no lifetime at all.
async fn custom_token_api() -> std::net::SocketAddr {
    use axum::{Json, Router, routing::post};
    use std::collections::HashMap;
    async fn token(body: String) -> Json<serde_json::Value> {
        let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        Json(
            match (
                form.get("id").map(String::as_str),
                form.get("key").map(String::as_str),
            ) {
                (Some("me"), Some("k3y")) => {
                    json!({"data": {"tok": "custom-token-1"}, "ttl": "300"})
                }
                _ => json!({"errcode": 40125, "errmsg": "invalid key"}),
            },
        )
    }
    async fn bare() -> Json<serde_json::Value> {
        Json(json!({"tok": "bare-token"}))
    }
    let router = Router::new()
        .route("/token", post(token))
        .route("/bare", post(bare));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

#[tokio::test]
async fn generic_sources_post_forms_read_dotted_fields_and_fall_back_to_token_expire_time() {
    let api = custom_token_api().await;
    let sim = TestSim::start(Default::default()).await;
    let sources = format!(
        r#"
[sources.custom]
url = "http://{api}/token"
method = "POST"
args = {{ id = "me", key = "k3y" }}
token_field = "data.tok"
expires_field = "ttl"
[sources.bare]
url = "http://{api}/bare"
method = "POST"
token_field = "tok"
"#
    );
    let text = config_with(MEMORY_STORE, "token_expire_time = 120", &sources);
    let app = TestApp::spawn_with(sim, &text).await;
    let (_, body) = app.get("/wechat/token?type=custom").await;
    assert_eq!(body["custom"], "custom-token-1");
    // 300 s from the reply, capped at token_expire_time.
    assert!(body["expires_in"].as_u64().unwrap() <= 120, "{body}");
    let (_, body) = app.get("/wechat/token?type=bare").await;
    assert_eq!(body["bare"], "bare-token");
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!(
        (110..=120).contains(&expires_in),
        "no lifetime in the reply: token_expire_time, {body}"
    );
}

#[tokio::test]
async fn a_generic_source_that_answers_an_errcode_fails_with_it() {
    let api = custom_token_api().await;
    let sim = TestSim::start(Default::default()).await;
    let sources = format!(
        r#"
[sources.custom]
url = "http://{api}/token"
method = "POST"
args = {{ id = "me", key = "wrong" }}
token_field = "data.tok"
"#
    );
    let text = config_with(MEMORY_STORE, "min_retry_delay = 30", &sources);
    let app = TestApp::start(sim, &text).await;
    wait_until(
        "the failure is recorded",
        Duration::from_secs(5),
        || async {
            app.refresher
                .credential("default", "custom")
                .unwrap()
                .status()
                .last_error
                .is_some()
        },
    )
    .await;
    let status = app
        .refresher
        .credential("default", "custom")
        .unwrap()
        .status();
    let (error, _) = status.last_error.unwrap();
    assert_eq!(error.errcode(), Some(40125));
    let (status, body) = app.get("/wechat/token?type=custom").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}
