//! With a store shared by several instances: hand each credential's flight task the
//! records other instances store (pushed through the store's change feed, with a
//! periodic full read as the safety net). What to do with a record is decided by
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

/// How often the whole store is read again, in case a pushed update was missed.
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
            let mut reconcile = tokio::time::interval(RECONCILE_INTERVAL);
            reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return,
                    event = events.recv() => match event {
                        Some(StoreEvent::Changed(key)) => refresher.pull(&key).await,
                        Some(StoreEvent::Resynchronise) => refresher.reconcile().await,
                        None => return,
                    },
                    _ = reconcile.tick() => refresher.reconcile().await,
                }
            }
        });
    }

    /// Reads one credential that another instance just stored.
    async fn pull(&self, key: &CredentialKey) {
        let Some(cred) = self.credential(&key.app, &key.name) else {
            return;
        };
        match self.store.load(key).await {
            Ok(stored) => {
                let _ = cred.mailbox.try_send(Msg::Stored(stored.map(Box::new)));
            }
            Err(error) => {
                tracing::warn!(%key, %error, "cannot read an updated token from the shared store")
            }
        }
    }

    /// Reads everything and hands each credential its record (or none). The records are
    /// taken by key from a map: with 20,000 tokens, a scan of the list per credential
    /// would be 400 million comparisons every `RECONCILE_INTERVAL`.
    pub async fn reconcile(&self) {
        let stored = match self.store.load_all().await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(backend = self.store.backend(), %error, "cannot read the shared store; serving the tokens held in memory");
                return;
            }
        };
        let mut stored: HashMap<(String, String), StoredToken> = stored
            .into_iter()
            .map(|s| ((s.app.clone(), s.name.clone()), s))
            .collect();
        for cred in self.credentials() {
            let record = stored.remove(&(cred.key.app.clone(), cred.key.name.clone()));
            // A full mailbox means its task is busy; the next full read catches up.
            let _ = cred.mailbox.try_send(Msg::Stored(record.map(Box::new)));
        }
    }
}
