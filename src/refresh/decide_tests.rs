//! One test per rule of SPEC.md's "Correctness rules" (and the older rules the
//! decision keeps), named as the rule.

use std::time::{Duration, SystemTime};

use super::*;
use crate::config::RefreshConfig;
use crate::domain::unix_millis;
use crate::upstream;

fn settings() -> RefreshConfig {
    RefreshConfig {
        token_expire_time: None,
        min_retry_delay: Duration::from_secs(1),
        max_retry_delay: Duration::from_secs(60),
        force_min_interval: Duration::from_secs(30),
        upstream_timeout: Duration::from_secs(10),
        needs_person_retry_delay: Duration::from_secs(300),
        upstream_grace: Duration::from_secs(300),
        max_concurrent_calls: 32,
    }
}

const MP: SourceTraits = SourceTraits {
    replaces: true,
    probe: true,
    forced_mode: false,
};
const TICKET: SourceTraits = SourceTraits {
    replaces: true,
    probe: false,
    forced_mode: false,
};
const STABLE: SourceTraits = SourceTraits {
    replaces: false,
    probe: true,
    forced_mode: true,
};

/// A token fetched `age` seconds ago with `life` seconds left.
fn token(now: SystemTime, age: u64, life: u64) -> Token {
    Token::new(
        "CURRENT".into(),
        now + Duration::from_secs(life),
        now - Duration::from_secs(age),
        3,
        Trigger::Scheduled,
        now,
    )
}

fn facts<'a>(now: SystemTime, token: Option<&'a Token>, settings: &'a RefreshConfig) -> Facts<'a> {
    Facts {
        now,
        token,
        settings,
        source: MP,
        last_failure: None,
        failures: 0,
        since_failure: Duration::ZERO,
        needs_person: false,
        quota_blocked: None,
        unconfirmed: None,
        conflict: false,
        lease: LeaseFact::NotTried,
        journal: JournalFact::NotTried,
        probe: ProbeFact::NotTried,
        forced_allowed: true,
        quota_refused: None,
    }
}

const FORCED: Ask = Ask {
    trigger: Trigger::Forced,
    stale: None,
};
const SCHEDULED: Ask = Ask {
    trigger: Trigger::Scheduled,
    stale: None,
};

fn reporting(stale: &str) -> Ask<'_> {
    Ask {
        trigger: Trigger::Forced,
        stale: Some(stale),
    }
}

