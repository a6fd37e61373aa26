//! The refresher's promise under realistic faults, end to end: every token served is
//! one WeChat accepts at that instant (checked with `/sim/valid` right after each
//! read). One test per case of the wave 2 fault list: a slow WeChat, a crash mid-call,
//! an unreadable or full store, short lifetimes with failures, hostile records.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use wechat_token_server::simulator::SimConfig;

use crate::helpers::{
    MEMORY_STORE, SECRET, SIM_PLACEHOLDER, TestApp, TestSim, access_token_source, config_with,
    wait_until,
};
use crate::process::Server;
use crate::redis_server::RedisServer;

/// What [`watch_tokens`] saw.
struct Watched {
    served: u32,
    invalid: Vec<String>,
    missing: u32,
    last: Option<String>,
}

/// Reads `access_token` from `base` for `period` (at least once), checking each served
/// token with the simulator at once.
async fn watch_tokens(
    client: &reqwest::Client,
    base: &str,
    sim: &TestSim,
    period: Duration,
) -> Watched {
    let (mut served, mut invalid, mut missing, mut last) = (0, Vec::new(), 0, None);
    let end = Instant::now() + period;
    loop {
        let response = client
            .get(format!(
                "{base}/wechat/token?type=access_token&secret={SECRET}"
            ))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::OK {
            let body: serde_json::Value = response.json().await.unwrap();
            let token = body["access_token"].as_str().unwrap().to_owned();
            served += 1;
            if !sim.token_valid(&token).await {
                invalid.push(token.clone());
            }
            last = Some(token);
        } else {
            missing += 1;
        }
        if Instant::now() >= end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // pacing the reads, not a sync
    }
    Watched {
        served,
        invalid,
        missing,
        last,
    }
}

/// A server with the demo access_token on the embedded store in `dir`, `refresh` in
/// its `[refresh]` table, on a fresh simulator.
async fn embedded_app(dir: &tempfile::TempDir, refresh: &str) -> TestApp {
    let sim = TestSim::start(SimConfig::default()).await;
    let store = format!(
        "backend = \"embedded\"\npath = \"{}\"",
        dir.path().display()
    );
    let text = config_with(
        &store,
        refresh,
        &access_token_source(SIM_PLACEHOLDER.parse().unwrap()),
    );
    TestApp::spawn_with(sim, &text).await
}

/// A simulator whose replaced tokens stay valid `grace` seconds, and a server that
/// knows it.
async fn sim_with_grace(grace: u64) -> TestSim {
    TestSim::start(SimConfig {
        grace: Duration::from_secs(grace),
        ..SimConfig::default()
    })
    .await
}

