//! The refresher's rules, as pure functions of what is known at one instant. No I/O,
//! no clock: the flight task (`flight`) and its executor (`executor`) gather the
//! facts, ask here what to do, do it, and ask again with what they learned.
//!
//! The rules (SPEC.md, "Correctness rules"), each with its tests below:
//! - **Answer without a call** when the caller's `stale` token is no longer the one
//!   served, when a token was fetched moments ago, or when nothing is due.
//! - **One call per storm**: the flight task shares one flight with every request
//!   that arrives while it is out; right after a failed flight, forced and dependency
//!   requests get its error instead of calling again (the cool-down).
//! - **Announce before replacing**: a call that may replace the served token is made
//!   under the cluster lease and after its pending mark is durable, so that a crash or
//!   another instance learns that the token may be replaced. A call that cannot be
//!   announced is made only when the token's holders lose nothing: it has at most
//!   `upstream_grace` of announced life left (WeChat keeps it valid that long after a
//!   replacement), or none.
//! - **Unknown outcome**: a call that may have issued a token although none came back
//!   bounds the served token's trust to the call's start plus the grace (see
//!   `Token::trusted_at_most_until`), and makes the token due at once.
//! - **Unconfirmed reports**: a `stale` report from an instance without the lease is
//!   checked with WeChat's validity probe first; a token WeChat accepts is answered,
//!   never replaced. stable_token's forced mode is spent only after such a probe.
//! - **A cut-off instance never replaces the cluster's token**: before a call that
//!   cannot be announced, the token held is probed; if WeChat rejects it, another
//!   instance has replaced it (and holds the successor that this call would kill), so
//!   the call is not made and the rejected token is no longer served here.
//! - **Retries near expiry** never wait past the served token's end; with no token
//!   held they come at `min_retry_delay` pace.
//! - **Newest issued wins**: see [`on_stored`].

use std::time::{Duration, SystemTime};

use super::error::RefreshError;
use super::flight::Decision;
use super::quota::{QUOTA_ERRCODE, Refusal};
use super::{Token, Trigger};
use crate::config::{RefreshConfig, SourceConfig};
use crate::store::{MAX_CLOCK_SKEW_MS, StoredToken};

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

/// Shortest wait between two retries while a token is still served: near the end,
/// waits halve towards it, and this keeps their number bounded.
pub const RETRY_FLOOR: Duration = Duration::from_millis(100);

/// What a request asks for.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub trigger: Trigger,
    /// The token the caller reports as rejected.
    pub stale: Option<&'a str>,
}

/// What the source is like, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceTraits {
    /// A call issues a token that replaces the previous one (see
    /// `SourceConfig::replaces_previous`).
    pub replaces: bool,
    /// WeChat can tell whether it accepts a token of this source (`getcallbackip`).
    pub probe: bool,
    /// stable_token's forced mode exists for it.
    pub forced_mode: bool,
}

impl SourceTraits {
    pub fn of(source: &SourceConfig) -> Self {
        Self {
            replaces: source.replaces_previous,
            probe: !source.probe_urls.is_empty(),
            forced_mode: source.forced.is_some(),
        }
    }
}

/// Calls of ours whose outcome is unknown, not yet followed by a confirmed token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unconfirmed {
    /// Start of the earliest of them.
    pub since: SystemTime,
    /// Its pending mark is durable (and, with a shared store, known to the cluster).
    pub announced: bool,
}

/// The cluster lease, as far as this flight got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseFact {
    NotTried,
    Held,
    /// The store could not be reached, or another instance kept the lease too long.
    Unavailable,
}

/// The pending mark of this flight's call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalFact {
    NotTried,
    Written,
    Failed,
}

/// WeChat's verdict on the reported token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeFact {
    NotTried,
    Accepted,
    Rejected,
    /// No verdict (WeChat failed or could not be reached).
    Failed,
}

/// Everything a decision depends on.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub now: SystemTime,
    /// The token held (live or not).
    pub token: Option<&'a Token>,
    pub settings: &'a RefreshConfig,
    pub source: SourceTraits,
    /// The last flight failed: its error, and how long ago it ended.
    pub last_failure: Option<(&'a RefreshError, Duration)>,
    /// Failed attempts since the last success, and how long ago the last ended.
    pub failures: u32,
    pub since_failure: Duration,
    /// The failure is one only a person can fix.
    pub needs_person: bool,
    /// WeChat's 45009 stops calls for this long.
    pub quota_blocked: Option<Duration>,
    pub unconfirmed: Option<Unconfirmed>,
    /// Our token conflicts with another instance's (see [`on_stored`]).
    pub conflict: bool,
    pub lease: LeaseFact,
    pub journal: JournalFact,
    pub probe: ProbeFact,
    /// stable_token's forced budget allows a forced call now.
    pub forced_allowed: bool,
    /// The quota guard would refuse the call this request needs (checked without
    /// counting; the call itself is admitted and counted by `call`).
    pub quota_refused: Option<Refusal>,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Answer the request now, without (another) call.
    Answer(Answer),
    /// Take the cluster lease (granted at once by a store of one instance).
    TakeLease,
    /// Ask WeChat whether it accepts the reported token.
    Probe,
    /// Write this call's pending mark.
    WriteJournal,
    /// Call WeChat. `forced`: stable_token's forced mode; `announced`: under the
    /// lease with the pending mark written.
    Call { forced: bool, announced: bool },
}

