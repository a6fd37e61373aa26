//! `deploy/` and the `Dockerfile`, checked with the tools that read them: promtool for
//! the alert rules (syntax, unit tests, and that every metric they use is exported),
//! systemd-analyze for the unit, the real binary's `check-config` for the compose
//! config with the compose file's environment. Docker cannot run here (README), so the
//! Dockerfile is checked against Cargo.toml and the binary's commands.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::helpers::TestApp;
use crate::process::BIN;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs `program`; fails the test (never skips it) when it is not installed.
fn run(program: &str, args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} cannot run ({e}): run scripts/test.sh, which installs it")
        });
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = Path::new(ROOT).join("deploy/prometheus");
    let (ok, out) = run("promtool", &["check", "rules", "alerts.yml"], &dir);
    assert!(ok && out.contains("SUCCESS"), "{out}");
    let (ok, out) = run("promtool", &["test", "rules", "alerts_test.yml"], &dir);
    assert!(ok && out.contains("SUCCESS"), "{out}");
}

/// Metric names (`wts_...`) in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("wts_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

#[tokio::test]
async fn every_metric_the_alert_rules_use_is_exported() {
    let app = TestApp::spawn().await;
    let exported = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples: BTreeSet<String> = exported
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    let used = metric_names(&read("deploy/prometheus/alerts.yml"));
    assert!(used.len() >= 8, "{used:?}");
    for name in &used {
        assert!(
            samples.contains(name),
            "alerts.yml uses {name}, which /metrics lacks"
        );
    }
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    // The unit names /usr/local/bin/wechat-token-server, which verify requires to
    // exist: the test binary stands in for it.
    let unit = read("deploy/systemd/wechat-token-server.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/wechat-token-server serve"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wechat-token-server.service"),
        unit.replace("/usr/local/bin/wechat-token-server", BIN),
    )
    .unwrap();
    let (ok, out) = run(
        "systemd-analyze",
        &["verify", "wechat-token-server.service"],
        dir.path(),
    );
    // Unknown keys and bad values are warnings with exit 0: any output is a finding.
    assert!(ok && out.trim().is_empty(), "{out}");
}

#[test]
fn the_dockerfile_builds_with_the_projects_rust_and_checks_readyz_as_non_root() {
    let dockerfile = read("Dockerfile");
    let manifest = read("Cargo.toml");
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|rest| rest.split('"').next())
        .expect("Cargo.toml has a rust-version");
    assert!(
        dockerfile.contains(&format!("FROM rust:{rust_version}-bookworm AS build")),
        "the build stage uses rust {rust_version}"
    );
    assert!(dockerfile.contains("FROM debian:bookworm-slim"));
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "USER {user}"
    );
    // The HEALTHCHECK's port is the exposed one, and a base URL (checks /readyz).
    let port = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .unwrap()
        .trim();
    assert!(
        dockerfile.contains(&format!(
            r#"CMD ["wechat-token-server", "healthcheck", "--url", "http://127.0.0.1:{port}"]"#
        )),
        "{dockerfile}"
    );
    // Everything the build reads is in the context.
    let ignored = read(".dockerignore");
    for needed in ["src/", "Cargo.lock", "openapi/", "tests/", "benches/"] {
        assert!(
            !ignored.lines().any(|l| l.trim() == needed),
            ".dockerignore drops {needed}"
        );
    }
}

/// The `environment:` of the token servers in the compose file, defaults applied
/// (`${X:-default}`).
fn compose_environment(compose: &str) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let mut inside = false;
    for line in compose.lines() {
        if line.trim() == "environment:" {
            inside = true;
            continue;
        }
        if inside && !line.starts_with("    ") {
            break;
        }
        let line = line.trim();
        if !inside || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(": ").expect("KEY: value");
        let value = match value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
            Some(v) => v.split_once(":-").map_or("", |(_, d)| d),
            None => value,
        };
        env.push((key.to_owned(), value.to_owned()));
    }
    env
}

#[test]
fn the_compose_config_is_valid_with_the_compose_files_environment() {
    let compose = read("deploy/docker-compose.yml");
    for service in ["redis:", "simulator:", "token-1:", "token-2:"] {
        assert!(compose.contains(&format!("\n  {service}")), "{service}");
    }
    let env = compose_environment(&compose);
    assert!(
        env.iter().any(|(k, _)| k == "WTS_REQUEST_SECRET"),
        "{env:?}"
    );
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(Path::new(ROOT).join("deploy/compose/config.toml"))
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let resolved = String::from_utf8_lossy(&out.stdout);
    // The services of the compose file, by name.
    assert!(resolved.contains("redis://redis:6379/0"), "{resolved}");
    assert!(resolved.contains("http://simulator:9099"), "{resolved}");
}
