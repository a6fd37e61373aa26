//! The only place where errors become HTTP responses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::upstream;

/// An error response: `{"error": CODE, "message": ..., "errcode"?, "errmsg"?}`.
///
/// The seed routes use the Python original's `error` strings ("invalid request",
/// "not found"), which clients match on; the extra fields are additions.
#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}
