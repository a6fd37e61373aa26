//! stable_token's forced mode, spent only when it is really needed.
//!
//! `/cgi-bin/stable_token` in normal mode returns the current token while it has more
//! than 5 minutes left, so every scheduled and dependency refresh uses it. Forced mode
//! issues a new token and kills the old one at once, but WeChat allows it only
//! [`FORCED_PER_DAY`] times a day, [`FORCED_SPACING`] apart, and it is meant for leaked
//! or broken tokens. So `decide` turns a client's force refresh into a forced call only
//! when:
//! 1. it names the token we serve as `stale`,
//! 2. WeChat really rejects that token (a `getcallbackip` probe), and
//! 3. our own count of forced calls leaves room within WeChat's limits (this budget).
//!
//! Otherwise the current token is answered (still accepted) or normal mode is used.
//! The count is per instance: instances of a cluster share one WeChat budget, which is
//! why the probe comes first and most reports never get this far.

use std::time::Duration;

use tokio::time::Instant;

/// Forced stable_token calls WeChat allows per app and day (WECHAT-API.md).
pub const FORCED_PER_DAY: u32 = 20;
/// Minimum spacing WeChat requires between two forced calls of one app.
pub const FORCED_SPACING: Duration = Duration::from_secs(30);
/// A probe that found a token accepted answers later reports about the same token for
/// this long, so that a storm of mistaken reports costs one probe, not one each. Short,
/// because a token WeChat accepts now may be rejected a moment later (another party's
/// forced call), and a client told "still valid" must not wait long to be believed.
pub const PROBE_REUSE: Duration = Duration::from_secs(2);

/// Forced calls spent; kept by the credential's flight task.
#[derive(Debug, Clone, Default)]
pub struct ForcedBudget {
    /// The WeChat day `used` counts.
    day: u64,
    used: u32,
    last: Option<Instant>,
}

impl ForcedBudget {
    /// Does a forced call at `now` (on WeChat day `day`) stay within WeChat's limits?
    pub fn allows(&self, day: u64, now: Instant) -> bool {
        let used_today = if self.day == day { self.used } else { 0 };
        used_today < FORCED_PER_DAY
            && self
                .last
                .is_none_or(|last| now.duration_since(last) >= FORCED_SPACING)
    }

    /// Counts a forced call. Counted before the call: a call that fails on the way back
    /// may still have been counted by WeChat.
    pub fn spend(&mut self, day: u64, now: Instant) {
        if self.day != day {
            self.day = day;
            self.used = 0;
        }
        self.used += 1;
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_calls_are_spaced_thirty_seconds_apart() {
        let mut budget = ForcedBudget::default();
        let t0 = Instant::now();
        assert!(budget.allows(1, t0));
        budget.spend(1, t0);
        assert!(!budget.allows(1, t0 + Duration::from_secs(29)));
        assert!(budget.allows(1, t0 + FORCED_SPACING));
    }

    #[test]
    fn at_most_twenty_forced_calls_a_day_and_the_count_resets_the_next_day() {
        let mut budget = ForcedBudget::default();
        let t0 = Instant::now();
        for i in 0..FORCED_PER_DAY {
            let at = t0 + FORCED_SPACING * i;
            assert!(budget.allows(7, at), "call {i}");
            budget.spend(7, at);
        }
        let later = t0 + FORCED_SPACING * (FORCED_PER_DAY + 1);
        assert!(!budget.allows(7, later));
        assert!(budget.allows(8, later));
        budget.spend(8, later);
        assert_eq!(budget.used, 1);
    }
}