/// An answer without a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The token held answers.
    Serve(Decision),
    /// The last flight's error answers (the cool-down after a failure).
    LastFailure,
    /// The quota guard refuses the call this request would need.
    QuotaRefused(Refusal),
    /// No call can be made safely now; why.
    Deferred(&'static str),
}

/// Is a refresh of the live token `token` due (for the scheduler)?
fn is_due(f: &Facts, token: &Token) -> bool {
    token.remaining(f.now) <= refresh_lead(token.lifetime())
        || f.needs_person
        || f.conflict
        || f.unconfirmed.is_some()
}

/// How long forced and dependency requests share a failure instead of calling again:
/// an error only a person can fix waits `needs_person_retry_delay`; after a 45009 the
/// quota guard refuses on its own, so no wait is needed.
fn cooldown(f: &Facts, error: &RefreshError) -> Duration {
    // No call was made for want of a token it needs (a verify ticket not pushed yet):
    // asking again costs WeChat nothing, and the value may have arrived since.
    if error.errcode() == Some(QUOTA_ERRCODE) || error.is_missing_dependency() {
        Duration::ZERO
    } else if f.needs_person {
        f.settings.needs_person_retry_delay
    } else {
        f.settings.min_retry_delay
    }
}

/// May a call that cannot be announced be made? Only when no holder of the token can
/// lose by it: WeChat keeps a replaced token valid for the grace, so a token with at
/// most that much announced life left is not shortened; nor is one whose trust is
/// already bounded by a durable mark of ours.
///
/// Where WeChat can tell whether it accepts the token (a probe), the call also waits
/// until a replacement by another instance would show: the rest of the cluster
/// refreshes a fifth of the lifetime before the end, and WeChat rejects the token it
/// replaced a grace later, so within [`unannounced_window`] of the end a probe (made
/// before the call, see [`decide`]) tells whether the cluster already holds a
/// successor, which this call would kill. Once a probe found it rejected, no such
/// call is made until that successor must have ended too.
pub fn unannounced_call_allowed(f: &Facts) -> bool {
    match f.token {
        None => true,
        // WeChat said another instance replaced it: that successor lives about a
        // lifetime past this token's end, and a call from here would kill it.
        Some(token)
            if token.is_rejected()
                && f.now
                    < token
                        .expires_at
                        .checked_add(token.lifetime())
                        .unwrap_or(token.expires_at) =>
        {
            false
        }
        Some(token) => {
            token.announced_remaining(f.now) <= unannounced_window(f, token)
                || f.unconfirmed.is_some_and(|u| u.announced)
        }
    }
}

/// How close to its end a token may be refreshed without announcing the call: the
/// grace; with a probe, no earlier than a grace (plus a call's timeout) after the rest
/// of the cluster would have replaced it. For lifetimes so short that the two overlap
/// (a fifth of the lifetime under the grace), only once it has ended.
pub fn unannounced_window(f: &Facts, token: &Token) -> Duration {
    let grace = f.settings.upstream_grace;
    if !f.source.probe {
        return grace;
    }
    let detectable = refresh_lead(token.lifetime())
        .saturating_sub(grace)
        .saturating_sub(f.settings.upstream_timeout);
    grace.min(detectable)
}

