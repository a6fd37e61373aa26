//! Highly available Redis with real processes: three instances of the binary on a
//! Sentinel-monitored master whose newest save is lost in a failover, and a cluster of
//! instances on a three-master Redis Cluster.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use wechat_token_server::simulator::SimConfig;

use crate::helpers::{SECRET, TestApp, TestSim, config_with, seed_config, wait_until};
use crate::process::Server;
use crate::redis_server::{RedisCluster, RedisServer, SentinelSet};

/// The version of the stored access_token on `server`, if it answers and holds one.
async fn stored_version(server: &RedisServer) -> Option<u64> {
    server
        .cli(&["HGET", "wts:meta:default:access_token", "version"])
        .await
        .parse()
        .ok()
}

/// What the clients saw, per instance: the distinct tokens in the order first served.
#[derive(Default)]
struct Seen {
    served: AtomicU64,
    invalid: AtomicU64,
    unavailable: AtomicU64,
    /// A token served again after a newer one had been served by that instance.
    went_back: AtomicU64,
    order: Mutex<HashMap<String, Vec<String>>>,
}

#[tokio::test]
async fn a_sentinel_failover_that_loses_a_save_and_a_sentinel_never_serves_an_older_or_invalid_token()
 {
    let sim = TestSim::start(SimConfig {
        expires_in: Duration::from_secs(6),
        grace: Duration::from_secs(8),
        ..SimConfig::default()
    })
    .await;
    let mut set = SentinelSet::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sentinel.toml");
    let store = format!("backend = \"redis\"\nredis_url = \"{}\"", set.url());
    std::fs::write(&config, seed_config(sim.addr, &store, "")).unwrap();
    let servers = join_all((0..3).map(|_| Server::start(&config))).await;
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();

    let probe = reqwest::Client::new();
    for base in &bases {
        wait_until("the instance is ready", Duration::from_secs(10), || async {
            let ready = probe.get(format!("{base}/readyz")).send().await;
            ready.is_ok_and(|r| r.status() == StatusCode::OK)
        })
        .await;
    }

    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = {
        let (seen, stop, sim, bases) = (seen.clone(), stop.clone(), sim.clone(), bases.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                for base in &bases {
                    let url = format!("{base}/wechat/token?type=access_token&secret={SECRET}");
                    let Ok(response) = client.get(&url).send().await else {
                        continue;
                    };
                    if response.status() != StatusCode::OK {
                        eprintln!("{base} answered {}", response.status());
                        seen.unavailable.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let body: serde_json::Value = response.json().await.unwrap();
                    let value = body["access_token"].as_str().unwrap().to_owned();
                    seen.served.fetch_add(1, Ordering::Relaxed);
                    if !sim.token_valid(&value).await {
                        eprintln!("{base} served an invalid token");
                        seen.invalid.fetch_add(1, Ordering::Relaxed);
                    }
                    let mut order = seen.order.lock().unwrap();
                    let tokens = order.entry(base.clone()).or_default();
                    match tokens.iter().position(|t| *t == value) {
                        None => tokens.push(value),
                        Some(i) if i + 1 < tokens.len() => {
                            eprintln!("{base} went back to an older token");
                            seen.went_back.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(_) => {}
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await; // client pacing
            }
        })
    };

    // One refresh replicated, then the replica stops taking the replication stream:
    // the next save is acknowledged by the master only, then the master is killed.
    wait_until(
        "a save reached the replica",
        Duration::from_secs(15),
        || async {
            let on_master = stored_version(&set.master).await;
            on_master.is_some() && on_master == stored_version(&set.replica).await
        },
    )
    .await;
    let before = stored_version(&set.master).await.unwrap();
    // Stopped, and cut off by the master: what the master had sent before is in the
    // replica's socket (it reads it on SIGCONT), nothing after.
    set.replica.signal("-STOP");
    set.master.cli(&["CLIENT", "KILL", "TYPE", "replica"]).await;
    wait_until(
        "a newer save reached the master only",
        Duration::from_secs(10),
        || async { stored_version(&set.master).await > Some(before) },
    )
    .await;
    let lost = stored_version(&set.master).await.unwrap();
    // The first sentinel of the URL goes too: lookups go on with the other two, which
    // are still a majority for the failover.
    set.sentinels[0].kill();
    set.master.kill();
    set.replica.signal("-CONT");
    assert_eq!(
        stored_version(&set.replica).await,
        Some(before),
        "the replica lacks the newest save"
    );

    // The sentinels promote the replica; the instances follow it and write back the
    // newest token they hold, which the promoted master had lost.
    let replica_port = set.replica.port;
    wait_until(
        "the sentinels promoted the replica",
        Duration::from_secs(15),
        || async { set.master_port().await == Some(replica_port) },
    )
    .await;
    let promoted = tokio::time::Instant::now();
    wait_until(
        "a save reached the promoted master",
        Duration::from_secs(10),
        || async { stored_version(&set.replica).await >= Some(lost) },
    )
    .await;
    eprintln!(
        "promoted master written {:?} after its promotion",
        promoted.elapsed()
    );
    // And the refreshes go on there.
    wait_until(
        "a refresh saved on the promoted master",
        Duration::from_secs(12),
        || async { stored_version(&set.replica).await > Some(lost) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    clients.await.unwrap();

    let served = seen.served.load(Ordering::Relaxed);
    assert!(served > 100, "only {served} tokens served");
    assert_eq!(
        seen.invalid.load(Ordering::Relaxed),
        0,
        "invalid tokens served"
    );
    assert_eq!(
        seen.went_back.load(Ordering::Relaxed),
        0,
        "a token went back"
    );
    assert_eq!(
        seen.unavailable.load(Ordering::Relaxed),
        0,
        "an instance had no token to serve"
    );
    // Every instance moved on to the token refreshed on the promoted master.
    let newest = set
        .replica
        .cli(&["HGET", "wts:meta:default:access_token", "value"])
        .await;
    let client = reqwest::Client::new();
    for base in &bases {
        wait_until(
            "every instance serves the newest token",
            Duration::from_secs(5),
            || {
                let (client, newest) = (client.clone(), newest.clone());
                let url = format!("{base}/wechat/token?type=access_token&secret={SECRET}");
                async move {
                    let body: serde_json::Value =
                        client.get(&url).send().await.unwrap().json().await.unwrap();
                    body["access_token"] == newest.as_str()
                }
            },
        )
        .await;
    }
    drop(servers);
}

const ADMIN_KEY: &str = "admin-client-key-0123456789";
/// A 32-byte key as 64 hex digits (registry records are sealed with it).
const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// The token `app`/`name` that `server` serves via `/v1`, if any.
async fn v1_token(server: &TestApp, app: &str, name: &str) -> Option<String> {
    let response = server
        .client
        .get(format!("{}/v1/tokens/{app}/{name}", server.base))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    if response.status() != StatusCode::OK {
        return None;
    }
    let body: serde_json::Value = response.json().await.unwrap();
    body["value"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn a_cluster_of_instances_on_a_redis_cluster_shares_one_token_per_app() {
    let cluster = RedisCluster::start().await;
    let sim = TestSim::start(SimConfig {
        apps: vec![
            ("wxshop".into(), "shop-secret".into()),
            ("wxbrand".into(), "brand-secret".into()),
        ],
        // Short-lived, so that the run sees a refresh follow through the cluster.
        expires_in: Duration::from_secs(4),
        grace: Duration::from_secs(8),
        ..SimConfig::default()
    })
    .await;
    let store = format!(
        "backend = \"redis\"\nredis_url = \"{}\"\nencryption_key = \"{KEY}\"",
        cluster.url()
    );
    let text = config_with(
        &store,
        "",
        &format!(
            r#"
[apps.shop]
platform = "mp"
appid = "wxshop"
secret = "shop-secret"
tickets = ["jsapi"]
api_base = "http://{sim}"

[clients.ops]
key = "{ADMIN_KEY}"
apps = "*"
tokens = "*"
admin = true
"#,
            sim = sim.addr
        ),
    );
    let servers = join_all((0..3).map(|_| TestApp::spawn_with(sim.clone(), &text))).await;

    // One token per credential cluster-wide, the same on every instance, valid.
    for name in ["access_token", "jsapi_ticket"] {
        let mut values = Vec::new();
        for server in &servers {
            wait_until("the token is served", Duration::from_secs(10), || async {
                v1_token(server, "shop", name).await.is_some()
            })
            .await;
            values.push(v1_token(server, "shop", name).await.unwrap());
        }
        assert!(values.iter().all(|v| *v == values[0]), "{name}: {values:?}");
    }
    let token = v1_token(&servers[0], "shop", "access_token").await.unwrap();
    assert!(sim.token_valid(&token).await);
    assert_eq!(
        sim.calls("/cgi-bin/token").await,
        1,
        "one fetch, not one per instance"
    );
    // Stored under the token's hash tag, without the seed's plain key.
    assert_eq!(
        cluster
            .cli(&["HGET", "wts:meta:{shop:access_token}", "value"])
            .await,
        token
    );
    assert_eq!(cluster.cli(&["EXISTS", "shop:access_token"]).await, "0");

    // The next refresh, made by one instance, reaches the others through the
    // cluster's pub/sub (or its change log): everyone serves the new token.
    wait_until(
        "the token was refreshed",
        Duration::from_secs(8),
        || async {
            v1_token(&servers[0], "shop", "access_token")
                .await
                .as_deref()
                != Some(token.as_str())
        },
    )
    .await;
    let fresh = v1_token(&servers[0], "shop", "access_token").await.unwrap();
    for server in &servers {
        wait_until(
            "every instance serves the refreshed token",
            Duration::from_secs(3),
            || async {
                v1_token(server, "shop", "access_token").await.as_deref() == Some(fresh.as_str())
            },
        )
        .await;
    }
    assert!(sim.token_valid(&fresh).await);
    assert_eq!(
        sim.calls("/cgi-bin/token").await,
        2,
        "one fetch per lifetime"
    );

    // A registry app registered on one instance is served by all, the same token.
    let response = servers[1]
        .client
        .put(format!("{}/v1/apps/brand", servers[1].base))
        .bearer_auth(SECRET)
        .json(&json!({
            "platform": "mp",
            "appid": "wxbrand",
            "secret": "brand-secret",
            "api_base": format!("http://{}", sim.addr),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let mut values = Vec::new();
    for server in &servers {
        wait_until(
            "the registry app is served",
            Duration::from_secs(10),
            || async { v1_token(server, "brand", "access_token").await.is_some() },
        )
        .await;
        values.push(v1_token(server, "brand", "access_token").await.unwrap());
    }
    assert!(values.iter().all(|v| *v == values[0]), "{values:?}");
    assert!(sim.token_valid(&values[0]).await);
    assert_eq!(cluster.cli(&["HLEN", "{wts:apps}"]).await, "1");
}
