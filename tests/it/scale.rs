//! What an idle server costs does not grow with its number of tokens: Redis commands
//! per second at idle (a change log read, the registry's revision), whatever the
//! number of apps.

use std::fmt::Write;
use std::time::Duration;

use reqwest::StatusCode;
use wechat_token_server::simulator::SimConfig;

use crate::helpers::{TestApp, TestSim, config_with, wait_until};
use crate::redis_server::RedisServer;

const APPS: usize = 200;

async fn commands_processed(redis: &RedisServer) -> u64 {
    let info = redis.cli(&["INFO", "stats"]).await;
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO stats has total_commands_processed")
}

#[tokio::test]
async fn an_idle_instance_sends_redis_a_few_commands_a_second_whatever_its_token_count() {
    let apps: Vec<(String, String)> = (0..APPS)
        .map(|i| (format!("wxscale{i}"), format!("secret-{i}")))
        .collect();
    let sim = TestSim::start(SimConfig {
        apps: apps.clone(),
        ..SimConfig::default()
    })
    .await;
    let redis = RedisServer::start().await;
    let mut rest = String::new();
    for (appid, secret) in &apps {
        let _ = write!(
            rest,
            "[apps.{appid}]\nplatform = \"mp\"\nappid = \"{appid}\"\nsecret = \"{secret}\"\napi_base = \"http://{}\"\n\n",
            sim.addr
        );
    }
    let store = format!("backend = \"redis\"\nredis_url = \"{}\"", redis.url());
    let text = config_with(&store, "", &rest);
    let first = TestApp::spawn_with(sim.clone(), &text).await;
    wait_until("every token is stored", Duration::from_secs(20), || async {
        redis.cli(&["ZCARD", "wts:changes"]).await == APPS.to_string()
    })
    .await;
    first.stop().await;

    // A restart reads every token twice (the restore, and the full read when its
    // subscription is made) and every app's quota counts once (an HGETALL each);
    // after that, nothing changes.
    redis.cli(&["CONFIG", "RESETSTAT"]).await;
    let server = TestApp::start(sim.clone(), &text).await;
    wait_until(
        "the restart's reads are done",
        Duration::from_secs(20),
        || async { command_calls(&redis, "hgetall").await >= 3 * APPS as u64 },
    )
    .await;
    let (status, _) = server
        .get(&format!("/v1/tokens/{}/access_token", apps[0].0))
        .await;
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let before = commands_processed(&redis).await;
    // The measurement's own interval: two change-log reads and eleven registry checks.
    let window = Duration::from_secs(11);
    tokio::time::sleep(window).await;
    let used = commands_processed(&redis).await - before - 1; // minus our INFO
    let per_second = used as f64 / window.as_secs_f64();
    // A full read every 5 s would be 200 HGETALLs (40/s); the change log is 2 commands
    // per 5 s and the registry's revision one a second.
    assert!(
        per_second < 5.0,
        "{used} commands in {window:?} ({per_second:.1}/s) with {APPS} tokens"
    );
}

/// Calls of `command` since the last CONFIG RESETSTAT.
async fn command_calls(redis: &RedisServer, command: &str) -> u64 {
    let stats = redis.cli(&["INFO", "commandstats"]).await;
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
