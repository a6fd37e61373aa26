//! Held values (see [`crate::held`]) as the refresher uses them: resolved in
//! templates, rotated when a reply carries a new one, and stored durably through a
//! [`HeldStore`] (the registry) before the old one is let go.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;

use super::{Credential, Refresher};
use crate::held::HeldValue;

/// WeChat's errcode for an authorizer_refresh_token it does not (or no longer) accept.
pub const REFRESH_TOKEN_INVALID: i64 = 61023;

/// WeChat's errcodes for a component_verify_ticket it does not accept (invalid,
/// expired): a newer one is needed.
pub const TICKET_REJECTED: [i64; 2] = [61006, 61005];

/// How often a rotated value that could not be stored is tried again.
const STORE_RETRY: Duration = Duration::from_secs(2);

/// Where held values are kept durably: the registry record of their app.
#[async_trait]
pub trait HeldStore: Send + Sync + 'static {
    /// Stores `held`'s current and previous values in `app`'s durable record.
    ///
    /// # Errors
    /// Why it could not be stored; the caller tries again.
    async fn store_held(&self, app: &str, held: &HeldValue) -> Result<(), String>;

    /// Reads `app`'s durable record again and sets `held` from it (another instance
    /// may have rotated it); true if that changed the value.
    async fn reload_held(&self, app: &str, held: &HeldValue) -> bool;
}

impl Refresher {
    /// Sets where rotated held values are stored (the registry; kept weakly, since
    /// the registry holds the refresher).
    pub fn set_held_store(&self, store: Weak<dyn HeldStore>) {
        let _ = self.held_store.set(store);
    }

    fn held_store(&self) -> Option<Arc<dyn HeldStore>> {
        self.held_store.get().and_then(Weak::upgrade)
    }

    /// The held value `name` of `cred`'s app.
    pub(super) fn held(&self, cred: &Credential, name: &str) -> Option<Arc<HeldValue>> {
        self.app(&cred.key.app)?.config.held(name).cloned()
    }

    /// A reply carried `new` for the held value `cred`'s source rotates: it is used
    /// from now on and stored durably with the old one kept as the previous, so that
    /// neither is lost if the store write fails (it is retried until it succeeds, the
    /// value changes again, or the app goes).
    pub(super) async fn rotate_held(self: &Arc<Self>, cred: &Credential, new: &str) {
        let Some(name) = &cred.source.rotates else {
            return;
        };
        let Some(held) = self.held(cred, name) else {
            return;
        };
        if held.rotate(new).is_none() {
            return; // WeChat sent the value held
        }
        tracing::info!(key = %cred.key, held = %name, "WeChat rotated a held value; storing the new one");
        let app = cred.key.app.clone();
        let Some(store) = self.held_store() else {
            tracing::error!(key = %cred.key, held = %name, "no durable store for held values: the rotated value is kept in memory only");
            return;
        };
        if let Err(error) = store.store_held(&app, &held).await {
            tracing::error!(%app, held = %name, %error, "cannot store a rotated value; it is used from memory and stored again every 2 s");
            let refresher = self.clone();
            tokio::spawn(async move { refresher.store_held_until_done(app, held).await });
        }
    }

    async fn store_held_until_done(self: Arc<Self>, app: String, held: Arc<HeldValue>) {
        let value = held.current();
        loop {
            tokio::time::sleep(STORE_RETRY).await;
            let still_ours = self
                .app(&app)
                .and_then(|e| e.config.held(held.name()).cloned())
                .is_some_and(|h| Arc::ptr_eq(&h, &held));
            if !still_ours || held.current() != value {
                return; // the app went, or a later rotation stores its own
            }
            let Some(store) = self.held_store() else {
                return;
            };
            match store.store_held(&app, &held).await {
                Ok(()) => {
                    tracing::info!(%app, held = %held.name(), "the rotated value is stored");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%app, held = %held.name(), %error, "still cannot store a rotated value")
                }
            }
        }
    }

    /// WeChat refused the held value `cred` sent (61023): the value to try instead, if
    /// any — the durable copy when another instance rotated it, else the previous one.
    /// The value returned is made current.
    pub(super) async fn recover_held(&self, cred: &Credential) -> Option<Arc<String>> {
        let name = cred.source.rotates.as_ref()?;
        let held = self.held(cred, name)?;
        let refused = held.current();
        if let Some(store) = self.held_store()
            && store.reload_held(&cred.key.app, &held).await
        {
            tracing::info!(key = %cred.key, held = %name, "WeChat refused the held value; the stored record (another instance rotated it) or WeChat's list had a newer one");
            return Some(held.current());
        }
        let previous = held.previous().filter(|p| *p != refused)?;
        tracing::warn!(key = %cred.key, held = %name, "WeChat refused the held value; trying the previous one");
        held.rotate(&previous);
        if let Some(store) = self.held_store()
            && let Err(error) = store.store_held(&cred.key.app, &held).await
        {
            tracing::warn!(key = %cred.key, held = %name, %error, "cannot store the held value's change");
        }
        Some(previous)
    }
}
