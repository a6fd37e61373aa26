//! `GET /`: server-rendered HTML for a person: the apps that need attention first
//! (nothing to serve, needs a person, failing, not fetched yet), then the healthy
//! ones, [`PAGE_SIZE`] apps a page with a search box (`/?page=N&q=TEXT`, a plain GET
//! form). Each token shows its state, a live countdown to expiry, the last refresh and
//! its trigger, the last error with WeChat's errcode and a hint, today's calls against
//! the quota as a bar, and its refreshes and failures of the last 24 hours as a
//! timeline (both inline SVG drawn here, see [`svg`]).
//!
//! No authentication, so it shows no token value and no secret, and every text from
//! elsewhere (names, WeChat's errmsg, the search) is escaped. A few lines of inline JS
//! count the seconds down; without JS the page still shows them as rendered.
//!
//! The size of a page is bounded whatever the number of apps: one page of apps, at
//! most [`MAX_PROBLEMS`] readiness problems listed, and pictures of bounded size (a
//! timeline has at most `history::CAPACITY` marks).

mod query;
mod svg;

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use crate::refresh::{Credential, Refresher, TokenState};
pub use query::{PAGE_SIZE, PageQuery};

/// Readiness problems listed on top; `/readyz` has the rest.
pub const MAX_PROBLEMS: usize = 20;

