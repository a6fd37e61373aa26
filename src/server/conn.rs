//! One connection: hyper's HTTP/1 over the socket, with the header-read and idle
//! timeouts kept by one timer of our own.
//!
//! Why not hyper's `header_read_timeout`: in hyper 1.x its clock also starts when a
//! kept-alive connection goes idle, so it doubles as an idle timeout of the same length
//! and idle connections would be closed after 30 s, not the 60 s of SPEC.md. hyper has
//! no idle timeout of its own. So the connection's [`Activity`] records three facts,
//! where they happen (the socket's reads, the start and end of each request), and one
//! timer per connection checks them:
//!
//! - no request under way and none started: closed after `idle_timeout` (a new
//!   connection counts as having started its first request: a client that connects and
//!   says nothing is the slowloris case);
//! - the first bytes of a request read, its head not complete: closed
//!   `header_read_timeout` after the first byte;
//! - a request under way (head read, response not ready): no timeout here; handlers
//!   bound their own waits, and shutdown bounds everything.
//!
//! A timed-out connection is dropped, not shut down gracefully: there is no request to
//! finish, and hyper's graceful shutdown would wait for the rest of a half-sent head.
//! For the same reason a shutdown drops the connections with no request under way at
//! once, and shuts down gracefully only those with one.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::request::RequestService;
use super::{Accepted, Limits};

/// Serves one connection until the client closes it, a timeout closes it, or shutdown
/// does (gracefully on `shutdown`, at once on `force`).
pub(super) async fn serve<S>(
    accepted: Accepted<S>,
    router: Router,
    limits: &Limits,
    shutdown: &CancellationToken,
    force: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Accepted {
        stream,
        peer,
        proxies,
        shortcut,
    } = accepted;
    // Tokens of this connection's own: a pending `cancelled()` takes its token's lock
    // each time the task wakes, and the shared tokens' locks would be contended by
    // every connection on every request.
    let (shutdown, force) = (shutdown.child_token(), force.child_token());
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let service = RequestService::new(
        (router, shortcut),
        peer,
        proxies,
        activity.clone(),
        (limits.max_body, limits.gateway_max_body),
    );
    let mut builder = http1::Builder::new();
    // Our timer keeps the header timeout (see the module docs); hyper would panic
    // without a timer if it were set, and warn about its default.
    builder.header_read_timeout(None);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let timer = tokio::time::sleep_until(activity.next_check(limits));
    tokio::pin!(timer);
    let mut draining = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            () = &mut timer => match activity.check(Instant::now(), limits) {
                Check::Expired(what) => {
                    tracing::debug!(%peer, what, "closing connection");
                    return;
                }
                Check::At(at) => timer.as_mut().reset(at),
            },
            // One of the two is polled at a time: `force` comes after `shutdown`.
            () = shutdown.cancelled(), if !draining => {
                // A connection with nothing under way closes now (hyper's graceful
                // shutdown would wait for the first request of a new connection, or the
                // rest of a half-sent head); one with a request under way answers it
                // with `Connection: close`, then closes.
                if !activity.is_busy() {
                    return;
                }
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = force.cancelled(), if draining => {
                tracing::debug!(%peer, "closing connection: server.shutdown_timeout passed");
                return;
            }
        }
    }
}

/// What a connection is doing, for its timer. Written and read by the connection's own
/// task only (hyper polls the service and the socket from the connection future), so
/// relaxed atomics suffice; they are atomics because the task moves between threads.
pub(super) struct Activity {
    opened: Instant,
    /// Requests whose response is not ready yet.
    busy: AtomicU32,
    /// Whether bytes of a request head have been read while nothing was under way.
    reading_head: AtomicBool,
    /// When the current phase (idle, or reading a head) began: milliseconds since
    /// `opened`.
    since_ms: AtomicU64,
}

/// What the timer found.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    /// The connection has timed out: which timeout.
    Expired(&'static str),
    /// Nothing has timed out; check again at this instant.
    At(Instant),
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            busy: AtomicU32::new(0),
            // A new connection is waiting for its first request head.
            reading_head: AtomicBool::new(true),
            since_ms: AtomicU64::new(0),
        }
    }

    fn millis_since_open(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.opened).as_millis()).unwrap_or(u64::MAX)
    }

    /// Bytes were read from the socket.
    fn on_read(&self) {
        if self.busy.load(Ordering::Relaxed) == 0 && !self.reading_head.load(Ordering::Relaxed) {
            self.reading_head.store(true, Ordering::Relaxed);
            self.since_ms
                .store(self.millis_since_open(Instant::now()), Ordering::Relaxed);
        }
    }

    /// A request head was read: the service is called.
    pub(super) fn begin_request(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
    }

    /// A request's response is ready (or the request was dropped).
    pub(super) fn end_request(&self) {
        if self.busy.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.reading_head.store(false, Ordering::Relaxed);
            self.since_ms
                .store(self.millis_since_open(Instant::now()), Ordering::Relaxed);
        }
    }

    /// Whether a request is under way.
    fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed) > 0
    }

    /// When the timer should look first.
    fn next_check(&self, limits: &Limits) -> Instant {
        self.opened + limits.header_read_timeout.min(limits.idle_timeout)
    }

    fn check(&self, now: Instant, limits: &Limits) -> Check {
        if self.is_busy() {
            // The phase that follows starts no earlier than now: look again when its
            // shorter timeout could have passed.
            return Check::At(now + limits.header_read_timeout.min(limits.idle_timeout));
        }
        let (timeout, what) = if self.reading_head.load(Ordering::Relaxed) {
            (
                limits.header_read_timeout,
                "no complete request head within server.header_read_timeout",
            )
        } else {
            (limits.idle_timeout, "idle for server.idle_timeout")
        };
        let since =
            self.opened + std::time::Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
        let deadline = since + timeout;
        if now >= deadline {
            Check::Expired(what)
        } else {
            Check::At(deadline)
        }
    }
}

pin_project_lite::pin_project! {
    /// The socket (or the TLS stream over it), telling [`Activity`] when bytes arrive.
    struct Watched<S> {
        #[pin]
        stream: S,
        activity: Arc<Activity>,
    }
}

impl<S: AsyncRead> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.stream.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.on_read();
        }
        polled
    }
}

impl<S: AsyncWrite> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().stream.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().stream.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 1,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            max_body: 1,
            gateway_max_body: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_follow_the_phase_of_the_connection() {
        let limits = limits();
        let activity = Activity::new();
        let t0 = activity.opened;
        let s = Duration::from_secs;
        // A new connection has the header timeout for its first head.
        assert_eq!(activity.check(t0, &limits), Check::At(t0 + s(30)));
        assert!(matches!(
            activity.check(t0 + s(30), &limits),
            Check::Expired(_)
        ));

        // Under way: no timeout, however long.
        activity.begin_request();
        assert_eq!(activity.check(t0 + s(100), &limits), Check::At(t0 + s(130)));

        // Answered at t0 + 100 s: idle, 60 s from then.
        tokio::time::advance(s(100)).await;
        activity.end_request();
        assert_eq!(activity.check(t0 + s(130), &limits), Check::At(t0 + s(160)));

        // The next request's first bytes at t0 + 150 s: 30 s for its head.
        tokio::time::advance(s(50)).await;
        activity.on_read();
        assert_eq!(activity.check(t0 + s(170), &limits), Check::At(t0 + s(180)));
        assert!(matches!(
            activity.check(t0 + s(180), &limits),
            Check::Expired(_)
        ));
    }
}
