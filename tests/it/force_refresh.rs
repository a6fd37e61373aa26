//! Force refresh: one upstream call per storm, `stale` semantics, rate limit, errors.

use std::collections::HashSet;

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, TestSim};

#[tokio::test]
async fn two_hundred_concurrent_force_refreshes_cost_one_upstream_call() {
    let app = TestApp::spawn().await;
    let old = app.token("access_token").await;
    let before = app.sim.calls("/cgi-bin/token").await;

    let replies = join_all((0..200).map(|_| app.force("access_token", Some(&old)))).await;

    assert_eq!(app.sim.calls("/cgi-bin/token").await, before + 1);
    let tokens: HashSet<String> = replies
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::OK, "{body}");
            body["access_token"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(tokens.len(), 1, "every caller gets the same new token");
    let new = tokens.into_iter().next().unwrap();
    assert_ne!(new, old);
    assert!(app.sim.token_valid(&new).await);
    assert_eq!(
        app.token("access_token").await,
        new,
        "the new token is served"
    );
}

#[tokio::test]
async fn a_storm_without_stale_right_after_a_refresh_costs_no_call() {
    let app = TestApp::spawn().await;
    let current = app.token("access_token").await;
    let before = app.sim.calls("/cgi-bin/token").await;
    let replies = join_all((0..100).map(|_| app.force("access_token", None))).await;
    for (status, body) in &replies {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(
            body["access_token"],
            current.as_str(),
            "rate-limited: the current token"
        );
    }
    assert_eq!(app.sim.calls("/cgi-bin/token").await, before);
}

/// Reports `old` as stale with a client that gives up after `patience_ms`.
async fn report_and_hang_up(app: &TestApp, old: &str, patience_ms: u64) {
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(patience_ms))
        .build()
        .unwrap();
    let url = format!(
        "{}/wechat/token/forcerefresh?type=access_token&secret={}&stale={old}",
        app.base,
        crate::helpers::SECRET
    );
    assert!(
        impatient.get(&url).send().await.is_err(),
        "the client timed out"
    );
}

#[tokio::test]
async fn a_client_that_gives_up_does_not_cancel_the_refresh_it_started() {
    let app = TestApp::spawn().await;
    let old = app.token("access_token").await;
    let before = app.sim.calls("/cgi-bin/token").await;
    app.sim
        .fault("/cgi-bin/token", 1, json!({"delay_ms": 800}))
        .await;
    // The first reporter hangs up long before WeChat answers.
    report_and_hang_up(&app, &old, 200).await;
    // Others report the same token meanwhile: they share the call under way.
    let replies = join_all((0..20).map(|_| app.force("access_token", Some(&old)))).await;
    let new: HashSet<String> = replies
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::OK, "{body}");
            body["access_token"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(new.len(), 1);
    assert!(!new.contains(&old));
    assert_eq!(
        app.sim.calls("/cgi-bin/token").await,
        before + 1,
        "one call in all"
    );
    let served = app.token("access_token").await;
    assert!(new.contains(&served), "the token WeChat issued is served");
    assert!(app.sim.token_valid(&served).await);
}

#[tokio::test]
async fn a_stale_force_refresh_makes_no_upstream_call() {
    let app = TestApp::spawn().await;
    let current = app.token("access_token").await;
    let before = app.sim.calls("/cgi-bin/token").await;
    let (status, body) = app.force("access_token", Some("an-older-token")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["access_token"], current.as_str());
    assert!(body["expires_in"].as_u64().unwrap() > 7000);
    assert_eq!(app.sim.calls("/cgi-bin/token").await, before);
}

