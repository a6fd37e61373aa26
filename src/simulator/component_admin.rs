//! `/sim/component/*`: what WeChat does on its own for an Open Platform component (push
//! a verify ticket, an account authorises or withdraws, a refresh token rotates), on
//! demand, for tests and demos.
//!
//! Like the rest of `/sim/*`, errors are `{"error": CODE, "message": ...}` with a 4xx (or
//! 502 when the receiver could not be reached).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::push::{PushError, Pushed, TicketPush};
use super::routes::Ctx;

/// The `/sim/component/*` routes.
pub fn router() -> Router<Ctx> {
    Router::new()
        .route("/sim/component/push_ticket", post(push_ticket))
        .route("/sim/component/authorize", post(authorize))
        .route("/sim/component/unauthorize", post(unauthorize))
        .route("/sim/component/rotate", post(rotate))
        .route("/sim/component/url", post(url))
}

fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    let body = json!({"error": code, "message": message.to_string()});
    (status, Json(body)).into_response()
}

fn push_error(e: &PushError) -> Response {
    let (status, code) = match e {
        PushError::UnknownComponent(_) => (StatusCode::NOT_FOUND, "unknown_component"),
        PushError::UnknownAuthorizer { .. } => (StatusCode::NOT_FOUND, "unknown_authorizer"),
        PushError::NoUrl(_) | PushError::BadUrl(_) => (StatusCode::BAD_REQUEST, "bad_url"),
        PushError::BadKey(..) => (StatusCode::CONFLICT, "bad_component_key"),
        PushError::Delivery { .. } => (StatusCode::BAD_GATEWAY, "push_failed"),
    };
    error(status, code, e)
}

/// Parses a body, or says what to send instead.
fn parse<T: DeserializeOwned>(body: &Bytes, expected: &str) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("expected {expected}: {e}"))
}

fn field<'a>(pushed: &'a Pushed, name: &str) -> &'a str {
    pushed.fields.get(name).map_or("", String::as_str)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushTicket {
    component_appid: String,
    url: Option<String>,
    create_time: Option<u64>,
    ticket: Option<String>,
}

async fn push_ticket(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let req: PushTicket = match parse(
        &body,
        r#"{"component_appid", "url", "create_time"?: unix seconds, "ticket"?}"#,
    ) {
        Ok(req) => req,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", message),
    };
    let push = TicketPush {
        create_time: req.create_time,
        ticket: req.ticket,
    };
    match ctx
        .sim
        .push_ticket_with(&req.component_appid, req.url.as_deref(), push)
        .await
    {
        Ok(pushed) => {
            let create_time: u64 = field(&pushed, "CreateTime").parse().unwrap_or(0);
            Json(json!({
                "ticket": field(&pushed, "ComponentVerifyTicket"),
                "create_time": create_time,
                "status": pushed.status,
                "reply": pushed.reply,
            }))
            .into_response()
        }
        Err(e) => push_error(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Authorize {
    component_appid: String,
    authorizer_appid: String,
    url: Option<String>,
    #[serde(default)]
    update: bool,
}

async fn authorize(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let req: Authorize = match parse(
        &body,
        r#"{"component_appid", "authorizer_appid", "url", "update"?: bool}"#,
    ) {
        Ok(req) => req,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", message),
    };
    if req.authorizer_appid.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "\"authorizer_appid\" is empty",
        );
    }
    match ctx
        .sim
        .authorize(
            &req.component_appid,
            &req.authorizer_appid,
            req.url.as_deref(),
            req.update,
        )
        .await
    {
        Ok(pushed) => Json(json!({
            "authorization_code": field(&pushed, "AuthorizationCode"),
            "info_type": field(&pushed, "InfoType"),
            "status": pushed.status,
            "reply": pushed.reply,
        }))
        .into_response(),
        Err(e) => push_error(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Authorizer {
    component_appid: String,
    authorizer_appid: String,
    url: Option<String>,
}

async fn unauthorize(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let req: Authorizer = match parse(&body, r#"{"component_appid", "authorizer_appid", "url"}"#) {
        Ok(req) => req,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", message),
    };
    match ctx
        .sim
        .unauthorize(
            &req.component_appid,
            &req.authorizer_appid,
            req.url.as_deref(),
        )
        .await
    {
        Ok(pushed) => Json(json!({"status": pushed.status, "reply": pushed.reply})).into_response(),
        Err(e) => push_error(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotate {
    component_appid: String,
    authorizer_appid: String,
}

async fn rotate(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let req: Rotate = match parse(&body, r#"{"component_appid", "authorizer_appid"}"#) {
        Ok(req) => req,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", message),
    };
    match ctx
        .sim
        .rotate_refresh_token(&req.component_appid, &req.authorizer_appid)
    {
        Ok(()) => Json(json!({"ok": true})).into_response(),
        Err(e) => push_error(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Url {
    component_appid: String,
    url: String,
}

async fn url(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let req: Url = match parse(&body, r#"{"component_appid", "url"}"#) {
        Ok(req) => req,
        Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", message),
    };
    match ctx.sim.set_component_url(&req.component_appid, &req.url) {
        Ok(()) => Json(json!({"ok": true})).into_response(),
        Err(e) => push_error(&e),
    }
}
