//! The single-flight refresh path. Every refresh (scheduled, forced, or needed by a
//! dependent token) goes through [`Refresher::refresh`], which holds the credential's
//! `flight` lock while it calls WeChat. Callers that queued behind a refresh see that
//! the count of completed flights moved while they waited and take its outcome instead
//! of calling WeChat again: a storm of N requests costs one upstream call. With a
//! shared store, the cluster lease (see `lease`) does the same across instances.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::call::log_failure;
use super::lease::Acquired;
use super::stable::Mode;
use super::{Credential, Refresher, Token, Trigger};
use crate::domain::token_prefix;
use crate::store::SaveOutcome;
use crate::upstream;

use super::error::RefreshError;

/// What a force refresh did, for the caller and for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// This call fetched a new token from WeChat (or tried to, and failed).
    Performed,
    /// Another call's refresh, in flight while this one waited, answered it.
    Shared,
    /// The `stale` token given is no longer the current one: the current one answers.
    Stale,
    /// No `stale` token given and the token was refreshed too recently, or WeChat failed
    /// a moment ago.
    RateLimited,
    /// The quota guard keeps the rest of today's quota for scheduled refreshes: the
    /// current token answers if it has life left, else an error.
    QuotaRefused,
    /// WeChat still accepts the `stale` token (stable_token sources probe before a
    /// forced call): it is answered, and nothing is spent.
    StillValid,
    /// No call was made: with a shared store, this instance could not get the cluster
    /// lease (the store is unreachable, or another instance is slow to finish).
    Deferred,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Performed => "performed",
            Decision::Shared => "shared",
            Decision::Stale => "stale",
            Decision::RateLimited => "rate_limited",
            Decision::QuotaRefused => "quota_refused",
            Decision::StillValid => "still_valid",
            Decision::Deferred => "deferred",
        }
    }
}

/// How long a force refresh waits for its answer: one upstream call per host, a
/// dependency's, and a cluster lease wait fit in it. Past it the caller gets WeChat's
/// timeout error, and the refresh itself goes on.
pub const FORCE_REFRESH_WAIT: Duration = Duration::from_secs(30);

/// A decision with its answer.
type Attempt = (Decision, Result<Arc<Token>, RefreshError>);

/// State guarded by the flight lock.
#[derive(Debug, Default)]
pub struct FlightState {
    /// Outcome of the last attempt, handed to callers that waited for it.
    last_error: Option<RefreshError>,
    /// When the last upstream call ended, for the cool-down after a failure.
    last_attempt: Option<Instant>,
    /// stable_token's forced calls spent (see `stable`).
    stable: super::stable::ForcedBudget,
}

impl Refresher {
    /// A client's request for a token newer than `stale` (or, without `stale`, a new
    /// token, rate-limited by `refresh.force_min_interval`).
    ///
    /// # Errors
    /// WeChat's error when the refresh failed and no token newer than `stale` exists;
    /// the quota guard's refusal when no token with life left is held.
    pub async fn force_refresh(
        self: &Arc<Self>,
        cred: &Arc<Credential>,
        stale: Option<&str>,
    ) -> Result<(Arc<Token>, Decision), RefreshError> {
        if let (Some(stale), Some(token)) = (stale, cred.live_token(SystemTime::now()))
            && token.value != stale
        {
            self.metrics
                .force_refresh(&cred.labels, Decision::Stale.as_str());
            return Ok((token, Decision::Stale)); // no lock, no call
        }
        // The attempt runs on a task of its own: a client that disconnects (or times
        // out) must not cancel a call to WeChat halfway, which would lose the token
        // WeChat just issued and leave the callers queued behind it to call again.
        let attempt = self.forced.spawn({
            let (refresher, cred) = (self.clone(), cred.clone());
            let stale = stale.map(str::to_owned);
            async move {
                let (decision, result) = refresher
                    .attempt(&cred, Trigger::Forced, stale.as_deref())
                    .await;
                refresher
                    .metrics
                    .force_refresh(&cred.labels, decision.as_str());
                result.map(|token| (token, decision))
            }
        });
        match tokio::time::timeout(FORCE_REFRESH_WAIT, attempt).await {
            Ok(Ok(outcome)) => outcome,
            // The attempt died part-way, perhaps with its call to WeChat out: as with a
            // connection lost after sending, the outcome is unknown.
            Ok(Err(panicked)) => Err(upstream::Error::Transport(upstream::Cause::message(
                format!("refresh task failed: {panicked}"),
            ))
            .into()),
            // The attempt goes on, and its token is served when it arrives.
            Err(_) => Err(upstream::Error::Timeout.into()),
        }
    }

