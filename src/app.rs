//! Wiring: store + refresher + HTTP, built from a [`Config`] and a bound listener, run
//! until a shutdown token is cancelled. Tests, `serve` and `demo` all use this.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::config::{Backend, Config, StoreConfig};
use crate::http::{self, AppState};
use crate::log_limit::LOG_INTERVAL;
use crate::metrics::Metrics;
use crate::refresh::Refresher;
use crate::registry::Registry;
use crate::reload::Reloader;
use crate::server::{self, Frontend, Limits, Tls, TrustedProxies};
use crate::store::{EmbeddedStore, Instrumented, MemoryStore, RedisStore, TokenStore};
use crate::upstream::Upstream;

/// A server ready to run.
pub struct App {
    listener: TcpListener,
    refresher: Arc<Refresher>,
    registry: Arc<Registry>,
    reloader: Arc<Reloader>,
    /// Was a config file given, to read again on SIGHUP?
    reload_on_sighup: bool,
    /// Kept for the refusal log's summary lines (`state.refusals`).
    state: AppState,
    router: axum::Router,
    limits: Limits,
    frontend: Frontend,
}

impl App {
    /// Opens the store, restores the stored tokens that still have life left, and
    /// prepares the HTTP router on `listener`.
    ///
    /// # Errors
    /// When the TLS certificate or key cannot be used, or the store cannot be opened or
    /// read.
    pub async fn build(config: Config, listener: TcpListener) -> anyhow::Result<Self> {
        let tls = config
            .server
            .tls
            .as_ref()
            .map(Tls::load)
            .transpose()?
            .map(Arc::new);
        let proxies = Arc::new(TrustedProxies::new(config.server.trusted_proxies.clone()));
        let metrics = Arc::new(Metrics::with_config(config.metrics));
        let store: Arc<dyn TokenStore> = Arc::new(Instrumented::new(
            open_store(&config.store)?,
            metrics.clone(),
        ));
        let upstream = Upstream::new(config.refresh.upstream_timeout)
            .context("cannot initialise the HTTP client")?;
        let refresher = Arc::new(Refresher::new(&config, store, upstream, metrics));
        let registry = Arc::new(Registry::new(&config, refresher.clone()));
        // Registry apps join the catalog before the stored tokens are read, so that
        // one read restores theirs too.
        match registry.load().await {
            Ok(0) => {}
            Ok(apps) => tracing::info!(apps, "registry apps loaded"),
            Err(error) if refresher.store().is_shared() => {
                tracing::error!(%error, "cannot read the registry from the shared store at start-up; following it once it answers");
            }
            Err(error) => return Err(error).context("cannot read the app registry"),
        }
        // A shared store that is down at start-up is not fatal: the sync task reads it
        // as soon as it answers, and tokens are fetched meanwhile.
        let restored = match refresher.restore().await {
            Ok(restored) => restored,
            Err(error) if refresher.store().is_shared() => {
                tracing::error!(%error, "cannot read the shared store at start-up; going on without stored tokens");
                0
            }
            Err(error) => return Err(error).context("cannot read the token store"),
        };
        tracing::info!(
            restored,
            tokens = refresher.catalog().credential_count(),
            "token store loaded"
        );
        let auth = Arc::new(arc_swap::ArcSwap::from_pointee(Auth::from_config(&config)));
        let reloader = Arc::new(Reloader::new(
            config.clone(),
            refresher.clone(),
            registry.clone(),
            auth.clone(),
            tls.clone(),
        ));
        let gateway = Arc::new(
            crate::gateway::Gateway::new(config.gateway)
                .context("cannot initialise the gateway's HTTP client")?,
        );
        let platforms = Arc::new(crate::component::Platforms::new(
            refresher.clone(),
            registry.clone(),
            crate::component::api::ComponentApi::new(config.refresh.upstream_timeout)
                .context("cannot initialise the Open Platform's HTTP client")?,
        ));
        // Authorizers' rotated refresh tokens are saved in their registry records.
        refresher.set_held_store(
            Arc::downgrade(&platforms) as std::sync::Weak<dyn crate::refresh::HeldStore>
        );
        let state = AppState::new(
            refresher.clone(),
            auth,
            registry.clone(),
            reloader.clone(),
            gateway,
            platforms,
        );
        Ok(Self {
            listener,
            refresher,
            registry,
            reloader,
            reload_on_sighup: false,
            router: http::router(state.clone()),
            frontend: Frontend {
                tls,
                proxies,
                shortcut: Some(http::shortcut(state.clone())),
            },
            state,
            limits: Limits {
                gateway_max_body: config.gateway.max_body,
                ..Limits::new(&config.server)
            },
        })
    }

