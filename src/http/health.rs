//! `/healthz` and `/readyz`: no authentication, and never a token value.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

/// `GET /healthz`: the process is up and answering.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 `{"ready": true}` when every configured token is held with life
/// left, no API is stopped by WeChat's 45009 or by an error only a person can fix, and
/// the store can be written; else 503 `{"ready": false, "problems": [...]}`.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let problems = state.refresher.readiness_problems().await;
    if problems.is_empty() {
        (StatusCode::OK, Json(json!({"ready": true}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "problems": problems})),
        )
            .into_response()
    }
}