/// Walks `f` through the steps a flight takes, with the outcomes given, until a
/// call or an answer.
fn walk(mut f: Facts, ask: &Ask, lease: LeaseFact, journal: JournalFact, probe: ProbeFact) -> Step {
    loop {
        match decide(&f, ask) {
            Step::TakeLease => f.lease = lease,
            Step::WriteJournal => f.journal = journal,
            Step::Probe => {
                assert_ne!(probe, ProbeFact::NotTried, "the walk needs a probe outcome");
                f.probe = probe;
            }
            other => return other,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_stale_report_about_a_replaced_token_is_answered_with_the_current_one() {
    let now = SystemTime::now();
    let (s, t) = (settings(), token(now, 600, 6000));
    let f = facts(now, Some(&t), &s);
    assert_eq!(
        decide(&f, &reporting("OLD")),
        Step::Answer(Answer::Serve(Decision::Stale))
    );
}

#[tokio::test(start_paused = true)]
async fn a_force_refresh_without_stale_is_rate_limited_right_after_a_refresh() {
    let now = SystemTime::now();
    let s = settings();
    let fresh = token(now, 5, 7000);
    assert_eq!(
        decide(&facts(now, Some(&fresh), &s), &FORCED),
        Step::Answer(Answer::Serve(Decision::RateLimited))
    );
    let older = token(now, 60, 7000);
    assert_eq!(
        decide(&facts(now, Some(&older), &s), &FORCED),
        Step::TakeLease
    );
}

#[tokio::test(start_paused = true)]
async fn a_scheduled_refresh_waits_until_a_fifth_of_the_lifetime_is_left() {
    let now = SystemTime::now();
    let s = settings();
    let early = token(now, 1000, 6200);
    assert_eq!(
        decide(&facts(now, Some(&early), &s), &SCHEDULED),
        Step::Answer(Answer::Serve(Decision::Shared))
    );
    let due = token(now, 5800, 1400);
    assert_eq!(
        decide(&facts(now, Some(&due), &s), &SCHEDULED),
        Step::TakeLease
    );
    assert_eq!(
        next_due(&facts(now, Some(&early), &s), 1.0),
        Duration::from_secs(6200 - 1440)
    );
}

#[tokio::test(start_paused = true)]
async fn forced_requests_share_a_failure_during_the_cooldown() {
    let now = SystemTime::now();
    let s = settings();
    let t = token(now, 600, 6000);
    let error = RefreshError::Upstream(upstream::Error::WeChat {
        errcode: -1,
        errmsg: "busy".into(),
    });
    let mut f = facts(now, Some(&t), &s);
    f.last_failure = Some((&error, Duration::from_millis(200)));
    assert_eq!(
        decide(&f, &reporting("CURRENT")),
        Step::Answer(Answer::LastFailure)
    );
    assert_eq!(
        decide(&f, &FORCED),
        Step::Answer(Answer::Serve(Decision::RateLimited))
    );
    f.last_failure = Some((&error, Duration::from_secs(2)));
    assert_eq!(decide(&f, &reporting("CURRENT")), Step::TakeLease);
}

#[tokio::test(start_paused = true)]
async fn a_failure_for_a_missing_dependency_has_no_cooldown() {
    // The verify ticket was not pushed yet: no call was made, and once it arrives the
    // component token is fetched at the next ask, not after the retry delay.
    let now = SystemTime::now();
    let s = settings();
    let error = RefreshError::Upstream(upstream::Error::Dependency(
        "component_verify_ticket".into(),
    ));
    let mut f = facts(now, None, &s);
    f.last_failure = Some((&error, Duration::from_millis(1)));
    assert_eq!(decide(&f, &reporting("CURRENT")), Step::TakeLease);
}

#[tokio::test(start_paused = true)]
async fn waiting_for_a_pushed_value_backs_off_while_other_failures_retry_at_once() {
    let now = SystemTime::now();
    let s = settings();
    let missing = RefreshError::Upstream(upstream::Error::Dependency(
        "component_verify_ticket".into(),
    ));
    let busy = RefreshError::Upstream(upstream::Error::WeChat {
        errcode: -1,
        errmsg: "busy".into(),
    });
    let mut f = facts(now, None, &s);
    f.failures = 6;
    f.last_failure = Some((&missing, Duration::ZERO));
    assert!(
        next_due(&f, 1.0) >= s.min_retry_delay * 16,
        "{:?}",
        next_due(&f, 1.0)
    );
    assert!(next_due(&f, 1.0) <= s.max_retry_delay);
    f.last_failure = Some((&busy, Duration::ZERO));
    assert_eq!(next_due(&f, 1.0), s.min_retry_delay);
}

#[tokio::test(start_paused = true)]
async fn a_call_that_may_replace_the_token_is_announced_under_the_lease_and_the_journal() {
    let now = SystemTime::now();
    let (s, t) = (settings(), token(now, 600, 6000));
    let f = facts(now, Some(&t), &s);
    assert_eq!(
        walk(
            f.clone(),
            &reporting("CURRENT"),
            LeaseFact::Held,
            JournalFact::Written,
            ProbeFact::NotTried
        ),
        Step::Call {
            forced: false,
            announced: true
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_that_cannot_be_announced_waits_while_the_token_has_more_than_the_grace_left() {
    let now = SystemTime::now();
    let s = settings();
    let due = token(now, 5800, 1400);
    let f = facts(now, Some(&due), &s);
    // Store unreachable: no lease.
    assert!(matches!(
        walk(
            f.clone(),
            &SCHEDULED,
            LeaseFact::Unavailable,
            JournalFact::NotTried,
            ProbeFact::NotTried
        ),
        Step::Answer(Answer::Deferred(_))
    ));
    // Lease held but the mark cannot be written (a full disk).
    assert!(matches!(
        walk(
            f.clone(),
            &SCHEDULED,
            LeaseFact::Held,
            JournalFact::Failed,
            ProbeFact::NotTried
        ),
        Step::Answer(Answer::Deferred(_))
    ));
    // Within the grace of its end, the other holders lose nothing: call (once WeChat
    // says nobody has replaced it meanwhile).
    let near = token(now, 6900, 300);
    let f = facts(now, Some(&near), &s);
    assert_eq!(
        walk(
            f.clone(),
            &SCHEDULED,
            LeaseFact::Unavailable,
            JournalFact::NotTried,
            ProbeFact::Accepted
        ),
        Step::Call {
            forced: false,
            announced: false
        }
    );
    // No token at all: nothing to protect.
    let f = facts(now, None, &s);
    assert_eq!(
        walk(
            f.clone(),
            &SCHEDULED,
            LeaseFact::Held,
            JournalFact::Failed,
            ProbeFact::NotTried
        ),
        Step::Call {
            forced: false,
            announced: false
        }
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_outcome_bounds_the_served_token_by_the_grace() {
    let now = SystemTime::now();
    let s = settings();
    let since = now - Duration::from_secs(100);
    let bounded = token(now, 600, 6000).trusted_at_most_until(super::super::token::trust_bound(
        unix_millis(since),
        s.upstream_grace,
        now,
    ));
    let mut f = facts(now, Some(&bounded), &s);
    f.unconfirmed = Some(Unconfirmed {
        since,
        announced: true,
    });
    // Served for what is left of the grace, and due at once.
    let left = bounded.remaining(now).as_secs();
    assert!((199..=200).contains(&left), "{left}");
    assert_eq!(next_due(&f, 1.0), Duration::ZERO);
    assert_eq!(decide(&f, &SCHEDULED), Step::TakeLease);
    // A durable mark already bounds every holder: an unannounced retry loses nothing.
    assert!(unannounced_call_allowed(&f));
}

#[tokio::test(start_paused = true)]
async fn an_unconfirmed_report_is_probed_and_a_token_wechat_accepts_is_answered() {
    let now = SystemTime::now();
    let (s, t) = (settings(), token(now, 600, 6000));
    let f = facts(now, Some(&t), &s);
    assert_eq!(
        walk(
            f.clone(),
            &reporting("CURRENT"),
            LeaseFact::Unavailable,
            JournalFact::NotTried,
            ProbeFact::Accepted
        ),
        Step::Answer(Answer::Serve(Decision::StillValid))
    );
    // Rejected, but the cluster's newer token cannot be learned: not replaced here.
    assert!(matches!(
        walk(
            f.clone(),
            &reporting("CURRENT"),
            LeaseFact::Unavailable,
            JournalFact::NotTried,
            ProbeFact::Rejected
        ),
        Step::Answer(Answer::Deferred(_))
    ));
    // Under the lease, a report is believed without a probe.
    assert_eq!(
        walk(
            f.clone(),
            &reporting("CURRENT"),
            LeaseFact::Held,
            JournalFact::Written,
            ProbeFact::Failed
        ),
        Step::Call {
            forced: false,
            announced: true
        }
    );
    // Tickets have no probe: deferred while the lease cannot be had.
    let mut f = facts(now, Some(&t), &s);
    f.source = TICKET;
    assert!(matches!(
        walk(
            f.clone(),
            &reporting("CURRENT"),
            LeaseFact::Unavailable,
            JournalFact::NotTried,
            ProbeFact::NotTried
        ),
        Step::Answer(Answer::Deferred(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn stable_tokens_spend_a_forced_call_only_on_a_probed_rejection_within_the_budget() {
    let now = SystemTime::now();
    let (s, t) = (settings(), token(now, 600, 6000));
    let mut f = facts(now, Some(&t), &s);
    f.source = STABLE;
    let report = reporting("CURRENT");
    assert_eq!(
        walk(
            f.clone(),
            &report,
            LeaseFact::Held,
            JournalFact::Written,
            ProbeFact::Accepted
        ),
        Step::Answer(Answer::Serve(Decision::StillValid))
    );
    assert_eq!(
        walk(
            f.clone(),
            &report,
            LeaseFact::Held,
            JournalFact::Written,
            ProbeFact::Rejected
        ),
        Step::Call {
            forced: true,
            announced: true
        }
    );
    f.forced_allowed = false;
    assert_eq!(
        walk(
            f.clone(),
            &report,
            LeaseFact::Held,
            JournalFact::Written,
            ProbeFact::Rejected
        ),
        Step::Call {
            forced: false,
            announced: true
        }
    );
    // Normal mode replaces nothing: without the lease it is called anyway.
    let due = token(now, 5800, 1400);
    let mut f = facts(now, Some(&due), &s);
    f.source = STABLE;
    assert_eq!(
        walk(
            f.clone(),
            &SCHEDULED,
            LeaseFact::Unavailable,
            JournalFact::NotTried,
            ProbeFact::NotTried
        ),
        Step::Call {
            forced: false,
            announced: false
        }
    );
}

#[tokio::test(start_paused = true)]
async fn retries_near_expiry_never_wait_past_the_served_tokens_end() {
    let now = SystemTime::now();
    let s = settings();
    let t = token(now, 11, 1);
    let mut f = facts(now, Some(&t), &s);
    f.failures = 3; // backoff would say 4 s
    let wait = next_due(&f, 1.0);
    assert!(wait <= Duration::from_secs(1), "{wait:?}");
    assert!(wait >= RETRY_FLOOR, "{wait:?}");
    let t = token(now, 11, 0);
    // 50 ms left: the wait ends with the token, not after it.
    let t = Token::new(
        t.value.clone(),
        now + Duration::from_millis(50),
        t.refreshed_at,
        3,
        Trigger::Scheduled,
        now,
    );
    let mut f = facts(now, Some(&t), &s);
    f.failures = 3;
    assert!(next_due(&f, 1.0) <= Duration::from_millis(50));
}

#[tokio::test(start_paused = true)]
async fn with_no_token_held_retries_come_at_the_minimum_pace() {
    let now = SystemTime::now();
    let s = settings();
    let mut f = facts(now, None, &s);
    f.failures = 12;
    assert_eq!(next_due(&f, 1.0), s.min_retry_delay);
    assert_eq!(next_due(&f, 0.5), s.min_retry_delay / 2);
}

#[tokio::test(start_paused = true)]
async fn errors_only_a_person_can_fix_are_retried_slowly() {
    let now = SystemTime::now();
    let s = settings();
    let mut f = facts(now, None, &s);
    f.failures = 2;
    f.needs_person = true;
    f.since_failure = Duration::from_secs(100);
    assert_eq!(next_due(&f, 1.0), Duration::from_secs(200));
}

fn record(value: &str, version: u64, now: SystemTime) -> StoredToken {
    let mut t = token(now, 600, 6000).to_stored(&crate::domain::CredentialKey::new("a", "t"));
    t.value = value.into();
    t.version = version;
    t
}

#[tokio::test(start_paused = true)]
async fn newest_issued_wins_a_conflict_costs_one_announced_fetch() {
    let now = SystemTime::now();
    let ms = unix_millis(now);
    let ours = token(now, 600, 6000); // version 3, "CURRENT"
    // Another instance's newer save while ours is stored: adopt it.
    assert_eq!(
        on_stored(Some(&ours), None, Some(&record("PEER", 4, now)), now, ms),
        StoredAction::Adopt
    );
    // Ours could not be saved (fetched when the store held version 2), and the store
    // has moved on since: which WeChat issued last is unknown, whatever the versions
    // (ours may have run ahead on tokens of its own that were never stored).
    for version in [3, 5, 2 + 1] {
        assert_eq!(
            on_stored(
                Some(&ours),
                Some(2),
                Some(&record("PEER", version, now)),
                now,
                ms
            ),
            StoredAction::Conflict { baseline: version }
        );
    }
    let mut ahead = ours.clone();
    ahead.version = 9;
    assert_eq!(
        on_stored(
            Some(&ahead),
            Some(2),
            Some(&record("PEER", 3, now)),
            now,
            ms
        ),
        StoredAction::Conflict { baseline: 3 }
    );
    // The store has not moved since ours was fetched: ours goes in.
    assert_eq!(
        on_stored(Some(&ahead), Some(2), Some(&record("OLD", 2, now)), now, ms),
        StoredAction::WriteBack
    );
    // The same version with another value while ours is saved: a conflict too.
    assert_eq!(
        on_stored(Some(&ours), None, Some(&record("PEER", 3, now)), now, ms),
        StoredAction::Conflict { baseline: 3 }
    );
    // The same token: confirmed, and its pending mark taken.
    assert_eq!(
        on_stored(
            Some(&ours),
            Some(2),
            Some(&record("CURRENT", 3, now)),
            now,
            ms
        ),
        StoredAction::Confirm
    );
    let mut marked = record("CURRENT", 3, now);
    marked.pending_since_ms = Some(ms);
    assert_eq!(
        on_stored(Some(&ours), None, Some(&marked), now, ms),
        StoredAction::Rebound(Some(ms))
    );
    // A store that lost our token (or holds an older one) gets it back.
    assert_eq!(
        on_stored(Some(&ours), None, None, now, ms),
        StoredAction::WriteBack
    );
    assert_eq!(
        on_stored(Some(&ours), None, Some(&record("OLD", 2, now)), now, ms),
        StoredAction::WriteBack
    );
}

#[tokio::test(start_paused = true)]
async fn records_that_may_not_be_served_are_never_adopted() {
    let now = SystemTime::now();
    let ms = unix_millis(now);
    let ours = token(now, 600, 6000);
    let mut forged = record("PEER", 9, now);
    forged.expires_at_ms = ms + 10 * 365 * 24 * 3600 * 1000; // ten years
    assert_eq!(
        on_stored(Some(&ours), None, Some(&forged), now, ms),
        StoredAction::Ignore
    );
    let mut future = record("PEER", 9, now);
    future.refreshed_at_ms = ms + 3600 * 1000;
    future.expires_at_ms = ms + 7200 * 1000;
    assert_eq!(
        on_stored(Some(&ours), None, Some(&future), now, ms),
        StoredAction::Ignore
    );
    for value in ["", "   ", "a\nb"] {
        assert_eq!(
            on_stored(None, None, Some(&record(value, 9, now)), now, ms),
            StoredAction::Ignore,
            "{value:?}"
        );
    }
    assert_eq!(
        on_stored(
            None,
            None,
            Some(&record(&"x".repeat(2049), 9, now)),
            now,
            ms
        ),
        StoredAction::Ignore
    );
}

#[test]
fn a_two_hour_token_keeps_at_least_fifteen_minutes_of_retry_room() {
    assert!(refresh_lead(Duration::from_secs(7200)) >= Duration::from_secs(15 * 60));
    assert!(refresh_lead(Duration::from_secs(7000)) >= Duration::from_secs(15 * 60));
}

#[test]
fn backoff_doubles_up_to_the_maximum() {
    let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
    let delays: Vec<u64> = (1..=8).map(|n| backoff(n, min, max).as_secs()).collect();
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
    assert_eq!(backoff(u32::MAX, min, max), max);
}

#[tokio::test(start_paused = true)]
async fn a_dependency_report_is_wechats_own_verdict_and_needs_no_probe() {
    let now = SystemTime::now();
    let (s, t) = (settings(), token(now, 600, 6000));
    let dependency = Ask {
        trigger: Trigger::Dependency,
        stale: Some("CURRENT"),
    };
    // Under the lease: refreshed at once, in normal mode even for stable_token.
    let mut f = facts(now, Some(&t), &s);
    f.source = STABLE;
    assert_eq!(
        walk(
            f.clone(),
            &dependency,
            LeaseFact::Held,
            JournalFact::Written,
            ProbeFact::Accepted
        ),
        Step::Call {
            forced: false,
            announced: true
        }
    );
    // Without the lease it is not replaced from here (the cluster may hold its successor).
    let f = facts(now, Some(&t), &s);
    assert!(matches!(
        walk(
            f,
            &dependency,
            LeaseFact::Unavailable,
            JournalFact::NotTried,
            ProbeFact::Accepted
        ),
        Step::Answer(Answer::Deferred(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_call_the_quota_guard_would_refuse_is_answered_without_any_io() {
    let now = SystemTime::now();
    let (s, t) = (settings(), token(now, 600, 6000));
    let mut f = facts(now, Some(&t), &s);
    let refusal = Refusal::Exhausted {
        endpoint: "/cgi-bin/token".into(),
    };
    f.quota_refused = Some(refusal.clone());
    assert_eq!(
        decide(&f, &reporting("CURRENT")),
        Step::Answer(Answer::QuotaRefused(refusal))
    );
    // ... but a stale report is still answered with the current token first.
    assert_eq!(
        decide(&f, &reporting("OLD")),
        Step::Answer(Answer::Serve(Decision::Stale))
    );
}

#[tokio::test(start_paused = true)]
async fn a_conflict_makes_the_token_due_at_once() {
    let now = SystemTime::now();
    let (s, t) = (settings(), token(now, 600, 6000));
    let mut f = facts(now, Some(&t), &s);
    f.conflict = true;
    assert_eq!(next_due(&f, 1.0), Duration::ZERO);
    assert_eq!(decide(&f, &SCHEDULED), Step::TakeLease);
}

#[tokio::test(start_paused = true)]
async fn a_dead_record_of_another_instance_is_not_adopted() {
    let now = SystemTime::now();
    let ms = unix_millis(now);
    let mut dead = record("PEER", 9, now);
    dead.expires_at_ms = ms - 1;
    dead.refreshed_at_ms = ms - 7_200_000;
    assert_eq!(
        on_stored(None, None, Some(&dead), now, ms),
        StoredAction::Ignore
    );
}

#[tokio::test(start_paused = true)]
async fn a_cut_off_instance_never_replaces_a_token_another_instance_replaced() {
    let now = SystemTime::now();
    let s = settings();
    // Within the grace of its end, but WeChat already rejects it: the cluster holds its
    // successor, which a call from here would kill.
    let near = token(now, 6900, 300);
    let f = facts(now, Some(&near), &s);
    for verdict in [ProbeFact::Rejected, ProbeFact::Failed] {
        assert!(matches!(
            walk(
                f.clone(),
                &SCHEDULED,
                LeaseFact::Unavailable,
                JournalFact::NotTried,
                verdict
            ),
            Step::Answer(Answer::Deferred(_))
        ));
    }
    // Once WeChat rejected it, not even after its end: the successor lives on.
    let rejected = token(now, 7199, 1).marked_rejected();
    let later = now + Duration::from_secs(60);
    let f = facts(later, Some(&rejected), &s);
    assert!(!unannounced_call_allowed(&f));
    let much_later = now + Duration::from_secs(7300);
    let f = facts(much_later, Some(&rejected), &s);
    assert!(unannounced_call_allowed(&f));
    // Under the lease with the mark written, nothing needs probing.
    let f = facts(now, Some(&near), &s);
    assert_eq!(
        walk(
            f.clone(),
            &SCHEDULED,
            LeaseFact::Held,
            JournalFact::Written,
            ProbeFact::Failed
        ),
        Step::Call {
            forced: false,
            announced: true
        }
    );
}
