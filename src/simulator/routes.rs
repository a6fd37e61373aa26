//! HTTP for WeChat's endpoints: turns a request into a call on the state and the outcome,
//! faults included, into the reply WeChat (or a broken network) would give.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::on;
use http_body::Frame;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Simulator;
use super::endpoint::Endpoint;
use super::faults::FaultKind;
use super::wechat::{Request, WxError};

/// Largest upload accepted (WeChat's video limit is 20 MB; tests go beyond the
/// gateway's limit).
const MAX_UPLOAD: usize = 64 * 1024 * 1024;

/// What a handler needs: the state, and the shutdown signal that cuts injected delays short.
#[derive(Clone)]
pub struct Ctx {
    /// The simulator.
    pub sim: Simulator,
    /// Cancelled when the server stops.
    pub shutdown: CancellationToken,
}

/// All routes: WeChat's, `/sim/*`, and JSON answers for unknown paths and wrong methods.
pub fn router(sim: Simulator, shutdown: CancellationToken) -> Router {
    let mut router = Router::new();
    for endpoint in Endpoint::ALL {
        let handler =
            move |State(ctx): State<Ctx>,
                  RawQuery(query): RawQuery,
                  headers: HeaderMap,
                  body: Bytes| { call(ctx, endpoint, query, headers, body) };
        router = router.route(endpoint.path(), on(endpoint.method(), handler));
    }
    router
        // Media uploads are bigger than axum's default 2 MB.
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .merge(super::admin::router())
        .merge(super::component_admin::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(Ctx { sim, shutdown })
}

/// What the locked part of a call decided.
enum Outcome {
    /// WeChat's reply, success or error.
    Reply(Result<Value, WxError>),
    /// The same, held back this long.
    Late(Duration, Result<Value, WxError>),
    /// An ordinary API's reply (JSON or a file).
    Api(Result<super::apis::ApiReply, WxError>),
    /// Served (its reply is thrown away), then the connection is dropped.
    Lost,
    /// An injected failure instead of a reply.
    Fault(FaultKind),
}

/// One call of a WeChat endpoint: count it, apply a queued fault, or serve it.
async fn call(
    ctx: Ctx,
    endpoint: Endpoint,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // A multipart upload is no JSON: not parsed as such.
    let json_body = if endpoint == Endpoint::MediaUpload {
        &b""[..]
    } else {
        &body[..]
    };
    let req = Request::new(query.as_deref(), json_body);
    let _counted = endpoint
        .issues_credentials()
        .then(|| ctx.sim.in_flight.enter());
    let (outcome, pushes) = {
        let mut state = ctx.sim.lock();
        let app = state.app_of(endpoint, &req);
        state.record_call(endpoint, app.as_deref());
        let outcome = match state.faults.take(endpoint) {
            None if endpoint.is_api() => {
                let content_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                Outcome::Api(state.serve_api(endpoint, &req, content_type, &body))
            }
            None => Outcome::Reply(state.serve(endpoint, &req)),
            // Both serve the call now, while the state is locked: WeChat acts on a
            // call when it gets it, whatever then happens to the answer.
            Some(FaultKind::Delay(delay)) => Outcome::Late(delay, state.serve(endpoint, &req)),
            Some(FaultKind::IssueThenDrop) => {
                let served = state.serve(endpoint, &req);
                tracing::debug!(
                    path = endpoint.path(),
                    ok = served.is_ok(),
                    "served, dropping the reply"
                );
                Outcome::Lost
            }
            Some(kind) => Outcome::Fault(kind),
        };
        (outcome, state.components.take_push_requests())
    };
    // `api_start_push_ticket`: WeChat answers at once and pushes on its own time.
    for appid in pushes {
        let sim = ctx.sim.clone();
        tokio::spawn(async move { sim.push_tickets_to_known_urls(Some(&appid)).await });
    }
    let reply = match outcome {
        Outcome::Reply(reply) => reply,
        Outcome::Api(Ok(super::apis::ApiReply::Json(value))) => Ok(value),
        Outcome::Api(Ok(super::apis::ApiReply::File { content_type, body })) => {
            return ([(header::CONTENT_TYPE, content_type)], body).into_response();
        }
        Outcome::Api(Err(e)) => Err(e),
        Outcome::Late(delay, reply) => {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = ctx.shutdown.cancelled() => {}
            }
            reply
        }
        Outcome::Fault(kind) => {
            tracing::debug!(path = endpoint.path(), ?kind, "injected fault");
            return fault_response(kind);
        }
        Outcome::Lost => return fault_response(FaultKind::IssueThenDrop),
    };
    match reply {
        Ok(value) => Json(value).into_response(),
        Err(e) => {
            tracing::debug!(
                path = endpoint.path(),
                errcode = e.code,
                "wechat error reply"
            );
            Json(json!({"errcode": e.code, "errmsg": e.msg})).into_response()
        }
    }
}

/// The reply a failing WeChat, proxy or network gives for `kind`.
fn fault_response(kind: FaultKind) -> Response {
    match kind {
        FaultKind::Errcode { code, msg } => {
            Json(json!({"errcode": code, "errmsg": msg})).into_response()
        }
        FaultKind::HttpStatus(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
            let html = format!("<html><body><h1>{status}</h1></body></html>");
            (status, [(header::CONTENT_TYPE, "text/html")], html).into_response()
        }
        FaultKind::Garbage => {
            let body = r#"{"access_token":"Zm9vYmFy<html><body>upstream reset"#;
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        // For IssueThenDrop, `call` has served the call already.
        FaultKind::Drop | FaultKind::IssueThenDrop => Response::new(Body::new(AbortBody)),
        // `call` serves delayed calls itself; should one get here, a bare delay-free 500
        // is still a visible failure rather than a panic.
        FaultKind::Delay(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A response body that fails before yielding a byte.
///
/// hyper buffers the status line and headers until the first body chunk is written; when
/// the body fails first, it closes the connection and drops the buffer, so the client sees
/// the connection closed with no response at all, which is what a dropped connection is.
/// (Tested over real HTTP in `tests/it/simulator.rs`.)
struct AbortBody;

impl http_body::Body for AbortBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let e = io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "simulated dropped connection",
        );
        Poll::Ready(Some(Err(e)))
    }
}

async fn not_found(uri: Uri) -> Response {
    let msg = format!("no such endpoint in the WeChat simulator: {}", uri.path());
    (
        StatusCode::NOT_FOUND,
        Json(json!({"errcode": 404, "errmsg": msg})),
    )
        .into_response()
}

async fn method_not_allowed(uri: Uri) -> Response {
    let msg = format!("method not allowed on {}", uri.path());
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({"errcode": 405, "errmsg": msg})),
    )
        .into_response()
}
