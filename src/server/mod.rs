//! The HTTP server under the router: accepts connections and runs hyper on each, within
//! the inbound limits of SPEC.md ("Inbound limits").
//!
//! Why not `axum::serve`: it has no header-read or idle timeout, no bound on open
//! connections and no deadline on a graceful shutdown, so one client could hold the
//! process open forever and a few thousand slow ones could exhaust its file
//! descriptors. This loop is `axum::serve` (hyper's HTTP/1 connection, the peer address
//! as `ConnectInfo<SocketAddr>`) plus those limits:
//!
//! - [this module](self): the accept loop, the bound on open connections, graceful
//!   shutdown with a deadline.
//! - [`conn`]: one connection: the header-read and idle timeouts.
//! - [`request`]: one request: the peer address, the body limit, the panic guard.
//! - [`tls`]: HTTPS, with a certificate that can be swapped while serving.
//! - [`forwarded`]: the client's address behind trusted reverse proxies.
//! - [`Shortcut`]: the one route (`GET /wechat/token`) answered before the router.

mod conn;
mod forwarded;
mod request;
mod tls;

pub use forwarded::{ForwardedClient, TrustedProxies};
pub use tls::{Tls, TlsError};

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::log_limit::{LOG_INTERVAL, LogLimiter};

/// Largest request body accepted, in bytes (SPEC.md): the biggest body any route takes
/// is a refresh's `{"stale": "<token>"}`, a few hundred bytes. The gateway's paths
/// have their own, larger limit ([`Limits::gateway_max_body`]).
pub const MAX_BODY: usize = 64 * 1024;

/// The inbound limits the server applies.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; past it, new ones wait in the listen backlog.
    pub max_connections: usize,
    /// Longest wait for a request head (from the connection's start, or from the first
    /// byte of a next request).
    pub header_read_timeout: Duration,
    /// Longest a connection stays open with no request under way.
    pub idle_timeout: Duration,
    /// Longest a graceful shutdown waits for open connections.
    pub shutdown_timeout: Duration,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Largest request body on the gateway's paths (`gateway.max_body`), in bytes.
    pub gateway_max_body: usize,
}

impl Limits {
    /// The limits of `[server]`, with the [`MAX_BODY`] body limit.
    pub fn new(server: &ServerConfig) -> Self {
        Self {
            max_connections: server.max_connections,
            header_read_timeout: server.header_read_timeout,
            idle_timeout: server.idle_timeout,
            shutdown_timeout: server.shutdown_timeout,
            max_body: MAX_BODY,
            gateway_max_body: crate::config::GatewayConfig::default().max_body,
        }
    }
}

/// What sits in front of the router: TLS, whose forwarding headers are believed, and
/// the one route answered before it.
#[derive(Debug, Clone, Default)]
pub struct Frontend {
    /// `Some`: HTTPS only.
    pub tls: Option<Arc<Tls>>,
    pub proxies: Arc<TrustedProxies>,
    pub shortcut: Option<Arc<dyn Shortcut>>,
}

