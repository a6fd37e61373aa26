//! The status page's pictures, drawn by the server as inline SVG: no script, no
//! framework, nothing fetched. Each is a few hundred bytes (a page shows 200 of each),
//! so the shapes are styled by the page's CSS classes (backgrounds and the timeline's
//! six-hour lines too), and the marks of a timeline are one path per kind.

use std::fmt::Write;
use std::time::SystemTime;

use crate::refresh::history::{Event, WINDOW};
use crate::refresh::quota::Usage;

/// Width of the quota bar, in pixels (and in its own units).
pub const QUOTA_WIDTH: f64 = 120.0;
/// Width of the 24-hour timeline, in pixels: 10 px an hour.
pub const TIMELINE_WIDTH: f64 = 240.0;

/// Today's calls against the daily limit: the bar of calls made, the reserve kept for
/// scheduled refreshes as a tinted zone at the end, red once WeChat said 45009.
/// `data-used`/`data-limit` carry the numbers the widths are drawn from.
pub fn quota_bar(out: &mut String, usage: Usage, reserve: u64) {
    let limit = usage.limit.max(1);
    let share = |calls: u64| calls.min(limit) as f64 / limit as f64 * QUOTA_WIDTH;
    let mut used = share(usage.used);
    if usage.used > 0 {
        used = used.max(1.0); // one call still shows
    }
    let reserve_x = share(limit.saturating_sub(reserve));
    let class = if usage.exhausted {
        "qx"
    } else if usage.used >= limit.saturating_sub(reserve) {
        "qw"
    } else {
        "qu"
    };
    let _ = write!(
        out,
        "<svg class=\"quota\" width=\"{QUOTA_WIDTH}\" height=\"10\" data-used=\"{used_calls}\" data-limit=\"{limit}\">\
         <title>{used_calls} of {limit} calls today, {reserve} kept for scheduled refreshes</title>\
         <rect class=\"qr\" x=\"{reserve_x:.1}\" width=\"{reserve_w:.1}\" height=\"10\"/>\
         <rect class=\"{class}\" width=\"{used:.1}\" height=\"10\"/></svg>",
        used_calls = usage.used,
        reserve_w = QUOTA_WIDTH - reserve_x,
    );
}

/// The 24 hours before `now`: a short green tick per refresh, a tall red one per
/// failure, hour lines every six hours. `data-refreshes`/`data-failures` count them.
pub fn timeline(out: &mut String, events: &[Event], now: SystemTime) {
    let since = now.checked_sub(WINDOW).unwrap_or(now);
    let x = |at: SystemTime| {
        let into = at.duration_since(since).unwrap_or_default().as_secs_f64();
        (into / WINDOW.as_secs_f64() * TIMELINE_WIDTH).clamp(1.0, TIMELINE_WIDTH - 1.0)
    };
    let (mut ok, mut failed) = (String::new(), String::new());
    let (mut oks, mut failures) = (0, 0);
    // One mark per pixel and kind: retries a second apart would draw the same line.
    let (mut last_ok, mut last_failed) = (None, None);
    for event in events {
        let at = x(event.at).round() as u32;
        if event.failed {
            failures += 1;
            if last_failed.replace(at) != Some(at) {
                let _ = write!(failed, "M{at} 1v14");
            }
        } else {
            oks += 1;
            if last_ok.replace(at) != Some(at) {
                let _ = write!(ok, "M{at} 4v8");
            }
        }
    }
    let _ = write!(
        out,
        "<svg class=\"tl\" width=\"{TIMELINE_WIDTH}\" height=\"16\" data-refreshes=\"{oks}\" data-failures=\"{failures}\">\
         <title>24 h: {oks} refreshed, {failures} failed</title>\
"
    );
    if !ok.is_empty() {
        let _ = write!(out, "<path class=\"tok\" d=\"{ok}\"/>");
    }
    if !failed.is_empty() {
        let _ = write!(out, "<path class=\"tfail\" d=\"{failed}\"/>");
    }
    out.push_str("</svg>");
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn usage(used: u64, exhausted: bool) -> Usage {
        Usage {
            used,
            limit: 2000,
            exhausted,
        }
    }

    #[test]
    fn the_quota_bar_is_as_wide_as_the_share_of_calls_made_and_marks_the_reserve() {
        let mut out = String::new();
        quota_bar(&mut out, usage(500, false), 200);
        assert!(out.contains("<rect class=\"qu\" width=\"30.0\""), "{out}");
        assert!(
            out.contains("<rect class=\"qr\" x=\"108.0\" width=\"12.0\""),
            "{out}"
        );
        assert!(
            out.contains("data-used=\"500\" data-limit=\"2000\""),
            "{out}"
        );

        let mut reserve = String::new();
        quota_bar(&mut reserve, usage(1900, false), 200);
        assert!(
            reserve.contains("class=\"qw\" width=\"114.0\""),
            "{reserve}"
        );
        let mut stopped = String::new();
        quota_bar(&mut stopped, usage(5000, true), 200);
        assert!(
            stopped.contains("class=\"qx\" width=\"120.0\""),
            "{stopped}"
        );
        let mut one = String::new();
        quota_bar(&mut one, usage(1, false), 200);
        assert!(one.contains("class=\"qu\" width=\"1.0\""), "{one}");
    }

    #[test]
    fn the_timeline_puts_each_event_at_its_hour_and_failures_apart() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let hours_ago = |h: u64| now - Duration::from_secs(h * 3600);
        let events = [
            Event {
                at: hours_ago(18),
                failed: false,
            },
            Event {
                at: hours_ago(12),
                failed: true,
            },
            Event {
                at: hours_ago(0),
                failed: false,
            },
        ];
        let mut out = String::new();
        timeline(&mut out, &events, now);
        assert!(
            out.contains("data-refreshes=\"2\" data-failures=\"1\""),
            "{out}"
        );
        assert!(
            out.contains("<path class=\"tok\" d=\"M60 4v8M239 4v8\"/>"),
            "{out}"
        );
        assert!(
            out.contains("<path class=\"tfail\" d=\"M120 1v14\"/>"),
            "{out}"
        );
        let mut quiet = String::new();
        timeline(&mut quiet, &[], now);
        assert!(
            !quiet.contains("tok") && !quiet.contains("tfail"),
            "{quiet}"
        );
    }
}
