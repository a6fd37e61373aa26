//! Runs one flight: asks `decide` for the next step, does it (the lease, the pending
//! mark, a validity probe, the call with its dependencies, the save), and asks again
//! with what it learned. The only place that calls WeChat and writes tokens.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::call::log_failure;
use super::decide::{
    self, Answer, Ask, Facts, JournalFact, LeaseFact, ProbeFact, SourceTraits, Step, StoredAction,
    Unconfirmed,
};
use super::error::RefreshError;
use super::flight::{Decision, FlightState, Reply};
use super::lease::{self, Acquired};
use super::quota::Spend;
use super::rotate::{REFRESH_TOKEN_INVALID, TICKET_REJECTED};
use super::stable::PROBE_REUSE;
use super::token::trust_bound;
use super::{Credential, Refresher, Token, Trigger};
use crate::domain::{token_prefix, unix_millis, wechat_day_at};
use crate::metrics::CredentialLabels;
use crate::store::SaveOutcome;
use crate::upstream::{self, Fetched};

/// What a flight leaves for its flight task.
#[derive(Debug)]
pub struct Report {
    /// The state, with what the flight learned.
    pub state: FlightState,
    /// The token fetched is durably stored.
    pub saved: bool,
    /// A token was fetched and served, but could not be stored: why.
    pub save_error: Option<String>,
    /// The answer to the request that started the flight.
    pub reply: Reply,
    /// The store's version when the call started: what the save of its token (and any
    /// retry of that save) must find there.
    pub base: u64,
    /// A token was fetched and installed.
    pub fetched: bool,
}

/// The facts of `cred` at the start of a flight (nothing tried yet).
pub(super) fn facts<'a>(
    refresher: &'a Refresher,
    cred: &'a Credential,
    state: &'a FlightState,
    token: Option<&'a Token>,
    now: SystemTime,
    trigger: Trigger,
) -> Facts<'a> {
    let status = cred.status();
    let live = token.is_some_and(|t| t.is_live(now));
    let spend = Spend::of(trigger, status.consecutive_failures > 0, live);
    let day = wechat_day_at(now);
    let accepted = match (state.accepted, token) {
        (Some((version, at)), Some(token))
            if version == token.version && at.elapsed() < PROBE_REUSE =>
        {
            ProbeFact::Accepted
        }
        _ => ProbeFact::NotTried,
    };
    Facts {
        now,
        token,
        settings: &refresher.settings,
        source: SourceTraits::of(&cred.source),
        last_failure: state
            .last_failure
            .as_ref()
            .map(|(error, at)| (error, at.elapsed())),
        failures: status.consecutive_failures,
        since_failure: status
            .last_attempt_at
            .and_then(|at| now.duration_since(at).ok())
            .unwrap_or_default(),
        needs_person: cred.needs_person().is_some(),
        quota_blocked: refresher
            .quota
            .blocked_until(&cred.labels, now)
            .map(|until| until.duration_since(now).unwrap_or_default()),
        unconfirmed: state.unconfirmed,
        conflict: state.conflict.is_some(),
        lease: LeaseFact::NotTried,
        journal: JournalFact::NotTried,
        probe: accepted,
        forced_allowed: state.budget.allows(day, Instant::now()),
        quota_refused: refresher.quota.check(&cred.labels, spend, now).err(),
    }
}

/// The answer when the quota guard refused the call: a forced caller gets the current
/// token while it has life left, unless that is the token it reported as rejected.
pub(super) fn quota_answer(
    trigger: Trigger,
    stale: Option<&str>,
    live: Option<Arc<Token>>,
    error: RefreshError,
) -> Reply {
    match (trigger, live) {
        (Trigger::Forced, Some(token)) if stale != Some(token.value.as_str()) => {
            Ok((token, Decision::QuotaRefused))
        }
        _ => Err(error),
    }
}

/// The answer when the quota guard refuses the call a request needs: counted as a
/// refresh refused; a scheduled refresh records it, so that it backs off.
pub(super) fn refused(
    refresher: &Refresher,
    cred: &Credential,
    trigger: Trigger,
    stale: Option<&str>,
    refusal: super::quota::Refusal,
    now: SystemTime,
) -> Reply {
    let error = RefreshError::Quota(refusal);
    refresher
        .metrics
        .refresh(&cred.labels, trigger.as_str(), error.outcome());
    if trigger != Trigger::Forced {
        cred.record_failure(&error, now);
    }
    quota_answer(trigger, stale, cred.live_token(now), error)
}

