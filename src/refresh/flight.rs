//! The single-flight refresh path. Every refresh (scheduled, forced, or needed by a
//! dependent token) goes through [`Refresher::refresh`], which holds the credential's
//! `flight` lock while it calls WeChat. Callers that queued behind a refresh see that
//! the attempt counter moved while they waited and take its outcome instead of calling
//! WeChat again: a storm of N requests costs one upstream call.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use tokio::time::Instant;

use super::lease::Acquired;
use super::stable::Mode;
use super::{Credential, Refresher, Token, Trigger};
use crate::domain::token_prefix;
use crate::store::SaveOutcome;
use crate::upstream;

/// Refreshes fail with WeChat's (or the network's) error.
pub type RefreshError = upstream::Error;

/// What a force refresh did, for the caller and for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// This call fetched a new token from WeChat.
    Performed,
    /// Another call's refresh, in flight while this one waited, answered it.
    Shared,
    /// The `stale` token given is no longer the current one: the current one answers.
    Stale,
    /// No `stale` token given and the token was refreshed too recently.
    RateLimited,
    /// WeChat still accepts the `stale` token (stable_token sources probe before a
    /// forced call): it is answered, and nothing is spent.
    StillValid,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Performed => "performed",
            Decision::Shared => "shared",
            Decision::Stale => "stale",
            Decision::RateLimited => "rate_limited",
            Decision::StillValid => "still_valid",
        }
    }
}

/// State guarded by the flight lock.
#[derive(Debug, Default)]
pub struct FlightState {
    /// Outcome of the last attempt, handed to callers that waited for it.
    last_error: Option<RefreshError>,
    /// When the last upstream call ended, for the force rate limit.
    last_attempt: Option<Instant>,
    /// stable_token's forced calls spent (see `stable`).
    stable: super::stable::ForcedBudget,
}

impl Refresher {
    /// A client's request for a token newer than `stale` (or, without `stale`, a new
    /// token, rate-limited by `refresh.force_min_interval`).
    ///
    /// # Errors
    /// WeChat's error when the refresh failed and no token newer than `stale` exists.
    pub async fn force_refresh(
        &self,
        cred: &Arc<Credential>,
        stale: Option<&str>,
    ) -> Result<(Arc<Token>, Decision), RefreshError> {
        if let (Some(stale), Some(token)) = (stale, cred.live_token(SystemTime::now()))
            && token.value != stale
        {
            return Ok((token, Decision::Stale)); // no lock, no call
        }
        self.refresh(cred, Trigger::Forced, stale).await
    }

    /// Refreshes `cred` unless the wait for the flight lock made it unnecessary.
    pub(super) async fn refresh(
        &self,
        cred: &Arc<Credential>,
        trigger: Trigger,
        stale: Option<&str>,
    ) -> Result<(Arc<Token>, Decision), RefreshError> {
        let flights_seen = cred.completed_flights.load(Ordering::Acquire);
        let mut flight = cred.flight.lock().await;
        let now = SystemTime::now();
        let current = cred.live_token(now);

        if cred.completed_flights.load(Ordering::Acquire) != flights_seen {
            // A refresh ended while we queued: share its outcome.
            match (&current, &flight.last_error) {
                (Some(token), _) if stale.is_none_or(|s| s != token.value) => {
                    return Ok((token.clone(), Decision::Shared));
                }
                (_, Some(error)) => return Err(error.clone()),
                _ => {} // it succeeded but did not replace `stale` (or expired): go on
            }
        }
        let mut current = current;
        let lease = loop {
            if let Some(answer) = self.answer_without_call(
                &flight,
                current.clone(),
                trigger,
                stale,
                SystemTime::now(),
            ) {
                return answer;
            }
            match self.acquire_lease(cred, trigger, stale).await {
                // Another instance refreshed meanwhile: decide again with its token.
                Ok(Acquired::Updated) => current = cred.live_token(SystemTime::now()),
                Ok(Acquired::Lease(guard)) => break guard,
                Err(error) => {
                    cred.record_failure(&error, SystemTime::now());
                    return Err(error);
                }
            }
        };
        // Under the lease, so that one instance of a cluster probes, not all.
        let forced = match self
            .stable_mode(cred, &mut flight.stable, trigger, stale, current.as_ref())
            .await
        {
            Mode::StillAccepted(token) => return Ok((token, Decision::StillValid)),
            Mode::Forced => true,
            Mode::Normal => false,
        };

        let result = self.fetch_and_install(cred, trigger, forced).await;
        drop(lease);
        let now = SystemTime::now();
        flight.last_attempt = Some(Instant::now());
        cred.completed_flights.fetch_add(1, Ordering::AcqRel);
        match result {
            Ok(token) => {
                flight.last_error = None;
                cred.record_success(now);
                Ok((token, Decision::Performed))
            }
            Err(error) => {
                tracing::warn!(app = %cred.key.app, token = %cred.key.name, trigger = trigger.as_str(), %error, "refresh failed");
                flight.last_error = Some(error.clone());
                cred.record_failure(&error, now);
                Err(error)
            }
        }
    }

    /// The answer to give without calling WeChat, when no call is needed.
    fn answer_without_call(
        &self,
        flight: &FlightState,
        current: Option<Arc<Token>>,
        trigger: Trigger,
        stale: Option<&str>,
        now: SystemTime,
    ) -> Option<Result<(Arc<Token>, Decision), RefreshError>> {
        let since_attempt = flight.last_attempt.map(|at| at.elapsed());
        if let Some(error) = &flight.last_error
            && trigger == Trigger::Forced
            && since_attempt.is_some_and(|d| d < self.settings.min_retry_delay)
        {
            // WeChat failed a moment ago: calling again at once would only add load.
            return Some(Err(error.clone()));
        }
        let token = current?;
        let decision = match (stale, trigger) {
            (Some(stale), _) => (token.value != stale).then_some(Decision::Stale),
            // Measured from the token's own refresh, so the limit holds across a cluster.
            (None, Trigger::Forced) => (now.duration_since(token.refreshed_at).unwrap_or_default()
                < self.settings.force_min_interval)
                .then_some(Decision::RateLimited),
            (None, Trigger::Scheduled) => (token.remaining(now)
                > super::refresh_lead(token.lifetime()))
            .then_some(Decision::Shared),
            (None, Trigger::Dependency | Trigger::Restored | Trigger::Peer) => {
                Some(Decision::Shared)
            }
        }?;
        Some(Ok((token, decision)))
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

        let mut result = if forced {
            self.upstream
                .fetch_forced(&cred.source, &lookup(&deps))
                .await
        } else {
            self.upstream.fetch(&cred.source, &lookup(&deps)).await
        };
        if matches!(&result, Err(e) if e.is_token_rejected()) && !deps.is_empty() {
            // WeChat rejected the access_token we sent: get a newer one (single-flight,
            // and no call at all if another refresh already replaced it), then retry once.
            tracing::info!(app = %cred.key.app, token = %cred.key.name, "dependency token rejected by WeChat; refreshing it");
            for (dep, token) in &mut deps {
                *token = Box::pin(self.refresh(dep, Trigger::Dependency, Some(&token.value)))
                    .await?
                    .0;
            }
            result = self.upstream.fetch(&cred.source, &lookup(&deps)).await;
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
        let token = Token {
            value: fetched.value,
            expires_at: started + lifetime,
            refreshed_at: started,
            version: cred.next_version(),
            trigger,
        };
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
