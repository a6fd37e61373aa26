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
use crate::server::{self, Limits};
use crate::store::{EmbeddedStore, Instrumented, MemoryStore, RedisStore, TokenStore};
use crate::upstream::Upstream;

/// A server ready to run.
pub struct App {
    listener: TcpListener,
    refresher: Arc<Refresher>,
    /// Kept for the refusal log's summary lines (`state.refusals`).
    state: AppState,
    router: axum::Router,
    limits: Limits,
}

impl App {
    /// Opens the store, restores the stored tokens that still have life left, and
    /// prepares the HTTP router on `listener`.
    ///
    /// # Errors
    /// When the store cannot be opened or read.
    pub async fn build(config: Config, listener: TcpListener) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::with_config(config.metrics));
        let store: Arc<dyn TokenStore> = Arc::new(Instrumented::new(
            open_store(&config.store)?,
            metrics.clone(),
        ));
        let upstream = Upstream::new(config.refresh.upstream_timeout)
            .context("cannot initialise the HTTP client")?;
        let refresher = Arc::new(Refresher::new(&config, store, upstream, metrics));
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
            tokens = refresher.credentials().len(),
            "token store loaded"
        );
        let auth =
            Auth::new(config.server.request_secret.clone()).with_clients(config.clients.clone());
        let state = AppState::new(refresher.clone(), auth, &config.apps);
        Ok(Self {
            listener,
            refresher,
            router: http::router(state.clone()),
            state,
            limits: Limits::new(&config.server),
        })
    }

    /// Adds `routes` to the server's (e.g. a test's own), served within the same
    /// inbound limits. A path the server already routes is a panic, as in
    /// [`axum::Router::merge`].
    #[must_use]
    pub fn with_routes(mut self, routes: axum::Router) -> Self {
        self.router = self.router.merge(routes);
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
        spawn_refusal_summaries(self.state.clone(), &tracker, &tasks);
        tracker.close();
        tracing::info!(addr = %self.listener.local_addr()?, "serving");
        server::serve(self.listener, self.router, self.limits, shutdown).await;
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
        Backend::Redis => Arc::new(
            RedisStore::open(config.redis_url.expose(), &config.key_prefix)
                .context("invalid store.redis_url")?,
        ),
    })
}
