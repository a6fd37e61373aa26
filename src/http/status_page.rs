//! `GET /`: one screen of server-rendered HTML for a person: each app and token with
//! its state, a live countdown to expiry, the last refresh and its trigger, the last
//! error with WeChat's errcode and a hint, and today's calls against the quota.
//!
//! No authentication, so it shows no token value and no secret, and every text from
//! elsewhere (names, WeChat's errmsg) is escaped. A few lines of inline JS count the
//! seconds down; without JS the page still shows them as rendered.

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

use super::AppState;
use crate::refresh::{Credential, Refresher};

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

/// `GET /`.
pub async fn index(State(state): State<AppState>) -> Response {
    let problems = state.refresher.readiness_problems().await;
    let page = render(&state.refresher, &problems, SystemTime::now());
    ([(header::CACHE_CONTROL, "no-store")], Html(page)).into_response()
}

fn render(refresher: &Refresher, problems: &[String], now: SystemTime) -> String {
    let mut out = String::with_capacity(8 * 1024);
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
        for problem in problems {
            let _ = write!(out, "<li>{}</li>", escape(problem));
        }
        out.push_str("</ul></section>");
    }
    for entry in refresher.snapshot().apps() {
        let app = entry.name();
        let _ = write!(
            out,
            "<section class=\"app\"><h2>App <code>{}</code></h2><table><thead><tr>\
             <th>Token</th><th>State</th><th>Expires in</th><th>Last refresh</th>\
             <th>Last error</th><th>WeChat calls today</th></tr></thead><tbody>",
            escape(app)
        );
        for cred in &entry.creds {
            row(&mut out, refresher, cred, now);
        }
        out.push_str("</tbody></table></section>");
    }
    let _ = writeln!(
        out,
        "</main><footer>Times in UTC. WeChat's quota day starts at midnight China time (16:00 UTC). \
         Metrics: <a href=\"/metrics\">/metrics</a> &middot; health: <a href=\"/healthz\">/healthz</a> \
         <a href=\"/readyz\">/readyz</a></footer><script>{SCRIPT}</script></body></html>"
    );
    out
}

fn row(out: &mut String, refresher: &Refresher, cred: &Credential, now: SystemTime) {
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
                let _ = write!(out, "<div class=\"hint\">{}</div>", escape(advice.hint));
            }
        }
        None => out.push_str("<span class=\"muted\">none</span>"),
    }
    let _ = write!(
        out,
        "</td><td>{} / {} <span class=\"muted\">{}</span></td></tr>",
        usage.used,
        usage.limit,
        escape(&cred.labels.endpoint)
    );
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