/// One flight for a request with `trigger` and `stale`, starting from `state`.
pub(super) async fn fly(
    refresher: Arc<Refresher>,
    cred: Arc<Credential>,
    mut state: FlightState,
    trigger: Trigger,
    stale: Option<String>,
) -> Report {
    let mut report = Report {
        state: FlightState::default(),
        saved: false,
        save_error: None,
        reply: Err(RefreshError::Task(
            "the flight ended without an answer".into(),
        )),
        base: 0,
        fetched: false,
    };
    let mut progress = Progress::default();
    let mut guard = None;
    let ask = Ask {
        trigger,
        stale: stale.as_deref(),
    };
    loop {
        let now = refresher.clock.now();
        let token = cred.current();
        let mut facts = facts(&refresher, &cred, &state, token.as_deref(), now, trigger);
        facts.lease = progress.lease;
        facts.journal = progress.journal;
        if progress.probe != ProbeFact::NotTried {
            facts.probe = progress.probe;
        }
        match decide::decide(&facts, &ask) {
            Step::Answer(Answer::Deferred(why)) => {
                let error = RefreshError::Deferred(why.into());
                tracing::warn!(key = %cred.key, trigger = trigger.as_str(), %error, "refresh deferred");
                if trigger != Trigger::Forced {
                    cred.record_failure(&error, now);
                }
                state.last_failure = Some((error.clone(), Instant::now()));
                report.reply = Err(error);
                break;
            }
            Step::Answer(Answer::Serve(decision)) => {
                report.reply = cred
                    .live_token(now)
                    .map(|token| (token, decision))
                    .ok_or_else(|| RefreshError::Task("the token expired meanwhile".into()));
                break;
            }
            Step::Answer(Answer::QuotaRefused(refusal)) => {
                report.reply = refused(&refresher, &cred, trigger, stale.as_deref(), refusal, now);
                break;
            }
            Step::Answer(Answer::LastFailure) => {
                report.reply = Err(state.last_failure.as_ref().map_or_else(
                    || RefreshError::Task("no failure to share".into()),
                    |(error, _)| error.clone(),
                ));
                break;
            }
            Step::TakeLease => {
                let holder = &refresher.instance_id;
                match lease::acquire(&refresher.store, &cred, holder).await {
                    Acquired::Held {
                        guard: held,
                        stored,
                    } => {
                        guard = held;
                        progress.lease = LeaseFact::Held;
                        if let Some(stored) = stored {
                            under_lease(&refresher, &cred, &mut state, &mut report, stored, now);
                        }
                    }
                    Acquired::Updated => {} // decide again with the token that arrived
                    Acquired::Unavailable(why) => {
                        tracing::warn!(key = %cred.key, trigger = trigger.as_str(), reason = %why, "cannot take the cluster lease");
                        progress.lease = LeaseFact::Unavailable;
                    }
                }
            }
            Step::Probe => {
                progress.probe = probe(&refresher, &cred, token.as_deref()).await;
                match (progress.probe, &token) {
                    (ProbeFact::Accepted, Some(token)) => {
                        state.accepted = Some((token.version, Instant::now()));
                    }
                    (ProbeFact::Rejected, Some(token))
                        if cred.current().is_some_and(|c| c.version == token.version) =>
                    {
                        cred.rebound(token.marked_rejected());
                    }
                    _ => {}
                }
            }
            Step::WriteJournal => {
                let since = state.unconfirmed.map_or(now, |u| u.since.min(now));
                progress.journal = match refresher
                    .store
                    .mark_pending(&cred.key, unix_millis(since))
                    .await
                {
                    Ok(()) => {
                        progress.mark = Some(since);
                        JournalFact::Written
                    }
                    Err(error) => {
                        tracing::warn!(key = %cred.key, backend = refresher.store.backend(), %error, "cannot record that a call is out");
                        JournalFact::Failed
                    }
                };
                if progress.journal == JournalFact::Written
                    && let Some(unconfirmed) = &mut state.unconfirmed
                {
                    unconfirmed.announced = true;
                }
            }
            Step::Call { forced, announced } => {
                if forced {
                    state.budget.spend(wechat_day_at(now), Instant::now());
                }
                let announced = announced
                    && guard
                        .as_ref()
                        .is_none_or(|g: &lease::LeaseGuard| !g.is_lost());
                // WeChat may have issued a token that never came back: the served one
                // is then trusted only for the grace. Still under the lease, with the
                // mark written, one more call gets a confirmed token for the callers
                // waiting, instead of an error and a retry a moment later.
                for attempt in 0..2 {
                    if attempt > 0 {
                        tracing::info!(key = %cred.key, "outcome unknown: calling again for a confirmed token");
                    }
                    call(
                        &refresher,
                        &cred,
                        &mut state,
                        &mut report,
                        trigger,
                        forced,
                        announced,
                        progress.mark,
                    )
                    .await;
                    let unknown = matches!(&report.reply, Err(e) if e.may_have_issued());
                    if !(unknown && announced && !forced && cred.source.replaces_previous) {
                        break;
                    }
                }
                break;
            }
        }
    }
    drop(guard);
    report.state = state;
    report
}

