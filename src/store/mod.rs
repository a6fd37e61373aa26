//! Token stores: where refreshed tokens are kept so that a restart serves them at once.
//!
//! The serving path never reads a store: tokens are served from memory, and a store is
//! written after each refresh and read once at start-up.

mod embedded;
mod instrumented;
mod memory;
pub mod redis;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use embedded::EmbeddedStore;
pub use instrumented::Instrumented;
pub use memory::MemoryStore;
pub use redis::RedisStore;

use crate::domain::CredentialKey;

/// A token as stored: its value with the times that the refresher needs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    pub app: String,
    pub name: String,
    pub value: String,
    /// When the token stops being served (Unix milliseconds).
    pub expires_at_ms: u64,
    /// When it was fetched from WeChat (Unix milliseconds).
    pub refreshed_at_ms: u64,
    /// Increases by one with each refresh of this credential.
    pub version: u64,
    /// Set while a call that may have replaced this token at WeChat is out, or ended
    /// without telling (Unix milliseconds of the earliest such call's start): the token
    /// is then trusted only until this time plus `refresh.upstream_grace`. Cleared by
    /// the save of a newer token. This is how a crash mid-call is survived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_since_ms: Option<u64>,
    /// Was it fetched by a call announced to the cluster (under the lease, with its
    /// pending mark written)? A token fetched without (the store was unreachable) may
    /// conflict with another instance's; see `refresh::decide::on_stored`.
    #[serde(default = "announced_by_default")]
    pub announced: bool,
    /// The definition of the app it was fetched for (registry apps; `None` for apps
    /// of the config file). A record of another definition (the app was replaced, say
    /// by another account under the same name) is never served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
}

fn announced_by_default() -> bool {
    true
}

/// Latest time a stored token may carry (the end of year 9999, in Unix milliseconds):
/// a store edited by hand or corrupted must not feed absurd times to the server.
pub const MAX_STORED_MILLIS: u64 = 253_402_300_799_000;

/// Longest lifetime a stored or peer record may claim (7 days): WeChat's tokens live
/// two hours; anything longer is a corrupted or forged record.
pub const MAX_STORED_LIFETIME_MS: u64 = 7 * 24 * 3600 * 1000;

/// How far in the future a record's refresh time may lie: the clocks of a cluster's
/// hosts differ by a little. Beyond it the record is forged or from a broken clock.
pub const MAX_CLOCK_SKEW_MS: u64 = 5_000;

impl StoredToken {
    /// May this record be served at `now_ms` (Unix milliseconds)? Its value must be a
    /// usable token ([`crate::domain::is_usable_token`]), its times plausible: a
    /// lifetime of at most 7 days, a refresh time not in the future. Records that are
    /// not are skipped with a warning.
    pub fn is_sane(&self, now_ms: u64) -> bool {
        self.expires_at_ms <= MAX_STORED_MILLIS
            && self.refreshed_at_ms <= self.expires_at_ms
            && self.expires_at_ms - self.refreshed_at_ms <= MAX_STORED_LIFETIME_MS
            && self.refreshed_at_ms <= now_ms.saturating_add(MAX_CLOCK_SKEW_MS)
            && crate::domain::is_usable_token(&self.value)
    }

    pub fn key(&self) -> CredentialKey {
        CredentialKey::new(&self.app, &self.name)
    }
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredToken")
            .field("app", &self.app)
            .field("name", &self.name)
            .field("value", &crate::domain::token_prefix(&self.value))
            .field("expires_at_ms", &self.expires_at_ms)
            .field("version", &self.version)
            .field("pending_since_ms", &self.pending_since_ms)
            .field("announced", &self.announced)
            .field("generation", &self.generation)
            .finish()
    }
}

/// What a conditional save did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveOutcome {
    /// The token is stored.
    Saved,
    /// The store already holds this version or a newer one (written by another
    /// instance); nothing was written.
    Outdated,
}