#[tokio::test]
async fn force_refreshes_without_stale_are_rate_limited() {
    let sim = TestSim::start(Default::default()).await;
    let app = TestApp::spawn_on(sim, "force_min_interval = 1").await;
    let first = app.token("access_token").await;
    let before = app.sim.calls("/cgi-bin/token").await;
    // Within the interval of the start-up fetch: answered with the current token.
    let (status, body) = app.force("access_token", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["access_token"], first.as_str());
    assert_eq!(app.sim.calls("/cgi-bin/token").await, before);
    // Once the interval has passed, one call is made ...
    let fresh = std::sync::Mutex::new(String::new());
    crate::helpers::wait_until(
        "a force refresh is performed",
        std::time::Duration::from_secs(5),
        || async {
            let (_, body) = app.force("access_token", None).await;
            let value = body["access_token"].as_str().unwrap().to_owned();
            *fresh.lock().unwrap() = value.clone();
            value != first
        },
    )
    .await;
    assert_eq!(app.sim.calls("/cgi-bin/token").await, before + 1);
    // ... and the next one is limited again.
    let (_, again) = app.force("access_token", None).await;
    assert_eq!(again["access_token"], fresh.lock().unwrap().as_str());
    assert_eq!(app.sim.calls("/cgi-bin/token").await, before + 1);
}

#[tokio::test]
async fn a_refused_refresh_is_502_with_wechats_errcode_and_the_old_token_stays_served() {
    let app = TestApp::spawn().await;
    let current = app.token("access_token").await;
    app.sim
        .fault(
            "/cgi-bin/token",
            1,
            json!({"errcode": 40164, "errmsg": "invalid ip 1.2.3.4, not in whitelist"}),
        )
        .await;
    let (status, body) = app.force("access_token", Some(&current)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["error"], "refresh failed");
    assert_eq!(body["errcode"], 40164);
    assert!(body["errmsg"].as_str().unwrap().contains("whitelist"));
    assert_eq!(app.token("access_token").await, current);
}

#[tokio::test]
async fn a_storm_against_a_failing_wechat_costs_one_call_and_every_caller_gets_the_error() {
    let sim = TestSim::start(Default::default()).await;
    let app = TestApp::spawn_on(sim, "upstream_timeout = 0.5").await;
    let current = app.token("access_token").await;
    let before = app.sim.calls("/cgi-bin/token").await;
    // WeChat hangs past our timeout, twice: the one flight (a call of unknown outcome
    // and the one that follows it at once) fails, and everyone queued behind it
    // shares that failure instead of calling again.
    app.sim
        .fault("/cgi-bin/token", 2, json!({"delay_ms": 3000}))
        .await;
    let replies = join_all((0..50).map(|_| app.force("access_token", Some(&current)))).await;
    assert_eq!(app.sim.calls("/cgi-bin/token").await, before + 2);
    for (status, body) in &replies {
        assert_eq!(*status, StatusCode::BAD_GATEWAY, "{body}");
        assert_eq!(body["error"], "refresh failed");
    }
    assert_eq!(
        app.token("access_token").await,
        current,
        "the old token is still served"
    );
}

#[tokio::test]
async fn an_unknown_token_cannot_be_force_refreshed() {
    let app = TestApp::spawn().await;
    let (status, body) = app.force("nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not found");
}

#[tokio::test]
async fn force_refresh_of_the_ticket_gives_a_new_valid_ticket() {
    let sim = TestSim::start(Default::default()).await;
    let app = TestApp::spawn_on(sim, "").await;
    let old = app.token("ticket").await;
    let (status, body) = app.force("ticket", Some(&old)).await;
    assert_eq!(status, StatusCode::OK);
    let new = body["ticket"].as_str().unwrap();
    assert_ne!(new, old);
    assert!(app.sim.ticket_valid(new).await);
}

#[tokio::test]
async fn a_graceful_shutdown_waits_for_a_refresh_whose_client_gave_up() {
    let app = TestApp::spawn().await;
    let old = app.token("access_token").await;
    app.sim
        .fault("/cgi-bin/token", 1, json!({"delay_ms": 600}))
        .await;
    report_and_hang_up(&app, &old, 100).await;
    let refresher = app.refresher.clone();
    app.stop().await;
    // Stopped only once the refresh that WeChat answered was installed.
    let cred = refresher.credential("default", "access_token").unwrap();
    let installed = cred.current().unwrap();
    assert_ne!(
        installed.value, old,
        "the new token was installed before the stop ended"
    );
}
