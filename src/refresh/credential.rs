//! One credential's state: the token being served, the lock that makes refreshes
//! single-flight, and what the status page shows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use tokio::sync::{Notify, watch};

use super::Trigger;
use super::error::RefreshError;
use super::flight::FlightState;
use crate::config::SourceConfig;
use crate::domain::{CredentialKey, from_unix_millis, unix_millis};
use crate::metrics::CredentialLabels;
use crate::store::StoredToken;
use crate::upstream::errcode::Advice;

/// A token as served.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub value: String,
    /// When it stops being served.
    pub expires_at: SystemTime,
    /// When it was fetched from WeChat.
    pub refreshed_at: SystemTime,
    /// Increases by one with each refresh of this credential.
    pub version: u64,
    /// What caused the refresh that produced it.
    pub trigger: Trigger,
    /// `expires_at` on the monotonic clock, so that a wall clock stepped backwards
    /// cannot keep a token served past its real end.
    deadline: Instant,
}

impl Token {
    pub fn new(
        value: String,
        expires_at: SystemTime,
        refreshed_at: SystemTime,
        version: u64,
        trigger: Trigger,
    ) -> Self {
        let left = expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        Self {
            value,
            expires_at,
            refreshed_at,
            version,
            trigger,
            deadline: Instant::now() + left,
        }
    }

    /// Life left at `now` (zero once expired), by the wall clock or the monotonic one,
    /// whichever says less: a clock step in either direction errs on the safe side.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        let by_wall = self.expires_at.duration_since(now).unwrap_or_default();
        by_wall.min(self.deadline.saturating_duration_since(Instant::now()))
    }

    /// The lifetime it was given when fetched.
    pub fn lifetime(&self) -> Duration {
        self.expires_at
            .duration_since(self.refreshed_at)
            .unwrap_or_default()
    }

    pub fn is_live(&self, now: SystemTime) -> bool {
        self.expires_at > now && Instant::now() < self.deadline
    }

    pub fn from_stored(stored: &StoredToken, trigger: Trigger) -> Self {
        Self::new(
            stored.value.clone(),
            from_unix_millis(stored.expires_at_ms),
            from_unix_millis(stored.refreshed_at_ms),
            stored.version,
            trigger,
        )
    }

    pub fn to_stored(&self, key: &CredentialKey) -> StoredToken {
        StoredToken {
            app: key.app.clone(),
            name: key.name.clone(),
            value: self.value.clone(),
            expires_at_ms: unix_millis(self.expires_at),
            refreshed_at_ms: unix_millis(self.refreshed_at),
            version: self.version,
        }
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &crate::domain::token_prefix(&self.value))
            .field("expires_at", &self.expires_at)
            .field("version", &self.version)
            .finish()
    }
}

/// What went on lately, for the scheduler's backoff and for the status page.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// The last failure and when it happened; kept after a success for the status page.
    pub last_error: Option<(RefreshError, SystemTime)>,
    /// When the last attempt (successful or not) ended.
    pub last_attempt_at: Option<SystemTime>,
}

/// One token of one app.
pub struct Credential {
    pub key: CredentialKey,
    pub source: SourceConfig,
    /// Its metric labels, resolved once so that recording never allocates.
    pub labels: CredentialLabels,
    /// The token being served. An `ArcSwap`: readers on every core load it without
    /// a lock and, on the serving path, without touching a shared reference count, so
    /// they neither wait for a refresh nor contend with each other.
    current: ArcSwapOption<Token>,
    /// Serialises refreshes; see `flight`.
    pub(super) flight: tokio::sync::Mutex<FlightState>,
    /// Counts finished refresh attempts. Read before queueing on `flight`, so that a
    /// caller can tell that a refresh ended while it waited, and share its outcome.
    pub(super) completed_flights: AtomicU64,
    /// Highest version seen, so versions keep increasing across restarts.
    version_floor: AtomicU64,
    /// The version of the token being served, for tasks that wait for it to change
    /// (the scheduler, a caller waiting for another instance's refresh).
    installed: watch::Sender<u64>,
    /// Wakes the scheduler when the failure status changed under it (a failed force
    /// refresh can change when it should try next).
    pub(super) failed: Notify,
    status: Mutex<Status>,
}

impl Credential {
    pub fn new(app: &str, source: SourceConfig) -> Self {
        let endpoint = source.urls.first().map_or("", |url| url.path());
        Self {
            key: CredentialKey::new(app, &source.name),
            labels: CredentialLabels::new(app, &source.name, endpoint),
            source,
            current: ArcSwapOption::empty(),
            flight: tokio::sync::Mutex::new(FlightState::default()),
            completed_flights: AtomicU64::new(0),
            version_floor: AtomicU64::new(0),
            installed: watch::Sender::new(0),
            failed: Notify::new(),
            status: Mutex::new(Status::default()),
        }
    }

