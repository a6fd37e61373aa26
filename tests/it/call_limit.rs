//! `refresh.max_concurrent_calls`: many apps on a slow WeChat never have more token and
//! ticket calls out at once than the setting, and every token is still fetched; force
//! refreshes queue for the same permits.

use std::fmt::Write as _;

use reqwest::StatusCode;
use serde_json::json;
use wechat_token_server::simulator::{SimConfig, any_app_secret};

use crate::apps::{post, value};
use crate::helpers::{FAST_RETRIES, MEMORY_STORE, SECRET, TestApp, TestSim, config_with};

const APPS: u64 = 120;
const LIMIT: u64 = 6;
/// WeChat's answer time in this test: long enough that, unbounded, all first calls
/// would overlap.
const LATENCY_MS: u64 = 30;

fn many_apps(sim: &TestSim) -> String {
    let mut apps = String::new();
    for i in 0..APPS {
        let appid = format!("wx{i}");
        let secret = any_app_secret(&appid);
        let _ = write!(
            apps,
            "[apps.a{i}]\nplatform = \"mp\"\nappid = \"{appid}\"\nsecret = \"{secret}\"\n\
             tickets = [\"jsapi\"]\napi_base = \"http://{}\"\n\n",
            sim.addr
        );
    }
    config_with(
        MEMORY_STORE,
        &format!("{FAST_RETRIES}\nforce_min_interval = 0\nmax_concurrent_calls = {LIMIT}"),
        &apps,
    )
}

async fn slow_wechat(sim: &TestSim, calls: u64) {
    for endpoint in ["/cgi-bin/token", "/cgi-bin/ticket/getticket"] {
        sim.fault(endpoint, calls, json!({"delay_ms": LATENCY_MS}))
            .await;
    }
}

#[tokio::test]
async fn many_apps_on_a_slow_wechat_stay_within_max_concurrent_calls_and_all_get_their_tokens() {
    let sim = TestSim::start(SimConfig {
        accept_any_app: true,
        ..SimConfig::default()
    })
    .await;
    slow_wechat(&sim, APPS).await;
    let app = TestApp::spawn_with(sim.clone(), &many_apps(&sim)).await;

    for cred in app.refresher.credentials() {
        let served = app.refresher.serve(&cred.key.app, &cred.key.name);
        assert!(served.is_ok(), "{} not served", cred.key);
    }
    let stats = sim.stats().await;
    assert_eq!(stats["max_in_flight"], LIMIT, "{stats}");
    assert_eq!(
        stats["issued"]["/cgi-bin/token"], APPS,
        "one call per token"
    );
    assert_eq!(stats["issued"]["/cgi-bin/ticket/getticket"], APPS);

    // Force refreshes of many apps at once wait for the same permits.
    slow_wechat(&sim, APPS).await;
    let mut olds = Vec::new();
    for i in 0..30 {
        olds.push(value(&app, &format!("a{i}"), "access_token").await);
    }
    let refreshes = olds.iter().enumerate().map(|(i, old)| {
        let path = format!("/v1/tokens/a{i}/access_token/refresh");
        let app = &app;
        async move { post(app, &path, SECRET, Some(json!({"stale": old}))).await }
    });
    let answers = futures_util::future::join_all(refreshes).await;
    for ((status, body), old) in answers.iter().zip(&olds) {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_ne!(body["value"].as_str(), Some(old.as_str()), "a new token");
    }
    let stats = sim.stats().await;
    assert_eq!(stats["max_in_flight"], LIMIT, "the most calls out at once");
    assert_eq!(
        stats["issued"]["/cgi-bin/token"],
        APPS + 30,
        "{}",
        stats["issued"]
    );
    app.stop().await;
}
