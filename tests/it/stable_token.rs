//! stable_token: normal mode for every refresh, forced mode only for a force refresh of a
//! token WeChat really rejects, within WeChat's limits.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use serde_json::{Value, json};
use wechat_token_server::simulator::{DEMO_APPID, DEMO_SECRET, SimConfig};

use crate::apps::{self, config, issued, stable_token_directly};
use crate::helpers::{SECRET, TestApp, TestSim, wait_until};

const STABLE: &str = "/cgi-bin/stable_token";
const PROBE: &str = "/cgi-bin/getcallbackip";

fn stable_app(sim: &TestSim, refresh_extra: &str) -> String {
    config(&format!(
        r#"
{refresh_extra}

[apps.shop]
platform = "mp"
appid = "{DEMO_APPID}"
secret = "{DEMO_SECRET}"
stable_token = true
tickets = ["jsapi"]
api_base = "http://{}"
"#,
        sim.addr
    ))
}

async fn force(app: &TestApp, stale: Option<&str>) -> (StatusCode, Value) {
    let body = stale.map(|s| json!({"stale": s}));
    apps::post(app, "/v1/tokens/shop/access_token/refresh", SECRET, body).await
}

#[tokio::test]
async fn a_force_refresh_of_a_token_wechat_still_accepts_costs_one_probe_and_no_stable_token_call()
{
    let sim = TestSim::start(SimConfig::default()).await;
    let text = stable_app(&sim, "");
    let app = TestApp::spawn_with(sim, &text).await;
    let current = apps::value(&app, "shop", "access_token").await;
    assert_eq!(app.sim.calls(STABLE).await, 1);

    // A storm of mistaken reports: one probe, no stable_token call, the same token.
    for _ in 0..5 {
        let (status, body) = force(&app, Some(&current)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["value"], current.as_str());
    }
    assert_eq!(app.sim.calls(PROBE).await, 1);
    assert_eq!(app.sim.calls(STABLE).await, 1);
    assert!(app.sim.token_valid(&current).await);
    // The probe shows in the upstream metrics like any call to WeChat.
    let scrape = crate::prom::Scrape::of(&app).await;
    let probe = [("endpoint", PROBE), ("outcome", "ok")];
    assert_eq!(
        scrape.value("wts_upstream_calls_total", &probe),
        1.0,
        "{scrape}"
    );
}

#[tokio::test]
async fn a_rejected_stable_token_is_replaced_in_forced_mode_and_the_next_one_within_30_s_in_normal_mode()
 {
    let sim = TestSim::start(SimConfig::default()).await;
    let text = stable_app(&sim, "");
    let app = TestApp::spawn_with(sim, &text).await;
    let ours = apps::value(&app, "shop", "access_token").await;

    // Another party forces a new stable token: ours is rejected at once.
    let theirs = stable_token_directly(&app.sim, DEMO_APPID, DEMO_SECRET, true).await;
    assert!(!app.sim.token_valid(&ours).await);
    app.sim.advance(31).await; // WeChat's 30 s spacing of forced calls
    let (stable_before, probes_before) = (app.sim.calls(STABLE).await, app.sim.calls(PROBE).await);

    let (status, body) = force(&app, Some(&ours)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let forced = body["value"].as_str().unwrap().to_owned();
    // Normal mode would have answered `theirs`; forced mode issued a new one and killed it.
    assert_ne!(forced, theirs);
    assert_ne!(forced, ours);
    assert!(app.sim.token_valid(&forced).await);
    assert!(
        !app.sim.token_valid(&theirs).await,
        "forced mode invalidates the previous token"
    );
    assert_eq!(app.sim.calls(PROBE).await, probes_before + 1);
    assert_eq!(app.sim.calls(STABLE).await, stable_before + 1);

    // The same again less than 30 s later (our clock): the probe still runs, but the
    // forced budget says no, so normal mode answers WeChat's current token.
    app.sim.advance(31).await;
    let theirs = stable_token_directly(&app.sim, DEMO_APPID, DEMO_SECRET, true).await;
    assert!(!app.sim.token_valid(&forced).await);
    let issued_before = issued(&app.sim, STABLE).await;
    let (status, body) = force(&app, Some(&forced)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["value"],
        theirs.as_str(),
        "normal mode returns the current token"
    );
    assert!(app.sim.token_valid(&theirs).await);
    assert_eq!(
        issued(&app.sim, STABLE).await,
        issued_before,
        "nothing new issued"
    );
    assert_eq!(app.sim.calls(PROBE).await, probes_before + 2);
    assert_eq!(app.sim.calls(STABLE).await, stable_before + 3);
}

#[tokio::test]
async fn force_refreshes_without_stale_and_dependency_refreshes_use_normal_mode_without_a_probe() {
    let sim = TestSim::start(SimConfig::default()).await;
    let text = stable_app(&sim, "force_min_interval = 0");
    let app = TestApp::spawn_with(sim, &text).await;
    let current = apps::value(&app, "shop", "access_token").await;

    let (status, body) = force(&app, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Normal mode: WeChat answers the current token, which stays valid.
    assert_eq!(body["value"], current.as_str());
    assert_eq!(app.sim.calls(STABLE).await, 2);
    assert_eq!(issued(&app.sim, STABLE).await, 1);
    assert_eq!(app.sim.calls(PROBE).await, 0);

    // A ticket refresh whose access_token is rejected refreshes it as a dependency.
    let theirs = stable_token_directly(&app.sim, DEMO_APPID, DEMO_SECRET, true).await;
    let ticket = apps::value(&app, "shop", "jsapi_ticket").await;
    let (status, body) = apps::post(
        &app,
        "/v1/tokens/shop/jsapi_ticket/refresh",
        SECRET,
        Some(json!({"stale": ticket})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(app.sim.ticket_valid(body["value"].as_str().unwrap()).await);
    assert_eq!(apps::value(&app, "shop", "access_token").await, theirs);
    assert_eq!(app.sim.calls(PROBE).await, 0);
    assert!(
        app.sim.token_valid(&theirs).await,
        "no forced call was made"
    );
}

#[tokio::test]
async fn scheduled_refreshes_use_normal_mode_and_leave_the_old_token_valid() {
    // 10 s tokens, renewed by WeChat in their last 5 s; we refresh 2 s before expiry.
    let sim = TestSim::with_lifetime(10, 5).await;
    let text = stable_app(&sim, "");
    let app = TestApp::spawn_with(sim, &text).await;
    let first = apps::value(&app, "shop", "access_token").await;

    let started = SystemTime::now();
    let refresher = app.refresher.clone();
    let first_clone = first.clone();
    wait_until(
        "the scheduler renews the stable token",
        Duration::from_secs(15),
        || {
            let (refresher, first) = (refresher.clone(), first_clone.clone());
            async move {
                refresher
                    .serve("shop", "access_token")
                    .is_ok_and(|t| t.value != first)
            }
        },
    )
    .await;
    assert!(started.elapsed().unwrap() < Duration::from_secs(10));
    // A forced call would have killed the old token at once; normal mode leaves it
    // valid until its own expiry.
    assert!(
        app.sim.token_valid(&first).await,
        "old token was invalidated early"
    );
    assert_eq!(app.sim.calls(PROBE).await, 0);
}
