//! With a store shared by several instances: serve the tokens other instances store
//! (pushed through the store's change feed, with a periodic full read as the safety
//! net), and write our tokens back when the store has lost them (a Redis restarted
//! without persistence), without calling WeChat.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Refresher;
use crate::domain::CredentialKey;
use crate::store::{SaveOutcome, StoreEvent, StoredToken};

/// How often the whole store is read again, in case a pushed update was missed.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(5);

impl Refresher {
    /// Starts the task that follows the shared store, if the store is shared.
    pub fn spawn_sync(self: &Arc<Self>, tracker: &TaskTracker, cancel: &CancellationToken) {
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
                    () = cancel.cancelled() => return,
                    event = events.recv() => match event {
                        Some(StoreEvent::Changed(key)) => refresher.pull(&key).await,
                        Some(StoreEvent::Resynchronise) => { refresher.reconcile().await; }
                        None => return,
                    },
                    _ = reconcile.tick() => { refresher.reconcile().await; }
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
            Ok(Some(stored)) => {
                if cred.adopt(&stored, SystemTime::now()) {
                    tracing::debug!(%key, version = stored.version, "adopted a token refreshed by another instance");
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%key, %error, "cannot read an updated token from the shared store")
            }
        }
    }

    /// Reads everything: adopts newer tokens, writes back ours where the store has
    /// none or an older one. Returns how many were written back.
    pub async fn reconcile(&self) -> usize {
        let stored = match self.store.load_all().await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(backend = self.store.backend(), %error, "cannot read the shared store; serving the tokens held in memory");
                return 0;
            }
        };
        let now = SystemTime::now();
        for token in &stored {
            if let Some(cred) = self.credential(&token.app, &token.name) {
                cred.adopt(token, now);
            }
        }
        let mut written_back = 0;
        for cred in &self.ordered {
            let Some(token) = cred.live_token(now) else {
                continue;
            };
            let in_store = stored
                .iter()
                .find(|s: &&StoredToken| s.app == cred.key.app && s.name == cred.key.name);
            if in_store.is_some_and(|s| s.version >= token.version) {
                continue;
            }
            match self.store.save(&token.to_stored(&cred.key)).await {
                Ok(SaveOutcome::Saved) => {
                    written_back += 1;
                    tracing::info!(key = %cred.key, version = token.version, "token written back to the shared store");
                }
                Ok(SaveOutcome::Outdated) => {}
                Err(error) => {
                    tracing::warn!(key = %cred.key, %error, "cannot write a token back to the shared store")
                }
            }
        }
        written_back
    }
}
