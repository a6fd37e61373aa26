//! One credential's shared state: the token being served, the mailbox of its flight
//! task, and what the status page shows. Everything that decides lives in the
//! credential's flight task (`flight`); this is what readers and the task share.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use tokio::sync::Notify;

use super::decide::refresh_lead;
use super::error::RefreshError;
use super::history::{Event, History};
use super::issued::{INDEXED_NAME, IssuedTokens};
use super::mailbox::Mailbox;
pub use super::token::Token;
use crate::config::SourceConfig;
use crate::domain::CredentialKey;
use crate::metrics::CredentialLabels;
use crate::upstream::errcode::Advice;

/// How many requests may wait in a credential's mailbox. Past it, a force refresh is
/// refused at once (429) instead of piling up: its flight task is busy with a call
/// that every queued request would share anyway.
pub const MAILBOX_CAPACITY: usize = 1024;

/// What went on lately, for the scheduler's backoff and for the status page.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// The last failure and when it happened; kept after a success for the status page.
    pub last_error: Option<(RefreshError, SystemTime)>,
    /// When the last attempt (successful or not) ended.
    pub last_attempt_at: Option<SystemTime>,
    /// Why the token being served is not durably stored (a failed save being retried),
    /// for `/readyz`.
    pub unsaved: Option<String>,
}

/// A token that was replaced, and when.
pub struct Replaced {
    pub token: Arc<Token>,
    pub at: tokio::time::Instant,
}

/// How a presented token relates to a credential; see [`Credential::issued`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issued {
    /// The token being served.
    Current,
    /// The one before it, within WeChat's grace after it was replaced.
    Previous,
}

/// One token of one app.
pub struct Credential {
    pub key: CredentialKey,
    pub source: SourceConfig,
    /// Its app's definition (registry apps), stored with each token: records of
    /// another definition are not this credential's (see `StoredToken::generation`).
    pub generation: Option<String>,
    /// Its metric labels, resolved once so that recording never allocates.
    pub labels: CredentialLabels,
    /// The token being served. An `ArcSwap`: readers on every core load it without
    /// a lock and, on the serving path, without touching a shared reference count, so
    /// they neither wait for a refresh nor contend with each other.
    current: ArcSwapOption<Token>,
    /// The token served before the current one and when it was replaced: holders of
    /// it may still use it for WeChat's grace (the facade's tickets, the gateway).
    previous: ArcSwapOption<Replaced>,
    /// The index of handed-out tokens this credential keeps up to date (access tokens
    /// only), with its key as the index holds it.
    issued: OnceLock<(Arc<IssuedTokens>, Arc<CredentialKey>)>,
    /// Requests for the flight task.
    pub(super) mailbox: Mailbox,
    /// Highest version seen, so versions keep increasing across restarts.
    version_floor: AtomicU64,
    /// The version this instance last saw in the store (0: none): saves are a
    /// compare-and-set on it (`TokenStore::save_over`).
    stored_version: AtomicU64,
    /// The version of the token being served, for a flight that waits for another
    /// instance's refresh.
    /// Wakes a flight waiting for another instance's refresh when a token is
    /// installed (a `Notify`: a few bytes, where a watch channel costs hundreds, times
    /// 20,000 credentials).
    installed: Notify,
    /// A pending mark found at start-up (Unix ms): a call was out when the last
    /// process stopped. Taken by the flight task.
    pub(super) restored_pending: Mutex<Option<u64>>,
    /// Is a token held that is not durably stored? Mirrors `Status::unsaved` for a
    /// cheap check.
    unsaved: AtomicBool,
    /// A flight installed a token it has not stored yet: the store's version when it
    /// was fetched. Read by the flight task when a store record arrives meanwhile.
    unsaved_fetch: Mutex<Option<u64>>,
    status: Mutex<Status>,
    /// The last refreshes and failures, for the status page's timeline. Apart from
    /// `status` so that a status snapshot does not copy it.
    history: Mutex<History>,
}

/// One word for how a credential is doing, for `wts_tokens{state}` and the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TokenState {
    /// Nothing to serve: the token expired (or was never fetched) and fetching it
    /// failed. Clients get 503.
    Expired,
    /// The last attempt failed; a token with life left is still served.
    Failing,
    /// A refresh is due or under way (or the first fetch, not failed yet).
    Refreshing,
    /// Served, not due, the last attempt succeeded.
    Ok,
}

