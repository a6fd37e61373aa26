//! The cluster lease: with a store shared by several instances, one instance at a time
//! may call WeChat for a given token. The others wait, and take the token the holder
//! stores, so a refresh storm spread over the whole cluster costs one upstream call.
//!
//! The lease lives only for the duration of one refresh, with a short TTL that the
//! holder renews while its call is under way: a holder that dies is replaced within
//! [`LEASE_TTL`]. Waiters wait as long as the holder keeps its lease. This module
//! knows only the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::Credential;
use crate::domain::CredentialKey;
use crate::store::{StoredToken, TokenStore};

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

/// What waiting for the lease gave. Made once per flight and matched at once, so
/// the size of `Held` does not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Acquired {
    /// We may call WeChat. `guard` holds the lease (`None`: a store of one instance
    /// needs none); `stored` is what the store holds now (the previous holder may
    /// have stored a token we have not heard of), `None` when it could not be read.
    Held {
        guard: Option<LeaseGuard>,
        stored: Option<Option<StoredToken>>,
    },
    /// Another instance's token arrived while we waited: decide again.
    Updated,
    /// The lease cannot be had: why.
    Unavailable(String),
}

/// Holds a lease, renewing it in the background; released when dropped.
pub(super) struct LeaseGuard {
    renewal: tokio::task::JoinHandle<()>,
    lost: Arc<AtomicBool>,
    store: Arc<dyn TokenStore>,
    key: CredentialKey,
    holder: String,
}

impl LeaseGuard {
    fn new(store: Arc<dyn TokenStore>, key: CredentialKey, holder: String) -> Self {
        let lost = Arc::new(AtomicBool::new(false));
        let renewal = tokio::spawn({
            let (store, key, holder, lost) =
                (store.clone(), key.clone(), holder.clone(), lost.clone());
            async move {
                let mut last_renewed = Instant::now();
                loop {
                    tokio::time::sleep(LEASE_RENEW_EVERY).await;
                    let renewal = store.renew_lease(&key, &holder, LEASE_TTL);
                    match tokio::time::timeout(LEASE_RENEW_TIMEOUT, renewal).await {
                        Ok(Ok(true)) => last_renewed = Instant::now(),
                        Ok(Ok(false)) => {
                            tracing::warn!(%key, "cluster lease lost during a refresh; the store's version check keeps newer tokens safe");
                            lost.store(true, Ordering::Relaxed);
                            return;
                        }
                        Ok(Err(error)) => {
                            tracing::warn!(%key, %error, "cannot renew the cluster lease")
                        }
                        Err(_) => tracing::warn!(%key, "renewing the cluster lease timed out"),
                    }
                    if last_renewed.elapsed() >= LEASE_TTL {
                        lost.store(true, Ordering::Relaxed);
                    }
                }
            }
        });
        Self {
            renewal,
            lost,
            store,
            key,
            holder,
        }
    }

    /// Might another instance have taken the lease meanwhile?
    pub(super) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
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
pub fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Waits until `holder` may refresh `cred`, or until another instance's refresh
/// arrived.
pub(super) async fn acquire(
    store: &Arc<dyn TokenStore>,
    cred: &Credential,
    holder: &str,
) -> Acquired {
    if !store.is_shared() {
        return Acquired::Held {
            guard: None,
            stored: None,
        };
    }
    let version_before = cred.current_version();
    let deadline = Instant::now() + LEASE_WAIT_LIMIT;
    // A holder name of its own for this attempt: a late release of an earlier one
    // cannot free this lease.
    let holder = format!("{holder}#{:08x}", rand::random::<u32>());
    let holder = holder.as_str();
    loop {
        // Registered before the version is checked below, so that an install in
        // between wakes the wait at once.
        let installed = cred.installs().notified();
        tokio::pin!(installed);
        installed.as_mut().enable();
        match store.try_lease(&cred.key, holder, LEASE_TTL).await {
            Ok(true) => {
                let guard = LeaseGuard::new(store.clone(), cred.key.clone(), holder.to_owned());
                let stored = match store.load(&cred.key).await {
                    Ok(stored) => Some(stored),
                    Err(error) => {
                        tracing::warn!(key = %cred.key, %error, "cannot read the shared store under the lease");
                        None
                    }
                };
                return Acquired::Held {
                    guard: Some(guard),
                    stored,
                };
            }
            Ok(false) => {}
            Err(error) => {
                // The request may have reached the store after all: give the lease
                // back, best effort (this instance takes it over anyway next time).
                let (store, key, holder) = (store.clone(), cred.key.clone(), holder.to_owned());
                tokio::spawn(async move {
                    let _ = store.release_lease(&key, &holder).await;
                });
                return Acquired::Unavailable(format!("shared store unreachable: {error}"));
            }
        }
        if cred.current_version() != version_before {
            return Acquired::Updated;
        }
        if Instant::now() >= deadline {
            return Acquired::Unavailable(
                "another instance has held the refresh lease for two minutes without storing a token".into(),
            );
        }
        tokio::select! {
            biased;
            () = installed => {}
            () = tokio::time::sleep(LEASE_POLL) => {}
        }
    }
}