/// The next step for `ask`, given `f`.
pub fn decide(f: &Facts, ask: &Ask) -> Step {
    let live = f.token.filter(|t| t.is_live(f.now));
    if let Some(token) = live {
        let answer = match (ask.stale, ask.trigger) {
            (Some(stale), _) if stale != token.value => Some(Decision::Stale),
            // Measured from the token's own refresh, so the limit holds across a
            // cluster.
            (None, Trigger::Forced) => {
                (f.now.duration_since(token.refreshed_at).unwrap_or_default()
                    < f.settings.force_min_interval)
                    .then_some(Decision::RateLimited)
            }
            (None, Trigger::Scheduled) => (!is_due(f, token)).then_some(Decision::Shared),
            (None, Trigger::Dependency | Trigger::Restored | Trigger::Peer) => {
                Some(Decision::Shared)
            }
            (Some(_), _) => None,
        };
        if let Some(decision) = answer {
            return Step::Answer(Answer::Serve(decision));
        }
    }
    // A flight failed a moment ago: calling again at once would only add load.
    if let Some((error, ago)) = f.last_failure
        && matches!(ask.trigger, Trigger::Forced | Trigger::Dependency)
        && ago < cooldown(f, error)
    {
        return Step::Answer(match (live, ask.stale) {
            (Some(_), None) => Answer::Serve(Decision::RateLimited),
            _ => Answer::LastFailure,
        });
    }
    if let Some(refusal) = &f.quota_refused {
        return Step::Answer(Answer::QuotaRefused(refusal.clone()));
    }
    let reported = live.is_some_and(|t| ask.stale == Some(t.value.as_str()));
    // A dependent call that WeChat refused for this token is WeChat's own verdict; a
    // client's report is only a claim until probed.
    let probe = if reported && ask.trigger == Trigger::Dependency {
        ProbeFact::Rejected
    } else {
        f.probe
    };
    if reported && probe == ProbeFact::Accepted {
        return Step::Answer(Answer::Serve(Decision::StillValid));
    }
    if f.lease == LeaseFact::NotTried {
        return Step::TakeLease;
    }
    if reported
        && ask.trigger == Trigger::Forced
        && f.source.probe
        && probe == ProbeFact::NotTried
        && (f.lease == LeaseFact::Unavailable || f.source.forced_mode)
    {
        return Step::Probe;
    }
    let forced = f.source.forced_mode
        && ask.trigger == Trigger::Forced
        && probe == ProbeFact::Rejected
        && f.lease == LeaseFact::Held
        && f.forced_allowed;
    if !f.source.replaces && !forced {
        // Nothing is replaced: nothing to announce, and no holder can lose.
        return Step::Call {
            forced: false,
            announced: f.lease == LeaseFact::Held,
        };
    }
    if f.lease == LeaseFact::Held && f.journal == JournalFact::NotTried {
        return Step::WriteJournal;
    }
    let announced = f.lease == LeaseFact::Held && f.journal == JournalFact::Written;
    if !announced && !unannounced_call_allowed(f) {
        return Step::Answer(Answer::Deferred(if f.lease == LeaseFact::Held {
            "the store cannot record that a call is out, and the current token still has life left"
        } else if probe == ProbeFact::Rejected {
            "WeChat rejects the token, and this instance cannot reach the shared store to learn the one that replaced it"
        } else {
            "this instance cannot take the cluster lease (store unreachable or busy), and the current token still has life left"
        }));
    }
    if !announced && f.source.probe {
        // Cut off from the cluster, this instance cannot know whether another one has
        // already replaced this token (and holds its successor, which this call would
        // kill after the grace); WeChat can tell. A token WeChat rejects is no longer
        // served here, and not replaced from here either.
        let held = f
            .token
            .filter(|t| t.natural_remaining(f.now) > Duration::ZERO);
        if held.is_some() {
            match probe {
                ProbeFact::NotTried => return Step::Probe,
                ProbeFact::Accepted => {}
                ProbeFact::Rejected => {
                    return Step::Answer(Answer::Deferred(
                        "WeChat rejects the token, so another instance replaced it; this one cannot reach the shared store to learn its successor",
                    ));
                }
                ProbeFact::Failed => {
                    return Step::Answer(Answer::Deferred(
                        "cannot tell whether another instance replaced the token (the validity probe failed), and this one cannot reach the shared store",
                    ));
                }
            }
        }
    }
    Step::Call { forced, announced }
}

/// How long until the scheduler should look at the credential again; `jitter` in
/// [0.5, 1] spreads the retries of many instances and tokens.
pub fn next_due(f: &Facts, jitter: f64) -> Duration {
    let live = f.token.filter(|t| t.is_live(f.now));
    let due_in = match live {
        None => Duration::ZERO,
        Some(t) if f.conflict || f.unconfirmed.is_some() => {
            let _ = t;
            Duration::ZERO
        }
        Some(t) => t
            .remaining(f.now)
            .saturating_sub(refresh_lead(t.lifetime())),
    };
    if let Some(blocked) = f.quota_blocked {
        // WeChat said 45009: calling before its day rolls over only gets 45009 again.
        return due_in.max(blocked);
    }
    if f.failures == 0 {
        return due_in;
    }
    let s = f.settings;
    if f.needs_person {
        // Retrying at full speed cannot fix a wrong secret or a missing whitelist
        // entry; it only spends quota and fills the logs. Retrying slowly, even while
        // the token is not due, notices the fix within this delay.
        return s.needs_person_retry_delay.saturating_sub(f.since_failure);
    }
    let waits_for_push = f
        .last_failure
        .is_some_and(|(error, _)| error.is_missing_dependency());
    let wait = match live {
        // A token it needs is missing (a verify ticket not pushed yet): its arrival
        // starts this refresh at once (`pushed.rs`), so trying again only backs off.
        None if waits_for_push => {
            backoff(f.failures, s.min_retry_delay, s.max_retry_delay).mul_f64(jitter)
        }
        // Nothing to serve: every moment counts.
        None => s.min_retry_delay.mul_f64(jitter),
        Some(t) => {
            let backoff = backoff(f.failures, s.min_retry_delay, s.max_retry_delay).mul_f64(jitter);
            // Never past the token's end: halve the time left, down to a floor, and
            // never beyond the end itself.
            let remaining = t.remaining(f.now);
            let cap = (remaining / 2).max(RETRY_FLOOR).min(remaining);
            return due_in.max(backoff.saturating_sub(f.since_failure).min(cap));
        }
    };
    due_in.max(wait.saturating_sub(f.since_failure))
}

