//! Readiness: what keeps this instance from serving every configured token for the
//! next while. `/readyz`, the `wts_ready` metric and the `healthcheck` command all use
//! this list, so they always agree.

use std::collections::HashSet;
use std::time::Duration;

use super::Refresher;

/// Life a token must have left for the instance to be ready: a twentieth of its
/// lifetime, at most a minute. Refreshes start a fifth of the lifetime before expiry,
/// so a token this close to its end means refreshing has been failing for a while.
pub fn ready_margin(lifetime: Duration) -> Duration {
    (lifetime / 20).min(Duration::from_secs(60))
}

impl Refresher {
    /// Everything that makes this instance not ready; empty when it is ready:
    /// - a token not held, or with less than [`ready_margin`] of life left;
    /// - a token failing with an error only a person can fix (40164, 40125, ...);
    /// - an API of an app stopped for the day by WeChat's 45009;
    /// - a token served but not durably stored (a failed save, retried);
    /// - a store that cannot be written.
    pub async fn readiness_problems(&self) -> Vec<String> {
        let now = self.clock.now();
        let mut problems = Vec::new();
        // A set: with thousands of apps a list made this quadratic (seconds a scrape).
        let mut endpoints_seen = HashSet::new();
        for cred in self.snapshot().credentials() {
            let key = &cred.key;
            let status = cred.status();
            let last_error = status
                .last_error
                .as_ref()
                .filter(|_| status.consecutive_failures > 0)
                .map(|(error, _)| format!(" (last error: {error})"))
                .unwrap_or_default();
            match cred.live_token(now) {
                None if cred.source.pushed => problems.push(format!(
                    "{key}: not pushed yet: WeChat pushes it to the platform's event URL (/wechat/component/{}/events) every 10 minutes, and was asked to push one now; check the console's authorisation-event URL and that it reaches this instance",
                    key.app
                )),
                None => problems.push(format!("{key}: no token with life left{last_error}")),
                Some(token) if token.remaining(now) < ready_margin(token.lifetime()) => {
                    problems.push(format!(
                        "{key}: expires in {} s and has not been refreshed{last_error}",
                        token.remaining(now).as_secs()
                    ));
                }
                Some(_) => {}
            }
            if let Some(unsaved) = status.unsaved.as_ref() {
                problems.push(format!("{key}: the token served is {unsaved}"));
            }
            if let Some((error, advice)) = cred.needs_person() {
                problems.push(format!("{key}: needs a person: {error}: {}", advice.hint));
            }
            let endpoint = (&cred.labels.app, &cred.labels.endpoint);
            if endpoints_seen.insert(endpoint) && self.quota.usage(&cred.labels, now).exhausted {
                problems.push(format!(
                    "{} {}: WeChat's daily quota is used up (errcode 45009); no calls until midnight China time",
                    key.app, cred.labels.endpoint
                ));
            }
        }
        if let Err(error) = self.store.ping().await {
            // The error's text already includes its cause.
            problems.push(format!(
                "store ({}) cannot be written: {error}",
                self.store.backend()
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_a_twentieth_of_the_lifetime_and_at_most_a_minute() {
        assert_eq!(
            ready_margin(Duration::from_secs(7200)),
            Duration::from_secs(60)
        );
        assert_eq!(
            ready_margin(Duration::from_secs(20)),
            Duration::from_secs(1)
        );
    }
}
