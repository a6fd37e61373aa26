//! A token as served, with the bounds that decide how long it may be served.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::Trigger;
use crate::domain::{CredentialKey, from_unix_millis, unix_millis};
use crate::store::StoredToken;

/// A token as served. Immutable: a change (a new bound) installs a new `Token`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub value: String,
    /// When WeChat's lifetime ends.
    pub expires_at: SystemTime,
    /// When the call that fetched it started.
    pub refreshed_at: SystemTime,
    /// Increases by one with each refresh of this credential.
    pub version: u64,
    /// What caused the refresh that produced it.
    pub trigger: Trigger,
    /// Fetched by a call announced to the cluster and the journal (see
    /// `decide::Step::Call`); stored with the token.
    pub announced: bool,
    /// `expires_at` on the monotonic clock, so that a wall clock stepped backwards
    /// cannot keep a token served past its real end.
    deadline: Instant,
    /// A call whose outcome is unknown (or a peer's pending mark) may have replaced
    /// it at WeChat: it is served only until then (the call's start plus WeChat's
    /// grace).
    trusted_until: Option<Instant>,
    /// WeChat said it no longer accepts it (a validity probe): never served again.
    rejected: bool,
    /// When this instance received it from WeChat (`None` for a token read from the
    /// store): WeChat issued it no later than this, which settles some conflicts
    /// without a call (`decide::issued_after`).
    pub received_at: Option<SystemTime>,
}

impl Token {
    /// A token that WeChat's lifetime ends at `expires_at`; `now` is the wall time.
    pub fn new(
        value: String,
        expires_at: SystemTime,
        refreshed_at: SystemTime,
        version: u64,
        trigger: Trigger,
        now: SystemTime,
    ) -> Self {
        let left = expires_at.duration_since(now).unwrap_or_default();
        Self {
            value,
            expires_at,
            refreshed_at,
            version,
            trigger,
            announced: true,
            deadline: Instant::now() + left,
            trusted_until: None,
            rejected: false,
            received_at: None,
        }
    }

    /// The end of what may be served, given the monotonic `instant` now: WeChat's
    /// lifetime on both clocks and the trust bound, whichever comes first.
    fn end(&self, now: SystemTime, instant: Instant) -> Instant {
        if self.rejected {
            return instant;
        }
        let by_wall = instant + self.expires_at.duration_since(now).unwrap_or_default();
        let end = by_wall.min(self.deadline);
        self.trusted_until.map_or(end, |bound| end.min(bound))
    }

    /// Life left to serve at `now` (zero once it may no longer be served): the wall
    /// clock, the monotonic one and the trust bound, whichever says less. One reading
    /// of the monotonic clock: this is on the serving path.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        let instant = Instant::now();
        self.end(now, instant).saturating_duration_since(instant)
    }

    /// WeChat's own life left, ignoring what this server learned about replacement
    /// (the trust bound, a rejection): how long the other holders of this token can
    /// count on it.
    pub fn natural_remaining(&self, now: SystemTime) -> Duration {
        let by_wall = self.expires_at.duration_since(now).unwrap_or_default();
        by_wall.min(self.deadline.saturating_duration_since(Instant::now()))
    }

    /// Life left by WeChat's lifetime and the trust bound from pending marks, but not
    /// a probe's rejection: how long the holders of this token were told they may
    /// serve it.
    pub fn announced_remaining(&self, now: SystemTime) -> Duration {
        let natural = self.natural_remaining(now);
        self.trusted_until.map_or(natural, |bound| {
            natural.min(bound.saturating_duration_since(Instant::now()))
        })
    }

    /// The lifetime it was given when fetched.
    pub fn lifetime(&self) -> Duration {
        self.expires_at
            .duration_since(self.refreshed_at)
            .unwrap_or_default()
    }

    /// May it be served at `now`?
    pub fn is_live(&self, now: SystemTime) -> bool {
        let instant = Instant::now();
        !self.rejected
            && self.expires_at > now
            && instant < self.deadline
            && self.trusted_until.is_none_or(|bound| instant < bound)
    }

    /// Its [`remaining`](Self::remaining) life if it may be served, at the wall time
    /// `now` and the monotonic `instant` the caller read: the serving path reads each
    /// clock once per request and asks both questions with them. Live exactly when
    /// [`is_live`](Self::is_live) says so: then every bound is past both clocks, so the
    /// life left is above zero.
    pub fn serving_life(&self, now: SystemTime, instant: Instant) -> Option<Duration> {
        let left = self.end(now, instant).saturating_duration_since(instant);
        (left > Duration::ZERO).then_some(left)
    }

    /// The trust bound, if one applies.
    pub fn trusted_until(&self) -> Option<Instant> {
        self.trusted_until
    }

    /// Has a probe found it rejected?
    pub fn is_rejected(&self) -> bool {
        self.rejected
    }

    /// A copy trusted until exactly `bound` (`None`: no bound), all else kept.
    pub fn with_trusted_until(&self, bound: Option<Instant>) -> Self {
        Self {
            trusted_until: bound,
            ..self.clone()
        }
    }

    /// A copy trusted at most until `bound`.
    pub fn trusted_at_most_until(&self, bound: Instant) -> Self {
        Self {
            trusted_until: Some(self.trusted_until.map_or(bound, |b| b.min(bound))),
            ..self.clone()
        }
    }

    /// A copy that is never served again.
    pub fn marked_rejected(&self) -> Self {
        Self {
            rejected: true,
            ..self.clone()
        }
    }

    /// The token of a stored record. A pending mark bounds its trust to the mark plus
    /// `grace`.
    pub fn from_stored(
        stored: &StoredToken,
        trigger: Trigger,
        now: SystemTime,
        grace: Duration,
    ) -> Self {
        let mut token = Self::new(
            stored.value.clone(),
            from_unix_millis(stored.expires_at_ms),
            from_unix_millis(stored.refreshed_at_ms),
            stored.version,
            trigger,
            now,
        );
        token.announced = stored.announced;
        if let Some(since) = stored.pending_since_ms {
            token = token.trusted_at_most_until(trust_bound(since, grace, now));
        }
        token
    }

    /// The record to store.
    pub fn to_stored(&self, key: &CredentialKey) -> StoredToken {
        StoredToken {
            app: key.app.clone(),
            name: key.name.clone(),
            value: self.value.clone(),
            expires_at_ms: unix_millis(self.expires_at),
            refreshed_at_ms: unix_millis(self.refreshed_at),
            version: self.version,
            pending_since_ms: None,
            announced: self.announced,
            generation: None,
        }
    }
}

