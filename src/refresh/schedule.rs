//! When each token is refreshed, and the task per credential that does it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Credential, Refresher, Trigger};

/// How long before expiry a token is refreshed: a fifth of its lifetime. A 7200 s
/// token is refreshed 24 minutes early, which leaves room for many retries with
/// backoff while the old token is still served; a 12 s token 2.4 s early, so short
/// lifetimes are not refreshed continuously.
pub fn refresh_lead(lifetime: Duration) -> Duration {
    lifetime / 5
}

/// Delay before retry number `failures` (1-based): `min` doubled each time, at most `max`.
pub fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
    min.saturating_mul(factor).min(max)
}

/// Spreads retries of many instances and tokens: a random point in [d/2, d].
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.5..=1.0))
}

impl Refresher {
    /// How long until `cred` should be refreshed, from its token and its failures.
    pub fn next_refresh_in(&self, cred: &Credential, now: SystemTime) -> Duration {
        let live = cred.live_token(now);
        let due_in = live.as_ref().map_or(Duration::ZERO, |t| {
            t.remaining(now).saturating_sub(refresh_lead(t.lifetime()))
        });
        if let Some(until) = self.quota.blocked_until(&cred.labels, now) {
            // WeChat said 45009: calling before its day rolls over only gets 45009 again.
            return due_in.max(until.duration_since(now).unwrap_or_default());
        }
        let status = cred.status();
        if status.consecutive_failures == 0 {
            return due_in;
        }
        let s = &self.settings;
        let since_failure = status
            .last_attempt_at
            .and_then(|at| now.duration_since(at).ok())
            .unwrap_or_default();
        if cred.needs_person().is_some() {
            // Retrying at full speed cannot fix a wrong secret or a missing whitelist
            // entry; it only spends quota and fills the logs. Retrying slowly, even
            // while the token is not due, notices the fix within this delay, so the
            // instance turns ready again soon after a person acted.
            return s.needs_person_retry_delay.saturating_sub(since_failure);
        }
        let mut retry = jitter(backoff(
            status.consecutive_failures,
            s.min_retry_delay,
            s.max_retry_delay,
        ));
        if let Some(token) = &live {
            // Keep retrying often enough to replace the token before it dies.
            retry = retry.min((token.remaining(now) / 2).max(s.min_retry_delay));
        }
        due_in.max(retry.saturating_sub(since_failure))
    }

    /// Starts one refresh task per credential.
    pub fn spawn_schedulers(self: &Arc<Self>, tracker: &TaskTracker, cancel: &CancellationToken) {
        for cred in &self.ordered {
            let refresher = self.clone();
            let cred = cred.clone();
            let cancel = cancel.clone();
            tracker.spawn(async move { refresher.run_scheduler(cred, cancel).await });
        }
    }

    /// Sleeps until the token is due, refreshes it, repeats. Wakes early when the token
    /// changes under it (a force refresh, another instance's refresh) or a force
    /// refresh failed, and stops on cancellation.
    async fn run_scheduler(&self, cred: Arc<Credential>, cancel: CancellationToken) {
        let mut installs = cred.watch_installs();
        loop {
            installs.mark_unchanged();
            let wait = self.next_refresh_in(&cred, SystemTime::now());
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = installs.changed() => continue,
                () = cred.failed.notified() => continue,
                () = tokio::time::sleep(wait) => {}
            }
            // Errors are logged and recorded by `refresh`; the next loop backs off.
            let _ = self.refresh(&cred, Trigger::Scheduled, None).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_two_hour_token_keeps_at_least_fifteen_minutes_of_retry_room() {
        assert!(refresh_lead(Duration::from_secs(7200)) >= Duration::from_secs(15 * 60));
        assert!(refresh_lead(Duration::from_secs(7000)) >= Duration::from_secs(15 * 60));
    }

    #[test]
    fn a_short_token_is_refreshed_a_few_seconds_early_not_continuously() {
        let lead = refresh_lead(Duration::from_secs(12));
        assert!(
            lead >= Duration::from_secs(1) && lead <= Duration::from_secs(4),
            "{lead:?}"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let delays: Vec<u64> = (1..=8).map(|n| backoff(n, min, max).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(u32::MAX, min, max), max);
    }

    #[test]
    fn jitter_stays_within_half_and_whole() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(10));
            assert!(d >= Duration::from_secs(5) && d <= Duration::from_secs(10));
        }
    }
}
