//! The cluster lease: with a store shared by several instances, one instance at a time
//! may call WeChat for a given token. The others wait, and adopt the token the holder
//! stores, so a refresh storm spread over the whole cluster costs one upstream call.
//!
//! The lease lives only for the duration of one refresh, with a short TTL that the
//! holder renews while its call is under way: a holder that dies is replaced within
//! [`LEASE_TTL`]. Waiters wait as long as the holder keeps its lease.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{Credential, Refresher, Trigger, refresh_lead};
use crate::domain::CredentialKey;
use crate::store::TokenStore;
use crate::upstream;

/// How long a lease lasts unless renewed. Short, so that a dead holder is replaced
/// within seconds; renewed every [`LEASE_RENEW_EVERY`] while the holder works, so that
/// three renewals in a row must fail before a working holder loses it.
pub const LEASE_TTL: Duration = Duration::from_secs(8);

/// How often a holder renews its lease.
const LEASE_RENEW_EVERY: Duration = Duration::from_secs(2);

/// A renewal slower than this counts as failed (the next one is due soon).
const LEASE_RENEW_TIMEOUT: Duration = Duration::from_millis(1500);

/// Longest wait for a lease another instance holds. A holder renews only while it
/// works, and a dead one's lease lapses within [`LEASE_TTL`], so this bound is only a
/// guard against a holder stuck for good.
const LEASE_WAIT_LIMIT: Duration = Duration::from_secs(120);

/// How often a waiting instance tries the lease again (it also wakes at once when the
/// holder's token arrives).
const LEASE_POLL: Duration = Duration::from_millis(100);

/// What waiting for the lease gave.
pub(super) enum Acquired {
    /// We may call WeChat; the guard holds the lease (`None`: no lease needed or, with
    /// the store down, going on without one).
    Lease(Option<LeaseGuard>),
    /// Another instance stored a newer token meanwhile; it is now served.
    Updated,
}

/// Holds a lease, renewing it in the background; released when dropped.
pub(super) struct LeaseGuard {
    renewal: tokio::task::JoinHandle<()>,
    store: Arc<dyn TokenStore>,
    key: CredentialKey,
    holder: String,
}

impl LeaseGuard {
    fn new(store: Arc<dyn TokenStore>, key: CredentialKey, holder: String) -> Self {
        let renewal = tokio::spawn({
            let (store, key, holder) = (store.clone(), key.clone(), holder.clone());
            async move {
                loop {
                    tokio::time::sleep(LEASE_RENEW_EVERY).await;
                    let renewal = store.renew_lease(&key, &holder, LEASE_TTL);
                    match tokio::time::timeout(LEASE_RENEW_TIMEOUT, renewal).await {
                        Ok(Ok(true)) => {}
                        Ok(Ok(false)) => {
                            tracing::warn!(%key, "cluster lease lost during a refresh; the store's version check keeps newer tokens safe");
                            return;
                        }
                        Ok(Err(error)) => {
                            tracing::warn!(%key, %error, "cannot renew the cluster lease")
                        }
                        Err(_) => tracing::warn!(%key, "renewing the cluster lease timed out"),
                    }
                }
            }
        });
        Self {
            renewal,
            store,
            key,
            holder,
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renewal.abort();
        let (store, key, holder) = (
            self.store.clone(),
            self.key.clone(),
            std::mem::take(&mut self.holder),
        );
        // Releasing early lets a waiting instance go on at once; if this fails, the
        // lease simply expires.
        tokio::spawn(async move {
            if let Err(error) = store.release_lease(&key, &holder).await {
                tracing::debug!(%key, %error, "cannot release the cluster lease");
            }
        });
    }
}

/// A name for this process in leases: host, pid and a random part.
pub(super) fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

impl Refresher {
    /// Waits until this instance may refresh `cred`, or until another instance's
    /// refresh made it unnecessary.
    pub(super) async fn acquire_lease(
        &self,
        cred: &Arc<Credential>,
        trigger: Trigger,
        stale: Option<&str>,
    ) -> Result<Acquired, upstream::Error> {
        if !self.store.is_shared() {
            return Ok(Acquired::Lease(None));
        }
        let mut installs = cred.watch_installs();
        let version_before = cred.current_version();
        let deadline = Instant::now() + LEASE_WAIT_LIMIT;
        loop {
            match self
                .store
                .try_lease(&cred.key, &self.instance_id, LEASE_TTL)
                .await
            {
                Ok(true) => {
                    let guard = LeaseGuard::new(
                        self.store.clone(),
                        cred.key.clone(),
                        self.instance_id.clone(),
                    );
                    // The previous holder may have stored a token we have not heard of.
                    match self.store.load(&cred.key).await {
                        Ok(Some(stored)) => {
                            cred.adopt(&stored, SystemTime::now());
                        }
                        Ok(None) => {}
                        Err(error) => {
                            tracing::warn!(key = %cred.key, %error, "cannot read the shared store under the lease")
                        }
                    }
                    // Whether we just read it or heard of it while waiting, a token newer
                    // than the one we decided on means the decision must be made again.
                    if cred.current_version() != version_before {
                        return Ok(Acquired::Updated);
                    }
                    return Ok(Acquired::Lease(Some(guard)));
                }
                Ok(false) => {}
                Err(error) => return self.without_lease(cred, trigger, stale, &error),
            }
            if cred.current_version() != version_before {
                return Ok(Acquired::Updated);
            }
            if Instant::now() >= deadline {
                return Err(upstream::Error::Deferred(
                    "another instance has held the refresh lease for two minutes without storing a token"
                        .into(),
                ));
            }
            tokio::select! {
                _ = installs.changed() => {}
                () = tokio::time::sleep(LEASE_POLL) => {}
            }
        }
    }

    /// The shared store cannot be reached: refresh without the lease only when the
    /// token would otherwise be unusable, accepting that another instance may do the
    /// same (WeChat then keeps the older token valid for its 5-minute grace).
    fn without_lease(
        &self,
        cred: &Credential,
        trigger: Trigger,
        stale: Option<&str>,
        error: &crate::store::Error,
    ) -> Result<Acquired, upstream::Error> {
        let now = SystemTime::now();
        let unusable = match cred.live_token(now) {
            None => true,
            Some(token) => {
                stale.is_some_and(|s| s == token.value)
                    || token.remaining(now) <= refresh_lead(token.lifetime()) / 2
            }
        };
        if unusable {
            tracing::warn!(key = %cred.key, trigger = trigger.as_str(), %error, "shared store unreachable: refreshing without the cluster lease so the token does not lapse");
            Ok(Acquired::Lease(None))
        } else {
            Err(upstream::Error::Deferred(format!(
                "shared store unreachable ({error}); the current token is still served"
            )))
        }
    }
}