#[tokio::test]
async fn a_force_refresh_answered_after_the_timeout_never_leaves_a_replaced_token_served() {
    // WeChat issues the new token at once but answers after our 1 s timeout: the old
    // token dies 4 s later at WeChat. It must not be served past that.
    let sim = sim_with_grace(4).await;
    let refresh =
        "upstream_timeout = 1\nupstream_grace = 4\nmin_retry_delay = 0.5\nmax_retry_delay = 2";
    let text = config_with(
        MEMORY_STORE,
        refresh,
        &access_token_source(SIM_PLACEHOLDER.parse().unwrap()),
    );
    let app = TestApp::spawn_with(sim, &text).await;
    let old = app.token("access_token").await;
    let issued_before = app.sim.issued("/cgi-bin/token").await;
    app.sim
        .fault("/cgi-bin/token", 1, json!({"delay_ms": 3000}))
        .await;
    // The caller gets a confirmed token: the call of unknown outcome is followed at
    // once by another.
    let (status, body) = app.force("access_token", Some(&old)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(body["access_token"], old.as_str());
    assert_eq!(
        app.sim.issued("/cgi-bin/token").await,
        issued_before + 2,
        "WeChat issued the lost token and the confirmed one"
    );

    let Watched {
        served, invalid, ..
    } = watch_tokens(&app.client, &app.base, &app.sim, Duration::from_secs(7)).await;
    assert!(served > 20, "{served}");
    assert!(
        invalid.is_empty(),
        "{} invalid tokens served",
        invalid.len()
    );
    let now = app.token("access_token").await;
    assert_ne!(
        now, old,
        "a confirmed token replaced the one of unknown fate"
    );
    assert!(app.sim.token_valid(&now).await);
}

#[tokio::test]
async fn after_kill_9_with_a_call_out_the_restart_never_serves_a_replaced_token() {
    let sim = sim_with_grace(3).await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "backend = \"embedded\"\npath = \"{}\"",
        dir.path().join("data").display()
    );
    let refresh =
        "upstream_timeout = 10\nupstream_grace = 3\nmin_retry_delay = 0.2\nmax_retry_delay = 1";
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_with(&store, refresh, &access_token_source(sim.addr)),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let server = Server::start(&config).await;
    wait_until(
        "the first token is served",
        Duration::from_secs(10),
        || async {
            client
                .get(format!("{}/readyz", server.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        },
    )
    .await;
    let old = watch_tokens(&client, &server.base, &sim, Duration::ZERO)
        .await
        .last
        .expect("a token is served once ready");

    // A report while WeChat is slow: WeChat issues at once, the reply never comes in
    // time, and the process is killed while the call is out.
    let issued_before = sim.issued("/cgi-bin/token").await;
    sim.fault("/cgi-bin/token", 1, json!({"delay_ms": 20000}))
        .await;
    let report = tokio::spawn({
        let (client, base, old) = (client.clone(), server.base.clone(), old.clone());
        async move {
            let _ = client
                .get(format!(
                    "{base}/wechat/token/forcerefresh?type=access_token&secret={SECRET}&stale={old}"
                ))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
        }
    });
    wait_until(
        "WeChat issued the new token",
        Duration::from_secs(5),
        || async { sim.issued("/cgi-bin/token").await > issued_before },
    )
    .await;
    server.kill_9();
    let _ = report.await;

    let server = Server::start(&config).await;
    let Watched {
        served, invalid, ..
    } = watch_tokens(&client, &server.base, &sim, Duration::from_secs(6)).await;
    assert!(served > 20, "{served}");
    assert!(
        invalid.is_empty(),
        "{} invalid tokens served after the restart",
        invalid.len()
    );
}

#[tokio::test]
async fn a_store_that_cannot_record_a_call_defers_a_report_instead_of_replacing_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let app = embedded_app(&dir, "min_retry_delay = 0.2").await;
    let old = app.token("access_token").await;
    // The store breaks (as a read-only or vanished disk would).
    let tokens = dir.path().join("tokens");
    let moved = dir.path().join("tokens-moved");
    std::fs::rename(&tokens, &moved).unwrap();
    std::fs::write(&tokens, b"not a folder").unwrap();
    let issued = app.sim.issued("/cgi-bin/token").await;

    let (status, body) = app.force("access_token", Some(&old)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "refresh deferred", "{body}");
    assert_eq!(
        app.sim.issued("/cgi-bin/token").await,
        issued,
        "no token was issued"
    );
    assert_eq!(app.token("access_token").await, old);
    assert!(app.sim.token_valid(&old).await);
    let (status, _) = app.readiness().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    std::fs::remove_file(&tokens).unwrap();
    std::fs::rename(&moved, &tokens).unwrap();
    // The store is back: a report is acted on again (after the short cool-down that
    // shares the deferral with the reports that came with it).
    wait_until(
        "a report is acted on again",
        Duration::from_secs(5),
        || async {
            let (status, body) = app.force("access_token", Some(&old)).await;
            status == StatusCode::OK && body["access_token"] != old.as_str()
        },
    )
    .await;
}

#[tokio::test]
async fn short_lived_tokens_never_lapse_through_three_failures_with_default_retry_settings() {
    // 12 s tokens are refreshed 2.4 s before their end; three failures in a row with
    // min_retry_delay = 1 s used to run past it.
    let sim = TestSim::with_lifetime(12, 5).await;
    let text = config_with(
        MEMORY_STORE,
        "upstream_grace = 5",
        &access_token_source(SIM_PLACEHOLDER.parse().unwrap()),
    );
    let app = TestApp::spawn_with(sim, &text).await;
    app.sim
        .fault("/cgi-bin/token", 3, json!({"errcode": -1}))
        .await;
    let Watched {
        served,
        invalid,
        missing,
        ..
    } = watch_tokens(&app.client, &app.base, &app.sim, Duration::from_secs(14)).await;
    assert!(served > 50, "{served}");
    assert_eq!(missing, 0, "the token lapsed");
    assert!(invalid.is_empty());
    assert!(
        app.sim.calls("/cgi-bin/token").await >= 5,
        "three failures, then success"
    );
}

#[tokio::test]
async fn a_stored_record_with_a_ten_year_lifetime_or_a_forged_value_is_not_served() {
    let redis = RedisServer::start().await;
    let sim = TestSim::start(SimConfig::default()).await;
    let now_ms = wechat_token_server::domain::unix_millis(std::time::SystemTime::now());
    let ten_years = now_ms + 10 * 365 * 24 * 3600 * 1000;
    for (name, value, expires) in [
        ("access_token", "FORGED-TEN-YEARS", ten_years),
        ("ticket", "   ", now_ms + 3_600_000),
    ] {
        redis
            .cli(&[
                "HSET",
                &format!("wts:meta:default:{name}"),
                "value",
                value,
                "expires_at_ms",
                &expires.to_string(),
                "refreshed_at_ms",
                &now_ms.to_string(),
                "version",
                "7",
            ])
            .await;
    }
    let store = format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url());
    let text = crate::helpers::seed_config(SIM_PLACEHOLDER.parse().unwrap(), &store, "");
    let app = TestApp::spawn_with(sim, &text).await;
    let token = app.token("access_token").await;
    assert_ne!(token, "FORGED-TEN-YEARS");
    assert!(app.sim.token_valid(&token).await);
    let ticket = app.token("ticket").await;
    assert!(app.sim.ticket_valid(&ticket).await);
    // Its own tokens replaced the forged records, with a higher version.
    let version = redis
        .cli(&["HGET", "wts:meta:default:access_token", "version"])
        .await;
    assert!(version.trim().parse::<u64>().unwrap() > 7, "{version}");
}