/// A `GET` route that the server answers itself, before the router, synchronously:
/// the token route, where routing, a boxed future per layer and the request
/// extensions that carry the peer address (a map allocated per request) cost a third
/// of the work of answering (README, "Performance"). The router serves the same path
/// too, for every other method (its 405) and for `HEAD`, and must answer `GET` alike:
/// the shortcut only makes it cheaper. The body limit and the panic guard apply as for
/// the router.
pub trait Shortcut: Send + Sync + std::fmt::Debug + 'static {
    /// The exact path answered (no pattern).
    fn path(&self) -> &str;

    /// The response to a `GET` of [`path`](Self::path) from `client` (the peer, or
    /// what a trusted proxy says; `None` when a trusted proxy named no address).
    fn answer(&self, uri: &Uri, headers: &HeaderMap, client: Option<IpAddr>) -> Response;
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting,
/// lets open connections finish their requests for at most
/// [`Limits::shutdown_timeout`], closes those still open, and returns.
///
/// Past [`Limits::max_connections`] open connections, new ones are not accepted: they
/// wait in the kernel's listen backlog (and are served as soon as an open one closes);
/// once that queue is full the kernel ignores new attempts, which clients retry. Open
/// connections keep working. Waiting rather than refusing (accept, then close at once)
/// because a burst past the bound is served late instead of failed, and a refusal
/// would cost an accept and a close per attempt exactly when the server is busiest.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    frontend: Frontend,
    shutdown: CancellationToken,
) {
    // Every permit is a connection; it is released when the connection's task ends.
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    // Cancelled when the shutdown deadline has passed: the connections still open close.
    let force = CancellationToken::new();
    let full_log = LogLimiter::new(1, LOG_INTERVAL);
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if full_log.admit(Instant::now()) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        times_since_last_line = full_log.take_suppressed(),
                        "server.max_connections reached: new connections wait until one closes"
                    );
                }
                tokio::select! {
                    permit = permits.clone().acquire_owned() => {
                        permit.expect("the semaphore is never closed")
                    }
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    on_accept_error(&error, &shutdown).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let (router, shutdown, force) = (router.clone(), shutdown.clone(), force.clone());
        let (tls, proxies) = (frontend.tls.clone(), frontend.proxies.clone());
        let shortcut = frontend.shortcut.clone();
        connections.spawn(async move {
            let accepted = Accepted {
                stream,
                peer,
                proxies,
                shortcut,
            };
            match tls {
                None => conn::serve(accepted, router, &limits, &shutdown, &force).await,
                Some(tls) => {
                    if let Some(accepted) = handshake(accepted, &tls, &limits, &shutdown).await {
                        conn::serve(accepted, router, &limits, &shutdown, &force).await;
                    }
                }
            }
            drop(permit);
        });
    }
    // New connections are refused from here on; the open ones finish their requests.
    drop(listener);
    connections.close();
    tracing::info!(
        open = connections.len(),
        "draining HTTP connections (at most server.shutdown_timeout)"
    );
    if tokio::time::timeout(limits.shutdown_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            timeout_s = limits.shutdown_timeout.as_secs_f64(),
            "closing the HTTP connections still open after server.shutdown_timeout"
        );
        force.cancel();
        connections.wait().await;
    }
}

/// An accepted connection (TCP, or TLS over it), its peer, and what answers it
/// besides the router.
struct Accepted<S = TcpStream> {
    stream: S,
    peer: SocketAddr,
    proxies: Arc<TrustedProxies>,
    shortcut: Option<Arc<dyn Shortcut>>,
}

/// The TLS handshake of a new connection, within the header-read timeout (a client
/// that opens a connection and stalls its handshake is the slowloris case too).
/// `None` when it fails, times out or shutdown begins: the connection is dropped.
async fn handshake(
    accepted: Accepted,
    tls: &Tls,
    limits: &Limits,
    shutdown: &CancellationToken,
) -> Option<Accepted<tokio_rustls::server::TlsStream<TcpStream>>> {
    let Accepted {
        stream,
        peer,
        proxies,
        shortcut,
    } = accepted;
    let handshake = tokio::time::timeout(limits.header_read_timeout, tls.acceptor().accept(stream));
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake not done within server.header_read_timeout");
                return None;
            }
        },
        () = shutdown.cancelled() => return None,
    };
    Some(Accepted {
        stream,
        peer,
        proxies,
        shortcut,
    })
}

/// A failed `accept`: errors of one connection (reset before it was accepted) are
/// skipped; others (out of file descriptors) are logged and retried a second later, as
/// `axum::serve` does, since retrying at once would spin.
async fn on_accept_error(error: &std::io::Error, shutdown: &CancellationToken) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept a connection; retrying in 1 s");
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
        () = shutdown.cancelled() => {}
    }
}
