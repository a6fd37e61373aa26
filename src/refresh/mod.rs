//! The refresher: holds every credential's current token in memory, renews it ahead of
//! expiry, and turns any number of concurrent force-refresh requests into at most one
//! upstream call, without ever serving a token WeChat may have replaced.
//!
//! - [`decide`]: the rules, as pure functions (what to do, when to look again, what to
//!   do with another instance's record).
//! - [`flight`]: one task per credential, the only place its state changes: a bounded
//!   mailbox, one flight at a time that every request shares, the schedule.
//! - [`executor`]: runs a flight: lease, pending mark, probe, call, save.
//! - [`call`]: one upstream call with its quota check, metrics and failure log.
//! - [`api`]: what is needed of WeChat, as a trait (HTTP client, or a simulated WeChat).
//! - [`token`], [`credential`]: a served token and its bounds; a credential's shared state.
//! - [`catalog`]: the apps and their credentials, changed at runtime without a lock on
//!   the serving path.
//! - [`history`]: a credential's last refreshes and failures, for the status page.
//! - [`lease`]: the cluster-wide lease that lets one instance refresh a token at a time.
//! - [`sync`]: with a shared store, handing other instances' records to the flight tasks.
//! - [`quota`]: the quota guard (daily counts, reserve, 45009).
//! - [`stable`]: stable_token's forced-call budget.
//! - [`readiness`]: what keeps this instance from being ready.
//! - [`clock`]: the wall clock (system, or simulated on tokio's paused clock).
//! - [`error`]: why a refresh gave no token.

pub mod api;
mod call;
pub mod catalog;
pub mod clock;
mod credential;
pub mod decide;
mod error;
mod executor;
mod flight;
pub mod history;
pub mod issued;
mod lease;
mod mailbox;
mod pushed;
pub mod quota;
mod readiness;
mod rotate;
mod stable;
mod sync;
mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, Guard};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use api::TokenApi;
pub use catalog::{AppEntry, Catalog, Origin};
pub use clock::Clock;
pub use credential::{Credential, Issued, MAILBOX_CAPACITY, Status, Token, TokenState};
pub use decide::{backoff, refresh_lead};
pub use error::RefreshError;
pub use flight::{Decision, MAX_WAITERS};
pub use issued::IssuedTokens;
pub use pushed::{Accepted, PUSHED_LIFETIME, PushError};
pub use quota::QuotaGuard;
pub use rotate::{HeldStore, REFRESH_TOKEN_INVALID};
pub use stable::{FORCED_PER_DAY, FORCED_SPACING};

use crate::config::{AppConfig, Config, RefreshConfig};
use crate::domain::{CredentialKey, from_unix_millis, unix_millis};
use crate::metrics::Metrics;
use crate::store::{StoredToken, TokenStore};
use flight::{FlightTask, Msg};

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

/// How long a force refresh waits for its answer: one upstream call per host, a
/// dependency's, and a cluster lease wait fit in it. Past it the caller gets
/// [`RefreshError::WaitEnded`], and the refresh itself goes on.
pub const FORCE_REFRESH_WAIT: Duration = Duration::from_secs(30);

/// The parts a refresher is built from; production uses [`Refresher::new`], the
/// deterministic simulation fills these itself.
pub struct Parts {
    pub store: Arc<dyn TokenStore>,
    pub api: Arc<dyn TokenApi>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    /// Seeds the jitter of retries; `None`: from the OS.
    pub seed: Option<u64>,
    /// Names this instance in cluster leases.
    pub instance_id: String,
}

