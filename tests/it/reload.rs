//! Reloading the config file while serving: SIGHUP to the real binary (through
//! `reload --pid-file`), `reload --url` and `POST /v1/reload`. Apps added, changed and
//! removed; unchanged apps keep their tokens without a call; clients replaced; a bad
//! file changes nothing.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use wechat_token_server::simulator::SimConfig;

use crate::helpers::{SECRET, TestSim, config_with, wait_until};
use crate::process::{BIN, Server};

const NEW_KEY: &str = "client-added-by-reload-0123";

async fn sim() -> TestSim {
    TestSim::start(SimConfig {
        apps: vec![
            ("wxshop".into(), "shop-secret".into()),
            ("wxbrand".into(), "brand-secret".into()),
            ("wxnew".into(), "new-secret".into()),
        ],
        ..SimConfig::default()
    })
    .await
}

fn app(sim: &TestSim, name: &str, appid: &str, secret: &str) -> String {
    format!(
        "[apps.{name}]\nplatform = \"mp\"\nappid = \"{appid}\"\nsecret = \"{secret}\"\napi_base = \"http://{}\"\n\n",
        sim.addr
    )
}

async fn token(client: &reqwest::Client, base: &str, app: &str, key: &str) -> (StatusCode, Value) {
    let response = client
        .get(format!("{base}/v1/tokens/{app}/access_token"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

fn reload_cli(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("reload")
        .args(args)
        .env_remove("WTS_REQUEST_SECRET")
        .output()
        .unwrap()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn sighup_adds_changes_and_removes_apps_and_keeps_the_tokens_of_the_others() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("path = \"{}\"", dir.path().join("data").display());
    let config = dir.path().join("config.toml");
    let pid = dir.path().join("server.pid");
    let apps =
        app(&sim, "shop", "wxshop", "shop-secret") + &app(&sim, "brand", "wxbrand", "brand-secret");
    write(&config, &config_with(&store, "", &apps));
    let server = Server::start_with(&config, &["--pid-file", pid.to_str().unwrap()]).await;
    let client = reqwest::Client::new();
    let base = server.base.clone();
    for name in ["shop", "brand"] {
        wait_until(
            &format!("{name} is served"),
            Duration::from_secs(10),
            || async { token(&client, &base, name, SECRET).await.0 == StatusCode::OK },
        )
        .await;
    }
    let shop = token(&client, &base, "shop", SECRET).await.1["value"].clone();
    let calls = sim.calls("/cgi-bin/token").await;

    // brand removed, `fresh` added, shop unchanged, a client added.
    let apps =
        app(&sim, "shop", "wxshop", "shop-secret") + &app(&sim, "fresh", "wxnew", "new-secret");
    let client_table =
        format!("[clients.added]\nkey = \"{NEW_KEY}\"\napps = [\"fresh\"]\ntokens = \"*\"\n");
    write(
        &config,
        &config_with(&store, "", &(apps.clone() + &client_table)),
    );
    let sent = reload_cli(&["--pid-file", pid.to_str().unwrap()]);
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    wait_until(
        "the added app is served to the added client",
        Duration::from_secs(10),
        || async { token(&client, &base, "fresh", NEW_KEY).await.0 == StatusCode::OK },
    )
    .await;
    assert_eq!(
        token(&client, &base, "brand", SECRET).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        token(&client, &base, "shop", SECRET).await.1["value"],
        shop,
        "unchanged app untouched"
    );
    assert_eq!(
        sim.calls("/cgi-bin/token").await,
        calls + 1,
        "one call: the added app's"
    );
    assert!(
        !dir.path()
            .join("data/tokens/brand/access_token.json")
            .exists(),
        "a removed app's tokens leave the store"
    );

    // A broken file: logged, and the running config kept whole.
    write(
        &config,
        &config_with(
            &store,
            "",
            &(apps.replace("platform = \"mp\"", "platform = \"pc\"") + &client_table),
        ),
    );
    let sent = reload_cli(&["--pid-file", pid.to_str().unwrap()]);
    assert!(sent.status.success());
    let logs = server.logs.clone();
    wait_until("the refusal is logged", Duration::from_secs(10), || {
        let logs = logs.clone();
        async move { logs.lock().unwrap().contains("config not reloaded") }
    })
    .await;
    assert!(
        server.logs.lock().unwrap().contains("platform"),
        "the log names the key"
    );
    assert_eq!(
        token(&client, &base, "fresh", NEW_KEY).await.0,
        StatusCode::OK
    );
    assert_eq!(token(&client, &base, "shop", SECRET).await.1["value"], shop);

    // reload --url answers what went wrong; a pid file that names no process fails.
    let url = reload_cli(&["--url", &base, "--secret", SECRET]);
    assert!(!url.status.success());
    let stderr = String::from_utf8_lossy(&url.stderr);
    assert!(
        stderr.contains("400") && stderr.contains("platform"),
        "{stderr}"
    );
    let no_secret = reload_cli(&["--url", &base]);
    assert!(!no_secret.status.success());
    assert!(String::from_utf8_lossy(&no_secret.stderr).contains("--secret"));
    drop(server); // SIGKILL: the pid file stays behind
    write(&pid, "999999999\n");
    assert!(
        !reload_cli(&["--pid-file", pid.to_str().unwrap()])
            .status
            .success()
    );
}

#[tokio::test]
async fn post_reload_answers_what_changed_and_what_needs_a_restart() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let first = config_with(
        "backend = \"memory\"",
        "",
        &app(&sim, "shop", "wxshop", "shop-secret"),
    );
    write(&path, &first);
    let config = wechat_token_server::config::Config::load(&path).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = wechat_token_server::app::App::build(config, listener)
        .await
        .unwrap()
        .with_config_file(path.clone());
    let base = format!("http://{}", server.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(server.run(stop.clone()));
    let client = reqwest::Client::new();
    wait_until("shop is served", Duration::from_secs(10), || async {
        token(&client, &base, "shop", SECRET).await.0 == StatusCode::OK
    })
    .await;
    let shop = token(&client, &base, "shop", SECRET).await.1["value"].clone();

    // Another account for shop, and slower retries.
    let changed = config_with(
        "backend = \"memory\"",
        "min_retry_delay = 2.0",
        &app(&sim, "shop", "wxbrand", "brand-secret"),
    );
    write(&path, &changed);
    let response = client
        .post(format!("{base}/v1/reload"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let summary: Value = response.json().await.unwrap();
    assert_eq!(
        summary["apps_changed"],
        serde_json::json!(["shop"]),
        "{summary}"
    );
    assert_eq!(
        summary["restart_needed"],
        serde_json::json!(["refresh"]),
        "{summary}"
    );
    wait_until(
        "the changed app's new token is served",
        Duration::from_secs(10),
        || async {
            let (status, body) = token(&client, &base, "shop", SECRET).await;
            status == StatusCode::OK && body["value"] != shop
        },
    )
    .await;
    let new = token(&client, &base, "shop", SECRET).await.1["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(sim.token_valid(&new).await);

    // Only the request secret or admin clients may reload.
    let response = client
        .post(format!("{base}/v1/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    stop.cancel();
    task.await.unwrap().unwrap();
}
