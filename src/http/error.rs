//! The only place where errors become HTTP responses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

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
    /// 429: asked for a new token too soon after the last refresh.
    RateLimited,
    /// 502: WeChat refused or could not be reached, and no newer token exists.
    UpstreamError,
    /// 503: configured, but no token with life left is held yet.
    NotReady,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadRequest => "bad_request",
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not_found",
            Code::RateLimited => "rate_limited",
            Code::UpstreamError => "upstream_error",
            Code::NotReady => "not_ready",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Code::BadRequest => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::UpstreamError => StatusCode::BAD_GATEWAY,
            Code::NotReady => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl ApiError {
    /// A `/v1` error: `{"error": code, "message": message}`.
    pub fn v1(code: Code, message: impl Into<String>) -> Self {
        Self::new(code.status(), code.as_str()).with_message(message)
    }

    /// 502 of `/v1`, with WeChat's errcode and errmsg.
    pub fn v1_upstream(error: &upstream::Error) -> Self {
        Self {
            error: Code::UpstreamError.as_str(),
            ..Self::upstream(error)
        }
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
