//! `/healthz`, `/readyz` turning 503 and back, errors that need a person, and the
//! `healthcheck` command.

use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use wechat_token_server::simulator::{DEMO_SECRET, SimConfig};

use crate::helpers::{
    FAST_RETRIES, MEMORY_STORE, SIM_PLACEHOLDER, TestApp, TestSim, access_token_source,
    config_with, seed_config, wait_until,
};
use crate::process::{BIN, Server};

const WHITELIST_ERRMSG: &str =
    "invalid ip 203.0.113.7 ipv6 ::ffff:203.0.113.7, not in whitelist rid: 64f0";

fn problems(body: &Value) -> String {
    body["problems"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn healthz_is_up_and_readyz_is_ready_when_every_token_is_held() {
    let app = TestApp::spawn().await;
    assert_eq!(app.page("/healthz").await.0, StatusCode::OK);
    let (status, body) = app.readiness().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"ready": true}));
}

#[tokio::test]
async fn an_ip_whitelist_error_makes_readyz_503_until_it_is_fixed_and_is_retried_slowly() {
    let sim = TestSim::start(SimConfig::default()).await;
    let app = TestApp::spawn_on(sim, "needs_person_retry_delay = 1.5").await;
    let current = app.token("access_token").await;
    app.sim
        .fault(
            "/cgi-bin/token",
            1,
            json!({"errcode": 40164, "errmsg": WHITELIST_ERRMSG}),
        )
        .await;
    let before = app.sim.calls("/cgi-bin/token").await;
    let (status, body) = app.force("access_token", Some(&current)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["errcode"], 40164);

    let (status, body) = app.readiness().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["ready"], false);
    let text = problems(&body);
    assert!(
        text.contains("default/access_token") && text.contains("40164"),
        "{text}"
    );
    assert!(
        text.contains("IP whitelist"),
        "the hint says what to fix: {text}"
    );
    // The token is still served meanwhile: WeChat did not invalidate it.
    assert_eq!(app.token("access_token").await, current);
    // Not retried at full speed: force refreshes within the delay make no call.
    for _ in 0..5 {
        let (status, body) = app.force("access_token", Some(&current)).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    }
    assert_eq!(app.sim.calls("/cgi-bin/token").await, before + 1);

    // The whitelist is fixed (the fault is used up): the slow retry notices, and the
    // instance is ready again.
    wait_until("readyz is 200 again", Duration::from_secs(10), || async {
        app.readiness().await.0 == StatusCode::OK
    })
    .await;
    assert_eq!(app.sim.calls("/cgi-bin/token").await, before + 2);
    assert_ne!(app.token("access_token").await, current);
}

#[tokio::test]
async fn an_unwritable_store_makes_readyz_503_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "backend = \"embedded\"\npath = \"{}\"",
        dir.path().display()
    );
    let sim = TestSim::start(SimConfig::default()).await;
    let app = TestApp::spawn_with(
        sim,
        &seed_config(SIM_PLACEHOLDER.parse().unwrap(), &store, ""),
    )
    .await;
    let tokens = dir.path().join("tokens");
    let moved = dir.path().join("tokens-moved");
    std::fs::rename(&tokens, &moved).unwrap();
    std::fs::write(&tokens, b"not a folder").unwrap();
    let (status, body) = app.readiness().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(problems(&body).contains("store (embedded)"), "{body}");

    std::fs::remove_file(&tokens).unwrap();
    std::fs::rename(&moved, &tokens).unwrap();
    // A save that failed meanwhile is retried within seconds.
    wait_until("ready again", Duration::from_secs(10), || async {
        app.readiness().await.0 == StatusCode::OK
    })
    .await;
}

/// A config with the access_token only (a ticket would log its dependency's errors too).
fn server_config(
    dir: &std::path::Path,
    sim: std::net::SocketAddr,
    refresh: &str,
) -> std::path::PathBuf {
    let refresh = format!("{FAST_RETRIES}\n{refresh}");
    let text = config_with(MEMORY_STORE, &refresh, &access_token_source(sim));
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn healthcheck(url: &str) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["healthcheck", "--url", url])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn a_needs_a_person_error_logs_what_to_fix_and_healthcheck_follows_readiness() {
    let sim = TestSim::start(SimConfig::default()).await;
    // The first two calls are refused: IP not whitelisted, then a wrong secret.
    sim.fault(
        "/cgi-bin/token",
        1,
        json!({"errcode": 40164, "errmsg": WHITELIST_ERRMSG}),
    )
    .await;
    sim.fault(
        "/cgi-bin/token",
        1,
        json!({"errcode": 40125, "errmsg": "invalid appsecret"}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = server_config(dir.path(), sim.addr, "needs_person_retry_delay = 2");
    let server = Server::start(&config).await;
    let ready_url = format!("{}/readyz", server.base);

    let (ok, output) = healthcheck(&ready_url);
    assert!(!ok, "healthcheck passed while not ready: {output}");
    assert!(output.contains("503"), "{output}");

    // Once the person's fixes are in (the faults are used up), the slow retries succeed.
    wait_until("the server is ready", Duration::from_secs(20), || {
        let url = ready_url.clone();
        async move {
            tokio::task::spawn_blocking(move || healthcheck(&url).0)
                .await
                .unwrap()
        }
    })
    .await;
    assert_eq!(
        sim.calls("/cgi-bin/token").await,
        3,
        "retried slowly, not at full speed"
    );

    let logs = server.logs.lock().unwrap().clone();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("needs a person"))
        .collect();
    assert_eq!(lines.len(), 2, "one line per occurrence:\n{logs}");
    assert!(
        lines[0].contains("203.0.113.7") && lines[0].contains("IP whitelist"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("40125") && lines[1].contains("AppSecret"),
        "{}",
        lines[1]
    );
    assert!(
        !logs.contains(DEMO_SECRET),
        "the app secret leaked into the logs"
    );
    drop(server);
}

#[tokio::test]
async fn healthcheck_fails_with_a_message_when_nothing_answers() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (ok, output) = healthcheck(&format!("http://{addr}/readyz"));
    assert!(!ok);
    assert!(output.contains("cannot reach"), "{output}");
}

#[tokio::test]
async fn healthcheck_with_a_base_url_checks_readyz_and_a_path_is_kept() {
    // Never ready: WeChat refuses the secret. `/` (the status page) still answers 200.
    let sim = TestSim::start(SimConfig::default()).await;
    sim.fault(
        "/cgi-bin/token",
        1000,
        json!({"errcode": 40125, "errmsg": "invalid appsecret"}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = server_config(dir.path(), sim.addr, "needs_person_retry_delay = 600");
    let server = Server::start(&config).await;
    for base in [server.base.clone(), format!("{}/", server.base)] {
        let (ok, output) = healthcheck(&base);
        assert!(!ok, "{base} passed while not ready: {output}");
        assert!(
            output.contains("/readyz") && output.contains("503"),
            "{output}"
        );
    }
    let (ok, output) = healthcheck(&format!("{}/healthz", server.base));
    assert!(ok, "a URL with a path checks that path: {output}");

    let ready_sim = TestSim::start(SimConfig::default()).await;
    let ready_config = server_config(dir.path(), ready_sim.addr, "");
    let ready = Server::start(&ready_config).await;
    let base = ready.base.clone();
    wait_until(
        "healthcheck --url BASE passes",
        Duration::from_secs(15),
        || {
            let base = base.clone();
            async move {
                tokio::task::spawn_blocking(move || healthcheck(&base).0)
                    .await
                    .unwrap()
            }
        },
    )
    .await;
}
