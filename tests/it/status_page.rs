//! The status page at `GET /`, loaded in a real headless browser (Debian's chromium):
//! what a person sees after the page's script ran, and never a token value.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use wechat_token_server::simulator::SimConfig;

use crate::helpers::{SECRET, TestApp, TestSim};

/// How long one browser run may take before the test fails.
const BROWSER_DEADLINE: Duration = Duration::from_secs(90);

/// The chromium binary; fails the test (never skips it) when it is missing.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "chromium is not installed, and the status page is tested in a real browser: \
         run scripts/test.sh, which installs it (apt-get install chromium)"
    );
}

/// Runs headless chromium on `url` with `extra` arguments; returns its stdout.
async fn browse(url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium failed: {status}");
            break;
        }
        if started.elapsed() > BROWSER_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {BROWSER_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reader.join().unwrap()
}

/// The DOM after the page's script has run for 3 s of (virtual) time.
async fn dom_after_scripts(url: &str) -> String {
    browse(url, &["--virtual-time-budget=3000", "--dump-dom"]).await
}

/// The text of the countdown of `key` (e.g. `default/access_token`) as rendered by the
/// server (`data-expires-in`) and as shown after the script ran.
fn countdown(dom: &str, key: &str) -> (u64, String) {
    let row = &dom[dom
        .find(&format!("data-key=\"{key}\""))
        .unwrap_or_else(|| panic!("no row {key} in\n{dom}"))..];
    let attr = "data-expires-in=\"";
    let at = &row[row.find(attr).expect("a countdown") + attr.len()..];
    let (rendered, rest) = at.split_once('"').unwrap();
    let shown = &rest[rest.find('>').unwrap() + 1..rest.find('<').unwrap()];
    (rendered.parse().unwrap(), shown.to_owned())
}

/// Seconds of a countdown shown as `1h 58m 43s`, `5m 07s` or `09s`.
fn shown_seconds(shown: &str) -> u64 {
    shown
        .split_whitespace()
        .map(|part| {
            let (n, unit) = part.split_at(part.len() - 1);
            let n: u64 = n
                .parse()
                .unwrap_or_else(|_| panic!("not a countdown: {shown:?}"));
            match unit {
                "h" => n * 3600,
                "m" => n * 60,
                "s" => n,
                _ => panic!("not a countdown: {shown:?}"),
            }
        })
        .sum()
}

#[tokio::test]
async fn the_status_page_shows_each_token_with_a_running_countdown_in_a_real_browser() {
    let app = TestApp::spawn().await;
    let token = app.token("access_token").await;
    let ticket = app.token("ticket").await;

    let dom = dom_after_scripts(&format!("{}/", app.base)).await;

    assert!(dom.contains("App <code>default</code>"), "{dom}");
    for name in ["access_token", "ticket"] {
        assert!(dom.contains(&format!("<strong>{name}</strong>")), "{dom}");
    }
    assert!(dom.contains(">valid</span>"), "{dom}");
    assert!(dom.contains("id=\"readiness\">ready<"), "{dom}");
    assert!(
        dom.contains("1 / 2000"),
        "calls today against the quota: {dom}"
    );
    assert!(
        dom.contains(" s ago, scheduled)"),
        "last refresh and its trigger: {dom}"
    );
    // The script replaced the server's "7199 s" with a countdown that has moved on.
    let (rendered, shown) = countdown(&dom, "default/access_token");
    assert!(rendered > 7000, "{rendered}");
    let left = shown_seconds(&shown);
    assert!(
        shown.contains('h') && left < rendered && left + 10 > rendered,
        "rendered {rendered}, shown {shown:?}"
    );
    for secret in [&token[..], &ticket[..], SECRET] {
        assert!(
            !dom.contains(secret),
            "a token or secret on the status page"
        );
    }

    // The README's screenshot: refreshed with WTS_UPDATE_SCREENSHOT=1.
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("status-page.png");
    browse(
        &format!("{}/", app.base),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1200,800",
            "--hide-scrollbars",
        ],
    )
    .await;
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000);
    if std::env::var_os("WTS_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png");
        std::fs::write(docs, bytes).unwrap();
    }
}

#[tokio::test]
async fn the_status_page_shows_the_last_error_with_its_errcode_and_a_hint_escaped() {
    let sim = TestSim::start(SimConfig::default()).await;
    let app = TestApp::spawn_on(sim, "needs_person_retry_delay = 600").await;
    let current = app.token("access_token").await;
    app.sim
        .fault(
            "/cgi-bin/token",
            1,
            json!({"errcode": 40164, "errmsg": "invalid ip 203.0.113.7 <b>bold</b>, not in whitelist"}),
        )
        .await;
    app.force("access_token", Some(&current)).await;

    let dom = dom_after_scripts(&format!("{}/", app.base)).await;
    assert!(dom.contains("errcode 40164"), "{dom}");
    assert!(
        dom.contains("add this server's IP to the IP whitelist in the WeChat console"),
        "{dom}"
    );
    assert!(dom.contains("valid, needs a person"), "{dom}");
    assert!(dom.contains("NOT READY"), "{dom}");
    // WeChat's text is shown as text, never as markup.
    assert!(dom.contains("&lt;b&gt;bold&lt;/b&gt;"), "{dom}");
    assert!(!dom.contains("<b>bold</b>"), "{dom}");
    assert!(!dom.contains(&current), "a token on the status page");
}

/// The part of `dom` from the row of `key` to the end of that row.
fn row<'a>(dom: &'a str, key: &str) -> &'a str {
    let start = dom
        .find(&format!("data-key=\"{key}\""))
        .unwrap_or_else(|| panic!("no row {key} in\n{dom}"));
    let rest = &dom[start..];
    &rest[..rest.find("</tr>").expect("the row ends")]
}

