//! The command line: check-config, --help, demo.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::BIN;

fn check_config(text: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .env_remove("WTS_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const VALID: &str = r#"
[server]
request_secret = "${T_REQ_SECRET}"
[sources.access_token]
url = "https://api.weixin.qq.com/cgi-bin/token"
args = { grant_type = "client_credential", appid = "wxabc", secret = "${T_APP_SECRET}" }
"#;

#[test]
fn check_config_prints_the_resolved_config_with_secrets_masked() {
    let (ok, stdout, stderr) = check_config(
        VALID,
        &[
            ("T_REQ_SECRET", "req-s3cret-0123456789"),
            ("T_APP_SECRET", "app-s3cret"),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("wxabc") && stdout.contains("***"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("req-s3cret") && !stdout.contains("app-s3cret"),
        "{stdout}"
    );
    assert!(!stderr.contains("s3cret"));
}

#[test]
fn check_config_names_the_bad_key_and_fails() {
    let env = [
        ("T_REQ_SECRET", "req-secret-0123456789"),
        ("T_APP_SECRET", "y"),
    ];
    let cases = [
        (VALID.replace("args =", "argz ="), "argz"),
        (
            VALID.replace("[server]", "[server]\nbind = \"localhost\""),
            "server.bind",
        ),
        (
            format!("{VALID}\n[store]\nbackend = \"sqlite\""),
            "store.backend",
        ),
        (
            VALID.replace("${T_APP_SECRET}", "${T_UNSET_VAR}"),
            "T_UNSET_VAR",
        ),
        (
            format!("{VALID}\n[refresh]\ntoken_expire_time = \"soon\""),
            "refresh.token_expire_time",
        ),
        ("[server\n".to_owned(), "line 1"),
        (
            VALID.replace("${T_REQ_SECRET}", "fifteen-chars!!"),
            "server.request_secret: must be at least 16 characters",
        ),
        (
            format!("{VALID}\n[store]\nredis_url = \"http://x\""),
            "store.redis_url: scheme \"http\" is not a Redis scheme; supported: redis://, rediss://",
        ),
        (
            format!("{VALID}\n[store]\nredis_url = \"redis-sentinel://h:26379\""),
            "store.redis_url: redis-sentinel:// needs the master's name after '#'",
        ),
        (
            format!(
                "{VALID}\n[store]\nredis_url = \"redis://h:6379\"\nredis_ca = \"/nonexistent.pem\""
            ),
            "store.redis_ca: applies to rediss:// URLs only",
        ),
        (
            format!(
                "{VALID}\n[store]\nredis_url = \"rediss://h:6380\"\nredis_ca = \"/nonexistent.pem\""
            ),
            "store.redis_ca: cannot read /nonexistent.pem",
        ),
        (
            format!("{VALID}\n[store]\npath = \"\""),
            "store.path: must not be empty",
        ),
        (
            VALID.replace("[server]", "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]"),
            "server.trusted_proxies",
        ),
        (
            VALID.replace("[server]", "[server]\ntls_cert = \"/etc/cert.pem\""),
            "server.tls_key: must be set with server.tls_cert",
        ),
    ];
    for (text, needle) in cases {
        let (ok, _, stderr) = check_config(&text, &env);
        assert!(!ok, "accepted a bad config: {needle}");
        assert!(
            stderr.contains(needle),
            "error does not name {needle}: {stderr}"
        );
    }
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let out = Command::new(BIN)
        .args(["serve", "--config", "/nonexistent/wts.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/wts.toml"), "{stderr}");
    // The OS error once, and not called an invalid config.
    assert_eq!(stderr.matches("(os error 2)").count(), 1, "{stderr}");
    assert_eq!(
        stderr.matches("/nonexistent/wts.toml").count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains("invalid config"), "{stderr}");
}

#[test]
fn check_config_into_a_closed_pipe_exits_cleanly() {
    // `check-config | head -1`: the reader is gone before the config is printed. The
    // read end is closed before the process starts, so every write fails with EPIPE.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, VALID).unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .env("T_REQ_SECRET", "req-s3cret-0123456789")
        .env("T_APP_SECRET", "app-s3cret")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn help_documents_every_command_and_flag() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for command in ["serve", "demo", "simulate", "check-config"] {
        assert!(text.contains(command), "{text}");
    }
    let out = Command::new(BIN)
        .args(["simulate", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--bind",
        "--app",
        "--corp",
        "--expires-in",
        "--grace",
        "--daily-quota",
        "wx_demo_appid",
    ] {
        assert!(text.contains(flag), "simulate --help lacks {flag}: {text}");
    }
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
}

#[tokio::test]
async fn demo_serves_a_valid_token_with_no_setup() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["demo", "--port", "0"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let (mut url, mut tx) = (None, Some(tx));
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(u) = line.trim().strip_prefix("access_token:") {
                url = Some(u.trim().to_owned());
            }
            if let Some(force) = line.trim().strip_prefix("force refresh:")
                && let (Some(url), Some(tx)) = (url.take(), tx.take())
            {
                let _ = tx.send((url, force.trim().to_owned()));
            }
        }
    });
    let (url, force_url) = tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .unwrap()
        .unwrap();
    assert!(
        force_url.ends_with("&stale=REJECTED_TOKEN"),
        "the printed force refresh reports a token: {force_url}"
    );
    let client = reqwest::Client::new();
    let body = std::sync::Arc::new(std::sync::Mutex::new(serde_json::Value::Null));
    crate::helpers::wait_until("the demo serves a token", Duration::from_secs(10), || {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        async move {
            match client.get(&url).send().await {
                Ok(r) if r.status() == reqwest::StatusCode::OK => {
                    *body.lock().unwrap() = r.json().await.unwrap();
                    true
                }
                _ => false,
            }
        }
    })
    .await;
    let body = body.lock().unwrap().clone();
    let token = body["access_token"].as_str().unwrap_or_default().to_owned();
    assert!(token.len() > 20, "{body}");
    // The printed force refresh, with the token filled in, gives a new token each time
    // (no 30 s rate limit as without stale=).
    let mut stale = token;
    for _ in 0..2 {
        let url = force_url.replace("REJECTED_TOKEN", &stale);
        let fresh: serde_json::Value = client.get(&url).send().await.unwrap().json().await.unwrap();
        let fresh = fresh["access_token"].as_str().unwrap().to_owned();
        assert_ne!(fresh, stale, "force refresh gave the reported token back");
        stale = fresh;
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
