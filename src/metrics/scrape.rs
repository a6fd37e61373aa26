//! The gauges that describe the present (tokens by state, time to expiry, today's
//! quota use), computed from the credentials at each scrape and written straight to
//! the text format: exact whenever read, nothing kept in between, and an app that is
//! no longer configured simply is not there.
//!
//! Per app and token they are the bulk of `/metrics` at scale, so each earns its place:
//! with `per_app`, one expiry gauge per token (the one number that says whether a
//! token is fine) and quota gauges only for endpoints that spend noticeably; always,
//! aggregates whose size does not depend on the number of apps.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use super::{
    CredentialLabels, QUOTA_EXHAUSTED, QUOTA_EXHAUSTED_APPS, QUOTA_SERIES_SHARE, QUOTA_USED,
    QUOTA_USED_MAX, TOKEN_EXPIRES_IN, TOKEN_MIN_EXPIRES_IN, TOKENS,
};
use crate::refresh::TokenState;

/// Today's quota of one endpoint, over every app.
#[derive(Debug, Default, Clone, Copy)]
struct EndpointDay {
    max_used: u64,
    exhausted_apps: u64,
}

/// One scrape's gauges; feed it every credential ([`token`](Self::token)) and every
/// app's endpoint once ([`quota`](Self::quota)), then render with
/// [`Metrics::render`](super::Metrics::render).
#[derive(Debug)]
pub struct Scrape {
    per_app: bool,
    quota_limit: u64,
    /// Tokens per state, in the order of [`TokenState::ALL`].
    tokens: [u64; 4],
    /// The least life left of a served token; `None` while none is served.
    min_expires_in: Option<u64>,
    /// Any credential at all?
    any: bool,
    /// Sample lines of the per-app families, each family's lines together as the
    /// text format wants them.
    expires: String,
    quota_used: String,
    quota_exhausted: String,
    endpoints: BTreeMap<Arc<str>, EndpointDay>,
}

impl Scrape {
    pub(super) fn new(per_app: bool, quota_limit: u64) -> Self {
        Self {
            per_app,
            quota_limit,
            tokens: [0; 4],
            min_expires_in: None,
            any: false,
            expires: String::new(),
            quota_used: String::new(),
            quota_exhausted: String::new(),
            endpoints: BTreeMap::new(),
        }
    }

    /// One credential: its state and the life its served token has left (`None` when
    /// no token may be served).
    pub fn token(&mut self, labels: &CredentialLabels, state: TokenState, expires_in: Option<u64>) {
        self.any = true;
        let index = TokenState::ALL
            .iter()
            .position(|s| *s == state)
            .unwrap_or_default();
        self.tokens[index] += 1;
        if let Some(left) = expires_in {
            self.min_expires_in = Some(self.min_expires_in.map_or(left, |min| min.min(left)));
        }
        if self.per_app {
            let out = &mut self.expires;
            out.push_str(TOKEN_EXPIRES_IN);
            labels_of(out, &[("app", &labels.app), ("token", &labels.token)]);
            let _ = writeln!(out, " {}", expires_in.unwrap_or(0));
        }
    }

    /// Today's use of one app's endpoint: call once per (app, endpoint).
    pub fn quota(&mut self, labels: &CredentialLabels, used: u64, exhausted: bool) {
        let day = self.endpoints.entry(labels.endpoint.clone()).or_default();
        day.max_used = day.max_used.max(used);
        day.exhausted_apps += u64::from(exhausted);
        if !self.per_app {
            return;
        }
        let pair = [("app", &*labels.app), ("endpoint", &*labels.endpoint)];
        if exhausted || used.saturating_mul(QUOTA_SERIES_SHARE) >= self.quota_limit {
            self.quota_used.push_str(QUOTA_USED);
            labels_of(&mut self.quota_used, &pair);
            let _ = writeln!(self.quota_used, " {used}");
        }
        if exhausted {
            self.quota_exhausted.push_str(QUOTA_EXHAUSTED);
            labels_of(&mut self.quota_exhausted, &pair);
            self.quota_exhausted.push_str(" 1\n");
        }
    }

    /// Roughly the bytes [`write`](Self::write) adds.
    pub(super) fn len(&self) -> usize {
        self.expires.len() + self.quota_used.len() + self.quota_exhausted.len() + 4096
    }