/// Takes in what the store holds once the lease is ours: a token the previous holder
/// stored (newer than ours), or its pending mark (its call is unaccounted for). During
/// a conflict nothing stored is adopted: a token stored since, even under the lease,
/// may come from a call that overlapped ours, so only a fetch of our own (this one) is
/// known to be the newest.
fn under_lease(
    refresher: &Refresher,
    cred: &Credential,
    state: &mut FlightState,
    report: &mut Report,
    stored: Option<crate::store::StoredToken>,
    now: SystemTime,
) {
    let now_ms = unix_millis(now);
    cred.saw_stored(stored.as_ref().map_or(0, |s| s.version));
    // A record of another definition of the app (replaced: another account, say) is
    // never adopted: the fetch goes ahead and its save replaces it.
    let Some(stored) = stored.filter(|s| cred.owns(s)) else {
        return;
    };
    let grace = refresher.settings.upstream_grace;
    let current = cred.current();
    // The same rules as for a record another instance stored (`decide::on_stored`),
    // and during a conflict nothing is adopted that is not certainly newer.
    let action = decide::on_stored(
        current.as_deref(),
        state.unsaved_base,
        Some(&stored),
        now,
        now_ms,
    );
    match action {
        StoredAction::Adopt
            if state.conflict.is_none()
                || current
                    .as_ref()
                    .is_some_and(|t| decide::issued_after(t, &stored)) =>
        {
            cred.install(Token::from_stored(&stored, Trigger::Peer, now, grace));
            state.conflict = None;
            state.unconfirmed = None;
            state.unsaved_base = None;
            report.saved = true;
        }
        StoredAction::Conflict { baseline } => state.conflict = Some(baseline),
        StoredAction::Rebound(Some(mark)) => {
            if let Some(current) = current {
                // The previous holder's call is unaccounted for.
                cred.rebound(current.trusted_at_most_until(trust_bound(mark, grace, now)));
                state.unconfirmed.get_or_insert(Unconfirmed {
                    since: crate::domain::from_unix_millis(mark),
                    announced: true,
                });
            }
        }
        _ => {}
    }
}

/// Asks WeChat whether it accepts `token`.
async fn probe(refresher: &Refresher, cred: &Credential, token: Option<&Token>) -> ProbeFact {
    let Some(token) = token else {
        return ProbeFact::Failed;
    };
    let started = Instant::now();
    let verdict = refresher
        .api
        .probe(&cred.source.probe_urls, &token.value)
        .await;
    // The probe is a call to WeChat too: it shows in the upstream metrics.
    let outcome = match &verdict {
        Ok(true) => "ok".into(),
        Ok(false) => "token_rejected".into(),
        Err(e) => e.outcome(),
    };
    let endpoint = cred.source.probe_urls.first().map_or("", |u| u.path());
    let labels = CredentialLabels::new(&cred.key.app, &cred.key.name, endpoint);
    refresher
        .metrics
        .upstream_call(&labels, outcome.into(), started.elapsed());
    match verdict {
        Ok(true) => {
            tracing::info!(key = %cred.key, value = %token_prefix(&token.value), "reported token is still accepted by WeChat; not replaced");
            ProbeFact::Accepted
        }
        Ok(false) => {
            tracing::info!(key = %cred.key, value = %token_prefix(&token.value), "WeChat rejects the reported token");
            ProbeFact::Rejected
        }
        Err(error) => {
            tracing::warn!(key = %cred.key, %error, "cannot tell whether WeChat accepts the reported token");
            ProbeFact::Failed
        }
    }
}

