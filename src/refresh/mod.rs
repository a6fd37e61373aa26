//! The refresher: holds every credential's current token in memory, renews it ahead of
//! expiry, and turns any number of concurrent force-refresh requests into at most one
//! upstream call.
//!
//! - [`credential`]: one token's state (current value, single-flight lock, status).
//! - [`flight`]: the single-flight refresh path shared by every trigger.
//! - [`call`]: one upstream call with its quota check, metrics and failure log.
//! - [`quota`]: the quota guard (daily counts, reserve, 45009).
//! - [`schedule`]: when to refresh next (lead time, backoff) and the per-token task.
//! - [`lease`]: with a shared store, the cluster-wide lease that lets one instance
//!   refresh a token at a time.
//! - [`sync`]: with a shared store, adopting tokens other instances stored, and
//!   writing ours back when the store lost them.
//! - [`stable`]: when a force refresh may use stable_token's forced mode.
//! - [`readiness`]: what keeps this instance from being ready.
//! - [`error`]: why a refresh gave no token.

mod call;
mod credential;
mod error;
mod flight;
mod lease;
pub mod quota;
mod readiness;
mod schedule;
mod stable;
mod sync;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

pub use credential::{Credential, Status, Token};
pub use error::RefreshError;
pub use flight::Decision;
pub use quota::QuotaGuard;
pub use schedule::{backoff, refresh_lead};
pub use stable::{FORCED_PER_DAY, FORCED_SPACING};

use crate::config::{Config, RefreshConfig};
use crate::domain::from_unix_millis;
use crate::metrics::Metrics;
use crate::store::TokenStore;
use crate::upstream::Upstream;

/// What caused a refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The token was due (or missing).
    Scheduled,
    /// A client asked for a new token.
    Forced,
    /// A dependent token's call was refused because this token was rejected, or a
    /// dependent token needed this one and it had no life left.
    Dependency,
    /// Loaded from the store at start-up.
    Restored,
    /// Refreshed by another instance of the cluster and read from the shared store.
    Peer,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Scheduled => "scheduled",
            Trigger::Forced => "forced",
            Trigger::Dependency => "dependency",
            Trigger::Restored => "restored",
            Trigger::Peer => "peer",
        }
    }
}

/// Why a token cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupError {
    /// No such app or token is configured.
    Unknown,
    /// Configured, but no token with life left is held (not fetched yet, or WeChat has
    /// been failing for longer than the token lived).
    NotReady,
}

/// Every credential of every app, with what it needs to refresh them.
pub struct Refresher {
    /// app name -> token name -> credential. Two levels so that lookups by `&str` need
    /// no allocation on the serving path.
    apps: HashMap<String, HashMap<String, Arc<Credential>>>,
    /// Credentials in config order (apps in order, each app's sources in dependency
    /// order), for status listings and start-up.
    ordered: Vec<Arc<Credential>>,
    store: Arc<dyn TokenStore>,
    upstream: Upstream,
    settings: RefreshConfig,
    /// Names this instance in cluster leases.
    instance_id: String,
    quota: QuotaGuard,
    metrics: Arc<Metrics>,
    /// Force refreshes under way, each on a task of its own so that a client hanging up
    /// cannot cancel it; a graceful shutdown waits for them (see [`Refresher::drain`]).
    forced: tokio_util::task::TaskTracker,
}

impl Refresher {
    pub fn new(
        config: &Config,
        store: Arc<dyn TokenStore>,
        upstream: Upstream,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut apps: HashMap<String, HashMap<String, Arc<Credential>>> = HashMap::new();
        let mut ordered = Vec::new();
        for app in &config.apps {
            for source in &app.sources {
                let cred = Arc::new(Credential::new(&app.name, source.clone()));
                apps.entry(app.name.clone())
                    .or_default()
                    .insert(source.name.clone(), cred.clone());
                ordered.push(cred);
            }
        }
        Self {
            apps,
            ordered,
            quota: QuotaGuard::new(config.quota, store.clone()),
            store,
            upstream,
            settings: config.refresh.clone(),
            instance_id: lease::instance_id(),
            forced: tokio_util::task::TaskTracker::new(),
            metrics,
        }
    }

    /// Waits for the force refreshes under way (on shutdown: the tokens they fetch are
    /// stored before the process exits).
    pub async fn drain(&self) {
        self.forced.close();
        self.forced.wait().await;
    }

    /// The store tokens are kept in.
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }

    /// Loads stored tokens that still have life left, so that a restart serves them at
    /// once without calling WeChat, and today's quota counts. Returns how many tokens
    /// were restored.
    ///
    /// # Errors
    /// When the store cannot be read at all.
    pub async fn restore(&self) -> Result<usize, crate::store::Error> {
        let now = SystemTime::now();
        let mut restored = 0;
        for stored in self.store.load_all().await? {
            let Some(cred) = self.credential(&stored.app, &stored.name) else {
                continue; // a token of an app no longer configured
            };
            if !stored.is_sane() {
                tracing::warn!(key = %cred.key, "ignoring a stored token with impossible times");
                continue;
            }
            if from_unix_millis(stored.expires_at_ms) <= now {
                // Dead tokens are not served, but their version carries on.
                cred.bump_version_floor(stored.version);
                continue;
            }
            cred.install(Token::from_stored(&stored, Trigger::Restored));
            restored += 1;
        }
        let mut apps: Vec<&Arc<str>> = self.ordered.iter().map(|c| &c.labels.app).collect();
        apps.dedup();
        self.quota.restore(apps, now).await?;
        Ok(restored)
    }

    /// The credential `app`/`name`, if configured.
    pub fn credential(&self, app: &str, name: &str) -> Option<&Arc<Credential>> {
        self.apps.get(app)?.get(name)
    }

    /// Names of the configured apps.
    pub fn app_names(&self) -> impl Iterator<Item = &str> {
        let mut seen = Vec::new();
        self.ordered.iter().filter_map(move |c| {
            if seen.contains(&c.key.app.as_str()) {
                None
            } else {
                seen.push(c.key.app.as_str());
                Some(c.key.app.as_str())
            }
        })
    }

    /// Every credential, apps in config order and tokens in dependency order.
    pub fn credentials(&self) -> &[Arc<Credential>] {
        &self.ordered
    }

    /// The token to serve for `app`/`name`: the hot path, a map lookup and a read lock.
    ///
    /// # Errors
    /// See [`LookupError`].
    pub fn serve(&self, app: &str, name: &str) -> Result<Arc<Token>, LookupError> {
        let cred = self.credential(app, name).ok_or(LookupError::Unknown)?;
        cred.live_token(SystemTime::now())
            .ok_or(LookupError::NotReady)
    }

    /// The refresh settings in force.
    pub fn settings(&self) -> &RefreshConfig {
        &self.settings
    }

    /// The quota guard, for the status page and metrics.
    pub fn quota(&self) -> &QuotaGuard {
        &self.quota
    }

    /// The metrics this refresher records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}