#[tokio::test]
async fn each_token_has_a_quota_bar_and_a_timeline_with_its_failures_in_a_real_browser() {
    let sim = TestSim::start(SimConfig::default()).await;
    let text = crate::helpers::config_with(
        crate::helpers::MEMORY_STORE,
        crate::helpers::FAST_RETRIES,
        &(crate::helpers::seed_sources(sim.addr) + "\n[quota]\ndaily_limit = 40\nreserve = 10\n"),
    );
    let app = TestApp::spawn_with(sim, &text).await;
    let current = app.token("access_token").await;
    app.sim
        .fault("/cgi-bin/token", 1, json!({"errcode": -1}))
        .await;
    app.force("access_token", Some(&current)).await;
    let calls = app.sim.calls("/cgi-bin/token").await;
    assert!(
        calls >= 2,
        "the start-up fetch and the failed force refresh"
    );

    let dom = dom_after_scripts(&format!("{}/", app.base)).await;
    let token = row(&dom, "default/access_token");
    // The timeline: the start-up refresh, and a failure mark at the right end (now).
    assert!(token.contains("<svg class=\"tl\""), "{token}");
    assert!(token.contains("data-failures=\"1\""), "{token}");
    assert!(
        token.contains("<path class=\"tfail\" d=\"M239 1v14\""),
        "{token}"
    );
    assert!(
        token.contains("<path class=\"tok\" d=\"M239 4v8\""),
        "{token}"
    );
    assert!(token.contains("24 h: 1 refreshed, 1 failed"), "{token}");
    // The quota bar: 120 px for 40 calls, the reserve (the last 10) from 90 px.
    let width = calls as f64 * 120.0 / 40.0;
    assert!(
        token.contains(&format!("<rect class=\"qu\" width=\"{width:.1}\"")),
        "{calls} calls: {token}"
    );
    assert!(
        token.contains("<rect class=\"qr\" x=\"90.0\" width=\"30.0\""),
        "{token}"
    );
    assert!(token.contains(&format!("{calls} / 40")), "{token}");
    let ticket = row(&dom, "default/ticket");
    assert!(ticket.contains("data-failures=\"0\""), "{ticket}");
    assert!(!ticket.contains("tfail"), "{ticket}");
    assert_eq!(dom.matches("<svg class=\"tl\"").count(), 2, "{dom}");
    assert!(!dom.contains(&current), "a token on the status page");
}

#[tokio::test]
async fn many_apps_are_paged_problems_first_and_searchable_in_a_real_browser() {
    let (sim_config, apps) = crate::metrics::many_apps(150);
    let sim = TestSim::start(sim_config).await;
    // One more app whose secret WeChat does not know: it never gets a token.
    let broken = format!(
        "[apps.zz-broken]\nplatform = \"mp\"\nappid = \"wx{:016}\"\nsecret = \"wrong\"\napi_base = \"http://{}\"\n",
        1, sim.addr
    );
    let text = crate::helpers::config_with(
        crate::helpers::MEMORY_STORE,
        crate::helpers::FAST_RETRIES,
        &(apps(sim.addr) + &broken),
    );
    let app = TestApp::start(sim, &text).await;
    crate::helpers::wait_until(
        "the good apps are served and the broken one failed",
        Duration::from_secs(60),
        || async {
            let now = std::time::SystemTime::now();
            let creds = app.refresher.credentials();
            creds.iter().all(|c| {
                if c.key.app == "zz-broken" {
                    c.consecutive_failures() > 0
                } else {
                    c.live_token(now).is_some()
                }
            })
        },
    )
    .await;

    let dom = dom_after_scripts(&format!("{}/", app.base)).await;
    let first = dom.find("<section class=\"app\"").expect("apps are listed");
    assert!(
        dom[first..].starts_with("<section class=\"app\" data-app=\"zz-broken\""),
        "the app with nothing to serve comes first: {}",
        &dom[first..first + 200]
    );
    assert_eq!(
        dom.matches("<section class=\"app\"").count(),
        100,
        "100 apps a page"
    );
    assert!(dom.contains("page 1 of 2"), "{dom}");
    assert!(dom.contains("rel=\"next\" href=\"/?page=2\""), "{dom}");
    assert!(dom.contains("151 apps, 301 tokens: 300 ok"), "{dom}");
    assert!(
        dom.contains("<form class=\"search\" method=\"get\" action=\"/\""),
        "{dom}"
    );

    let second = dom_after_scripts(&format!("{}/?page=2", app.base)).await;
    assert_eq!(second.matches("<section class=\"app\"").count(), 51);
    assert!(
        second.contains("rel=\"prev\" href=\"/?page=1\""),
        "{second}"
    );

    // The search box is a GET form: its URL, as the browser sends it.
    let found = dom_after_scripts(&format!("{}/?q=SHOP-0014", app.base)).await;
    let listed: Vec<&str> = found
        .match_indices("<section class=\"app\" data-app=\"")
        .map(|(at, m)| {
            let rest = &found[at + m.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect();
    let expected: Vec<String> = (140..150).map(|i| format!("shop-{i:05}")).collect();
    assert_eq!(listed, expected, "case-insensitive, anywhere in the name");
    assert!(
        found.contains("value=\"SHOP-0014\""),
        "the search stays in the box"
    );
    assert!(found.contains("10 of 151 apps match"), "{found}");

    let (status, body) = app.page("/?page=zero").await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
    assert!(body.contains("page must be a whole number"), "{body}");
}