impl TokenState {
    /// Every state, in the order of [`as_str`](Self::as_str)'s export.
    pub const ALL: [TokenState; 4] = [
        TokenState::Ok,
        TokenState::Refreshing,
        TokenState::Failing,
        TokenState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Ok => "ok",
            TokenState::Refreshing => "refreshing",
            TokenState::Failing => "failing",
            TokenState::Expired => "expired",
        }
    }
}

impl Credential {
    pub fn new(app: &str, source: SourceConfig) -> Self {
        Self::of_generation(app, source, None)
    }

    /// A credential of the app definition `generation` (see the field).
    pub fn of_generation(app: &str, source: SourceConfig, generation: Option<String>) -> Self {
        let endpoint = source.urls.first().map_or("", |url| url.path());
        Self {
            key: CredentialKey::new(app, &source.name),
            labels: CredentialLabels::new(app, &source.name, endpoint),
            source,
            generation,
            current: ArcSwapOption::empty(),
            previous: ArcSwapOption::empty(),
            issued: OnceLock::new(),
            mailbox: Mailbox::new(MAILBOX_CAPACITY),
            version_floor: AtomicU64::new(0),
            stored_version: AtomicU64::new(0),
            installed: Notify::new(),
            restored_pending: Mutex::new(None),
            unsaved: AtomicBool::new(false),
            unsaved_fetch: Mutex::new(None),
            status: Mutex::new(Status::default()),
            history: Mutex::new(History::default()),
        }
    }

    /// `token` as this credential stores it.
    pub fn record_of(&self, token: &Token) -> crate::store::StoredToken {
        let mut record = token.to_stored(&self.key);
        record.generation.clone_from(&self.generation);
        record
    }

    /// Is `stored` a record of this credential's definition? Others (of an earlier or
    /// later definition of its app) are never served by it.
    pub fn owns(&self, stored: &crate::store::StoredToken) -> bool {
        stored.generation == self.generation
    }

    /// The current token, live or not.
    pub fn current(&self) -> Option<Arc<Token>> {
        self.current.load_full()
    }

    /// The current token if it may be served at `now`.
    pub fn live_token(&self, now: SystemTime) -> Option<Arc<Token>> {
        self.current().filter(|t| t.is_live(now))
    }

    /// Runs `read` on the token if it may be served at `now`: the serving path, which
    /// borrows the token instead of taking a reference to it.
    pub fn with_live_token<R>(&self, now: SystemTime, read: impl FnOnce(&Token) -> R) -> Option<R> {
        let current = self.current.load();
        current.as_deref().filter(|t| t.is_live(now)).map(read)
    }

    /// Runs `read` on the current token, live or not, borrowed: the token route, which
    /// decides liveness with clocks it has read already.
    pub fn with_current<R>(&self, read: impl FnOnce(&Token) -> Option<R>) -> Option<R> {
        self.current.load().as_deref().and_then(read)
    }

    /// Makes `token` the one served, atomically for readers. A new value makes the
    /// one it replaces the previous token, and is added to the index of handed-out
    /// tokens.
    pub(crate) fn install(&self, token: Token) -> Arc<Token> {
        self.version_floor
            .fetch_max(token.version, Ordering::SeqCst);
        let token = Arc::new(token);
        let old = self.current.swap(Some(token.clone()));
        let changed = old.as_ref().is_none_or(|old| old.value != token.value);
        if changed {
            let dropped = old.and_then(|old| {
                self.previous.swap(Some(Arc::new(Replaced {
                    token: old,
                    at: tokio::time::Instant::now(),
                })))
            });
            if let Some((index, key)) = self.issued.get() {
                let dropped = dropped
                    .as_ref()
                    .map(|d| d.token.value.as_str())
                    .filter(|d| *d != token.value);
                index.installed(key, &token.value, dropped);
            }
        }
        self.installed.notify_waiters();
        token
    }

    /// Keeps `index` up to date with this credential's tokens from now on (access
    /// tokens only; others are never presented as `access_token=`).
    pub(super) fn attach_index(&self, index: &Arc<IssuedTokens>) {
        if self.key.name != INDEXED_NAME {
            return;
        }
        let key = Arc::new(self.key.clone());
        if self.issued.set((index.clone(), key.clone())).is_ok()
            && let Some(current) = self.current()
        {
            index.installed(&key, &current.value, None);
        }
    }

    /// Takes this credential's tokens out of the index (its app is gone).
    pub(super) fn detach_index(&self) {
        if let Some((index, key)) = self.issued.get() {
            let current = self.current();
            let previous = self.previous.load_full();
            let values = current
                .iter()
                .map(|t| t.value.as_str())
                .chain(previous.iter().map(|p| p.token.value.as_str()));
            index.forget(key, values);
        }
    }

