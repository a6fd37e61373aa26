//! With a store shared by several instances: hand each credential's flight task the
//! records other instances store (pushed through the store's change feed, with a
//! periodic read of what changed since as the safety net, and a full read when the
//! feed was lost). What to do with a record is decided by
//! `decide::on_stored`, in the flight task; this knows only the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Refresher;
use super::flight::Msg;
use crate::domain::CredentialKey;
use crate::store::{StoreEvent, StoredToken};

/// How often the store's change log is read, in case a pushed update was missed.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(5);

impl Refresher {
    /// Starts the task that follows the shared store, if the store is shared.
    pub(super) fn spawn_sync(self: &Arc<Self>, tracker: &TaskTracker, cancel: &CancellationToken) {
        let Some(mut events) = self.store.watch() else {
            return;
        };
        let refresher = self.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            // No read at once: the subscription's first event is a full read.
            let mut reconcile = tokio::time::interval_at(
                tokio::time::Instant::now() + RECONCILE_INTERVAL,
                RECONCILE_INTERVAL,
            );
            reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The store's revision last caught up with (None: read everything).
            let mut seen: Option<u64> = None;
            loop {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return,
                    event = events.recv() => match event {
                        Some(StoreEvent::Changed(key)) => refresher.pull(&key).await,
                        Some(StoreEvent::Resynchronise) => seen = refresher.reconcile().await,
                        None => return,
                    },
                    _ = reconcile.tick() => seen = refresher.catch_up(seen).await,
                }
            }
        });
    }

    /// Reads what changed since revision `seen` (everything when the store keeps no
    /// change log, or lost it); returns the revision caught up with.
    async fn catch_up(&self, seen: Option<u64>) -> Option<u64> {
        let Some(since) = seen else {
            return self.reconcile().await;
        };
        match self.store.changes_since(since).await {
            Ok(Some((now, changed))) if now >= since => {
                for key in changed {
                    self.pull(&key).await;
                }
                Some(now)
            }
            // No log, or a log that went back (a store restarted empty).
            Ok(_) => self.reconcile().await,
            Err(error) => {
                tracing::warn!(backend = self.store.backend(), %error, "cannot read the shared store's changes; serving the tokens held in memory");
                seen
            }
        }
    }

    /// Reads one credential that another instance just stored.
    async fn pull(&self, key: &CredentialKey) {
        let Some(cred) = self.credential(&key.app, &key.name) else {
            return;
        };
        match self.store.load(key).await {
            Ok(stored) if cred.source.pushed => {
                self.adopt_pushed(&cred, stored.as_ref());
            }
            Ok(stored) => {
                let _ = cred.mailbox.try_send(Msg::Stored(stored.map(Box::new)));
            }
            Err(error) => {
                tracing::warn!(%key, %error, "cannot read an updated token from the shared store")
            }
        }
    }

    /// Reads everything and hands each credential its record (or none); returns the
    /// store's revision read before, from which later changes are caught up (`None`
    /// when the store could not be read, or keeps no change log).
    pub async fn reconcile(&self) -> Option<u64> {
        let revision = match self.store.changes_since(u64::MAX).await {
            Ok(Some((now, _))) => Some(now),
            _ => None,
        };
        let stored = match self.store.load_all().await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(backend = self.store.backend(), %error, "cannot read the shared store; serving the tokens held in memory");
                return None;
            }
        };
        let mut records: HashMap<CredentialKey, StoredToken> =
            stored.into_iter().map(|s| (s.key(), s)).collect();
        for cred in self.snapshot().credentials() {
            let record = records.remove(&cred.key);
            if cred.source.pushed {
                self.adopt_pushed(cred, record.as_ref());
                continue;
            }
            // A full mailbox means its task is busy; the next full read catches up.
            let _ = cred.mailbox.try_send(Msg::Stored(record.map(Box::new)));
        }
        revision
    }
}