/// Calls WeChat (after making sure the tokens it refers to are live), serves and
/// stores the new token, or records what the failure means.
#[allow(clippy::too_many_arguments)]
async fn call(
    refresher: &Arc<Refresher>,
    cred: &Arc<Credential>,
    state: &mut FlightState,
    report: &mut Report,
    trigger: Trigger,
    forced: bool,
    announced: bool,
    mark: Option<SystemTime>,
) {
    let started = refresher.clock.now();
    // What the store held when the call started (under the lease: what was read
    // there): a record stored after it may hold a token issued after ours.
    report.base = cred.stored_version();
    let result = fetch_with_deps(refresher, cred, trigger, forced).await;
    if let Ok(Fetched {
        rotated: Some(new), ..
    }) = &result
    {
        // Stored before the token is served, so the old value is let go only once
        // the new one is kept (see `rotate.rs`).
        refresher.rotate_held(cred, new).await;
    }
    let result = result.and_then(|fetched| lifetime_of(refresher, cred, fetched, started));
    let now = refresher.clock.now();
    refresher.metrics.refresh(
        &cred.labels,
        trigger.as_str(),
        result
            .as_ref()
            .map_or_else(RefreshError::outcome, |_| "ok".into()),
    );
    match result {
        Ok((value, expires_at)) => {
            let mut token = Token::new(
                value,
                expires_at,
                started,
                cred.next_version(),
                trigger,
                now,
            );
            token.announced = announced;
            token.received_at = Some(now);
            tracing::info!(
                app = %cred.key.app, token = %cred.key.name, trigger = trigger.as_str(),
                value = %token_prefix(&token.value), expires_in = token.lifetime().as_secs(), version = token.version,
                announced, "token refreshed"
            );
            let token = cred.install(token);
            cred.note_unsaved_fetch(Some(report.base));
            report.fetched = true;
            report.reply = Ok((token.clone(), Decision::Performed));
            state.unconfirmed = None;
            state.conflict = None;
            state.last_failure = None;
            state.accepted = None;
            cred.record_success(now);
            let saved = refresher
                .store
                .save_over(&cred.record_of(&token), report.base)
                .await;
            match saved {
                Ok(SaveOutcome::Saved) => {
                    cred.saw_stored(token.version);
                    cred.note_unsaved_fetch(None);
                    report.saved = true;
                }
                Ok(SaveOutcome::Outdated) => match refresher.store.load(&cred.key).await {
                    // Judged by the rules for any stored record, ours being unsaved.
                    Ok(stored) => {
                        settle_refused_save(refresher, cred, state, report, &token, stored, now)
                    }
                    Err(error) => report.save_error = Some(error.to_string()),
                },
                Err(error) => report.save_error = Some(error.to_string()),
            }
        }
        Err(error) => {
            let grace = refresher.settings.upstream_grace;
            if error.may_have_issued() && cred.source.replaces_previous {
                // From the earliest of this call (or its mark) and any earlier unknown one.
                let this = mark.map_or(started, |m| m.min(started));
                let since = state.unconfirmed.map_or(this, |u| u.since.min(this));
                state.unconfirmed = Some(Unconfirmed {
                    since,
                    announced: mark.is_some() || state.unconfirmed.is_some_and(|u| u.announced),
                });
                if let Some(current) = cred.current() {
                    let bound = trust_bound(unix_millis(since), grace, now);
                    cred.rebound(current.trusted_at_most_until(bound));
                    tracing::warn!(key = %cred.key, %error,
                        serve_for_s = bound.saturating_duration_since(Instant::now()).as_secs(),
                        "WeChat may have issued a token although none came back: the current one is served only for WeChat's grace, unless a new one is fetched first");
                }
            } else if let Some(mark) = mark
                && state.unconfirmed.is_none()
            {
                // WeChat answered and issued nothing: no call is unaccounted for.
                if let Err(e) = refresher
                    .store
                    .clear_pending(&cred.key, unix_millis(mark))
                    .await
                {
                    tracing::debug!(key = %cred.key, error = %e, "cannot clear the pending mark");
                }
            }
            let is_quota = matches!(error, RefreshError::Quota(_));
            if !(is_quota && trigger == Trigger::Forced) {
                cred.record_failure(&error, now);
            }
            if !is_quota {
                log_failure(cred, trigger, &error);
            }
            state.last_failure = Some((error.clone(), Instant::now()));
            report.reply = Err(error);
        }
    }
}

