//! The quota guard: force refreshes and retries keep the reserve, 45009 stops calls
//! for the day, counts survive restarts.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use wechat_token_server::simulator::SimConfig;

use crate::helpers::{SIM_PLACEHOLDER, TestApp, TestSim, seed_config, wait_until};
use crate::prom::Scrape;

/// `[refresh]` extras followed by a `[quota]` table (the helper appends to `[refresh]`).
fn quota(daily_limit: u64, reserve: u64) -> String {
    format!("\n[quota]\ndaily_limit = {daily_limit}\nreserve = {reserve}\n")
}

fn decisions(scrape: &Scrape, decision: &str) -> f64 {
    scrape.value("wts_force_refresh_total", &[("decision", decision)])
}

#[tokio::test]
async fn the_reserve_holds_while_1000_force_refreshes_are_attempted() {
    let (daily_limit, reserve) = (40, 10);
    let sim = TestSim::start(SimConfig::default()).await;
    let app = TestApp::spawn_on(sim, &quota(daily_limit, reserve)).await;

    // A client that keeps reporting the current token as bad: new tokens while the
    // budget lasts, then 429 "quota reserved" (never the very token it reported).
    let (mut renewed, mut refused) = (0, 0);
    for _ in 0..1000 {
        let current = app.token("access_token").await;
        let (status, body) = app.force("access_token", Some(&current)).await;
        match status {
            StatusCode::OK => {
                assert_ne!(body["access_token"], current.as_str());
                assert_eq!(refused, 0, "a refresh after the budget was spent: {body}");
                renewed += 1;
            }
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(body["error"], "quota reserved", "{body}");
                refused += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(renewed, daily_limit - reserve - 1);
    assert_eq!(refused, 1000 - renewed);

    let calls = app.sim.calls("/cgi-bin/token").await;
    assert_eq!(
        calls,
        daily_limit - reserve,
        "upstream calls stop at daily_limit - reserve"
    );
    let scrape = Scrape::of(&app).await;
    assert_eq!(
        scrape.value(
            "wts_quota_used",
            &[("app", "default"), ("endpoint", "/cgi-bin/token")]
        ),
        (daily_limit - reserve) as f64
    );
    // The start-up fetch was one of the calls; every force refresh after the budget was
    // spent was refused without a call.
    let performed = decisions(&scrape, "performed");
    assert_eq!(performed, (daily_limit - reserve - 1) as f64, "{scrape}");
    assert_eq!(decisions(&scrape, "quota_refused"), 1000.0 - performed);
    assert_eq!(
        scrape.value(
            "wts_refreshes_total",
            &[("trigger", "forced"), ("outcome", "quota_refused")]
        ),
        1000.0 - performed
    );
    // The served token is still one WeChat accepts.
    let served = app.token("access_token").await;
    assert!(app.sim.token_valid(&served).await);
}

#[tokio::test]
async fn scheduled_refreshes_may_use_the_reserve() {
    let sim = TestSim::with_lifetime(2, 1).await;
    let app = TestApp::spawn_on(sim, &quota(10, 8)).await;
    // Force refreshes get 2 calls in all (the start-up fetch is one of them) ...
    let current = app.token("access_token").await;
    app.force("access_token", Some(&current)).await;
    let current = app.token("access_token").await;
    let (status, _) = app.force("access_token", Some(&current)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let scrape = Scrape::of(&app).await;
    assert!(decisions(&scrape, "quota_refused") >= 1.0, "{scrape}");
    // ... while the scheduler keeps the token alive past that budget.
    wait_until(
        "scheduled refreshes went past daily_limit - reserve",
        Duration::from_secs(15),
        || async { app.sim.calls("/cgi-bin/token").await >= 5 },
    )
    .await;
    let served = app.token("access_token").await;
    assert!(app.sim.token_valid(&served).await);
}

#[tokio::test]
async fn a_45009_stops_calls_for_the_day_and_says_so_everywhere() {
    let app = TestApp::spawn().await;
    let current = app.token("access_token").await;
    app.sim
        .fault("/cgi-bin/token", 1, json!({"errcode": 45009}))
        .await;
    let (status, body) = app.force("access_token", Some(&current)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["errcode"], 45009);
    let calls = app.sim.calls("/cgi-bin/token").await;

    // No more calls to that API today: reports of the current token get 45009 back,
    // while the token is still served to everyone who just reads it.
    for _ in 0..5 {
        let (status, body) = app.force("access_token", Some(&current)).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        assert_eq!(body["errcode"], 45009);
        assert_eq!(app.token("access_token").await, current);
    }
    assert_eq!(app.sim.calls("/cgi-bin/token").await, calls);
    // The other API of the app is not affected.
    let ticket = app.token("ticket").await;
    let (status, _) = app.force("ticket", Some(&ticket)).await;
    assert_eq!(status, StatusCode::OK);

    let scrape = Scrape::of(&app).await;
    assert_eq!(
        scrape.value(
            "wts_quota_exhausted",
            &[("app", "default"), ("endpoint", "/cgi-bin/token")]
        ),
        1.0
    );
    assert_eq!(
        scrape.value(
            "wts_quota_exhausted",
            &[
                ("app", "default"),
                ("endpoint", "/cgi-bin/ticket/getticket")
            ]
        ),
        0.0
    );
    assert_eq!(decisions(&scrape, "quota_refused"), 5.0);
    let (status, body) = app.readiness().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body = body.to_string();
    assert!(
        body.contains("45009") && body.contains("midnight China time"),
        "{body}"
    );
    let (_, page) = app.page("/").await;
    assert!(page.contains("quota used up (45009)"), "{page}");
}

#[tokio::test]
async fn with_no_live_token_a_refused_force_refresh_is_429_quota_reserved() {
    // Discretionary budget of 1 call: the start-up fetch spends it.
    let sim = TestSim::with_lifetime(2, 1).await;
    let app = TestApp::spawn_on(sim, &quota(100, 99)).await;
    // WeChat fails from now on, so the token dies and only the scheduler (which may
    // use the reserve) keeps trying.
    app.sim
        .fault("/cgi-bin/token", 10_000, json!({"errcode": -1}))
        .await;
    wait_until(
        "a force refresh is refused with 429",
        Duration::from_secs(15),
        || async {
            let (status, body) = app.force("access_token", None).await;
            status == StatusCode::TOO_MANY_REQUESTS
                && body["error"] == "quota reserved"
                && body["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("scheduled refreshes"))
        },
    )
    .await;
}

#[tokio::test]
async fn quota_counts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "backend = \"embedded\"\npath = \"{}\"",
        dir.path().display()
    );
    let config = seed_config(SIM_PLACEHOLDER.parse().unwrap(), &store, "");
    let app = TestApp::spawn_with(TestSim::start(SimConfig::default()).await, &config).await;
    for _ in 0..3 {
        let current = app.token("access_token").await;
        app.force("access_token", Some(&current)).await;
    }
    let calls = app.sim.calls("/cgi-bin/token").await;
    assert_eq!(calls, 4);
    app.stop().await;

    let again = TestApp::spawn_with(TestSim::start(SimConfig::default()).await, &config).await;
    let scrape = Scrape::of(&again).await;
    // Four calls of 2000 are too few for a series of the app's own: the aggregate.
    assert_eq!(
        scrape.value("wts_quota_used_max", &[("endpoint", "/cgi-bin/token")]),
        calls as f64,
        "{scrape}"
    );
    assert_eq!(
        again.sim.calls("/cgi-bin/token").await,
        0,
        "restored, no call"
    );
}
