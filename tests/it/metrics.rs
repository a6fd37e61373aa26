//! `/metrics`: every metric family moves as the simulator makes things happen.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use wechat_token_server::simulator::SimConfig;

use crate::helpers::{SECRET, SIM_PLACEHOLDER, TestApp, TestSim, seed_config, wait_until};
use crate::prom::Scrape;

const TOKEN: (&str, &str) = ("token", "access_token");
const APP: (&str, &str) = ("app", "default");
const TOKEN_ENDPOINT: (&str, &str) = ("endpoint", "/cgi-bin/token");

#[tokio::test]
async fn every_contract_metric_is_exported_in_the_prometheus_text_format() {
    let app = TestApp::spawn().await;
    app.token("access_token").await;
    let (status, _) = app.force("access_token", Some("an-older-token")).await;
    assert_eq!(status, StatusCode::OK);
    let scrape = Scrape::of(&app).await;
    for family in [
        "wts_upstream_calls_total",
        "wts_upstream_duration_seconds_bucket",
        "wts_token_expires_in_seconds",
        "wts_refreshes_total",
        "wts_force_refresh_total",
        "wts_quota_used",
        "wts_http_requests_total",
        "wts_http_request_duration_seconds_bucket",
        "wts_store_operations_total",
        "wts_ready",
    ] {
        assert!(scrape.has(family), "no {family} in\n{scrape}");
    }
    // wts_store_errors_total has no sample until a store fails, but is declared.
    assert!(
        scrape.0.contains("# TYPE wts_store_errors_total counter"),
        "{scrape}"
    );
    assert_eq!(scrape.value("wts_ready", &[]), 1.0);
    let left = scrape.value("wts_token_expires_in_seconds", &[APP, TOKEN]);
    assert!((7000.0..=7200.0).contains(&left), "{left}");
    assert_eq!(
        scrape.value("wts_quota_used", &[APP, TOKEN_ENDPOINT]),
        app.sim.calls("/cgi-bin/token").await as f64
    );
    let token = app.token("access_token").await;
    assert!(!scrape.0.contains(&token), "a token value in /metrics");
    assert!(!scrape.0.contains(SECRET), "the request secret in /metrics");
}