/// Every credential of every app, with what it needs to refresh them.
pub struct Refresher {
    /// The apps and their credentials; replaced as a whole when an app is added or
    /// removed, so that readers never wait.
    catalog: ArcSwap<Catalog>,
    /// Parent of every app's stop token; cancelled when the run's token is.
    root: CancellationToken,
    /// Serialises catalog changes (each builds on the one before).
    changing: Mutex<()>,
    /// Where flight tasks run, once [`spawn`](Self::spawn) was called: apps added
    /// later get their tasks there at once.
    running: OnceLock<Running>,
    store: Arc<dyn TokenStore>,
    api: Arc<dyn TokenApi>,
    settings: RefreshConfig,
    instance_id: String,
    quota: QuotaGuard,
    metrics: Arc<Metrics>,
    clock: Clock,
    rng: Mutex<StdRng>,
    /// Flights under way, each a task of its own so that a client hanging up cannot
    /// cancel a call to WeChat halfway; a graceful shutdown waits for them.
    flights: TaskTracker,
    /// Permits for token and ticket calls to WeChat (`refresh.max_concurrent_calls`),
    /// shared by every credential: see `call.rs`.
    calls: tokio::sync::Semaphore,
    /// Access tokens handed out, by value (the facade's tickets, the gateway).
    issued: Arc<IssuedTokens>,
    /// When WeChat was last asked to push each pushed credential (see `pushed.rs`);
    /// its lock also makes installing pushed values one at a time.
    pushes: Mutex<HashMap<CredentialKey, tokio::time::Instant>>,
    /// Where rotated held values are stored durably (the registry), once set.
    held_store: OnceLock<std::sync::Weak<dyn HeldStore>>,
    /// Seals pushed values (verify tickets) at rest: `store.encryption_key`.
    pushed_sealer: Option<crate::registry::seal::Sealer>,
}

/// The tracker that flight tasks run under.
struct Running {
    tracker: TaskTracker,
}

impl Refresher {
    /// A refresher calling WeChat with `upstream`, on the system clock.
    pub fn new(
        config: &Config,
        store: Arc<dyn TokenStore>,
        upstream: crate::upstream::Upstream,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self::from_parts(
            config,
            Parts {
                store,
                api: Arc::new(upstream),
                metrics,
                clock: Clock::system(),
                seed: None,
                instance_id: lease::instance_id(),
            },
        )
    }

    /// A refresher from explicit parts.
    pub fn from_parts(config: &Config, parts: Parts) -> Self {
        let root = CancellationToken::new();
        let issued = Arc::new(IssuedTokens::default());
        let catalog = Catalog::new(config.apps.iter().map(|app| {
            Arc::new(AppEntry::new(
                app.clone(),
                Origin::Config,
                root.child_token(),
                &issued,
            ))
        }));
        let rng = match parts.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self {
            catalog: ArcSwap::from_pointee(catalog),
            root,
            changing: Mutex::new(()),
            running: OnceLock::new(),
            quota: QuotaGuard::new(config.quota, parts.store.clone()),
            store: parts.store,
            api: parts.api,
            settings: config.refresh.clone(),
            instance_id: parts.instance_id,
            metrics: parts.metrics,
            clock: parts.clock,
            rng: Mutex::new(rng),
            flights: TaskTracker::new(),
            calls: tokio::sync::Semaphore::new(config.refresh.max_concurrent_calls),
            issued,
            pushes: Mutex::new(HashMap::new()),
            held_store: OnceLock::new(),
            pushed_sealer: config
                .store
                .encryption_key
                .as_ref()
                .map(crate::registry::seal::Sealer::new),
        }
    }

    /// Starts one flight task per credential, and with a shared store the task that
    /// follows it. They stop on `cancel`, each after finishing its flight. Apps added
    /// later start their tasks at once.
    pub fn spawn(self: &Arc<Self>, tracker: &TaskTracker, cancel: &CancellationToken) {
        let running = Running {
            tracker: tracker.clone(),
        };
        if self.running.set(running).is_err() {
            return; // already running
        }
        // One task links the run's token to every app's (a task per app would cost
        // memory at 10,000 apps).
        let (cancel_all, root) = (cancel.clone(), self.root.clone());
        tracker.spawn(async move {
            cancel_all.cancelled().await;
            root.cancel();
        });
        for entry in self.catalog().apps() {
            self.spawn_app(entry);
        }
        self.spawn_sync(tracker, cancel);
    }

