//! The `/sim/*` admin surface: stats, validity checks, fault injection, reset, clock.
//!
//! Errors here are not WeChat's: they are `{"error": CODE, "message": ...}` with a 4xx,
//! the style of the server's own `/v1` API, since only tests and people call these.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::clock::MAX_OFFSET;
use super::faults::Fault;
use super::routes::Ctx;
use super::state::{Kind, Lookup};

/// The `/sim/*` routes.
pub fn router() -> Router<Ctx> {
    Router::new()
        .route("/sim/stats", get(stats))
        .route("/sim/valid", get(valid))
        .route("/sim/faults", post(faults))
        .route("/sim/reset", post(reset))
        .route("/sim/advance", post(advance))
}

/// A 400 with a message that says what to send instead.
fn bad_request(code: &str, message: impl std::fmt::Display) -> Response {
    let body = json!({"error": code, "message": message.to_string()});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

async fn stats(State(ctx): State<Ctx>) -> Response {
    Json(ctx.sim.stats()).into_response()
}

/// `?access_token=T` or `?ticket=T`: would WeChat accept it now, and if not, which error.
async fn valid(State(ctx): State<Ctx>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let mut params = form_urlencoded::parse(query.as_bytes());
    let Some((name, value)) = params.find(|(k, _)| k == "access_token" || k == "ticket") else {
        return bad_request("bad_request", "give ?access_token=TOKEN or ?ticket=TICKET");
    };
    let state = ctx.sim.lock();
    let body = match state.lookup(&value, name == "access_token") {
        Lookup::Valid(cred, left) => json!({
            "valid": true, "reason": "ok", "errcode": 0, "kind": kind_name(cred.kind),
            "app": cred.owner.id, "expires_in": left.as_secs(),
        }),
        Lookup::Expired(cred) => json!({
            "valid": false, "reason": "expired", "errcode": 42001,
            "kind": kind_name(cred.kind), "app": cred.owner.id,
        }),
        Lookup::Replaced(cred) => json!({
            "valid": false, "reason": "replaced", "errcode": 40001,
            "kind": kind_name(cred.kind), "app": cred.owner.id,
        }),
        Lookup::Unknown => json!({"valid": false, "reason": "unknown", "errcode": 40014}),
    };
    Json(body).into_response()
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Token => "access_token",
        Kind::StableToken => "stable_access_token",
        Kind::CorpToken => "wecom_access_token",
        Kind::JsapiTicket => "jsapi_ticket",
        Kind::WxCardTicket => "wx_card_ticket",
        Kind::CorpTicket => "wecom_jsapi_ticket",
        Kind::AgentTicket => "agent_config_ticket",
        Kind::ComponentToken => "component_access_token",
        Kind::AuthorizerToken => "authorizer_access_token",
    }
}

async fn faults(State(ctx): State<Ctx>, body: Bytes) -> Response {
    match Fault::from_json(&body) {
        Ok(fault) => {
            let (path, count) = (fault.endpoint.path(), fault.count);
            ctx.sim.inject_fault(fault);
            let pending = ctx
                .sim
                .stats()
                .faults_pending
                .get(path)
                .copied()
                .unwrap_or(0);
            Json(json!({"ok": true, "endpoint": path, "count": count, "pending": pending}))
                .into_response()
        }
        Err(e) => bad_request("bad_fault", e),
    }
}

async fn reset(State(ctx): State<Ctx>) -> Response {
    ctx.sim.reset();
    Json(json!({"ok": true})).into_response()
}

/// The body of `POST /sim/advance`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    seconds: u64,
}

async fn advance(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let seconds = match serde_json::from_slice::<Advance>(&body) {
        Ok(Advance { seconds }) if seconds <= MAX_OFFSET.as_secs() => seconds,
        Ok(_) => {
            return bad_request(
                "bad_advance",
                "\"seconds\" is too large (at most 100 years)",
            );
        }
        Err(e) => return bad_request("bad_advance", format!("expected {{\"seconds\": N}}: {e}")),
    };
    ctx.sim.advance(Duration::from_secs(seconds));
    let offset = ctx.sim.stats().clock_offset_secs;
    Json(json!({"ok": true, "advanced": seconds, "clock_offset_secs": offset})).into_response()
}