/// The monotonic instant `grace` after the wall time `since_ms` (Unix milliseconds).
pub fn trust_bound(since_ms: u64, grace: Duration, now: SystemTime) -> Instant {
    let end = from_unix_millis(since_ms) + grace;
    Instant::now() + end.duration_since(now).unwrap_or_default()
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &crate::domain::token_prefix(&self.value))
            .field("expires_at", &self.expires_at)
            .field("version", &self.version)
            .field("trusted_until", &self.trusted_until)
            .field("rejected", &self.rejected)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(now: SystemTime, life: u64) -> Token {
        Token::new(
            "T".into(),
            now + Duration::from_secs(life),
            now,
            1,
            Trigger::Scheduled,
            now,
        )
    }

    #[tokio::test]
    async fn a_wall_clock_stepped_backwards_does_not_extend_a_token() {
        let now = SystemTime::now();
        let token = token(now, 10);
        // A clock an hour behind would read the token as having an hour more to live.
        let behind = now - Duration::from_secs(3600);
        assert!(token.remaining(behind) <= Duration::from_secs(10));
        assert!(token.is_live(behind));
        // A clock ahead makes it expire early: the safe side.
        assert!(!token.is_live(now + Duration::from_secs(11)));
        assert_eq!(
            token.remaining(now + Duration::from_secs(11)),
            Duration::ZERO
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_trust_bound_ends_serving_before_the_lifetime_does() {
        let now = SystemTime::now();
        let bounded =
            token(now, 7200).trusted_at_most_until(Instant::now() + Duration::from_secs(300));
        assert_eq!(bounded.remaining(now), Duration::from_secs(300));
        assert_eq!(bounded.natural_remaining(now), Duration::from_secs(7200));
        tokio::time::advance(Duration::from_secs(300)).await;
        assert!(!bounded.is_live(now + Duration::from_secs(300)));
        // A later, looser bound never widens an earlier one.
        let again = bounded.trusted_at_most_until(Instant::now() + Duration::from_secs(900));
        assert!(!again.is_live(now + Duration::from_secs(300)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_token_is_not_served() {
        let now = SystemTime::now();
        let rejected = token(now, 7200).marked_rejected();
        assert!(!rejected.is_live(now));
        assert_eq!(rejected.remaining(now), Duration::ZERO);
        assert_eq!(rejected.announced_remaining(now), Duration::from_secs(7200));
    }

    #[tokio::test(start_paused = true)]
    async fn serving_life_is_remaining_when_live_and_none_otherwise() {
        let now = SystemTime::now();
        let s = Duration::from_secs;
        let tokens = [
            token(now, 10),
            token(now, 0),
            token(now, 7200).trusted_at_most_until(Instant::now() + s(5)),
            token(now, 7200).marked_rejected(),
        ];
        for step in [0, 4, 5, 9, 10, 11] {
            let wall = now + s(step);
            for (i, token) in tokens.iter().enumerate() {
                let expected = token.is_live(wall).then(|| token.remaining(wall));
                assert_eq!(
                    token.serving_life(wall, Instant::now()),
                    expected,
                    "token {i} at +{step} s"
                );
            }
            // The monotonic clock moves less than the wall clock: both bounds count.
            tokio::time::advance(s(1)).await;
        }
    }

    #[tokio::test]
    async fn a_stored_pending_mark_bounds_the_restored_token() {
        let now = SystemTime::now();
        let mut stored = token(now, 7200).to_stored(&CredentialKey::new("a", "t"));
        stored.pending_since_ms = Some(unix_millis(now - Duration::from_secs(100)));
        let restored =
            Token::from_stored(&stored, Trigger::Restored, now, Duration::from_secs(300));
        let left = restored.remaining(now).as_secs();
        assert!((199..=200).contains(&left), "{left}");
        stored.pending_since_ms = Some(unix_millis(now - Duration::from_secs(400)));
        let restored =
            Token::from_stored(&stored, Trigger::Restored, now, Duration::from_secs(300));
        assert!(!restored.is_live(now));
    }
}