/// What to do with a record read from the store (another instance's save, a full
/// read, or what a lease holder finds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredAction {
    /// Nothing to do.
    Ignore,
    /// Serve the stored token: it is newer.
    Adopt,
    /// It is our token, durably stored: ours is saved.
    Confirm,
    /// It is our token; apply the stored pending mark (`None`: lift the bound).
    Rebound(Option<u64>),
    /// The store lacks our token (or holds an older one): write ours.
    WriteBack,
    /// Two tokens exist and which WeChat issued last is unknown; resolve with one
    /// announced fetch of our own (`baseline`: the store's version then, for logs).
    Conflict { baseline: u64 },
}

/// Was `stored` certainly issued after `ours`? Yes when its call started (by its
/// instance's clock) later than ours was received, by more than the clock skew a
/// cluster may have ([`MAX_CLOCK_SKEW_MS`]): WeChat issues a token while the call is
/// out, so it cannot predate the call's start. Settles a conflict without a call.
pub fn issued_after(ours: &Token, stored: &StoredToken) -> bool {
    ours.received_at.is_some_and(|received| {
        stored.refreshed_at_ms
            > crate::domain::unix_millis(received).saturating_add(MAX_CLOCK_SKEW_MS)
    })
}

/// Newest issued wins. When the store holds `stored` and we hold `ours`
/// (`unsaved_base`: not durably stored yet, e.g. fetched while the store was
/// unreachable, and the version the store held when it was fetched):
/// - the same token: confirm it, and take its pending mark;
/// - ours unsaved, and the store has moved on since its base (another instance stored
///   a different token meanwhile, whatever the versions): adopt it if it was certainly
///   issued after ours ([`issued_after`]), else a conflict, since either may be the one
///   WeChat issued last. One announced fetch settles it (at most one extra call per
///   conflict);
/// - ours unsaved and the store unchanged since its base (or behind it): write ours;
/// - ours saved and a newer version stored: adopt it (another instance refreshed);
///   the same version with another value: a conflict;
/// - none stored, or an older one: write ours back (a store that lost data is refilled
///   without calling WeChat).
///
/// Records that may not be served (`StoredToken::is_sane`) are ignored.
pub fn on_stored(
    ours: Option<&Token>,
    unsaved_base: Option<u64>,
    stored: Option<&StoredToken>,
    now: SystemTime,
    now_ms: u64,
) -> StoredAction {
    let ours_live = ours.filter(|t| t.natural_remaining(now) > Duration::ZERO);
    let Some(stored) = stored else {
        return if ours_live.is_some() {
            StoredAction::WriteBack
        } else {
            StoredAction::Ignore
        };
    };
    if !stored.is_sane(now_ms) {
        return StoredAction::Ignore;
    }
    let stored_alive = stored.expires_at_ms > now_ms;
    let Some(token) = ours else {
        return if stored_alive {
            StoredAction::Adopt
        } else {
            StoredAction::Ignore
        };
    };
    if stored.value == token.value {
        return if unsaved_base.is_some() && stored.version >= token.version {
            StoredAction::Confirm
        } else if stored.version == token.version {
            StoredAction::Rebound(stored.pending_since_ms)
        } else {
            StoredAction::Ignore
        };
    }
    if ours_live.is_none() {
        return if stored_alive && stored.version > token.version {
            StoredAction::Adopt
        } else {
            StoredAction::Ignore
        };
    }
    let newer_peer = issued_after(token, stored) && stored_alive;
    match unsaved_base {
        Some(base) if stored.version > base && newer_peer => StoredAction::Adopt,
        Some(base) if stored.version > base => StoredAction::Conflict {
            baseline: stored.version,
        },
        Some(_) => StoredAction::WriteBack,
        None if stored.version < token.version => StoredAction::WriteBack,
        None if stored.version == token.version && newer_peer => StoredAction::Adopt,
        None if stored.version == token.version => StoredAction::Conflict {
            baseline: stored.version,
        },
        None if stored_alive => StoredAction::Adopt,
        None => StoredAction::Ignore,
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