    /// The HTTPS certificate holder when `server.tls_cert` is set: a reload calls
    /// [`Tls::reload`] on it (new connections get the new certificate; a bad file
    /// keeps the old one).
    pub fn tls(&self) -> Option<Arc<Tls>> {
        self.frontend.tls.clone()
    }

    /// Adds `routes` to the server's (e.g. a test's own), served within the same
    /// inbound limits. A path the server already routes is a panic, as in
    /// [`axum::Router::merge`].
    #[must_use]
    pub fn with_routes(mut self, routes: axum::Router) -> Self {
        self.router = self.router.merge(routes);
        self
    }

    /// Reads `path` again on SIGHUP and `POST /v1/reload` (see [`crate::reload`]).
    #[must_use]
    pub fn with_config_file(mut self, path: std::path::PathBuf) -> Self {
        self.reloader.set_path(path);
        self.reload_on_sighup = true;
        self
    }

    /// The address the server listens on (useful with port 0).
    ///
    /// # Errors
    /// When the socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The refresher, for tests that drive or inspect it.
    pub fn refresher(&self) -> Arc<Refresher> {
        self.refresher.clone()
    }

    /// Serves HTTP and refreshes tokens until `shutdown` is cancelled; then stops
    /// accepting, lets in-flight requests finish for at most `server.shutdown_timeout`
    /// (closing the connections still open then), lets refreshes under way finish, and
    /// returns.
    ///
    /// # Errors
    /// When the listening socket has no address.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        let tasks = CancellationToken::new();
        self.refresher.spawn(&tracker, &tasks);
        self.registry.spawn_follow(&tracker, &tasks);
        // Platforms with no verify ticket stored ask WeChat to push one now rather
        // than wait up to ten minutes.
        self.refresher.request_missing_pushes();
        if self.reload_on_sighup {
            self.reloader.spawn_on_sighup(&tracker, &tasks);
        }
        spawn_refusal_summaries(self.state.clone(), &tracker, &tasks);
        tracker.close();
        let scheme = if self.frontend.tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(addr = %self.listener.local_addr()?, scheme, "serving");
        server::serve(
            self.listener,
            self.router,
            self.limits,
            self.frontend,
            shutdown,
        )
        .await;
        // Refreshes under way finish (and are stored) before we return: a token WeChat
        // issued must not be lost, so server.shutdown_timeout does not cut them off
        // (their WeChat calls are bounded by refresh.upstream_timeout).
        tasks.cancel();
        tracker.wait().await;
        self.refresher.drain().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Writes the summary line of suppressed refusal log lines once per interval (see
/// `http::caller`), and a last one on shutdown.
fn spawn_refusal_summaries(state: AppState, tracker: &TaskTracker, cancel: &CancellationToken) {
    let cancel = cancel.clone();
    tracker.spawn(async move {
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + LOG_INTERVAL, LOG_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => http::report_suppressed(&state.refusals, LOG_INTERVAL),
                () = cancel.cancelled() => {
                    http::report_suppressed(&state.refusals, LOG_INTERVAL);
                    return;
                }
            }
        }
    });
}

/// Opens the configured store.
///
/// # Errors
/// When the store cannot be opened.
pub fn open_store(config: &StoreConfig) -> anyhow::Result<Arc<dyn TokenStore>> {
    Ok(match config.backend {
        Backend::Embedded => Arc::new(EmbeddedStore::open(&config.path).with_context(|| {
            format!(
                "cannot open the embedded store at {} (store.path)",
                config.path.display()
            )
        })?),
        Backend::Memory => Arc::new(MemoryStore::new()),
        Backend::Redis => {
            let ca =
                match &config.redis_ca {
                    Some(path) => Some(std::fs::read(path).with_context(|| {
                        format!("cannot read store.redis_ca {}", path.display())
                    })?),
                    None => None,
                };
            Arc::new(
                RedisStore::open_with_ca(
                    config.redis_url.expose(),
                    &config.key_prefix,
                    ca.as_deref(),
                )
                .context("invalid store.redis_url")?,
            )
        }
    })
}
