//! HTTPS (`server.tls_cert` / `server.tls_key`) with throwaway certificates made by
//! `openssl` for each test: the real binary serves tokens over TLS to a client that
//! trusts the test CA, and a reload swaps the certificate for new connections while a
//! bad file keeps the old one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wechat_token_server::app::App;
use wechat_token_server::config::{Config, TlsFiles};

use crate::helpers::{MEMORY_STORE, SECRET, TestSim, access_token_source, config_with, wait_until};
use crate::process::{BIN, Server};

/// A test CA and a certificate for `localhost` / 127.0.0.1 signed by it.
struct Certs {
    ca: reqwest::Certificate,
    files: TlsFiles,
}

impl Certs {
    /// Files named `NAME-*.pem` in `dir`.
    fn new(dir: &Path, name: &str) -> Self {
        let (ca, cert, key) = crate::certs::make_certs(dir, name);
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
        Self {
            ca,
            files: TlsFiles { cert, key },
        }
    }
}

/// A client that trusts `ca` only, with no connection pool: every request is a new
/// TLS handshake, so it sees the server's current certificate.
fn client(ca: &reqwest::Certificate) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca.clone())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn tls_config(sim: &TestSim, files: &TlsFiles) -> String {
    config_with(MEMORY_STORE, "", &access_token_source(sim.addr)).replace(
        "[server]\n",
        &format!(
            "[server]\ntls_cert = {:?}\ntls_key = {:?}\n",
            files.cert.display().to_string(),
            files.key.display().to_string()
        ),
    )
}

#[tokio::test]
async fn the_binary_serves_https_to_a_client_trusting_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path(), "a");
    let sim = TestSim::start(Default::default()).await;
    let path = dir.path().join("config.toml");
    std::fs::write(&path, tls_config(&sim, &certs.files)).unwrap();
    let server = Server::start(&path).await;
    assert!(
        server.logs.lock().unwrap().contains(r#""scheme":"https""#),
        "{}",
        server.logs.lock().unwrap()
    );
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    let url = format!("https://localhost:{port}/wechat/token?type=access_token&secret={SECRET}");
    let trusting = client(&certs.ca);
    wait_until("a token over HTTPS", Duration::from_secs(10), || {
        let (trusting, url) = (trusting.clone(), url.clone());
        async move {
            trusting
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        }
    })
    .await;
    let body: serde_json::Value = trusting
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        sim.token_valid(body["access_token"].as_str().unwrap())
            .await,
        "{body}"
    );
    // By IP too (the certificate names 127.0.0.1).
    let by_ip = format!("https://127.0.0.1:{port}/healthz");
    assert_eq!(
        trusting.get(&by_ip).send().await.unwrap().status(),
        StatusCode::OK
    );

    // Plain HTTP gets no answer; a client that does not trust the CA refuses.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    let untrusting = reqwest::Client::new().get(&by_ip).send().await;
    assert!(untrusting.is_err(), "{untrusting:?}");
}

#[test]
fn check_config_reads_the_certificate_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let a = Certs::new(dir.path(), "a");
    let b = Certs::new(dir.path(), "b");
    let run = |cert: &Path, key: &Path| {
        let files = TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
        };
        let text = config_with(
            MEMORY_STORE,
            "",
            &access_token_source("127.0.0.1:9".parse().unwrap()),
        );
        let text = text.replace(
            "[server]\n",
            &format!(
                "[server]\ntls_cert = {:?}\ntls_key = {:?}\n",
                files.cert.display().to_string(),
                files.key.display().to_string()
            ),
        );
        let path = dir.path().join("check.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = run(&a.files.cert, &a.files.key);
    assert!(ok, "{stderr}");
    let missing: PathBuf = dir.path().join("nope.pem");
    let cases = [
        (run(&missing, &a.files.key), "server.tls_cert: cannot read"),
        (run(&a.files.cert, &missing), "server.tls_key: cannot read"),
        (run(&a.files.key, &a.files.key), "holds no PEM certificate"),
        (
            run(&a.files.cert, &a.files.cert),
            "holds no PEM private key",
        ),
        // A key that is not the certificate's.
        (
            run(&a.files.cert, &b.files.key),
            "server.tls_cert / server.tls_key",
        ),
    ];
    for ((ok, stderr), needle) in cases {
        assert!(!ok && stderr.contains(needle), "{needle}: {stderr}");
    }
}