    /// Refreshes `cred` unless the wait for the flight lock made it unnecessary.
    pub(super) async fn refresh(
        &self,
        cred: &Arc<Credential>,
        trigger: Trigger,
        stale: Option<&str>,
    ) -> Result<(Arc<Token>, Decision), RefreshError> {
        let (decision, result) = self.attempt(cred, trigger, stale).await;
        result.map(|token| (token, decision))
    }

    /// The single-flight refresh: decides whether a call is needed and makes it.
    async fn attempt(
        &self,
        cred: &Arc<Credential>,
        trigger: Trigger,
        stale: Option<&str>,
    ) -> Attempt {
        let flights_seen = cred.completed_flights.load(Ordering::Acquire);
        let mut flight = cred.flight.lock().await;
        let now = SystemTime::now();
        let current = cred.live_token(now);

        if cred.completed_flights.load(Ordering::Acquire) != flights_seen {
            // A refresh ended while we queued: share its outcome.
            match (&current, &flight.last_error) {
                (Some(token), _) if stale.is_none_or(|s| s != token.value) => {
                    return (Decision::Shared, Ok(token.clone()));
                }
                (_, Some(error)) => return (Decision::Shared, Err(error.clone())),
                _ => {} // it succeeded but did not replace `stale` (or expired): go on
            }
        }
        let mut current = current;
        let lease = loop {
            let now = SystemTime::now();
            if let Some(answer) =
                self.answer_without_call(cred, &flight, current.clone(), trigger, stale, now)
            {
                return answer;
            }
            match self.acquire_lease(cred, trigger, stale).await {
                // Another instance refreshed meanwhile: decide again with its token.
                Ok(Acquired::Updated) => current = cred.live_token(SystemTime::now()),
                Ok(Acquired::Lease(guard)) => break Ok(guard),
                Err(error) => break Err(RefreshError::from(error)),
            }
        };
        let result = match lease {
            // No call was made: the cluster could not settle who refreshes. Callers
            // queued here share this outcome like a failed call's, instead of each
            // waiting for the lease again.
            Err(deferred) => Err(deferred),
            Ok(lease) => {
                // Under the lease, so that one instance of a cluster probes, not all.
                let forced = match self
                    .stable_mode(cred, &mut flight.stable, trigger, stale, current.as_ref())
                    .await
                {
                    Mode::StillAccepted(token) => return (Decision::StillValid, Ok(token)),
                    Mode::Forced => true,
                    Mode::Normal => false,
                };
                let result = self.fetch_and_install(cred, trigger, forced).await;
                drop(lease);
                result
            }
        };
        let now = SystemTime::now();
        self.metrics.refresh(
            &cred.labels,
            trigger.as_str(),
            result
                .as_ref()
                .map_or_else(RefreshError::outcome, |_| "ok".into()),
        );
        if let Err(RefreshError::Quota(refusal)) = &result {
            // No call was made, so this is no flight: waiters decide for themselves.
            return self.refused(cred, trigger, stale, current, refusal, now);
        }
        flight.last_attempt = Some(Instant::now());
        cred.completed_flights.fetch_add(1, Ordering::AcqRel);
        match result {
            Ok(token) => {
                flight.last_error = None;
                cred.record_success(now);
                (Decision::Performed, Ok(token))
            }
            Err(error) => {
                log_failure(cred, trigger, &error);
                flight.last_error = Some(error.clone());
                cred.record_failure(&error, now);
                let decision =
                    if matches!(error, RefreshError::Upstream(upstream::Error::Deferred(_))) {
                        Decision::Deferred
                    } else {
                        Decision::Performed
                    };
                (decision, Err(error))
            }
        }
    }

