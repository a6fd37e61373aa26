//! The refresher: ahead of expiry, retries with backoff, dependency refresh, lifetime cap.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, TestSim, wait_until};

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