#[tokio::test]
async fn a_reload_swaps_the_certificate_and_a_bad_file_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let old = Certs::new(dir.path(), "old");
    let new = Certs::new(dir.path(), "new");
    let sim = TestSim::start(Default::default()).await;
    let config = Config::parse(&tls_config(&sim, &old.files), &|_| None).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = App::build(config, listener).await.unwrap();
    let url = format!(
        "https://localhost:{}/healthz",
        app.local_addr().unwrap().port()
    );
    let tls = app.tls().expect("TLS is configured");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run(shutdown.clone()));
    let (trusts_old, trusts_new) = (client(&old.ca), client(&new.ca));
    let ok = |client: &reqwest::Client| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    };
    assert!(ok(&trusts_old).await && !ok(&trusts_new).await);

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key").unwrap();
    let bad = TlsFiles {
        cert: new.files.cert.clone(),
        key: garbage,
    };
    let error = tls.reload(&bad).unwrap_err().to_string();
    assert!(error.contains("server.tls_key"), "{error}");
    let mismatched = TlsFiles {
        cert: new.files.cert.clone(),
        key: old.files.key.clone(),
    };
    assert!(tls.reload(&mismatched).is_err());
    assert!(
        ok(&trusts_old).await,
        "a failed reload keeps the old certificate"
    );

    tls.reload(&new.files).unwrap();
    assert!(
        ok(&trusts_new).await,
        "new connections get the new certificate"
    );
    assert!(!ok(&trusts_old).await);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn sighup_picks_up_a_renewed_certificate_and_a_broken_one_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let (old, renewed) = (Certs::new(dir.path(), "old"), Certs::new(dir.path(), "new"));
    // The files the server reads, renewed in place as certbot does.
    let live = TlsFiles {
        cert: dir.path().join("live-cert.pem"),
        key: dir.path().join("live-key.pem"),
    };
    let install = |certs: &Certs| {
        std::fs::copy(&certs.files.cert, &live.cert).unwrap();
        std::fs::copy(&certs.files.key, &live.key).unwrap();
    };
    install(&old);
    let sim = TestSim::start(Default::default()).await;
    let path = dir.path().join("config.toml");
    std::fs::write(&path, tls_config(&sim, &live)).unwrap();
    let pid = dir.path().join("pid");
    let server = Server::start_with(&path, &["--pid-file", pid.to_str().unwrap()]).await;
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    let url = format!("https://127.0.0.1:{port}/healthz");
    let (trusts_old, trusts_new) = (client(&old.ca), client(&renewed.ca));
    assert!(trusts_old.get(&url).send().await.is_ok());
    assert!(trusts_new.get(&url).send().await.is_err());

    let hup = || {
        let sent = std::process::Command::new(crate::process::BIN)
            .args(["reload", "--pid-file", pid.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            sent.status.success(),
            "{}",
            String::from_utf8_lossy(&sent.stderr)
        );
    };
    install(&renewed);
    hup();
    wait_until(
        "new connections get the renewed certificate",
        Duration::from_secs(10),
        || {
            let (client, url) = (trusts_new.clone(), url.clone());
            async move { client.get(&url).send().await.is_ok() }
        },
    )
    .await;

    // A broken file: the reload is refused, the renewed certificate stays.
    std::fs::write(&live.cert, "not a certificate").unwrap();
    hup();
    let logs = server.logs.clone();
    wait_until(
        "the refused reload is logged",
        Duration::from_secs(10),
        || {
            let logs = logs.clone();
            async move { logs.lock().unwrap().contains("config not reloaded") }
        },
    )
    .await;
    assert!(trusts_new.get(&url).send().await.is_ok());
    assert!(trusts_old.get(&url).send().await.is_err());
}