    /// The answer when the quota guard refused the call: a force refresh gets the
    /// current token while it has life left, unless that is the token it reported as
    /// rejected; the scheduler records an attempt so that it backs off instead of
    /// asking again at once.
    fn refused(
        &self,
        cred: &Credential,
        trigger: Trigger,
        stale: Option<&str>,
        current: Option<Arc<Token>>,
        refusal: &super::quota::Refusal,
        now: SystemTime,
    ) -> Attempt {
        let error = RefreshError::Quota(refusal.clone());
        match (trigger, current) {
            // The live token answers a caller that did not report it as rejected; one
            // that did gets the refusal, not the very token it reported.
            (Trigger::Forced, Some(token)) if stale != Some(token.value.as_str()) => {
                (Decision::QuotaRefused, Ok(token))
            }
            (Trigger::Forced, _) => (Decision::QuotaRefused, Err(error)),
            _ => {
                cred.record_failure(&error, now);
                (Decision::QuotaRefused, Err(error))
            }
        }
    }

    /// How long forced refreshes wait after a failed call before calling again: an
    /// error only a person can fix waits `refresh.needs_person_retry_delay`. After a
    /// 45009 the quota guard makes no call anyway and answers with the live token, so
    /// callers get that at once rather than the error.
    fn forced_cooldown(&self, cred: &Credential, error: &RefreshError) -> Duration {
        if error.errcode() == Some(super::quota::QUOTA_ERRCODE) {
            Duration::ZERO
        } else if error.needs_person(cred.is_token_call()) {
            self.settings.needs_person_retry_delay
        } else {
            self.settings.min_retry_delay
        }
    }

    /// The answer to give without calling WeChat, when no call is needed.
    fn answer_without_call(
        &self,
        cred: &Credential,
        flight: &FlightState,
        current: Option<Arc<Token>>,
        trigger: Trigger,
        stale: Option<&str>,
        now: SystemTime,
    ) -> Option<Attempt> {
        if let Some(token) = &current {
            let decision = match (stale, trigger) {
                (Some(stale), _) => (token.value != stale).then_some(Decision::Stale),
                // Measured from the token's own refresh, so the limit holds across a
                // cluster.
                (None, Trigger::Forced) => {
                    (now.duration_since(token.refreshed_at).unwrap_or_default()
                        < self.settings.force_min_interval)
                        .then_some(Decision::RateLimited)
                }
                // Not due yet. But after an error only a person can fix, the
                // scheduler's slow retry is a probe: it calls, so that the fix is noticed.
                (None, Trigger::Scheduled) => (token.remaining(now)
                    > super::refresh_lead(token.lifetime())
                    && cred.needs_person().is_none())
                .then_some(Decision::Shared),
                (None, Trigger::Dependency | Trigger::Restored | Trigger::Peer) => {
                    Some(Decision::Shared)
                }
            };
            if let Some(decision) = decision {
                return Some((decision, Ok(token.clone())));
            }
        }
        // A call is needed; but WeChat failed a moment ago, and calling again at once
        // would only add load: a forced caller gets that failure (or, if it reported no
        // stale token, the live one).
        let since_attempt = flight.last_attempt.map(|at| at.elapsed());
        if let Some(error) = &flight.last_error
            && trigger == Trigger::Forced
            && since_attempt.is_some_and(|d| d < self.forced_cooldown(cred, error))
        {
            return Some(match (current, stale) {
                (Some(token), None) => (Decision::RateLimited, Ok(token)),
                _ => (Decision::RateLimited, Err(error.clone())),
            });
        }
        None
    }