    /// Was `value` handed out by this server as this credential's token, and may its
    /// holder still use it: the current token while it may be served, or the one it
    /// replaced within `grace` of the replacement.
    pub fn issued(&self, value: &str, now: SystemTime, grace: Duration) -> Option<Issued> {
        if self
            .current()
            .is_some_and(|t| t.value == value && t.is_live(now))
        {
            return Some(Issued::Current);
        }
        let previous = self.previous.load();
        previous
            .as_deref()
            .filter(|p| p.token.value == value && p.at.elapsed() < grace)
            .map(|_| Issued::Previous)
    }

    /// Replaces the served token by a copy of it with other bounds (same version).
    pub(super) fn rebound(&self, token: Token) {
        self.current.store(Some(Arc::new(token)));
    }

    /// Notified of each token installed (to waiters registered at the time).
    pub(super) fn installs(&self) -> &Notify {
        &self.installed
    }

    /// Version of the token being served (0 when none).
    pub fn current_version(&self) -> u64 {
        self.current().map_or(0, |t| t.version)
    }

    /// The version the next fetched token gets.
    pub(super) fn next_version(&self) -> u64 {
        self.version_floor.load(Ordering::SeqCst) + 1
    }

    pub(super) fn bump_version_floor(&self, version: u64) {
        self.version_floor.fetch_max(version, Ordering::SeqCst);
    }

    /// The version last seen in the store.
    pub(super) fn stored_version(&self) -> u64 {
        self.stored_version.load(Ordering::SeqCst)
    }

    /// The store was seen holding `version` (0: nothing): by a read or a save.
    pub(super) fn saw_stored(&self, version: u64) {
        self.stored_version.store(version, Ordering::SeqCst);
        self.bump_version_floor(version);
    }

    /// A snapshot of the status.
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Failed attempts since the last success, without copying the whole status.
    pub fn consecutive_failures(&self) -> u32 {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .consecutive_failures
    }

    /// Is the served token not durably stored?
    pub fn is_unsaved(&self) -> bool {
        self.unsaved.load(Ordering::Relaxed)
    }

    /// A refresh attempt succeeded at `now`. `pub(crate)` for tests that build a
    /// credential's past without a flight.
    pub(crate) fn record_success(&self, now: SystemTime) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.consecutive_failures = 0;
        status.last_attempt_at = Some(now);
        drop(status);
        self.record_event(now, false);
    }

    /// A refresh attempt failed at `now` with `error`.
    pub(crate) fn record_failure(&self, error: &RefreshError, now: SystemTime) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.consecutive_failures = status.consecutive_failures.saturating_add(1);
        status.last_error = Some((error.clone(), now));
        status.last_attempt_at = Some(now);
        drop(status);
        self.record_event(now, true);
    }

    fn record_event(&self, now: SystemTime, failed: bool) {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(now, failed);
    }

    /// The refreshes and failures of the last 24 hours before `now`, oldest first (at
    /// most [`history::CAPACITY`](super::history::CAPACITY)).
    pub fn history(&self, now: SystemTime) -> Vec<Event> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recent(now)
    }

    /// How this credential is doing at `now`; `failures` is
    /// [`Status::consecutive_failures`] (passed in, as callers usually hold a status
    /// snapshot already).
    pub fn state(&self, now: SystemTime, failures: u32) -> TokenState {
        let current = self.current.load();
        match current.as_deref() {
            Some(token) if token.is_live(now) => {
                if failures > 0 {
                    TokenState::Failing
                } else if token.remaining(now) <= refresh_lead(token.lifetime()) {
                    TokenState::Refreshing
                } else {
                    TokenState::Ok
                }
            }
            None if failures == 0 => TokenState::Refreshing,
            _ => TokenState::Expired,
        }
    }

    /// Notes (or clears) that a flight installed a token fetched when the store held
    /// `base`, and has not stored it yet.
    pub(super) fn note_unsaved_fetch(&self, base: Option<u64>) {
        *self.unsaved_fetch.lock().unwrap_or_else(|e| e.into_inner()) = base;
    }

    /// See [`note_unsaved_fetch`](Self::note_unsaved_fetch).
    pub(super) fn unsaved_fetch(&self) -> Option<u64> {
        *self.unsaved_fetch.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn record_unsaved(&self, why: Option<String>) {
        self.unsaved.store(why.is_some(), Ordering::Relaxed);
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unsaved = why;
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
}