/// A TCP proxy in front of Redis that can be cut: one instance's partition.
struct Partition {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
    _task: tokio::task::JoinHandle<()>,
}

impl Partition {
    async fn to(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut = cut_rx.clone();
                if *cut.borrow() {
                    continue; // dropped at once
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self {
            addr,
            cut,
            _task: task,
        }
    }
}

#[tokio::test]
async fn an_instance_cut_off_from_redis_probes_a_report_and_never_replaces_the_clusters_token() {
    let redis = RedisServer::start().await;
    let sim = TestSim::start(SimConfig::default()).await;
    let partition = Partition::to(([127, 0, 0, 1], redis.port).into()).await;
    let config = |url: String| {
        let store = format!("backend = \"redis\"\nredis_url = \"{url}\"");
        crate::helpers::seed_config(SIM_PLACEHOLDER.parse().unwrap(), &store, "")
    };
    let healthy = TestApp::spawn_with(sim.clone(), &config(redis.url())).await;
    let cut_off = TestApp::spawn_with(
        sim.clone(),
        &config(format!("redis://{}/0", partition.addr)),
    )
    .await;
    let token = healthy.token("access_token").await;
    wait_until(
        "both serve the same token",
        Duration::from_secs(5),
        || async { cut_off.token("access_token").await == token },
    )
    .await;

    partition.cut.send_replace(true);
    let issued = sim.issued("/cgi-bin/token").await;
    // A mistaken report to the cut-off instance: WeChat still accepts the token.
    for _ in 0..5 {
        let (status, body) = cut_off.force("access_token", Some(&token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["access_token"], token.as_str());
    }
    assert_eq!(
        sim.issued("/cgi-bin/token").await,
        issued,
        "nothing was replaced"
    );
    assert!(
        sim.calls("/cgi-bin/getcallbackip").await >= 1,
        "the report was probed"
    );
    let Watched {
        served, invalid, ..
    } = watch_tokens(&healthy.client, &healthy.base, &sim, Duration::from_secs(2)).await;
    assert!(
        served > 5 && invalid.is_empty(),
        "{served} served, {} invalid",
        invalid.len()
    );
}

#[tokio::test]
async fn a_call_wechat_refused_clears_its_pending_mark_and_one_of_unknown_outcome_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = embedded_app(&dir, "min_retry_delay = 0.5\nmax_retry_delay = 60").await;
    let key = wechat_token_server::domain::CredentialKey::new("default", "access_token");
    let pending = || async {
        app.refresher
            .store()
            .load(&key)
            .await
            .unwrap()
            .unwrap()
            .pending_since_ms
    };
    let old = app.token("access_token").await;
    app.sim
        .fault("/cgi-bin/token", 1, json!({"errcode": -1}))
        .await;
    let (status, _) = app.force("access_token", Some(&old)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        pending().await,
        None,
        "WeChat issued nothing: no mark is left"
    );

    // Wait out the cool-down that shares that failure, then lose a reply (and the
    // reply of the call that follows it at once).
    app.sim
        .fault("/cgi-bin/token", 2, json!({"drop": true}))
        .await;
    wait_until(
        "a report meets the dropped reply",
        Duration::from_secs(5),
        || async {
            app.force("access_token", Some(&old)).await;
            app.sim.calls("/cgi-bin/token").await >= 3
        },
    )
    .await;
    assert!(
        pending().await.is_some(),
        "the outcome is unknown: the mark stays"
    );
    let (_, body) = app.get("/wechat/token?type=access_token").await;
    let left = body["expires_in"].as_u64().unwrap();
    assert!(left <= 300, "served only for the grace: {body}");
}

#[tokio::test]
async fn after_a_redis_outage_with_lease_less_refreshes_every_instance_converges_on_the_newest_token()
 {
    // 60 s tokens with a 5 s grace: with Redis down, both instances refresh without
    // the lease within 5 s of the end (after a probe), each getting its own token.
    let mut redis = RedisServer::start().await;
    let sim = TestSim::with_lifetime(60, 5).await;
    let store = format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url());
    let text = config_with(
        &store,
        "upstream_grace = 5\nupstream_timeout = 1\nmin_retry_delay = 0.2\nmax_retry_delay = 1",
        &access_token_source(SIM_PLACEHOLDER.parse().unwrap()),
    );
    let a = TestApp::spawn_with(sim.clone(), &text).await;
    let b = TestApp::spawn_with(sim.clone(), &text).await;
    let first = a.token("access_token").await;
    wait_until("both serve one token", Duration::from_secs(5), || async {
        served(&b).await.as_deref() == Some(first.as_str())
    })
    .await;