#[tokio::test]
async fn upstream_calls_and_refreshes_are_counted_by_outcome_under_faults() {
    let sim = TestSim::start(SimConfig::default()).await;
    // The first fetch meets a busy WeChat, then a proxy error, then a connection
    // dropped after the request was sent, then succeeds.
    sim.fault("/cgi-bin/token", 1, json!({"errcode": -1})).await;
    sim.fault("/cgi-bin/token", 1, json!({"http_status": 502}))
        .await;
    sim.fault("/cgi-bin/token", 1, json!({"drop": true})).await;
    let app = TestApp::spawn_on(sim, "").await;

    let scrape = Scrape::of(&app).await;
    let calls = |outcome| {
        scrape.value(
            "wts_upstream_calls_total",
            &[APP, TOKEN, TOKEN_ENDPOINT, ("outcome", outcome)],
        )
    };
    assert_eq!(calls("-1"), 1.0, "{scrape}");
    assert_eq!(calls("http_502"), 1.0, "{scrape}");
    assert_eq!(calls("connection_lost"), 1.0, "{scrape}");
    assert_eq!(calls("ok"), 1.0, "{scrape}");
    assert_eq!(
        scrape.value("wts_upstream_calls_total", &[TOKEN]),
        app.sim.calls("/cgi-bin/token").await as f64,
        "every call WeChat saw is counted"
    );
    // The access_token's own scheduler or the ticket's need of it (trigger
    // "dependency") makes each attempt, whichever comes first.
    let refreshes =
        |outcome| scrape.value("wts_refreshes_total", &[APP, TOKEN, ("outcome", outcome)]);
    assert_eq!(refreshes("-1"), 1.0, "{scrape}");
    assert_eq!(refreshes("http_502"), 1.0, "{scrape}");
    assert_eq!(refreshes("connection_lost"), 1.0, "{scrape}");
    assert_eq!(refreshes("ok"), 1.0, "{scrape}");
    let by_trigger =
        |trigger| scrape.value("wts_refreshes_total", &[APP, TOKEN, ("trigger", trigger)]);
    assert_eq!(
        by_trigger("scheduled") + by_trigger("dependency"),
        4.0,
        "{scrape}"
    );
    assert_eq!(
        scrape.value(
            "wts_upstream_duration_seconds_count",
            &[APP, TOKEN_ENDPOINT]
        ),
        4.0
    );

    // A 45009 is counted under its errcode.
    let current = app.token("access_token").await;
    app.sim
        .fault("/cgi-bin/token", 1, json!({"errcode": 45009}))
        .await;
    let (status, body) = app.force("access_token", Some(&current)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let scrape = Scrape::of(&app).await;
    assert_eq!(
        scrape.value("wts_upstream_calls_total", &[TOKEN, ("outcome", "45009")]),
        1.0
    );
    assert_eq!(
        scrape.value(
            "wts_refreshes_total",
            &[("trigger", "forced"), ("outcome", "45009")]
        ),
        1.0
    );
    assert_eq!(
        scrape.value("wts_quota_exhausted", &[APP, TOKEN_ENDPOINT]),
        1.0
    );
}

#[tokio::test]
async fn a_ticket_rejected_for_its_access_token_counts_a_dependency_refresh() {
    let app = TestApp::spawn().await;
    let ticket = app.token("ticket").await;
    app.sim
        .fault("/cgi-bin/ticket/getticket", 1, json!({"errcode": 40001}))
        .await;
    let (status, body) = app.force("ticket", Some(&ticket)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let scrape = Scrape::of(&app).await;
    assert_eq!(
        scrape.value(
            "wts_refreshes_total",
            &[TOKEN, ("trigger", "dependency"), ("outcome", "ok")]
        ),
        1.0,
        "{scrape}"
    );
    assert_eq!(
        scrape.value(
            "wts_upstream_calls_total",
            &[
                ("token", "ticket"),
                ("endpoint", "/cgi-bin/ticket/getticket"),
                ("outcome", "40001")
            ]
        ),
        1.0
    );
    assert_eq!(
        scrape.value(
            "wts_refreshes_total",
            &[
                ("token", "ticket"),
                ("trigger", "forced"),
                ("outcome", "ok")
            ]
        ),
        1.0
    );
}

#[tokio::test]
async fn force_refresh_decisions_are_counted() {
    let app = TestApp::spawn().await;
    let decisions = |scrape: &Scrape, decision| {
        scrape.value(
            "wts_force_refresh_total",
            &[APP, TOKEN, ("decision", decision)],
        )
    };
    let current = app.token("access_token").await;
    app.force("access_token", Some("an-older-token")).await;
    // Without `stale`, right after the start-up fetch: rate-limited.
    app.force("access_token", None).await;
    // A storm while WeChat is slow: one performs, the others share its outcome (or,
    // arriving after it ended, see that their token is stale).
    app.sim
        .fault("/cgi-bin/token", 1, json!({"delay_ms": 300}))
        .await;
    let replies = join_all((0..20).map(|_| app.force("access_token", Some(&current)))).await;
    assert!(replies.iter().all(|(status, _)| *status == StatusCode::OK));

    let scrape = Scrape::of(&app).await;
    assert_eq!(decisions(&scrape, "performed"), 1.0, "{scrape}");
    assert_eq!(decisions(&scrape, "rate_limited"), 1.0, "{scrape}");
    let shared = decisions(&scrape, "shared");
    assert!(shared >= 10.0, "{scrape}");
    assert_eq!(shared + decisions(&scrape, "stale"), 1.0 + 19.0, "{scrape}");
}

#[tokio::test]
async fn http_requests_are_counted_by_matched_route_and_status() {
    let app = TestApp::spawn().await;
    let before = Scrape::of(&app).await;
    for _ in 0..3 {
        app.token("access_token").await;
    }
    let wrong = app
        .client
        .get(format!(
            "{}/wechat/token?type=access_token&secret=wrong",
            app.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let missing = app
        .client
        .get(format!("{}/no/such/path/4711", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let after = Scrape::of(&app).await;
    let moved = |route, status| {
        let labels = [("route", route), ("status", status)];
        after.value("wts_http_requests_total", &labels)
            - before.value("wts_http_requests_total", &labels)
    };
    assert_eq!(moved("/wechat/token", "200"), 3.0, "{after}");
    assert_eq!(moved("/wechat/token", "401"), 1.0, "{after}");
    assert_eq!(moved("unmatched", "404"), 1.0, "{after}");
    assert_eq!(moved("/metrics", "200"), 1.0, "{after}");
    assert!(!after.0.contains("4711"), "a raw path became a label");
    let timed = after.value(
        "wts_http_request_duration_seconds_count",
        &[("route", "/wechat/token")],
    ) - before.value(
        "wts_http_request_duration_seconds_count",
        &[("route", "/wechat/token")],
    );
    assert_eq!(timed, 4.0);
}

#[tokio::test]
async fn store_operations_and_errors_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let sim = TestSim::start(SimConfig::default()).await;
    let store = format!(
        "backend = \"embedded\"\npath = \"{}\"",
        dir.path().display()
    );
    let app = TestApp::spawn_with(
        sim,
        &seed_config(SIM_PLACEHOLDER.parse().unwrap(), &store, ""),
    )
    .await;
    let save = [("backend", "embedded"), ("op", "save")];
    // A token is served as soon as it arrives, and stored right after.
    wait_until("both tokens are stored", Duration::from_secs(5), || async {
        Scrape::of(&app)
            .await
            .value("wts_store_operations_total", &save)
            >= 2.0
    })
    .await;
    let scrape = Scrape::of(&app).await;
    assert_eq!(scrape.value("wts_store_errors_total", &save), 0.0);

    // The tokens folder turns into a file: every write fails.
    let tokens = dir.path().join("tokens");
    std::fs::remove_dir_all(&tokens).unwrap();
    std::fs::write(&tokens, b"not a folder").unwrap();
    let current = app.token("access_token").await;
    // The call that would replace the token cannot be recorded: it is not made, and
    // the current token goes on being served.
    let (status, _) = app.force("access_token", Some(&current)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.token("access_token").await, current);
    let scrape = Scrape::of(&app).await;
    assert_eq!(
        scrape.value(
            "wts_store_errors_total",
            &[("backend", "embedded"), ("op", "mark_pending")]
        ),
        1.0,
        "{scrape}"
    );
    assert!(
        scrape.value(
            "wts_store_errors_total",
            &[("backend", "embedded"), ("op", "ping")]
        ) >= 1.0
    );
    assert_eq!(scrape.value("wts_ready", &[]), 0.0);
}

#[tokio::test]
async fn the_expiry_gauge_is_zero_until_a_token_is_held() {
    let sim = TestSim::start(SimConfig::default()).await;
    sim.fault("/cgi-bin/token", 3, json!({"errcode": -1})).await;
    sim.fault("/cgi-bin/token", 1, json!({"delay_ms": 1000}))
        .await;
    let app = TestApp::start(
        sim,
        &crate::helpers::seed_config_for_memory_with_fast_retries(),
    )
    .await;
    let early = Scrape::of(&app).await;
    assert_eq!(
        early.value("wts_token_expires_in_seconds", &[APP, TOKEN]),
        0.0,
        "{early}"
    );
    assert_eq!(early.value("wts_ready", &[]), 0.0);
    wait_until("the token is held", Duration::from_secs(10), || async {
        Scrape::of(&app)
            .await
            .value("wts_token_expires_in_seconds", &[APP, TOKEN])
            > 7000.0
    })
    .await;
    wait_until("the instance is ready", Duration::from_secs(10), || async {
        Scrape::of(&app).await.value("wts_ready", &[]) == 1.0
    })
    .await;
}
