//! One request, on its way from hyper to the router (or the [`Shortcut`]): the peer
//! address, the body limit, the panic guard, and the connection's [`Activity`] told
//! when it starts and ends.
//!
//! These wrap the router from outside rather than as axum layers: a layer on the router
//! boxes one more future per request, and here every type is known, so the token route
//! pays for them with no allocation (the README's Performance section).

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use http_body::Body as _;
use hyper::body::Incoming;
use tower_service::Service;

use super::Shortcut;
use super::conn::Activity;
use super::forwarded::{ForwardedClient, TrustedProxies};
use crate::http::error::{ApiError, is_v1_path};

/// The service hyper calls for each request of one connection.
pub(super) struct RequestService {
    router: Router,
    shortcut: Option<Arc<dyn Shortcut>>,
    peer: SocketAddr,
    proxies: Arc<TrustedProxies>,
    activity: Arc<Activity>,
    max_body: usize,
    /// The larger limit of the gateway's paths.
    gateway_max_body: usize,
}

impl RequestService {
    pub(super) fn new(
        (router, shortcut): (Router, Option<Arc<dyn Shortcut>>),
        peer: SocketAddr,
        proxies: Arc<TrustedProxies>,
        activity: Arc<Activity>,
        (max_body, gateway_max_body): (usize, usize),
    ) -> Self {
        Self {
            router,
            shortcut,
            peer,
            proxies,
            activity,
            max_body,
            gateway_max_body,
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for RequestService {
    type Response = Response;
    type Error = Infallible;
    type Future = Guarded;

    fn call(&self, mut request: Request<Incoming>) -> Guarded {
        let busy = Busy::new(self.activity.clone());
        // Computed before the request moves on, for a 500 in the right style.
        let v1 = is_v1_path(request.uri().path());
        let size = request.body().size_hint();
        let max_body = if crate::gateway::is_gateway_path(request.uri().path()) {
            self.gateway_max_body
        } else {
            self.max_body
        };
        if size.lower() > max_body as u64 {
            // A declared Content-Length over the limit: answered at once, without
            // waiting for a body that may never come. hyper then closes the
            // connection rather than read the body.
            return Guarded::ready(ApiError::payload_too_large(v1, max_body), busy);
        }
        // Read only behind a trusted proxy: nothing to do for anyone else.
        let forwarded = if self.proxies.is_empty() {
            None
        } else {
            self.proxies.client(self.peer, request.headers())
        };
        if let Some(shortcut) = &self.shortcut
            && request.method() == Method::GET
            && request.uri().path() == shortcut.path()
        {
            let client = forwarded.map_or(Some(self.peer.ip()), |ForwardedClient(c)| c);
            let answered = std::panic::catch_unwind(AssertUnwindSafe(|| {
                shortcut.answer(request.uri(), request.headers(), client)
            }));
            return match answered {
                Ok(response) => Guarded::answered(response, busy),
                Err(panic) => Guarded::ready(on_panic(panic.as_ref(), v1), busy),
            };
        }
        // As `into_make_service_with_connect_info::<SocketAddr>` does: handlers see the
        // peer (client `networks` are checked against it).
        request.extensions_mut().insert(ConnectInfo(self.peer));
        if let Some(client) = forwarded {
            request.extensions_mut().insert(client);
        }
        let request = request.map(|body| {
            if size.upper().is_some_and(|upper| upper <= max_body as u64) {
                // A Content-Length within the limit, which hyper enforces.
                Body::new(body)
            } else {
                // Chunked: cut off once over the limit; extractors answer 413.
                Body::new(http_body_util::Limited::new(body, max_body))
            }
        });
        // The router is an `Arc`: cloned for `call(&mut self)`, as axum::serve does.
        let mut router = self.router.clone();
        match std::panic::catch_unwind(AssertUnwindSafe(|| router.call(request))) {
            Ok(future) => Guarded {
                state: State::Routed { future, v1 },
                _busy: busy,
            },
            Err(panic) => Guarded::ready(on_panic(panic.as_ref(), v1), busy),
        }
    }
}

/// Tells the connection's [`Activity`] that a request is under way until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Self {
        activity.begin_request();
        Self(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

pin_project_lite::pin_project! {
    /// A request being answered by the router, or an answer already made; a panic
    /// while the router works on it becomes a 500.
    pub(super) struct Guarded {
        #[pin]
        state: State,
        _busy: Busy,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State {
        Routed {
            #[pin]
            future: RouteFuture<Infallible>,
            v1: bool,
        },
        Ready {
            response: Option<Response>,
        },
    }
}

impl Guarded {
    fn ready(error: ApiError, busy: Busy) -> Self {
        Self::answered(error.into_response(), busy)
    }

    fn answered(response: Response, busy: Busy) -> Self {
        Self {
            state: State::Ready {
                response: Some(response),
            },
            _busy: busy,
        }
    }
}

impl Future for Guarded {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Routed { future, v1 } => {
                // The handler's state may be half-changed after a panic (hence
                // AssertUnwindSafe); the future is not polled again, since a response
                // is returned.
                match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(polled) => polled,
                    Err(panic) => Poll::Ready(Ok(on_panic(panic.as_ref(), *v1).into_response())),
                }
            }
            StateProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .expect("a Guarded future is not polled after it is ready"))),
        }
    }
}

/// Logs a handler's panic; the 500 to answer with. The panic hook has already written
/// where it happened; this line says what became of the request.
fn on_panic(panic: &(dyn Any + Send), v1: bool) -> ApiError {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)");
    tracing::error!(panic = message, "a request handler panicked; answered 500");
    ApiError::internal(v1)
}
