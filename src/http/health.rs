//! `/`, `/healthz` and `/readyz`: no authentication, and never a token value.

use std::fmt::Write;
use std::time::SystemTime;

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

/// Problems that make this instance unable to serve every token.
async fn problems(state: &AppState) -> Vec<String> {
    let now = SystemTime::now();
    let store = state.refresher.store();
    let mut problems = Vec::new();
    if let Err(error) = store.ping().await {
        problems.push(format!(
            "store ({}) unreachable: {error}; serving the tokens held in memory",
            store.backend()
        ));
    }
    problems.extend(
        state
            .refresher
            .credentials()
            .iter()
            .filter(|cred| cred.live_token(now).is_none())
            .map(|cred| {
                let mut problem = format!("{}: no token with life left", cred.key);
                if let Some((error, _)) = cred.status().last_error {
                    let _ = write!(problem, " (last error: {error})");
                }
                problem
            }),
    );
    problems
}

/// `GET /readyz`: 200 when every configured token is held with life left, else 503
/// with the list of what is wrong.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let problems = problems(&state).await;
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

/// `GET /`: a short plain-text status, one line per token.
pub async fn index(State(state): State<AppState>) -> String {
    let now = SystemTime::now();
    let mut out = format!("wechat-token-server {}\n\n", env!("CARGO_PKG_VERSION"));
    for cred in state.refresher.credentials() {
        let status = cred.status();
        let state_text = match cred.current() {
            Some(token) if token.is_live(now) => format!(
                "ok, expires in {} s, version {}, last refresh {}",
                token.remaining(now).as_secs(),
                token.version,
                token.trigger.as_str()
            ),
            Some(_) => "expired".to_owned(),
            None => "not fetched yet".to_owned(),
        };
        let _ = writeln!(out, "{:<32} {state_text}", cred.key.to_string());
        if status.consecutive_failures > 0
            && let Some((error, _)) = &status.last_error
        {
            let _ = writeln!(
                out,
                "{:<32} failing ({} in a row): {error}",
                "", status.consecutive_failures
            );
        }
    }
    out.push_str("\nTokens: GET /wechat/token?app=APP&type=NAME&secret=...   JSON API: /v1/openapi.json   Health: /healthz /readyz\n");
    out
}
