//! Thousands of apps without a command line each (`--apps-file`, `--accept-any-app`),
//! and the most token calls answered at once (`max_in_flight`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use super::*;
use crate::process::BIN;
use wechat_token_server::simulator::any_app_secret;

/// `simulate` run as a process, killed on drop.
struct SimProcess {
    child: Child,
    base: String,
    /// Kept open: the banner is written a line at a time, and a closed pipe would make
    /// the simulator's next line fail.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `simulate --bind 127.0.0.1:0 ARGS` and reads its address from the banner.
fn simulate(args: &[&str]) -> SimProcess {
    let mut child = Command::new(BIN)
        .args(["simulate", "--bind", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    let _ = stdout.read_line(&mut first);
    let base = first
        .split_once("listening on ")
        .map(|(_, url)| url.trim().to_owned())
        .unwrap_or_else(|| panic!("no address in the banner: {first:?}"));
    SimProcess {
        child,
        base,
        _stdout: stdout,
    }
}

async fn token_errcode(http: &reqwest::Client, base: &str, appid: &str, secret: &str) -> Value {
    let url =
        format!("{base}/cgi-bin/token?grant_type=client_credential&appid={appid}&secret={secret}");
    http.get(url)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON")
}

#[tokio::test]
async fn an_apps_file_lists_thousands_of_apps_and_accept_any_app_takes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apps.txt");
    let mut text = String::from("# generated\n\n");
    for i in 0..3000 {
        text.push_str(&format!("wxf{i}:file-secret-{i}\n"));
    }
    std::fs::write(&file, text).unwrap();
    let sim = simulate(&["--apps-file", file.to_str().unwrap(), "--accept-any-app"]);
    let http = reqwest::Client::new();
    let base = &sim.base;

    let listed = token_errcode(&http, base, "wxf2999", "file-secret-2999").await;
    assert!(listed["access_token"].is_string(), "{listed}");
    // A listed app keeps its own secret: the rule's does not open it.
    let rule = token_errcode(&http, base, "wxf2999", &any_app_secret("wxf2999")).await;
    assert_eq!(rule["errcode"], 40125, "{rule}");
    let unlisted = token_errcode(&http, base, "wx-any-7", "secret-wx-any-7").await;
    assert!(unlisted["access_token"].is_string(), "{unlisted}");
    let wrong = token_errcode(&http, base, "wx-any-7", "secret-wx-any-8").await;
    assert_eq!(wrong["errcode"], 40125, "{wrong}");
    let corp: Value = http
        .get(format!(
            "{base}/cgi-bin/gettoken?corpid=ww-any&corpsecret=secret-ww-any-hr"
        ))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert_eq!(corp["errcode"], 0, "{corp}");
}

#[tokio::test]
async fn without_accept_any_app_only_the_listed_apps_exist() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apps.txt");
    std::fs::write(&file, "wxa:sa\nwxb:sb\n").unwrap();
    let sim = simulate(&["--apps-file", file.to_str().unwrap(), "--app", "wxc:sc"]);
    let http = reqwest::Client::new();
    for (appid, secret) in [("wxa", "sa"), ("wxb", "sb"), ("wxc", "sc")] {
        let body = token_errcode(&http, &sim.base, appid, secret).await;
        assert!(body["access_token"].is_string(), "{appid}: {body}");
    }
    let stranger = token_errcode(&http, &sim.base, "wxd", &any_app_secret("wxd")).await;
    assert_eq!(stranger["errcode"], 40013, "{stranger}");
}

#[test]
fn a_bad_apps_file_stops_the_simulator_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apps.txt");
    std::fs::write(&file, "wxa:sa\n# fine\nwxb-no-colon-hush\nwxa:again\n").unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["simulate", "--bind", "127.0.0.1:0"])
            .args(args)
            .output()
            .expect("runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let path = file.to_str().unwrap();
    let (ok, stderr) = run(&["--apps-file", path]);
    assert!(
        !ok && stderr.contains(&format!("{path}, line 3")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hush"),
        "the line may hold a secret: {stderr}"
    );

    std::fs::write(&file, "wxa:sa\nwxa:again\n").unwrap();
    let (ok, stderr) = run(&["--apps-file", path]);
    assert!(!ok && stderr.contains("wxa is given twice"), "{stderr}");

    let missing = dir.path().join("nope.txt");
    let (ok, stderr) = run(&["--apps-file", missing.to_str().unwrap()]);
    assert!(!ok && stderr.contains("nope.txt"), "{stderr}");
}

#[tokio::test]
async fn max_in_flight_is_the_most_token_and_ticket_calls_answered_at_once() {
    let sim = spawn(SimConfig {
        accept_any_app: true,
        ..SimConfig::default()
    })
    .await;
    // Five calls held back together, then one more alone.
    sim.fault(json!({"endpoint": "/cgi-bin/token", "count": 5, "delay_ms": 60_000}))
        .await;
    let calls: Vec<_> =
        (0..5)
            .map(|i| {
                let (http, url) = (sim.http.clone(), sim.url(&format!(
                "/cgi-bin/token?grant_type=client_credential&appid=wx{i}&secret=secret-wx{i}"
            )));
                tokio::spawn(async move { http.get(url).send().await.map(|r| r.status()) })
            })
            .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = sim.stats().await;
        if stats["in_flight"] == 5 {
            assert_eq!(stats["max_in_flight"], 5, "{stats}");
            break;
        }
        assert!(Instant::now() < deadline, "never 5 in flight: {stats}");
        tokio::task::yield_now().await;
    }
    // A probe is not a token call: not counted.
    sim.probe("never-issued").await;
    assert_eq!(sim.stats().await["in_flight"], 5);
    // Cutting the delays short: a client that hangs up is no longer in flight.
    for call in &calls {
        call.abort();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while sim.stats().await["in_flight"] != 0 {
        assert!(Instant::now() < deadline, "aborted calls still counted");
        tokio::task::yield_now().await;
    }
    let token = sim.token().await;
    sim.ticket(&token, "jsapi").await;
    let stats = sim.stats().await;
    assert_eq!(
        (stats["in_flight"].as_u64(), stats["max_in_flight"].as_u64()),
        (Some(0), Some(5))
    );
    sim.post("/sim/reset", "").await;
    assert_eq!(
        sim.stats().await["max_in_flight"],
        0,
        "reset starts the maximum again"
    );
}