const STYLE: &str = "
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f5f6f8;color:#1d2129}
header{background:#07c160;color:#fff;padding:14px 28px}
header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;opacity:.9}
main{padding:12px 28px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);margin:14px 0;padding:6px 16px 12px}
h2{font-size:16px;margin:10px 0}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:7px 10px;border-bottom:1px solid #eef0f3;vertical-align:top}
th{font-size:12px;text-transform:uppercase;color:#86909c;font-weight:600}
.badge{display:inline-block;border-radius:10px;padding:1px 9px;font-size:13px;font-weight:600}
.valid{background:#e8f8ee;color:#0b8a3e}.warn{background:#fff4e0;color:#b86e00}.bad{background:#ffeceb;color:#c9302c}
.countdown{font-variant-numeric:tabular-nums;font-weight:600}
.hint{color:#4e5969;font-size:13px}.muted{color:#86909c;font-size:13px}
ul.problems{margin:6px 0;padding-left:20px;color:#c9302c}
footer{padding:4px 28px 20px;color:#86909c;font-size:13px}
code{background:#f2f3f5;border-radius:4px;padding:0 4px}
form.search{display:flex;gap:8px;align-items:center;margin:12px 0}
form.search input{font:inherit;padding:5px 10px;border:1px solid #c9cdd4;border-radius:6px;min-width:260px}
form.search button{font:inherit;padding:5px 14px;border:0;border-radius:6px;background:#07c160;color:#fff}
nav.pages{margin:10px 0;color:#4e5969}
svg{vertical-align:middle;display:block;margin:2px 0}
svg.quota{background:#eef0f3}
svg.tl{background:repeating-linear-gradient(90deg,#f2f3f5 0 59px,#dcdfe4 59px 60px)}
.qr{fill:#ffd9a0}.qu{fill:#07c160}.qw{fill:#f0a020}.qx{fill:#c9302c}
.tok{stroke:#07c160;stroke-width:2}.tfail{stroke:#c9302c;stroke-width:2}
";

/// Counts every `data-expires-in` element down, from the moment the page loaded.
const SCRIPT: &str = "
(function () {
  var loaded = Date.now();
  function two(n) { return (n < 10 ? '0' : '') + n; }
  function show(s) {
    var h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60);
    return (h ? h + 'h ' + two(m) + 'm ' : m ? m + 'm ' : '') + two(s % 60) + 's';
  }
  function tick() {
    var gone = Math.floor((Date.now() - loaded) / 1000);
    document.querySelectorAll('[data-expires-in]').forEach(function (el) {
      var left = Number(el.getAttribute('data-expires-in')) - gone;
      el.textContent = left > 0 ? show(left) : 'expired';
    });
  }
  tick();
  setInterval(tick, 1000);
})();
";

/// `GET /` and `GET /?page=N&q=TEXT`.
pub async fn index(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let query = match PageQuery::parse(raw.as_deref()) {
        Ok(query) => query,
        Err(message) => {
            let body = format!(
                "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Bad request</title></head>\
                 <body><h1>Bad request</h1><p>{}</p><p><a href=\"/\">All apps</a></p></body></html>",
                escape(&message)
            );
            return (
                StatusCode::BAD_REQUEST,
                [(header::CACHE_CONTROL, "no-store")],
                Html(body),
            )
                .into_response();
        }
    };
    let problems = state.refresher.readiness_problems().await;
    let now = state.refresher.clock().now();
    let page = render(&state.refresher, &problems, &query, now);
    ([(header::CACHE_CONTROL, "no-store")], Html(page)).into_response()
}

/// How much an app needs a person's eyes: the page lists the lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Attention {
    /// A token has nothing to serve and fetching it failed.
    Expired,
    /// A token fails with an error only a person can fix.
    NeedsPerson,
    /// A token's last attempt failed (still served), or WeChat stopped an API (45009).
    Failing,
    /// A token's first fetch is under way.
    NotFetched,
    Healthy,
}

fn attention(refresher: &Refresher, cred: &Credential, now: SystemTime) -> (TokenState, Attention) {
    let failures = cred.consecutive_failures();
    let state = cred.state(now, failures);
    let attention = match state {
        TokenState::Expired => Attention::Expired,
        _ if failures > 0 && cred.needs_person().is_some() => Attention::NeedsPerson,
        TokenState::Failing => Attention::Failing,
        _ if refresher.quota().blocked_until(&cred.labels, now).is_some() => Attention::Failing,
        TokenState::Refreshing if cred.current().is_none() => Attention::NotFetched,
        _ => Attention::Healthy,
    };
    (state, attention)
}

/// One app and its tokens, as listed.
struct AppView<'a> {
    name: &'a str,
    creds: Vec<&'a Arc<Credential>>,
    attention: Attention,
}

fn render(
    refresher: &Refresher,
    problems: &[String],
    query: &PageQuery,
    now: SystemTime,
) -> String {
    // Every credential is looked at once (its state, for the order and the summary);
    // only the page's apps are rendered.
    let creds = refresher.credentials();
    let mut apps: Vec<AppView<'_>> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut states = [0usize; 4];
    for cred in creds.iter() {
        let (state, attention) = attention(refresher, cred, now);
        states[TokenState::ALL
            .iter()
            .position(|s| *s == state)
            .unwrap_or_default()] += 1;
        let at = *index.entry(cred.key.app.as_str()).or_insert_with(|| {
            apps.push(AppView {
                name: cred.key.app.as_str(),
                creds: Vec::new(),
                attention: Attention::Healthy,
            });
            apps.len() - 1
        });
        let app = &mut apps[at];
        app.creds.push(cred);
        app.attention = app.attention.min(attention);
    }
    let total_apps = apps.len();
    let q_lower = query.q.to_lowercase();
    apps.retain(|app| query.matches(app.name, &q_lower));
    // Stable: within one level of attention, apps keep their configured order.
    apps.sort_by_key(|app| app.attention);
    let pages = apps.len().div_ceil(PAGE_SIZE).max(1);
    let query = PageQuery {
        page: query.page.min(pages),
        q: query.q.clone(),
    };
    let first = (query.page - 1) * PAGE_SIZE;
    let shown = &apps[first.min(apps.len())..(first + PAGE_SIZE).min(apps.len())];

    let mut out = String::with_capacity(16 * 1024 + shown.len() * 2048);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"60\">\
         <title>wechat-token-server</title><style>{STYLE}</style></head><body>\
         <header><h1>wechat-token-server</h1><p>version {} &middot; {}</p></header><main>",
        env!("CARGO_PKG_VERSION"),
        if problems.is_empty() {
            "<span id=\"readiness\">ready</span>"
        } else {
            "<span id=\"readiness\">NOT READY</span>"
        }
    );
    if !problems.is_empty() {
        out.push_str("<section><h2>Problems</h2><ul class=\"problems\">");
        for problem in problems.iter().take(MAX_PROBLEMS) {
            let _ = write!(out, "<li>{}</li>", escape(problem));
        }
        out.push_str("</ul>");
        if problems.len() > MAX_PROBLEMS {
            let _ = write!(
                out,
                "<p class=\"muted\">and {} more: <a href=\"/readyz\">/readyz</a> lists them all</p>",
                problems.len() - MAX_PROBLEMS
            );
        }
        out.push_str("</section>");
    }
    let _ = write!(
        out,
        "<p id=\"summary\">{total_apps} apps, {} tokens: {} ok, {} refreshing, {} failing, {} expired</p>",
        creds.len(),
        states[0],
        states[1],
        states[2],
        states[3]
    );
    let _ = write!(
        out,
        "<form class=\"search\" method=\"get\" action=\"/\" role=\"search\">\
         <input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"Find apps by name\" aria-label=\"App name\">\
         <button type=\"submit\">Search</button>",
        escape(&query.q)
    );
    if !query.q.is_empty() {
        let _ = write!(
            out,
            " <span class=\"muted\">{} of {total_apps} apps match &middot; <a href=\"/\">show all</a></span>",
            apps.len()
        );
    }
    out.push_str("</form>");
    if apps.is_empty() {
        out.push_str("<p class=\"muted\" id=\"no-match\">No app matches.</p>");
    } else {
        query.nav(&mut out, pages);
    }
    let reserve = refresher.quota().settings().reserve;
    for app in shown {
        let _ = write!(
            out,
            "<section class=\"app\" data-app=\"{0}\"><h2>App <code>{0}</code></h2><table><tr>\
             <th>Token</th><th>State</th><th>Expires in</th><th>Last refresh</th>\
             <th>Last error</th><th>WeChat calls today</th><th>Last 24 h</th></tr>",
            escape(app.name)
        );
        let mut last_hint = None;
        for cred in &app.creds {
            row(&mut out, refresher, cred, reserve, now, &mut last_hint);
        }
        out.push_str("</table></section>");
    }
    if shown.len() > 10 {
        query.nav(&mut out, pages);
    }
    let _ = writeln!(
        out,
        "</main><footer>Times in UTC. WeChat's quota day starts at midnight China time (16:00 UTC). \
         Apps that need attention come first, {PAGE_SIZE} a page. \
         Metrics: <a href=\"/metrics\">/metrics</a> &middot; health: <a href=\"/healthz\">/healthz</a> \
         <a href=\"/readyz\">/readyz</a></footer><script>{SCRIPT}</script></body></html>"
    );
    out
}

/// One token's row. `last_hint`: the hint shown in the app's row above, not repeated
/// (a ticket usually fails for its access_token's reason).
fn row(
    out: &mut String,
    refresher: &Refresher,
    cred: &Credential,
    reserve: u64,
    now: SystemTime,
    last_hint: &mut Option<&'static str>,
) {
    let status = cred.status();
    let current = cred.current();
    let live = current.as_ref().filter(|t| t.is_live(now));
    let usage = refresher.quota().usage(&cred.labels, now);
    let needs_person = cred.needs_person();

    let (class, state) = match (&live, &current) {
        (Some(_), _) if needs_person.is_some() => ("warn", "valid, needs a person"),
        (Some(_), _) if status.consecutive_failures > 0 => ("warn", "valid, retrying"),
        (Some(_), _) => ("valid", "valid"),
        (None, Some(_)) => ("bad", "expired"),
        (None, None) => ("bad", "not fetched"),
    };
    let _ = write!(
        out,
        "<tr data-key=\"{}\"><td><strong>{}</strong></td><td><span class=\"badge {class}\">{state}</span>",
        escape(&cred.key.to_string()),
        escape(&cred.key.name)
    );
    if usage.exhausted {
        out.push_str(" <span class=\"badge bad\">quota used up (45009)</span>");
    }
    out.push_str("</td><td>");
    match live {
        Some(token) => {
            let left = token.remaining(now).as_secs();
            let _ = write!(
                out,
                "<span class=\"countdown\" data-expires-in=\"{left}\">{left} s</span>"
            );
        }
        None => out.push_str("<span class=\"muted\">&ndash;</span>"),
    }
    out.push_str("</td><td>");
    match &current {
        Some(token) => {
            let _ = write!(
                out,
                "{} <span class=\"muted\">({} ago, {})</span>",
                utc(token.refreshed_at),
                ago(now.duration_since(token.refreshed_at).unwrap_or_default()),
                token.trigger.as_str()
            );
        }
        None => out.push_str("<span class=\"muted\">never</span>"),
    }
    out.push_str("</td><td>");
    match &status.last_error {
        Some((error, at)) => {
            if let Some(code) = error.errcode() {
                let _ = write!(out, "<strong>errcode {code}</strong> ");
            }
            let _ = write!(
                out,
                "{} <span class=\"muted\">({} ago{})</span>",
                escape(&error.errmsg()),
                ago(now.duration_since(*at).unwrap_or_default()),
                if status.consecutive_failures > 0 {
                    format!(", {} in a row", status.consecutive_failures)
                } else {
                    ", since recovered".to_owned()
                }
            );
            if let Some(advice) = error.advice(cred.is_token_call()) {
                if last_hint.replace(advice.hint) == Some(advice.hint) {
                    out.push_str("<div class=\"hint\">as above</div>");
                } else {
                    let _ = write!(out, "<div class=\"hint\">{}</div>", escape(advice.hint));
                }
            }
        }
        None => out.push_str("<span class=\"muted\">none</span>"),
    }
    out.push_str("</td><td>");
    svg::quota_bar(out, usage, reserve);
    let _ = write!(
        out,
        "{} / {} <span class=\"muted\">{}</span></td><td>",
        usage.used,
        usage.limit,
        escape(&cred.labels.endpoint)
    );
    svg::timeline(out, &cred.history(now), now);
    out.push_str("</td></tr>");
}

/// Escapes text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `2024-05-01 12:00:03 UTC`.
fn utc(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to a (year, month, day) of the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// `42 s`, `5 min`, `3 h`.
fn ago(d: Duration) -> String {
    match d.as_secs() {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{} h", s / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::refresh::{RefreshError, Token, Trigger};
    use crate::store::MemoryStore;
    use crate::upstream::{self, Upstream};

    /// A refresher with `n` mp apps (`shop-00001`, ...) with a jsapi ticket each,
    /// never started: tests set their tokens and histories by hand.
    fn apps(n: usize) -> Refresher {
        let mut text = String::from(
            "[server]\nrequest_secret = \"status-page-secret-0123\"\n[store]\nbackend = \"memory\"\n",
        );
        for i in 1..=n {
            let _ = write!(
                text,
                "[apps.shop-{i:05}]\nplatform = \"mp\"\nappid = \"wx{i:016}\"\nsecret = \"s{i}\"\ntickets = [\"jsapi\"]\n"
            );
        }
        let config = Config::parse(&text, &|_| None).unwrap();
        Refresher::new(
            &config,
            Arc::new(MemoryStore::new()),
            Upstream::new(Duration::from_secs(1)).unwrap(),
            Arc::new(Metrics::new()),
        )
    }

    fn serve(cred: &Credential, now: SystemTime) {
        cred.install(Token::new(
            "a-token-value-never-shown".into(),
            now + Duration::from_secs(7000),
            now - Duration::from_secs(200),
            1,
            Trigger::Scheduled,
            now,
        ));
    }

    fn wechat_error(errcode: i64) -> RefreshError {
        RefreshError::Upstream(upstream::Error::WeChat {
            errcode,
            errmsg: "invalid ip 203.0.113.7 ipv6 ::ffff:203.0.113.7, not in whitelist rid: 6650a1b2-3c4d5e6f-7a8b9c0d"
                .into(),
        })
    }

    #[test]
    fn a_page_of_ten_thousand_apps_is_bounded_even_when_every_token_had_a_bad_day() {
        let refresher = apps(10_000);
        let now = SystemTime::now();
        for cred in refresher.credentials().iter() {
            serve(cred, now);
            // A full ring of the last 24 hours, and an error that needs a person.
            for i in 0..64u64 {
                let at = now - Duration::from_secs(1300 * (64 - i));
                if i % 2 == 0 {
                    cred.record_failure(&wechat_error(40164), at);
                } else {
                    cred.record_success(at);
                }
            }
            cred.record_failure(&wechat_error(40164), now);
        }
        let problems: Vec<String> = (0..20_000)
            .map(|i| format!("shop-{i:05}/access_token: needs a person: WeChat refused: errcode 40164: invalid ip"))
            .collect();
        let page = render(&refresher, &problems, &PageQuery::parse(None).unwrap(), now);
        println!(
            "status page one of 10,000 apps, worst case: {} bytes",
            page.len()
        );
        // Every token on the page with 64 marks spread over the day and an error with
        // a hint: the most a page can hold, whatever the number of apps.
        assert!(page.len() < 400_000, "{} bytes", page.len());
        assert_eq!(page.matches("<section class=\"app\"").count(), PAGE_SIZE);
        assert_eq!(page.matches("<svg class=\"tl\"").count(), 2 * PAGE_SIZE);
        assert_eq!(page.matches("<svg class=\"quota\"").count(), 2 * PAGE_SIZE);
        assert_eq!(page.matches("<li>").count(), MAX_PROBLEMS);
        assert!(
            page.contains("and 19980 more"),
            "problems beyond the first are counted"
        );
        assert!(page.contains("page 1 of 100"));
        assert!(!page.contains("a-token-value-never-shown"));

        // The healthy case, for the README's figure.
        let quiet = apps(10_000);
        for cred in quiet.credentials().iter() {
            serve(cred, now);
            for i in 0..12u64 {
                cred.record_success(now - Duration::from_secs(7000 * i));
            }
        }
        let page = render(&quiet, &[], &PageQuery::parse(None).unwrap(), now);
        println!(
            "status page one of 10,000 healthy apps: {} bytes",
            page.len()
        );
        assert!(page.len() < 300_000, "{} bytes", page.len());
    }

    #[test]
    fn apps_that_need_attention_come_first_and_the_search_narrows_the_list() {
        let refresher = apps(250);
        let now = SystemTime::now();
        let creds = refresher.credentials();
        // shop-00007's ticket: never fetched, failing (nothing to serve); shop-00240:
        // needs a person; shop-00200: failing but served; shop-00150: first fetch.
        let unserved = |c: &Credential| {
            (c.key.app == "shop-00007" && c.key.name == "jsapi_ticket")
                || (c.key.app == "shop-00150" && c.key.name == "access_token")
        };
        for cred in creds.iter().filter(|c| !unserved(c)) {
            serve(cred, now);
        }
        let key = |app: &str, token: &str| {
            creds
                .iter()
                .find(|c| c.key.app == app && c.key.name == token)
                .unwrap()
                .clone()
        };
        key("shop-00007", "jsapi_ticket").record_failure(&wechat_error(-1), now);
        key("shop-00200", "access_token").record_failure(&wechat_error(-1), now);
        key("shop-00240", "jsapi_ticket").record_failure(&wechat_error(40164), now);
        let page = render(&refresher, &[], &PageQuery::parse(None).unwrap(), now);
        let order: Vec<&str> = page
            .match_indices("<section class=\"app\" data-app=\"")
            .map(|(at, m)| {
                let rest = &page[at + m.len()..];
                &rest[..rest.find('"').unwrap()]
            })
            .collect();
        assert_eq!(order.len(), PAGE_SIZE);
        assert_eq!(
            &order[..5],
            [
                "shop-00007",
                "shop-00240",
                "shop-00200",
                "shop-00150",
                "shop-00001"
            ],
            "{order:?}"
        );
        assert!(page.contains("250 apps, 500 tokens: 496 ok, 1 refreshing, 2 failing, 1 expired"));
        assert!(page.contains("page 1 of 3"), "250 apps, 100 a page");
        assert!(page.contains("href=\"/?page=2\""));

        let last = render(
            &refresher,
            &[],
            &PageQuery::parse(Some("page=9")).unwrap(),
            now,
        );
        assert!(
            last.contains("page 3 of 3"),
            "a page past the end shows the last"
        );
        assert_eq!(last.matches("<section class=\"app\"").count(), 50);

        let found = render(
            &refresher,
            &[],
            &PageQuery::parse(Some("q=SHOP-0012")).unwrap(),
            now,
        );
        assert_eq!(
            found.matches("<section class=\"app\"").count(),
            10,
            "shop-00120..129"
        );
        assert!(found.contains("10 of 250 apps match"));
        assert!(found.contains("value=\"SHOP-0012\""));
        let none = render(
            &refresher,
            &[],
            &PageQuery::parse(Some("q=%3Cb%3E")).unwrap(),
            now,
        );
        assert!(none.contains("No app matches."));
        assert!(
            none.contains("value=\"&lt;b&gt;\""),
            "the search is escaped"
        );
    }

    #[test]
    fn text_is_escaped_for_html() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_704_038_400);
        assert_eq!(utc(t), "2023-12-31 16:00:00 UTC");
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_210_096);
        assert_eq!(utc(leap), "2024-02-29 12:34:56 UTC");
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(ago(Duration::from_secs(42)), "42 s");
        assert_eq!(ago(Duration::from_secs(600)), "10 min");
        assert_eq!(ago(Duration::from_secs(3 * 3600 + 5)), "3 h");
    }
}