    /// Starts the flight tasks of `entry`, if the refresher runs.
    fn spawn_app(self: &Arc<Self>, entry: &AppEntry) {
        let Some(running) = self.running.get() else {
            return;
        };
        let mut tasks = entry.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for cred in entry.creds.iter().filter(|c| !c.source.pushed) {
            if !cred.mailbox.take() {
                continue; // already running
            }
            let task = FlightTask::new(self.clone(), cred.clone());
            tasks.push(running.tracker.spawn(task.run(entry.stop.clone())));
        }
    }

    /// Adds `config` (or puts it in place of the app of that name, which is stopped
    /// and returned): its stored tokens are served at once, today's quota counts
    /// loaded, and its flight tasks started. Serving the other apps never waits.
    ///
    /// # Errors
    /// When the store cannot be read; nothing is changed then.
    pub async fn add_app(
        self: &Arc<Self>,
        config: AppConfig,
        origin: Origin,
    ) -> Result<Option<Arc<AppEntry>>, crate::store::Error> {
        let entry = Arc::new(AppEntry::new(
            config,
            origin,
            self.root.child_token(),
            &self.issued,
        ));
        let now = self.clock.now();
        let mut stored = Vec::new();
        for cred in &entry.creds {
            stored.push(self.store.load(&cred.key).await?);
        }
        for (cred, stored) in entry.creds.iter().zip(stored) {
            if let Some(stored) = stored {
                self.install_stored(cred, &stored, now);
            }
        }
        let app: Arc<str> = entry.name().into();
        self.quota.restore([&app], now).await?;
        let replaced = {
            let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
            let current = self.catalog.load();
            let replaced = current.app(entry.name()).cloned();
            self.catalog.store(Arc::new(current.with(entry.clone())));
            replaced
        };
        if let Some(old) = &replaced {
            old.stop.cancel();
            old.creds.iter().for_each(|c| c.detach_index());
        }
        self.spawn_app(&entry);
        Ok(replaced)
    }

    /// Adds `apps` at start-up, before [`restore`](Self::restore) reads the store for
    /// every app at once and [`spawn`](Self::spawn) starts them: one catalog change
    /// for all, no store read per app.
    pub fn add_apps_at_start(&self, apps: Vec<AppConfig>) {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.catalog.load();
        let entries = current
            .apps()
            .iter()
            .cloned()
            .chain(apps.into_iter().map(|app| {
                Arc::new(AppEntry::new(
                    app,
                    Origin::Registry,
                    self.root.child_token(),
                    &self.issued,
                ))
            }));
        self.catalog.store(Arc::new(Catalog::new(entries)));
    }

