//! One call to WeChat with everything around it: the quota guard's admission, a permit
//! of `refresh.max_concurrent_calls`, the metrics, the quota count, and the log line that
//! tells a person what to fix.
//!
//! The permit is taken here, around the call alone: a ticket waiting for its
//! access_token holds none (else tickets holding every permit would wait for tokens
//! that cannot get one). Permits are handed out in arrival order, so a force refresh
//! queues behind a first start's backlog like any call; its caller stops waiting after
//! `FORCE_REFRESH_WAIT`, as for any flight, and the call goes on without it.

use tokio::time::Instant;

use super::error::RefreshError;
use super::quota::Spend;
use super::{Credential, Refresher, Trigger};
use crate::upstream::{self, Fetched, errcode::ip_in_errmsg};

impl Refresher {
    /// Calls WeChat for `cred` if the quota allows it; `lookup` gives the values of the
    /// tokens its source refers to; `forced` selects stable_token's forced mode.
    ///
    /// # Errors
    /// WeChat's (or the network's) error, or the quota guard's refusal (no call made).
    pub(super) async fn call_upstream(
        &self,
        cred: &Credential,
        trigger: Trigger,
        forced: bool,
        lookup: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<Fetched, RefreshError> {
        let now = self.clock.now();
        let retry = cred.status().consecutive_failures > 0;
        let spend = Spend::of(trigger, retry, cred.live_token(now).is_some());
        self.quota.admit(&cred.labels, spend, now)?;

        let permit = self.calls.acquire().await.map_err(|_| {
            // Never closed; should it be, refusing the call beats calling unbounded.
            RefreshError::Task("the upstream call limit was closed".into())
        })?;
        let started = Instant::now();
        let result = self.api.fetch(&cred.source, lookup, forced).await;
        drop(permit);
        let outcome = match &result {
            Ok(_) => "ok".into(),
            Err(e) => e.outcome().into(),
        };
        self.metrics
            .upstream_call(&cred.labels, outcome, started.elapsed());
        self.quota
            .record(&cred.labels, result.as_ref().err(), self.clock.now())
            .await;
        Ok(result?)
    }
}

/// Logs a failed refresh: one line per occurrence; for an error only a person can fix,
/// an error-level line saying what to fix (and, for 40164, the IP WeChat saw).
pub(super) fn log_failure(cred: &Credential, trigger: Trigger, error: &RefreshError) {
    let (app, token, trigger) = (&cred.key.app, &cred.key.name, trigger.as_str());
    match error.advice(cred.is_token_call()) {
        Some(advice) if advice.needs_person => {
            let ip = match error {
                RefreshError::Upstream(upstream::Error::WeChat { errmsg, .. }) => {
                    ip_in_errmsg(errmsg)
                }
                _ => None,
            };
            tracing::error!(
                app = %app, token = %token, trigger, errcode = error.errcode(), ip_seen_by_wechat = ip,
                %error, fix = advice.hint,
                "refresh failed and needs a person: {}", advice.hint
            );
        }
        // A platform's component token before the first verify ticket is pushed: the
        // normal state of a fresh deployment for a few seconds, not a fault.
        _ if error.is_missing_dependency() => {
            tracing::info!(app = %app, token = %token, trigger, %error, "refresh waits for a token it needs");
        }
        _ => tracing::warn!(app = %app, token = %token, trigger, %error, "refresh failed"),
    }
}