/// A change made by another instance sharing the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// This credential was just stored.
    Changed(CredentialKey),
    /// Updates may have been missed (the subscription was just made or remade):
    /// everything should be read again.
    Resynchronise,
}

/// An app of the runtime registry as stored: its name and its record (JSON text of
/// the registry's making, sealed when `store.encryption_key` is set). Stores keep it
/// as it is; see `crate::registry`.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredApp {
    pub name: String,
    pub record: String,
}

impl std::fmt::Debug for StoredApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The record may hold secrets in the clear (the embedded store without a key).
        f.debug_struct("StoredApp")
            .field("name", &self.name)
            .field("record_len", &self.record.len())
            .finish()
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The embedded store's folder is in use by another process (or another store of
    /// this one): two servers on one folder would undo each other's saves.
    #[error(
        "store folder {path} is used by another process (it holds the lock on {path}/.lock); stop that process or give this one another store.path"
    )]
    Locked { path: String },
    #[error("store background task failed: {0}")]
    Task(String),
    #[error("Redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("Redis holds a malformed record at {key}: {message}")]
    Malformed { key: String, message: String },
}

/// The instance part of a lease holder `INSTANCE#NONCE`.
pub fn lease_owner(holder: &str) -> &str {
    holder.split_once('#').map_or(holder, |(owner, _)| owner)
}

/// Calls counted per endpoint path (e.g. `/cgi-bin/token`) for one app and one day.
pub type QuotaCounts = BTreeMap<String, u64>;

