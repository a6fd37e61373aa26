//! Benchmark: `GET /wechat/token` under load, against the "no work at all" ceiling.
//!
//! Starts the WeChat simulator in-process, the real `wechat-token-server serve` binary
//! as a child process on the embedded store, and drives both the token route and a
//! fixed JSON body of the same size (served by the same axum/hyper/tokio stack, in a
//! child process of its own) with `wrk`. Prints requests/s, p50/p99 latency, our ratio to the ceiling, the server's
//! peak RSS, and the upstream calls a force-refresh storm costs.
//!
//! Run with `scripts/bench.sh` (installs wrk), or `cargo bench --bench http`.
//! `BENCH_SECONDS` (default 10), `BENCH_ROUNDS` (default 3), `BENCH_CONNECTIONS`
//! (default 64) and `BENCH_THREADS`
//! (wrk's threads, default 1: on a 2-core machine wrk shares the cores with the server,
//! and a second wrk thread mostly adds scheduling noise to the latency figures) tune it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use wechat_token_server::simulator::{DEMO_APPID, DEMO_SECRET, SimConfig, Simulator};

const SERVER: &str = env!("CARGO_BIN_EXE_wechat-token-server");
const SECRET: &str = "bench-request-secret";

struct WrkResult {
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
}

/// When set, this program is the ceiling server: it serves the variable's value.
const CEILING_BODY_ENV: &str = "WTS_BENCH_CEILING_BODY";

/// The ceiling process: axum on a default multi-thread runtime (as the server's),
/// answering every request with the same fixed JSON body. Prints its address.
fn serve_ceiling(body: String) -> anyhow::Result<()> {
    let body: &'static str = Box::leak(body.into_boxed_str());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = Router::new().route(
            "/fixed",
            get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?);
        axum::serve(listener, app).await?;
        Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    if let Ok(body) = std::env::var(CEILING_BODY_ENV) {
        return serve_ceiling(body);
    }
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let connections: u64 = std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let rounds: u64 = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let threads: u64 = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    anyhow::ensure!(
        Command::new("wrk").arg("--version").output().is_ok(),
        "wrk is not installed: run scripts/bench.sh (it installs it)"
    );
    // The simulator and the storm's clients; the measured servers are child processes.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(run(seconds, connections, threads, rounds))
}