    /// Takes the app `name` out: it is no longer served, and its flight tasks stop
    /// (each after the flight under way). See [`retire`](Self::retire) for its tokens.
    pub fn remove_app(&self, name: &str) -> Option<Arc<AppEntry>> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.catalog.load();
        let removed = current.app(name).cloned()?;
        self.catalog.store(Arc::new(current.without(name)));
        removed.stop.cancel();
        removed.creds.iter().for_each(|c| c.detach_index());
        Some(removed)
    }

    /// Waits for the flight tasks of a removed app to end, then deletes its tokens
    /// from the store (nothing can store them again then).
    ///
    /// # Errors
    /// When the store cannot delete them.
    pub async fn retire(&self, entry: &AppEntry) -> Result<(), crate::store::Error> {
        entry.stop_tasks().await;
        for cred in &entry.creds {
            self.store.delete(&cred.key).await?;
        }
        Ok(())
    }

    /// Waits for the flights under way (on shutdown: the tokens they fetch are stored
    /// before the process exits).
    pub async fn drain(&self) {
        self.flights.close();
        self.flights.wait().await;
    }

    /// The store tokens are kept in.
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }

    /// The wall clock in use.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Loads stored tokens that may still be served, so that a restart serves them at
    /// once without calling WeChat, and today's quota counts. A token whose pending
    /// mark says a call was out when the last process stopped is served only for
    /// WeChat's grace from that call, and refreshed at once. Returns how many tokens
    /// were restored.
    ///
    /// # Errors
    /// When the store cannot be read at all.
    pub async fn restore(&self) -> Result<usize, crate::store::Error> {
        let now = self.clock.now();
        let catalog = self.snapshot();
        let mut restored = 0;
        for stored in self.store.load_all().await? {
            let Some(cred) = catalog.credential(&stored.app, &stored.name) else {
                continue; // a token of an app no longer configured
            };
            let stored = if cred.source.pushed {
                match self.opened_pushed(cred, stored) {
                    Some(opened) => opened,
                    None => continue,
                }
            } else {
                stored
            };
            if self.install_stored(cred, &stored, now) {
                restored += 1;
            }
        }
        let apps: Vec<Arc<str>> = catalog.apps().iter().map(|e| e.name().into()).collect();
        self.quota.restore(apps.iter(), now).await?;
        Ok(restored)
    }

    /// Installs a token read from the store at start-up (or when its app is added), if
    /// it may be served; true if it is live. A token whose pending mark says a call was
    /// out when the last process stopped is served only for WeChat's grace from that
    /// call, and refreshed at once.
    fn install_stored(&self, cred: &Credential, stored: &StoredToken, now: SystemTime) -> bool {
        cred.saw_stored(stored.version);
        if !cred.owns(stored) {
            return false; // of another definition of the app: fetched anew
        }
        if !stored.is_sane(unix_millis(now)) {
            tracing::warn!(key = %cred.key, "ignoring a stored token that may not be served (bad value, lifetime over 7 days or refreshed in the future)");
            return false;
        }
        if let Some(since) = stored.pending_since_ms {
            tracing::warn!(key = %cred.key, since = ?from_unix_millis(since),
                "a call to WeChat was out when the server stopped: the stored token is served only for WeChat's grace, and refreshed now");
            *cred
                .restored_pending
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(since);
        }
        if from_unix_millis(stored.expires_at_ms) <= now {
            return false; // dead tokens are not served, but their version carries on
        }
        let token =
            Token::from_stored(stored, Trigger::Restored, now, self.settings.upstream_grace);
        let live = token.is_live(now);
        cred.install(token);
        live
    }

    /// The apps and credentials as of now. Hold it only briefly (it keeps the
    /// catalog of this moment alive), and never across an `.await` on a hot path.
    pub fn catalog(&self) -> Guard<Arc<Catalog>> {
        self.catalog.load()
    }

    /// The apps and credentials as of now, to keep across `.await`s.
    pub fn snapshot(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// The credential `app`/`name`, if configured.
    pub fn credential(&self, app: &str, name: &str) -> Option<Arc<Credential>> {
        self.catalog().credential(app, name).cloned()
    }

    /// The app `name`, if configured.
    pub fn app(&self, name: &str) -> Option<Arc<AppEntry>> {
        self.catalog().app(name).cloned()
    }

    /// Every credential as of now, apps in catalog order and tokens in dependency
    /// order.
    pub fn credentials(&self) -> Vec<Arc<Credential>> {
        self.catalog().credentials().cloned().collect()
    }

    /// The token to serve for `app`/`name`: a catalog load, a map lookup and an
    /// atomic load.
    ///
    /// # Errors
    /// See [`LookupError`].
    pub fn serve(&self, app: &str, name: &str) -> Result<Arc<Token>, LookupError> {
        let catalog = self.catalog();
        let cred = catalog.credential(app, name).ok_or(LookupError::Unknown)?;
        if cred.source.pushed {
            // Only this server calls with it: a client holding it could fetch the
            // component token itself and replace ours.
            return Err(LookupError::Unknown);
        }
        cred.live_token(self.clock.now())
            .ok_or(LookupError::NotReady)
    }

    /// The app and access-token credential that `value` was handed out as, if this
    /// server handed it out and its holder may still use it (see
    /// [`Credential::issued`]): an index lookup, then a check against the credential.
    pub fn issued_token(&self, value: &str) -> Option<(Arc<AppEntry>, Arc<Credential>, Issued)> {
        let key = self.issued.candidate(value)?;
        let entry = self.app(&key.app)?;
        let cred = entry.credential(&key.name)?.clone();
        let issued = cred.issued(value, self.clock.now(), self.settings.upstream_grace)?;
        Some((entry, cred, issued))
    }

    /// A client's request for a token newer than `stale` (or, without `stale`, a new
    /// token, rate-limited by `refresh.force_min_interval`).
    ///
    /// # Errors
    /// WeChat's error when the refresh failed and no token newer than `stale` exists;
    /// the quota guard's refusal when no token with life left is held; see
    /// [`RefreshError`] for the rest.
    pub async fn force_refresh(
        self: &Arc<Self>,
        cred: &Arc<Credential>,
        stale: Option<&str>,
    ) -> Result<(Arc<Token>, Decision), RefreshError> {
        if let (Some(stale), Some(token)) = (stale, cred.live_token(self.clock.now()))
            && token.value != stale
        {
            self.metrics
                .force_refresh(&cred.labels, Decision::Stale.as_str());
            return Ok((token, Decision::Stale)); // no message, no call
        }
        let result = self
            .ask(cred, Trigger::Forced, stale.map(str::to_owned))
            .await;
        // A request the flight task never saw is counted here; the task counts the
        // others when it answers (even a caller that stopped waiting).
        if matches!(result, Err(RefreshError::Busy)) {
            self.metrics
                .force_refresh(&cred.labels, Decision::Shared.as_str());
        }
        result
    }

    /// The token of `cred` with life left: the one held, or one fetched now (shared
    /// with any refresh under way), for the server's own calls with it (the Open
    /// Platform's component API).
    ///
    /// # Errors
    /// See [`RefreshError`].
    pub async fn obtain(&self, cred: &Credential) -> Result<Arc<Token>, RefreshError> {
        match cred.live_token(self.clock.now()) {
            Some(token) => Ok(token),
            None => Ok(self.ask(cred, Trigger::Dependency, None).await?.0),
        }
    }

    /// Sends a request to `cred`'s flight task and waits for the answer, at most
    /// [`FORCE_REFRESH_WAIT`].
    async fn ask(
        &self,
        cred: &Credential,
        trigger: Trigger,
        stale: Option<String>,
    ) -> Result<(Arc<Token>, Decision), RefreshError> {
        if cred.source.pushed {
            return Err(RefreshError::Task(format!(
                "{} is pushed by WeChat to the event endpoint; it cannot be refreshed on request",
                cred.key.name
            )));
        }
        let (reply, answer) = oneshot::channel();
        cred.mailbox
            .try_send(Msg::Ask {
                trigger,
                stale,
                reply,
            })
            .map_err(|e| match e {
                mailbox::SendError::Full => RefreshError::Busy,
                mailbox::SendError::Closed => {
                    RefreshError::Task("the token's refresh task has ended (the server is shutting down, or its app was removed)".into())
                }
            })?;
        match tokio::time::timeout(FORCE_REFRESH_WAIT, answer).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(RefreshError::Task("the server is shutting down".into())),
            Err(_) => Err(RefreshError::WaitEnded(FORCE_REFRESH_WAIT.as_secs())),
        }
    }

    /// A random factor in [0.5, 1] that spreads retries of many instances and tokens.
    fn jitter(&self) -> f64 {
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .random_range(0.5..=1.0)
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
