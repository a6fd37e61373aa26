//! Three instances of the real binary on one Redis, under faults: the lease holder is
//! SIGKILLed (twice), Redis restarts empty, WeChat fails. Clients query every live
//! instance all along and check each served token with the simulator.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::time::Instant;
use wechat_token_server::simulator::SimConfig;

use crate::helpers::{SECRET, TestSim, seed_config};
use crate::process::Server;
use crate::redis_server::RedisServer;

/// Token lifetime in the simulator: short, so that the run sees several refreshes.
const LIFETIME: u64 = 10;
/// How long the run lasts.
const RUN: Duration = Duration::from_secs(27);

#[derive(Default)]
struct Tally {
    served: AtomicU64,
    invalid: AtomicU64,
    unavailable: AtomicU64,
}

/// When the cluster first fetched a token, from the instances' logs.
fn first_refresh(servers: &[Server]) -> Instant {
    let first = servers
        .iter()
        .flat_map(refresh_times)
        .min()
        .expect("the instances are ready, so one of them fetched the tokens");
    let age = std::time::SystemTime::now()
        .duration_since(first)
        .unwrap_or_default();
    Instant::now() - age
}

/// The times of a server's "token refreshed" log lines.
fn refresh_times(server: &Server) -> Vec<std::time::SystemTime> {
    let logs = server.logs.lock().unwrap();
    logs.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["message"] == "token refreshed")
        .filter_map(|e| humantime::parse_rfc3339(e["timestamp"].as_str()?).ok())
        .collect()
}

/// The instance that refreshed most recently: the one that held the lease last.
fn last_refresher(servers: &[Server]) -> usize {
    let last_refresh = |server: &Server| refresh_times(server).into_iter().max();
    (0..servers.len())
        .max_by_key(|&i| last_refresh(&servers[i]))
        .unwrap()
}

#[tokio::test]
async fn a_cluster_serves_only_valid_tokens_through_kills_a_redis_restart_and_wechat_faults() {
    let sim = TestSim::start(SimConfig {
        expires_in: Duration::from_secs(LIFETIME),
        // Longer than the 5 s reconciliation, so a lost push cannot expose a token
        // WeChat has already retired.
        grace: Duration::from_secs(8),
        ..SimConfig::default()
    })
    .await;
    let mut redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    let store = format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url());
    std::fs::write(&config, seed_config(sim.addr, &store, "")).unwrap();

    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(Server::start(&config).await);
    }
    let bases: Arc<Mutex<Vec<String>>> =
        Arc::new(Mutex::new(servers.iter().map(|s| s.base.clone()).collect()));
    let tally = Arc::new(Tally::default());
    // The timeline counts from the first refresh, so that each step falls where it is
    // meant to in the refresh cycle (every 8 s: 10 s tokens refreshed 2 s early),
    // however long the instances took to start.
    crate::helpers::wait_until(
        "the cluster fetched both tokens",
        Duration::from_secs(15),
        || {
            let refreshes: usize = servers.iter().map(|s| refresh_times(s).len()).sum();
            async move { refreshes >= 2 }
        },
    )
    .await;
    let start = first_refresh(&servers);

    let clients = {
        let (bases, tally, sim) = (bases.clone(), tally.clone(), sim.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            while start.elapsed() < RUN {
                let round = bases.lock().unwrap().clone();
                for base in round {
                    for name in ["access_token", "ticket"] {
                        let url = format!("{base}/wechat/token?type={name}&secret={SECRET}");
                        let Ok(response) = client.get(&url).send().await else {
                            continue; // an instance being killed
                        };
                        if response.status() != StatusCode::OK {
                            tally.unavailable.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let body: serde_json::Value = response.json().await.unwrap();
                        let value = body[name].as_str().unwrap();
                        let valid = if name == "access_token" {
                            sim.token_valid(value).await
                        } else {
                            sim.ticket_valid(value).await
                        };
                        tally.served.fetch_add(1, Ordering::Relaxed);
                        if !valid {
                            eprintln!("{base} served an invalid {name} at {:?}", start.elapsed());
                            tally.invalid.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(30)).await; // client pacing
            }
        })
    };

    // The scenario's timeline, with refreshes at about 0, 8, 16 and 24 s. These waits
    // pace the scenario; they synchronise nothing. Kills fall mid-cycle (the lease is
    // held only while a refresh runs), the Redis restart between two refreshes, and the
    // faults just before one.
    let kill_holder = |servers: &mut Vec<Server>| {
        let holder = servers.remove(last_refresher(servers));
        bases.lock().unwrap().retain(|b| *b != holder.base);
        holder.kill_9();
    };
    tokio::time::sleep_until(start + Duration::from_secs(4)).await;
    kill_holder(&mut servers);
    tokio::time::sleep_until(start + Duration::from_secs(11)).await;
    redis.restart_empty().await;
    tokio::time::sleep_until(start + Duration::from_secs(14)).await;
    sim.fault(
        "/cgi-bin/token",
        3,
        json!({"errcode": -1, "errmsg": "system error"}),
    )
    .await;
    sim.fault("/cgi-bin/ticket/getticket", 2, json!({"http_status": 502}))
        .await;
    tokio::time::sleep_until(start + Duration::from_secs(20)).await;
    kill_holder(&mut servers);
    clients.await.unwrap();

    let served = tally.served.load(Ordering::Relaxed);
    assert!(served > 200, "only {served} tokens served");
    assert_eq!(
        tally.invalid.load(Ordering::Relaxed),
        0,
        "invalid tokens were served"
    );
    assert_eq!(
        tally.unavailable.load(Ordering::Relaxed),
        0,
        "an instance had no token to serve"
    );
    // One call per lifetime (refreshed a fifth early) plus the first, the faulted calls
    // and their retries: never one per instance.
    let per_lifetime = RUN.as_secs().div_ceil(LIFETIME - LIFETIME / 5) + 1;
    let token_calls = sim.calls("/cgi-bin/token").await;
    assert!(
        token_calls <= per_lifetime + 3 + 1,
        "{token_calls} token calls, at most {} expected",
        per_lifetime + 4
    );
    let ticket_calls = sim.calls("/cgi-bin/ticket/getticket").await;
    assert!(
        ticket_calls <= per_lifetime + 2 + 1,
        "{ticket_calls} ticket calls"
    );
    // The survivor still holds the plain key for programs that read Redis directly.
    let plain = redis.cli(&["GET", "access_token"]).await;
    assert!(
        sim.token_valid(&plain).await,
        "Redis holds an invalid token"
    );
}