/// The save of `token` was refused: the store holds `stored`, written by another
/// instance since the call started. Settled like any record read from the store
/// (`decide::on_stored`), with ours not stored.
fn settle_refused_save(
    refresher: &Refresher,
    cred: &Credential,
    state: &mut FlightState,
    report: &mut Report,
    token: &Token,
    stored: Option<crate::store::StoredToken>,
    now: SystemTime,
) {
    cred.saw_stored(stored.as_ref().map_or(0, |s| s.version));
    // Another definition's record: as if none were stored (ours is written over it).
    let stored = stored.filter(|s| cred.owns(s));
    let action = decide::on_stored(
        Some(token),
        Some(report.base),
        stored.as_ref(),
        now,
        unix_millis(now),
    );
    match (action, stored) {
        (StoredAction::Confirm, _) => report.saved = true,
        (StoredAction::Adopt, Some(stored)) => {
            // Another instance's call started after ours was answered: its token is
            // the newer one.
            let grace = refresher.settings.upstream_grace;
            let peer = cred.install(Token::from_stored(&stored, Trigger::Peer, now, grace));
            report.reply = Ok((peer, Decision::Shared));
            report.saved = true;
        }
        (StoredAction::Conflict { baseline }, _) => {
            tracing::warn!(key = %cred.key, version = baseline,
                "another instance stored a different token meanwhile: fetching one more so that every instance serves the newest");
            state.conflict = Some(baseline);
            report.save_error = Some("another instance stored a different token".into());
        }
        // Not stored, and retried over what the store holds now.
        (_, stored) => {
            report.base = stored.map_or(0, |s| s.version);
            report.save_error = Some("the store refused the token".into());
        }
    }
}

