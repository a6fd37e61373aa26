//! The only place where errors become HTTP responses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::refresh::RefreshError;
use crate::refresh::quota::Refusal;
use crate::upstream;

/// An error response: `{"error": CODE, "message": ..., "errcode"?, "errmsg"?}`.
///
/// The seed routes use the Python original's `error` strings ("invalid request",
/// "not found"), which clients match on; the extra fields are additions. `/v1` uses the
/// stable machine codes of [`Code`].
#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    /// Seconds after which a rate-limited request may be retried (`Retry-After`).
    #[serde(skip)]
    pub retry_after: Option<u64>,
    pub error: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errcode: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errmsg: Option<String>,
}

/// A request body that could not be read, in the `/v1` style rather than axum's
/// plain text: over the server's body limit (a chunked body; a declared one never gets
/// here), or cut off.
pub fn body_rejected(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::v1(Code::PayloadTooLarge, rejection.body_text())
    } else {
        ApiError::v1(Code::BadRequest, rejection.body_text())
    }
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str) -> Self {
        Self {
            status,
            retry_after: None,
            error,
            message: None,
            errcode: None,
            errmsg: None,
        }
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// 401 of the seed routes.
    pub fn invalid_request() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid request")
    }

    /// 404 of the seed routes.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not found")
    }

    /// 503 of the seed routes: configured, but no live token yet.
    pub fn not_ready(app: &str, name: &str) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "not found").with_message(format!(
            "token {name} of app {app} has not been fetched yet (or has expired); retry shortly"
        ))
    }

    /// 400: a malformed request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad request").with_message(message)
    }

    /// 502: WeChat refused (or could not be reached) and no newer token exists.
    pub fn upstream(error: &upstream::Error) -> Self {
        let mut e =
            Self::new(StatusCode::BAD_GATEWAY, "refresh failed").with_message(error.to_string());
        if let upstream::Error::WeChat { errcode, errmsg } = error {
            e.errcode = Some(*errcode);
            e.errmsg = Some(errmsg.clone());
        } else {
            e.errcode = Some(-1);
            e.errmsg = Some(error.to_string());
        }
        e
    }
}

/// The `error` codes of `/v1`: a contract, clients match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 400: the request is malformed.
    BadRequest,
    /// 401: no Bearer key, or an unknown one.
    Unauthorized,
    /// 403: a known key outside its scope or network.
    Forbidden,
    /// 404: no such app, token or route.
    NotFound,
    /// 409: the change conflicts with the server's setup (an app of the config file).
    Conflict,
    /// 405: a known route, another method.
    MethodNotAllowed,
    /// 429: asked for a new token too soon after the last refresh.
    RateLimited,
    /// 502: WeChat refused or could not be reached, and no newer token exists.
    UpstreamError,
    /// 503: configured, but no token with life left is held yet.
    NotReady,
    /// 413: the request body is over the limit (SPEC.md, "Inbound limits").
    PayloadTooLarge,
    /// 500: the server failed (a handler panicked); the details are in its log.
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadRequest => "bad_request",
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not_found",
            Code::Conflict => "conflict",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::RateLimited => "rate_limited",
            Code::UpstreamError => "upstream_error",
            Code::NotReady => "not_ready",
            Code::PayloadTooLarge => "payload_too_large",
            Code::Internal => "internal_error",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Code::BadRequest => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::Conflict => StatusCode::CONFLICT,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::UpstreamError => StatusCode::BAD_GATEWAY,
            Code::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ApiError {
    /// A `/v1` error: `{"error": code, "message": message}`.
    pub fn v1(code: Code, message: impl Into<String>) -> Self {
        Self::new(code.status(), code.as_str()).with_message(message)
    }

    /// A failed refresh on `/v1`: 502 `upstream_error` with WeChat's errcode and
    /// errmsg, or 429 `rate_limited` when the quota guard keeps the rest of today's
    /// quota for scheduled refreshes.
    pub fn v1_refresh(error: &RefreshError) -> Self {
        let mut e = Self::refresh(error);
        e.error = match e.status {
            StatusCode::TOO_MANY_REQUESTS => Code::RateLimited.as_str(),
            StatusCode::SERVICE_UNAVAILABLE => Code::NotReady.as_str(),
            _ => Code::UpstreamError.as_str(),
        };
        e
    }

    /// 403 of the seed routes, `{"error": "forbidden"}`: the key is known, the token
    /// is outside its scope (401 stays for unknown keys, as in the original).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden").with_message(message)
    }

    /// Adds a `Retry-After` of `seconds`.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// A refresh that gave no token newer than the caller's:
    /// - WeChat refused, or today's quota is used up (45009): 502 `refresh failed`
    ///   with `errcode` and `errmsg`, the seed's failure shape;
    /// - the quota guard keeps the rest of today's quota for scheduled refreshes and no
    ///   token with life left is held: 429 `quota reserved`, so clients can tell "wait"
    ///   from "broken". (While a token has life left, a refused force refresh answers
    ///   200 with it and never gets here.)
    pub fn refresh(error: &RefreshError) -> Self {
        match error {
            RefreshError::Upstream(e) => Self::upstream(e),
            RefreshError::Quota(refusal @ Refusal::Exhausted { .. }) => {
                let mut e = Self::new(StatusCode::BAD_GATEWAY, "refresh failed")
                    .with_message(refusal.to_string());
                e.errcode = error.errcode();
                e.errmsg = Some(refusal.to_string());
                e
            }
            RefreshError::Quota(refusal @ Refusal::Reserved { .. }) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "quota reserved")
                    .with_message(refusal.to_string())
            }
            // No call could be made safely now; nothing is broken at WeChat.
            RefreshError::Deferred(_) | RefreshError::Task(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "refresh deferred")
                    .with_message(error.to_string())
                    .with_retry_after(1)
            }
            RefreshError::Busy => Self::new(StatusCode::TOO_MANY_REQUESTS, "busy")
                .with_message(error.to_string())
                .with_retry_after(1),
            // The caller's wait ended with WeChat still silent: the seed's failure shape.
            RefreshError::WaitEnded(_) => {
                let mut e = Self::new(StatusCode::BAD_GATEWAY, "refresh failed")
                    .with_message(error.to_string());
                e.errcode = Some(-1);
                e.errmsg = Some(error.to_string());
                e
            }
        }
    }
}

/// Whether `path` belongs to the `/v1` family, whose errors carry the codes of [`Code`];
/// every other path answers in the seed's style.
pub fn is_v1_path(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

impl ApiError {
    /// 413 for a body over `limit` bytes, in the style of the route family (`v1`: see
    /// [`is_v1_path`]).
    pub fn payload_too_large(v1: bool, limit: usize) -> Self {
        let message = format!("request body over {limit} bytes");
        if v1 {
            Self::v1(Code::PayloadTooLarge, message)
        } else {
            Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload too large").with_message(message)
        }
    }

    /// 500 after a handler panicked, in the style of the route family. The message
    /// says nothing about the panic: that is for the log.
    pub fn internal(v1: bool) -> Self {
        let message = "the server failed on this request; it is logged";
        if v1 {
            Self::v1(Code::Internal, message)
        } else {
            Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").with_message(message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = self.retry_after;
        let mut response = (self.status, Json(self)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}
