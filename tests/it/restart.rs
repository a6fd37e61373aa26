//! The real binary on the embedded store: restart after `kill -9`, graceful SIGTERM,
//! secrets kept out of logs, one process per store folder.

use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{SECRET, TestSim, seed_config, wait_until};
use crate::process::{BIN, Server};
use wechat_token_server::simulator::DEMO_SECRET;

async fn get_token(client: &reqwest::Client, server: &Server, name: &str) -> (StatusCode, Value) {
    let response = client
        .get(format!(
            "{}/wechat/token?type={name}&secret={SECRET}",
            server.base
        ))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn wait_ready(client: &reqwest::Client, server: &Server) {
    let url = format!("{}/readyz", server.base);
    wait_until(
        "the server is ready",
        std::time::Duration::from_secs(15),
        || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::OK)
            }
        },
    )
    .await;
}

/// A simulator and a config file for the binary on an embedded store in a temporary
/// folder (kept alive by the returned guard).
async fn embedded_setup() -> (TestSim, tempfile::TempDir, std::path::PathBuf) {
    let sim = TestSim::start(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "backend = \"embedded\"\npath = \"{}\"",
        dir.path().join("data").display()
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, seed_config(sim.addr, &store, "")).unwrap();
    (sim, dir, config)
}

#[tokio::test]
async fn after_kill_9_a_restart_serves_the_same_tokens_without_calling_wechat() {
    let (sim, _dir, config) = embedded_setup().await;
    let client = reqwest::Client::new();

    let server = Server::start(&config).await;
    wait_ready(&client, &server).await;
    let (_, token) = get_token(&client, &server, "access_token").await;
    let (_, ticket) = get_token(&client, &server, "ticket").await;
    let calls = (
        sim.calls("/cgi-bin/token").await,
        sim.calls("/cgi-bin/ticket/getticket").await,
    );
    assert_eq!(calls, (1, 1));
    server.kill_9();

    let server = Server::start(&config).await;
    let (status, token_again) = get_token(&client, &server, "access_token").await;
    assert_eq!(status, StatusCode::OK, "served at once after restart");
    assert_eq!(token_again["access_token"], token["access_token"]);
    let (_, ticket_again) = get_token(&client, &server, "ticket").await;
    assert_eq!(ticket_again["ticket"], ticket["ticket"]);
    assert_eq!(
        (
            sim.calls("/cgi-bin/token").await,
            sim.calls("/cgi-bin/ticket/getticket").await
        ),
        calls
    );
    assert!(
        sim.token_valid(token_again["access_token"].as_str().unwrap())
            .await
    );
}

#[tokio::test]
async fn sigterm_stops_gracefully_and_logs_never_show_secrets_or_tokens() {
    let (_sim, _dir, config) = embedded_setup().await;
    let client = reqwest::Client::new();
    let server = Server::start(&config).await;
    wait_ready(&client, &server).await;
    let (_, token) = get_token(&client, &server, "access_token").await;
    let token = token["access_token"].as_str().unwrap().to_owned();
    // A forced refresh and a wrong secret, so the logs have something to say.
    let url = format!(
        "{}/wechat/token/forcerefresh?type=access_token&secret={SECRET}&stale={token}",
        server.base
    );
    assert_eq!(
        client.get(url).send().await.unwrap().status(),
        StatusCode::OK
    );

    let logs_handle = server.logs.clone();
    let status = server.terminate().await;
    assert!(status.success(), "{status:?}");
    let logs = logs_handle.lock().unwrap().clone();
    assert!(logs.contains("token refreshed"), "{logs}");
    for secret in [SECRET, DEMO_SECRET, token.as_str()] {
        assert!(!logs.contains(secret), "{secret} leaked into logs:\n{logs}");
    }
}

#[tokio::test]
async fn a_second_server_on_the_same_folder_exits_non_zero_naming_it_and_the_first_keeps_serving() {
    let (sim, dir, config) = embedded_setup().await;
    let client = reqwest::Client::new();
    let first = Server::start(&config).await;
    wait_ready(&client, &first).await;
    let (_, token) = get_token(&client, &first, "access_token").await;
    let calls = sim.calls("/cgi-bin/token").await;

    let second = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let pid = second.id().to_string();
    let waited = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || second.wait_with_output()),
    )
    .await;
    let Ok(output) = waited else {
        let _ = Command::new("kill").args(["-9", &pid]).status();
        panic!("the second server still runs after 10 s: it did not see the lock");
    };
    let output = output.unwrap().unwrap();
    assert!(!output.status.success(), "{:?}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let folder = dir.path().join("data").display().to_string();
    assert!(
        stderr.contains(&folder) && stderr.contains("another process"),
        "{stderr}"
    );

    // The first one was not disturbed, and the second never called WeChat.
    let (status, again) = get_token(&client, &first, "access_token").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["access_token"], token["access_token"]);
    let ready = client
        .get(format!("{}/readyz", first.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(sim.calls("/cgi-bin/token").await, calls);
}