    /// Calls WeChat (after making sure the tokens it refers to are live), stores the
    /// new token and starts serving it. `forced`: use stable_token's forced mode.
    async fn fetch_and_install(
        &self,
        cred: &Arc<Credential>,
        trigger: Trigger,
        forced: bool,
    ) -> Result<Arc<Token>, RefreshError> {
        let started = SystemTime::now();
        let mut deps: Vec<(&Arc<Credential>, Arc<Token>)> =
            Vec::with_capacity(cred.source.deps.len());
        for name in &cred.source.deps {
            let dep = self
                .credential(&cred.key.app, name)
                .expect("config validation guarantees every dependency exists");
            let token = match dep.live_token(started) {
                Some(token) => token,
                None => {
                    Box::pin(self.refresh(dep, Trigger::Dependency, None))
                        .await?
                        .0
                }
            };
            deps.push((dep, token));
        }

        let mut result = self
            .call_upstream(cred, trigger, forced, &lookup(&deps))
            .await;
        if matches!(&result, Err(RefreshError::Upstream(e)) if e.is_token_rejected())
            && !deps.is_empty()
        {
            // WeChat rejected the access_token we sent: get a newer one (single-flight,
            // and no call at all if another refresh already replaced it), then retry once.
            tracing::info!(app = %cred.key.app, token = %cred.key.name, "dependency token rejected by WeChat; refreshing it");
            for (dep, token) in &mut deps {
                *token = Box::pin(self.refresh(dep, Trigger::Dependency, Some(&token.value)))
                    .await?
                    .0;
            }
            result = self
                .call_upstream(cred, trigger, forced, &lookup(&deps))
                .await;
        }
        let fetched = result?;

        let lifetime = fetched
            .expires_in
            .or(self.settings.token_expire_time)
            .ok_or_else(|| {
                upstream::Error::Malformed(format!(
                    "no {:?} field in the reply and refresh.token_expire_time is not set",
                    cred.source.expires_field
                ))
            })?;
        let lifetime = self
            .settings
            .token_expire_time
            .map_or(lifetime, |cap| lifetime.min(cap));
        // The lifetime counts from before the request was sent, so we never serve a
        // token past WeChat's own expiry.
        let expires_at = started.checked_add(lifetime).ok_or_else(|| {
            upstream::Error::Malformed(format!(
                "a lifetime of {} s is out of range",
                lifetime.as_secs()
            ))
        })?;
        let token = Token::new(
            fetched.value,
            expires_at,
            started,
            cred.next_version(),
            trigger,
        );
        match self.store.save(&token.to_stored(&cred.key)).await {
            Ok(SaveOutcome::Saved) => {}
            Ok(SaveOutcome::Outdated) => {
                // Only possible when our lease expired mid-call: the cluster keeps the
                // token already stored, so every instance serves the same one.
                tracing::warn!(app = %cred.key.app, token = %cred.key.name, "a newer token was stored by another instance; adopting it");
                if let Ok(Some(stored)) = self.store.load(&cred.key).await
                    && cred.adopt(&stored, SystemTime::now())
                    && let Some(adopted) = cred.current()
                {
                    return Ok(adopted);
                }
            }
            Err(error) => {
                // Serve it anyway: WeChat has already replaced the old one. With a
                // shared store, the sync task writes it back once the store answers.
                tracing::error!(app = %cred.key.app, token = %cred.key.name, backend = self.store.backend(), %error, "cannot store refreshed token");
            }
        }
        tracing::info!(
            app = %cred.key.app, token = %cred.key.name, trigger = trigger.as_str(),
            value = %token_prefix(&token.value), expires_in = lifetime.as_secs(), version = token.version,
            "token refreshed"
        );
        Ok(cred.install(token))
    }
}

fn lookup<'a>(deps: &'a [(&Arc<Credential>, Arc<Token>)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        deps.iter()
            .find(|(cred, _)| cred.key.name == name)
            .map(|(_, token)| token.value.clone())
    }
}