/// A place to keep tokens across restarts, and the day's quota counts that instances
/// sharing the store must agree on.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Backend name for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Every stored token. Unreadable entries are skipped with a warning, so one bad
    /// file cannot stop the server from starting.
    async fn load_all(&self) -> Result<Vec<StoredToken>, Error>;

    /// The stored token of one credential.
    async fn load(&self, key: &CredentialKey) -> Result<Option<StoredToken>, Error>;

    /// Stores `token` atomically, unless the store already holds the same or a newer
    /// version of that credential: a writer that lost a race (or its lease) can never
    /// replace a newer token. A save clears the credential's pending mark (its
    /// `pending_since_ms` is ignored): the new token is the confirmed outcome.
    async fn save(&self, token: &StoredToken) -> Result<SaveOutcome, Error>;

    /// Stores `token` only if the store holds exactly version `expected` of that
    /// credential (0: none) and `token` is newer: a compare-and-set on what the writer
    /// last saw. The refresher saves this way, so that a token fetched while the store
    /// was unreachable (whose version may have run ahead of the store's) can never
    /// replace one another instance stored meanwhile, whatever their versions. Clears
    /// the pending mark like [`save`](Self::save).
    async fn save_over(&self, token: &StoredToken, expected: u64) -> Result<SaveOutcome, Error>;

    /// Records, durably, that a call which may replace `key`'s stored token is out
    /// since `since_ms`, unless an earlier mark is already set (the earliest counts).
    /// Written before the call, so that a crash while it is out leaves the mark:
    /// after a restart the stored token is trusted only for WeChat's grace from then.
    /// Without a stored token there is nothing to protect, and nothing need be written.
    async fn mark_pending(&self, key: &CredentialKey, since_ms: u64) -> Result<(), Error>;

    /// Clears `key`'s pending mark if it still says `since_ms`: that call ended and
    /// WeChat issued nothing (it answered with an error code).
    async fn clear_pending(&self, key: &CredentialKey, since_ms: u64) -> Result<(), Error>;

    /// The credentials whose records changed (by any instance) after revision
    /// `since`, and the store's revision now: how instances sharing a store catch up on
    /// updates they missed, at a cost that does not grow with the number of tokens.
    /// `None`: the store keeps no change log, read everything instead. A revision
    /// lower than `since` means the store lost its log (Redis restarted empty): read
    /// everything then too.
    async fn changes_since(&self, _since: u64) -> Result<Option<(u64, Vec<CredentialKey>)>, Error> {
        Ok(None)
    }

    /// Deletes `key`'s stored token and pending mark (its app was removed). Deleting
    /// what is not there is no error.
    async fn delete(&self, key: &CredentialKey) -> Result<(), Error>;

    /// Every app of the runtime registry.
    async fn load_apps(&self) -> Result<Vec<StoredApp>, Error>;

    /// Stores `app` durably, in place of the record of that name.
    async fn save_app(&self, app: &StoredApp) -> Result<(), Error>;

    /// Deletes the registry app `name`; false if there was none.
    async fn delete_app(&self, name: &str) -> Result<bool, Error>;

    /// A number that changes whenever any instance changes the registry, so that
    /// instances sharing the store can tell cheaply that they must read it again.
    /// Stores used by one instance return 0.
    async fn apps_revision(&self) -> Result<u64, Error> {
        Ok(0)
    }

    /// Adds one call to `app`'s count of calls to `endpoint` (a URL path such as
    /// `/cgi-bin/token`) on WeChat's day number `day` (see [`crate::domain::wechat_day`]),
    /// and returns the new count, which includes the calls of every instance sharing
    /// the store. Counts of earlier days may be dropped: only today's matter, since
    /// WeChat resets its quota at midnight China time. (Redis: `INCR` on a key per app,
    /// endpoint and day, with a TTL of a day or two.)
    async fn add_quota_use(&self, app: &str, endpoint: &str, day: u64) -> Result<u64, Error>;

    /// `app`'s counts on `day`, per endpoint; empty when nothing was counted that day.
    async fn load_quota(&self, app: &str, day: u64) -> Result<QuotaCounts, Error>;

    /// The counts of each of `apps` on `day`, in the same order: what a start-up
    /// restores. One call for all so that a store can read them in bulk (Redis in a
    /// pipeline, the embedded store in one pass) rather than one round trip per app:
    /// 10,000 apps one at a time would hold a restart back by seconds.
    async fn load_quotas(&self, apps: &[&str], day: u64) -> Result<Vec<QuotaCounts>, Error> {
        let mut all = Vec::with_capacity(apps.len());
        for app in apps {
            all.push(self.load_quota(app, day).await?);
        }
        Ok(all)
    }

    /// Checks that the store can be written now, for `/readyz`. Cheap enough to run on
    /// every readiness probe.
    async fn ping(&self) -> Result<(), Error>;

    /// Is the store shared by several instances? Only then are leases and change
    /// notifications needed.
    fn is_shared(&self) -> bool {
        false
    }

    /// Tries to become the one instance allowed to refresh `key` for `ttl`. A store
    /// used by one instance always grants it. `holder` is `INSTANCE#NONCE` (see
    /// [`lease_owner`]): a lease that the same instance still holds from an earlier
    /// attempt (a request that timed out on our side but reached the store) is taken
    /// over, so that a store that answered late does not lock its own instance out.
    async fn try_lease(
        &self,
        _key: &CredentialKey,
        _holder: &str,
        _ttl: Duration,
    ) -> Result<bool, Error> {
        Ok(true)
    }

    /// Extends a lease still held by `holder`; false if it was lost.
    async fn renew_lease(
        &self,
        _key: &CredentialKey,
        _holder: &str,
        _ttl: Duration,
    ) -> Result<bool, Error> {
        Ok(true)
    }

    /// Gives a lease back early, if `holder` still has it.
    async fn release_lease(&self, _key: &CredentialKey, _holder: &str) -> Result<(), Error> {
        Ok(())
    }

    /// A stream of credentials that another instance has just stored, for stores
    /// shared by several instances; `None` for the others. Called once.
    fn watch(&self) -> Option<tokio::sync::mpsc::Receiver<StoreEvent>> {
        None
    }
}