    /// The current token, live or not.
    pub fn current(&self) -> Option<Arc<Token>> {
        self.current.load_full()
    }

    /// The current token if it has life left at `now`.
    pub fn live_token(&self, now: SystemTime) -> Option<Arc<Token>> {
        self.current().filter(|t| t.is_live(now))
    }

    /// Runs `read` on the token if it has life left at `now`: the serving path, which
    /// borrows the token instead of taking a reference to it.
    pub fn with_live_token<R>(&self, now: SystemTime, read: impl FnOnce(&Token) -> R) -> Option<R> {
        let current = self.current.load();
        current.as_deref().filter(|t| t.is_live(now)).map(read)
    }

    /// Makes `token` the one served, atomically for readers.
    pub(crate) fn install(&self, token: Token) -> Arc<Token> {
        self.version_floor
            .fetch_max(token.version, Ordering::SeqCst);
        let version = token.version;
        let token = Arc::new(token);
        self.current.store(Some(token.clone()));
        self.installed.send_replace(version);
        token
    }

    /// A receiver that sees each token installed from now on.
    pub(super) fn watch_installs(&self) -> watch::Receiver<u64> {
        self.installed.subscribe()
    }

    /// Version of the token being served (0 when none).
    pub fn current_version(&self) -> u64 {
        self.current().map_or(0, |t| t.version)
    }

    /// Serves `stored`, written by another instance, if it differs from ours (newer,
    /// or another value of the same version) and is still alive. Returns whether it was
    /// installed.
    pub(super) fn adopt(&self, stored: &StoredToken, now: SystemTime) -> bool {
        if !stored.is_sane() {
            tracing::warn!(key = %self.key, "ignoring a stored token with impossible times");
            return false;
        }
        self.bump_version_floor(stored.version);
        if from_unix_millis(stored.expires_at_ms) <= now {
            return false;
        }
        // Newer, or the same version with another value (two instances refreshed while
        // the store was unreachable): the store is the cluster's one truth. Decided and
        // swapped in one step, so a token installed meanwhile is never replaced by an
        // older one.
        let candidate = Arc::new(Token::from_stored(stored, Trigger::Peer));
        let mut adopted = false;
        self.current.rcu(|current| {
            adopted = current.as_ref().is_none_or(|current| {
                stored.version > current.version
                    || (stored.version == current.version && stored.value != current.value)
            });
            if adopted {
                Some(candidate.clone())
            } else {
                current.clone()
            }
        });
        if adopted {
            self.installed.send_replace(stored.version);
        }
        adopted
    }

    /// The version the next fetched token gets.
    pub(super) fn next_version(&self) -> u64 {
        self.version_floor.load(Ordering::SeqCst) + 1
    }

    pub(super) fn bump_version_floor(&self, version: u64) {
        self.version_floor.fetch_max(version, Ordering::SeqCst);
    }

    /// A snapshot of the status.
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn record_success(&self, now: SystemTime) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.consecutive_failures = 0;
        status.last_attempt_at = Some(now);
    }

    /// Is this the call that turns the app's id and secret into a token (no
    /// `{{dependency}}`)? WeChat's 40001 means a wrong secret there.
    pub fn is_token_call(&self) -> bool {
        self.source.deps.is_empty()
    }

    /// The advice for the error that is failing this credential now, if only a person
    /// can fix it.
    pub fn needs_person(&self) -> Option<(RefreshError, Advice)> {
        let status = self.status();
        if status.consecutive_failures == 0 {
            return None;
        }
        let (error, _) = status.last_error?;
        let advice = error.advice(self.is_token_call())?;
        advice.needs_person.then_some((error, advice))
    }

    pub(super) fn record_failure(&self, error: &RefreshError, now: SystemTime) {
        {
            let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
            status.consecutive_failures = status.consecutive_failures.saturating_add(1);
            status.last_error = Some((error.clone(), now));
            status.last_attempt_at = Some(now);
        }
        // A failed force refresh can change when the scheduler should try next (an
        // error only a person can fix is retried on its own slow clock).
        self.failed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wall_clock_stepped_backwards_does_not_extend_a_token() {
        let now = SystemTime::now();
        let token = Token::new(
            "T".into(),
            now + Duration::from_secs(10),
            now,
            1,
            Trigger::Scheduled,
        );
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
}