    redis.kill();
    wait_until(
        "both refreshed without the lease",
        Duration::from_secs(70),
        || async {
            let (ta, tb) = (served(&a).await, served(&b).await);
            ta.as_ref().is_some_and(|t| *t != first)
                && tb.as_ref().is_some_and(|t| *t != first)
                && ta != tb
        },
    )
    .await;
    redis.restart_empty().await;
    // The one they agree on is WeChat's newest: every token served stays valid past
    // the grace of the older ones.
    assert_converged(
        &a,
        &b,
        &sim,
        Instant::now(),
        Duration::from_secs(6),
        Duration::from_secs(11),
    )
    .await;
}

/// Two instances on `redis` (one through `via`, if given) with 30 s tokens, a 3 s grace
/// and a 1 s timeout.
fn short_cluster_config(url: &str) -> String {
    config_with(
        &format!("backend = \"redis\"\nredis_url = \"{url}\""),
        "upstream_grace = 3\nupstream_timeout = 1\nmin_retry_delay = 0.2\nmax_retry_delay = 1",
        &access_token_source(SIM_PLACEHOLDER.parse().unwrap()),
    )
}

#[tokio::test]
async fn an_instance_cut_off_from_redis_never_refreshes_over_the_clusters_newer_token() {
    // The cluster refreshes 6 s before the end; the cut-off instance may refresh on its
    // own only within 2 s of the end, after a probe: by then WeChat rejects the token
    // the cluster replaced, so it knows a successor exists and leaves it alone.
    let redis = RedisServer::start().await;
    let sim = TestSim::with_lifetime(30, 3).await;
    let partition = Partition::to(([127, 0, 0, 1], redis.port).into()).await;
    let healthy = TestApp::spawn_with(sim.clone(), &short_cluster_config(&redis.url())).await;
    let cut_off = TestApp::spawn_with(
        sim.clone(),
        &short_cluster_config(&format!("redis://{}/0", partition.addr)),
    )
    .await;
    let first = healthy.token("access_token").await;
    wait_until("both serve one token", Duration::from_secs(5), || async {
        cut_off.token("access_token").await == first
    })
    .await;
    partition.cut.send_replace(true);
    // Past the first token's end and the grace after it: the healthy instance's token
    // must have stayed valid all along.
    let watched = watch_tokens(
        &healthy.client,
        &healthy.base,
        &sim,
        Duration::from_secs(36),
    )
    .await;
    assert!(
        watched.served > 100 && watched.invalid.is_empty() && watched.missing == 0,
        "{} served, {} invalid, {} missing",
        watched.served,
        watched.invalid.len(),
        watched.missing
    );
}