/// Fetches the token, first making sure the tokens its source refers to are live; when
/// WeChat rejects the access_token sent, gets a newer one and retries once. A pushed
/// value that is missing or refused is asked for again (see `pushed.rs`); a held value
/// that WeChat refuses is replaced by the stored or previous one, once (`rotate.rs`).
async fn fetch_with_deps(
    refresher: &Arc<Refresher>,
    cred: &Arc<Credential>,
    trigger: Trigger,
    forced: bool,
) -> Result<Fetched, RefreshError> {
    let now = refresher.clock.now();
    let mut deps: Vec<Dep> = Vec::with_capacity(cred.source.deps.len());
    for reference in &cred.source.deps {
        let (app, name) = reference
            .split_once(':')
            .unwrap_or((cred.key.app.as_str(), reference.as_str()));
        // A token of another app may be gone (a platform removed from the config).
        let missing = || RefreshError::Upstream(upstream::Error::Dependency(reference.clone()));
        let dep = refresher.credential(app, name).ok_or_else(missing)?;
        let token = match dep.live_token(now) {
            Some(token) => token,
            None if dep.source.pushed => {
                refresher.spawn_request_push(dep);
                return Err(missing());
            }
            None => refresher.ask(&dep, Trigger::Dependency, None).await?.0,
        };
        deps.push(Dep {
            reference: reference.clone(),
            cred: dep,
            token,
        });
    }
    let held = held_values(refresher, cred);
    let mut result = refresher
        .call_upstream(cred, trigger, forced, &lookup(&deps, &held))
        .await;
    let errcode = |result: &Result<Fetched, RefreshError>| match result {
        Err(RefreshError::Upstream(e)) => e.errcode(),
        _ => None,
    };
    if let Some(code) = errcode(&result)
        && TICKET_REJECTED.contains(&code)
    {
        // The pushed value is no longer accepted: WeChat is asked for a newer one.
        for dep in deps.iter().filter(|d| d.cred.source.pushed) {
            refresher.spawn_request_push(dep.cred.clone());
        }
    }
    if errcode(&result) == Some(REFRESH_TOKEN_INVALID)
        && refresher.recover_held(cred).await.is_some()
    {
        let held = held_values(refresher, cred);
        result = refresher
            .call_upstream(cred, trigger, forced, &lookup(&deps, &held))
            .await;
    }
    if matches!(&result, Err(RefreshError::Upstream(e)) if e.is_token_rejected())
        && deps.iter().any(|d| !d.cred.source.pushed)
    {
        // WeChat rejected the access_token we sent: get a newer one (single-flight,
        // and no call at all if another refresh already replaced it), then retry once.
        tracing::info!(key = %cred.key, "dependency token rejected by WeChat; refreshing it");
        for dep in deps.iter_mut().filter(|d| !d.cred.source.pushed) {
            dep.token = refresher
                .ask(
                    &dep.cred,
                    Trigger::Dependency,
                    Some(dep.token.value.clone()),
                )
                .await?
                .0;
        }
        let held = held_values(refresher, cred);
        result = refresher
            .call_upstream(cred, trigger, forced, &lookup(&deps, &held))
            .await;
    }
    result
}

/// A token a source refers to, as `reference` (`name` or `app:name`) names it.
struct Dep {
    reference: String,
    cred: Arc<Credential>,
    token: Arc<Token>,
}

/// The current values of the held values of `cred`'s app, by name.
fn held_values(refresher: &Refresher, cred: &Credential) -> Vec<(String, Arc<String>)> {
    refresher
        .app(&cred.key.app)
        .map(|entry| {
            entry
                .config
                .held
                .iter()
                .map(|h| (h.name().to_owned(), h.current()))
                .collect()
        })
        .unwrap_or_default()
}

fn lookup<'a>(
    deps: &'a [Dep],
    held: &'a [(String, Arc<String>)],
) -> impl Fn(&str) -> Option<String> + Sync + 'a {
    move |name| {
        deps.iter()
            .find(|d| d.reference == name)
            .map(|d| d.token.value.clone())
            .or_else(|| {
                held.iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str().to_owned())
            })
    }
}

/// The value and expiry of a fetched token. The lifetime counts from before the
/// request was sent, so a token is never served past WeChat's own expiry.
fn lifetime_of(
    refresher: &Refresher,
    cred: &Credential,
    fetched: Fetched,
    started: SystemTime,
) -> Result<(String, SystemTime), RefreshError> {
    let settings = &refresher.settings;
    let lifetime = fetched
        .expires_in
        .or(settings.token_expire_time)
        .ok_or_else(|| {
            upstream::Error::Malformed(format!(
                "no {:?} field in the reply and refresh.token_expire_time is not set",
                cred.source.expires_field
            ))
        })?;
    let lifetime: Duration = settings
        .token_expire_time
        .map_or(lifetime, |cap| lifetime.min(cap));
    let expires_at = started.checked_add(lifetime).ok_or_else(|| {
        upstream::Error::Malformed(format!(
            "a lifetime of {} s is out of range",
            lifetime.as_secs()
        ))
    })?;
    Ok((fetched.value, expires_at))
}

/// Keeps the facts a flight decides on: the state it started with, and how far it
/// got.
#[derive(Debug, Clone, Copy)]
pub(super) struct Progress {
    pub lease: LeaseFact,
    pub journal: JournalFact,
    /// The time the pending mark written says (the earliest unconfirmed call's start).
    pub mark: Option<SystemTime>,
    pub probe: ProbeFact,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            lease: LeaseFact::NotTried,
            journal: JournalFact::NotTried,
            mark: None,
            probe: ProbeFact::NotTried,
        }
    }
}