async fn run(seconds: u64, connections: u64, threads: u64, rounds: u64) -> anyhow::Result<()> {
    let sim = Simulator::spawn(SimConfig::default()).await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
bind = "127.0.0.1:0"
request_secret = "{SECRET}"
[store]
path = "{store}"
[sources.access_token]
url = "http://{sim}/cgi-bin/token"
args = {{ grant_type = "client_credential", appid = "{DEMO_APPID}", secret = "{DEMO_SECRET}" }}
[sources.ticket]
url = "http://{sim}/cgi-bin/ticket/getticket"
args = {{ type = "jsapi", access_token = "{{{{access_token}}}}" }}
"#,
            store = dir.path().join("data").display(),
            sim = sim.addr,
        ),
    )?;
    let mut child = Command::new(SERVER)
        .args([
            "--log-format",
            "json",
            "--log-level",
            "warn,wechat_token_server::app=info",
            "serve",
            "--config",
        ])
        .arg(&config)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                && event["message"] == "serving"
            {
                let _ = tx.send(event["addr"].as_str().unwrap_or_default().to_owned());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20))?;
    let token_url = format!("http://{addr}/wechat/token?type=access_token&secret={SECRET}");
    let client = reqwest::Client::new();
    let mut body = String::new();
    for _ in 0..200 {
        let response = client.get(&token_url).send().await?;
        if response.status().is_success() {
            body = response.text().await?;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(!body.is_empty(), "the server never served a token");

    // The ceiling: the same stack returning a fixed body of the same size, in a
    // process of its own like the server, so both runs compete for the cores alike.
    let mut ceiling = Command::new(std::env::current_exe()?)
        .env(CEILING_BODY_ENV, &body)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut ceiling_addr = String::new();
    BufReader::new(ceiling.stdout.take().expect("stdout is piped")).read_line(&mut ceiling_addr)?;
    let ceiling_url = format!(
        "http://{}/fixed?type=access_token&secret={SECRET}",
        ceiling_addr.trim()
    );

    println!(
        "wechat-token-server benchmark: {connections} connections, {seconds} s per run, {rounds} rounds (medians), wrk -t{threads}"
    );
    println!("response body: {} bytes", body.len());
    // Alternate the two runs and keep each one's median, so that a burst of noise on
    // the machine does not decide the ratio.
    let (mut ours_runs, mut top_runs) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        ours_runs.push(wrk(&token_url, connections, seconds, threads).await?);
        top_runs.push(wrk(&ceiling_url, connections, seconds, threads).await?);
    }
    let errors: u64 = ours_runs.iter().map(|r| r.non_2xx).sum();
    anyhow::ensure!(errors == 0, "{errors} non-2xx answers from the token route");
    let ours = median(ours_runs);
    let top = median(top_runs);
    println!();
    println!("| run | requests/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    println!(
        "| GET /wechat/token | {:.0} | {:.3} | {:.3} |",
        ours.requests_per_sec, ours.p50_ms, ours.p99_ms
    );
    println!(
        "| fixed body, same stack (ceiling) | {:.0} | {:.3} | {:.3} |",
        top.requests_per_sec, top.p50_ms, top.p99_ms
    );
    println!();
    println!(
        "ratio to ceiling: {:.1}%",
        100.0 * ours.requests_per_sec / top.requests_per_sec
    );

    // A storm: 200 concurrent force refreshes reporting the current token as stale.
    let token: serde_json::Value = serde_json::from_str(&body)?;
    let stale = token["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let before = sim.sim.calls("/cgi-bin/token");
    let storm = (0..200).map(|_| {
        let client = client.clone();
        let url = format!("http://{addr}/wechat/token/forcerefresh?type=access_token&secret={SECRET}&stale={stale}");
        tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().is_success()) })
    });
    let mut ok = 0;
    for request in storm {
        if matches!(request.await, Ok(Ok(true))) {
            ok += 1;
        }
    }
    println!(
        "force-refresh storm: 200 concurrent requests, {ok} answered 200, {} upstream call(s)",
        sim.sim.calls("/cgi-bin/token") - before
    );
    println!(
        "server peak RSS: {:.1} MB",
        peak_rss_kb(pid)? as f64 / 1024.0
    );

    for process in [&mut child, &mut ceiling] {
        process.kill()?;
        process.wait()?;
    }
    Ok(())
}

async fn wrk(url: &str, connections: u64, seconds: u64, threads: u64) -> anyhow::Result<WrkResult> {
    let url = url.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("wrk")
            .args([
                &format!("-t{threads}"),
                &format!("-c{connections}"),
                &format!("-d{seconds}s"),
                "--latency",
                &url,
            ])
            .output()
    })
    .await??;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let number_after = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let requests_per_sec = number_after("Requests/sec:").and_then(|s| s.parse().ok());
    let p50 = number_after("50%").and_then(parse_wrk_duration_ms);
    let p99 = number_after("99%").and_then(parse_wrk_duration_ms);
    let non_2xx = number_after("Non-2xx or 3xx responses:")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    match (requests_per_sec, p50, p99) {
        (Some(requests_per_sec), Some(p50_ms), Some(p99_ms)) => Ok(WrkResult {
            requests_per_sec,
            p50_ms,
            p99_ms,
            non_2xx,
        }),
        _ => anyhow::bail!("cannot read wrk's output:\n{text}"),
    }
}

/// The run with the median throughput.
fn median(mut runs: Vec<WrkResult>) -> WrkResult {
    runs.sort_by(|a, b| a.requests_per_sec.total_cmp(&b.requests_per_sec));
    runs.swap_remove(runs.len() / 2)
}

/// wrk prints durations as `812.00us`, `1.23ms` or `2.01s`.
fn parse_wrk_duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    match unit {
        "us" => Some(value / 1000.0),
        "ms" => Some(value),
        "s" => Some(value * 1000.0),
        _ => None,
    }
}

/// Peak resident set size of `pid` in KiB (Linux `VmHWM`).
fn peak_rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/{pid}/status"))
}