/// Waits (at most `within`, counted from `since`) until `a` and `b` serve one token,
/// then checks every token both serve for `watch`: all valid, none missing.
async fn assert_converged(
    a: &TestApp,
    b: &TestApp,
    sim: &TestSim,
    since: Instant,
    within: Duration,
    watch: Duration,
) {
    wait_until(
        "every instance serves one token",
        within + Duration::from_secs(4),
        || async {
            let (ta, tb) = (served(a).await, served(b).await);
            ta.is_some() && ta == tb
        },
    )
    .await;
    assert!(
        since.elapsed() < within,
        "converged in {:?}",
        since.elapsed()
    );
    let (wa, wb) = tokio::join!(
        watch_tokens(&a.client, &a.base, sim, watch),
        watch_tokens(&b.client, &b.base, sim, watch),
    );
    for w in [wa, wb] {
        assert!(
            w.served > 20 && w.invalid.is_empty() && w.missing == 0,
            "{} served, {} invalid, {} missing",
            w.served,
            w.invalid.len(),
            w.missing
        );
    }
}

/// The access_token `app` serves now, if any.
async fn served(app: &TestApp) -> Option<String> {
    let (status, body) = app.get("/wechat/token?type=access_token").await;
    (status == StatusCode::OK).then(|| body["access_token"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn after_redis_hangs_and_resumes_the_instances_converge_within_seconds() {
    // Requests queued in a hung Redis run when it resumes, a lease among them: the
    // instance that asked for it takes it over instead of waiting out its TTL. 60 s
    // tokens with a 5 s grace: the instances may refresh on their own within 5 s of
    // the end (a fifth of the lifetime, 12 s, minus the grace and the timeout is
    // more).
    let redis = RedisServer::start().await;
    let sim = TestSim::with_lifetime(60, 5).await;
    let config = config_with(
        &format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url()),
        "upstream_grace = 5\nupstream_timeout = 1\nmin_retry_delay = 0.2\nmax_retry_delay = 1",
        &access_token_source(SIM_PLACEHOLDER.parse().unwrap()),
    );
    let a = TestApp::spawn_with(sim.clone(), &config).await;
    let b = TestApp::spawn_with(sim.clone(), &config).await;
    let first = a.token("access_token").await;
    wait_until("both serve one token", Duration::from_secs(5), || async {
        served(&b).await.as_deref() == Some(first.as_str())
    })
    .await;
    redis.signal("-STOP");
    wait_until(
        "both refreshed without the lease",
        Duration::from_secs(70),
        || async {
            let (ta, tb) = (served(&a).await, served(&b).await);
            ta.is_some_and(|t| t != first) && tb.is_some_and(|t| t != first)
        },
    )
    .await;
    redis.signal("-CONT");
    assert_converged(
        &a,
        &b,
        &sim,
        Instant::now(),
        Duration::from_secs(6),
        Duration::from_secs(6),
    )
    .await;
}
