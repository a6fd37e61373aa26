//! Real SDKs from their registries, pointed at the server with the README's lines
//! ("Point your SDK at us"): wechatpy (PyPI) and wechat-api (npm). Each gets its token
//! from the facade (no WeChat token call) and makes ordinary calls through the gateway.
//! scripts/test.sh installs them under target/; a missing one is installed here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::apps::{self, four_apps};
use crate::helpers::wait_until;
use crate::process::Server;

fn target() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target")
}

/// The venv with wechatpy, made when missing.
fn python() -> PathBuf {
    let venv = target().join("sdk-venv");
    let python = venv.join("bin/python");
    let has = Command::new(&python)
        .args(["-c", "import wechatpy, cryptography"])
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        let ok = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .unwrap()
            .success()
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "wechatpy[cryptography]"])
                .status()
                .unwrap()
                .success();
        assert!(
            ok,
            "cannot install wechatpy from PyPI into {}",
            venv.display()
        );
    }
    python
}

/// node_modules with wechat-api, made when missing.
fn node_modules() -> PathBuf {
    let dir = target().join("sdk-node");
    let modules = dir.join("node_modules");
    if !modules.join("wechat-api").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("npm")
            .args([
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "wechat-api",
            ])
            .current_dir(&dir)
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "cannot install wechat-api from npm into {}",
            dir.display()
        );
    }
    modules
}

async fn server() -> (crate::helpers::TestSim, Server, tempfile::TempDir) {
    let sim = apps::sim().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, apps::config(&four_apps(sim.addr))).unwrap();
    let server = Server::start(&path).await;
    wait_until(
        "the shop's tickets are fetched",
        Duration::from_secs(10),
        || async { sim.calls("/cgi-bin/ticket/getticket").await >= 3 },
    )
    .await;
    (sim, server, dir)
}

async fn run(mut command: Command) -> Value {
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "the SDK script failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(name)
}

#[tokio::test]
async fn wechatpy_gets_our_token_and_calls_wechat_through_the_gateway() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let (sim, server, _dir) = server().await;
    let token_calls = sim.calls("/cgi-bin/token").await;
    let mut command = Command::new(python);
    command
        .arg(script("wechatpy_check.py"))
        .args([&server.base, "wx_shop", "shop_secret"]);
    let out = run(command).await;
    assert!(
        sim.token_valid(out["access_token"].as_str().unwrap()).await,
        "{out}"
    );
    assert!(out["menu"]["menu"]["button"].is_array(), "{out}");
    assert!(
        sim.ticket_valid(out["ticket"].as_str().expect("the jsapi ticket"))
            .await,
        "{out}"
    );
    assert_eq!(out["download_equal"], true, "{out}");
    assert_eq!(
        sim.calls("/cgi-bin/token").await,
        token_calls,
        "the SDK caused no WeChat token call"
    );
    assert_eq!(sim.calls("/cgi-bin/menu/get").await, 1);
    assert_eq!(sim.calls("/cgi-bin/media/upload").await, 1);
}

#[tokio::test]
async fn node_wechat_api_gets_our_token_and_calls_wechat_through_the_gateway() {
    let modules = tokio::task::spawn_blocking(node_modules).await.unwrap();
    let (sim, server, _dir) = server().await;
    let token_calls = sim.calls("/cgi-bin/token").await;
    let mut command = Command::new("node");
    command
        .arg(script("wechat_api_check.js"))
        .args([&server.base, "wx_shop", "shop_secret"])
        .env("SDK_NODE_MODULES", modules);
    let out = run(command).await;
    assert!(
        sim.token_valid(out["access_token"].as_str().unwrap()).await,
        "{out}"
    );
    assert!(out["menu"]["menu"]["button"].is_array(), "{out}");
    assert!(
        sim.ticket_valid(out["ticket"].as_str().unwrap()).await,
        "{out}"
    );
    assert_eq!(
        sim.calls("/cgi-bin/token").await,
        token_calls,
        "the SDK caused no WeChat token call"
    );
    assert_eq!(sim.calls("/cgi-bin/menu/get").await, 1);
}