    pub(super) fn write(&self, out: &mut String) {
        header(
            out,
            TOKENS,
            "Tokens by state: ok, refreshing (due or first fetch under way), failing (last attempt failed, still served), expired (nothing to serve)",
        );
        for (state, count) in TokenState::ALL.iter().zip(self.tokens) {
            let _ = writeln!(out, "{TOKENS}{{state=\"{}\"}} {count}", state.as_str());
        }
        header(
            out,
            TOKEN_MIN_EXPIRES_IN,
            "Seconds of life left of the token served that expires first (0 when no token is served, +Inf when there are no tokens)",
        );
        match (self.min_expires_in, self.any) {
            (Some(min), _) => {
                let _ = writeln!(out, "{TOKEN_MIN_EXPIRES_IN} {min}");
            }
            (None, true) => {
                let _ = writeln!(out, "{TOKEN_MIN_EXPIRES_IN} 0");
            }
            (None, false) => {
                let _ = writeln!(out, "{TOKEN_MIN_EXPIRES_IN} +Inf");
            }
        }
        header(
            out,
            QUOTA_USED_MAX,
            "The most calls to WeChat any app made today (WeChat's day, midnight China time) to the endpoint, against [quota] daily_limit",
        );
        for (endpoint, day) in &self.endpoints {
            out.push_str(QUOTA_USED_MAX);
            labels_of(out, &[("endpoint", endpoint)]);
            let _ = writeln!(out, " {}", day.max_used);
        }
        header(
            out,
            QUOTA_EXHAUSTED_APPS,
            "Apps whose quota of the endpoint WeChat declared used up today (45009): not called until midnight China time",
        );
        for (endpoint, day) in &self.endpoints {
            out.push_str(QUOTA_EXHAUSTED_APPS);
            labels_of(out, &[("endpoint", endpoint)]);
            let _ = writeln!(out, " {}", day.exhausted_apps);
        }
        if !self.per_app {
            return;
        }
        header(
            out,
            TOKEN_EXPIRES_IN,
            "Seconds until the token served expires (0 when no token is held)",
        );
        out.push_str(&self.expires);
        header(
            out,
            QUOTA_USED,
            "Calls to WeChat counted today by app and endpoint, for endpoints that used a tenth of [quota] daily_limit or more",
        );
        out.push_str(&self.quota_used);
        header(
            out,
            QUOTA_EXHAUSTED,
            "1 while WeChat answered 45009 today: the endpoint is not called until midnight China time (only such endpoints are listed)",
        );
        out.push_str(&self.quota_exhausted);
    }
}

fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

/// `{k="v",...}` with values escaped as the text format wants (`\`, `"`, newline).
fn labels_of(out: &mut String, pairs: &[(&str, &str)]) {
    out.push('{');
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(app: &str, token: &str, endpoint: &str) -> CredentialLabels {
        CredentialLabels::new(app, token, endpoint)
    }

    fn rendered(scrape: &Scrape) -> String {
        let mut out = String::new();
        scrape.write(&mut out);
        out
    }

    #[test]
    fn tokens_are_counted_by_state_and_the_least_life_left_is_kept() {
        let mut scrape = Scrape::new(true, 2000);
        let token = labels("shop", "access_token", "/cgi-bin/token");
        scrape.token(&token, TokenState::Ok, Some(7000));
        scrape.token(&token, TokenState::Failing, Some(300));
        scrape.token(&token, TokenState::Expired, None);
        let text = rendered(&scrape);
        for line in [
            "wts_tokens{state=\"ok\"} 1",
            "wts_tokens{state=\"refreshing\"} 0",
            "wts_tokens{state=\"failing\"} 1",
            "wts_tokens{state=\"expired\"} 1",
            "wts_token_min_expires_in_seconds 300",
            "wts_token_expires_in_seconds{app=\"shop\",token=\"access_token\"} 0",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn the_least_life_left_is_zero_when_nothing_is_served_and_infinite_without_tokens() {
        let empty = rendered(&Scrape::new(true, 2000));
        assert!(
            empty.contains("wts_token_min_expires_in_seconds +Inf\n"),
            "{empty}"
        );
        let mut scrape = Scrape::new(true, 2000);
        scrape.token(&labels("a", "t", "/e"), TokenState::Refreshing, None);
        let text = rendered(&scrape);
        assert!(
            text.contains("wts_token_min_expires_in_seconds 0\n"),
            "{text}"
        );
    }

    #[test]
    fn quota_series_per_app_only_for_endpoints_that_spend_and_aggregates_always() {
        let mut scrape = Scrape::new(true, 2000);
        scrape.quota(
            &labels("quiet", "access_token", "/cgi-bin/token"),
            12,
            false,
        );
        scrape.quota(
            &labels("busy", "access_token", "/cgi-bin/token"),
            1600,
            false,
        );
        scrape.quota(
            &labels("stopped", "jsapi_ticket", "/cgi-bin/ticket/getticket"),
            3,
            true,
        );
        let text = rendered(&scrape);
        assert!(!text.contains("app=\"quiet\""), "{text}");
        for line in [
            "wts_quota_used{app=\"busy\",endpoint=\"/cgi-bin/token\"} 1600",
            "wts_quota_used{app=\"stopped\",endpoint=\"/cgi-bin/ticket/getticket\"} 3",
            "wts_quota_exhausted{app=\"stopped\",endpoint=\"/cgi-bin/ticket/getticket\"} 1",
            "wts_quota_used_max{endpoint=\"/cgi-bin/token\"} 1600",
            "wts_quota_exhausted_apps{endpoint=\"/cgi-bin/token\"} 0",
            "wts_quota_exhausted_apps{endpoint=\"/cgi-bin/ticket/getticket\"} 1",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn without_per_app_no_series_names_an_app_or_a_token() {
        let mut scrape = Scrape::new(false, 2000);
        let token = labels("shop", "access_token", "/cgi-bin/token");
        scrape.token(&token, TokenState::Ok, Some(7000));
        scrape.quota(&token, 1999, true);
        let text = rendered(&scrape);
        assert!(
            !text.contains("shop") && !text.contains("access_token"),
            "{text}"
        );
        assert!(!text.contains("wts_token_expires_in_seconds"), "{text}");
        assert!(text.contains("wts_tokens{state=\"ok\"} 1"), "{text}");
        assert!(text.contains("wts_quota_exhausted_apps{endpoint=\"/cgi-bin/token\"} 1"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        labels_of(&mut out, &[("endpoint", "/a\"b\\c\nd")]);
        assert_eq!(out, r#"{endpoint="/a\"b\\c\nd"}"#);
    }
}
