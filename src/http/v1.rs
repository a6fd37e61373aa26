//! The JSON API, `/v1`: tokens with their times, force refresh, status without values,
//! JS-SDK signatures and the OpenAPI document (`openapi/v1.json`). Bearer keys only, so
//! that keys never end up in access logs through query strings. Errors carry the stable
//! codes of [`Code`].

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::caller::{Denied, Peer, identify, permit, permit_app};
use super::error::{ApiError, Code};
use crate::auth::{Action, Caller, presented_secret};
use crate::config::Platform;
use crate::jssdk;
use crate::refresh::{Credential, Decision, LookupError, Token};

/// The OpenAPI 3 document of `/v1`, kept in the repository and checked against the
/// running server by `tests/it/openapi.rs`.
pub const OPENAPI: &str = include_str!("../../openapi/v1.json");

/// Route names in refusal logs (the matched patterns).
const ROUTE_TOKEN: &str = "/v1/tokens/{app}/{name}";
const ROUTE_REFRESH: &str = "/v1/tokens/{app}/{name}/refresh";
const ROUTE_STATUS: &str = "/v1/status";
const ROUTE_JSSDK: &str = "/v1/jssdk/{app}/signature";

/// Longest refresh body accepted: `{"stale": "<512-byte token>"}` and some room.
const MAX_BODY_LEN: usize = 4096;

fn denied(denied: Denied) -> ApiError {
    match denied {
        Denied::Unauthenticated => ApiError::v1(
            Code::Unauthorized,
            "send Authorization: Bearer <key> (the request secret or a client key)",
        ),
        Denied::Refused(refusal) => ApiError::v1(Code::Forbidden, refusal.to_string()),
    }
}

/// The caller, from the Bearer header only.
fn caller(
    state: &AppState,
    route: &'static str,
    headers: &HeaderMap,
    peer: Peer,
) -> Result<Caller, ApiError> {
    identify(
        &state.auth.load(),
        &state.refusals,
        route,
        presented_secret(headers, None),
        peer,
    )
    .map_err(denied)
}

fn path_pair(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    path.map(|Path(pair)| pair)
        .map_err(|e| ApiError::v1(Code::BadRequest, e.body_text()))
}

/// The credential `app`/`name`, after checking that the caller may do `action` on it.
fn credential(
    state: &AppState,
    caller: &Caller,
    route: &'static str,
    (app, name): (&str, &str),
    action: Action,
) -> Result<std::sync::Arc<Credential>, ApiError> {
    // Scope before existence, so that a client learns nothing outside its scope.
    permit(&state.refusals, caller, route, app, name, action).map_err(denied)?;
    state.refresher.credential(app, name).ok_or_else(|| {
        ApiError::v1(
            Code::NotFound,
            format!("no token {name:?} in app {app:?}; GET /v1/status lists them"),
        )
    })
}

/// RFC 3339 in UTC, to the second.
fn rfc3339(time: SystemTime) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    // humantime cannot write years past 9999; such a time can only come from a
    // corrupted store, which must not make the API panic.
    if write!(
        out,
        "{}",
        humantime::format_rfc3339_seconds(time.max(UNIX_EPOCH))
    )
    .is_err()
    {
        out = "9999-12-31T23:59:59Z".to_owned();
    }
    out
}

/// A token as `/v1` shows it.
#[derive(Serialize)]
struct TokenBody<'a> {
    app: &'a str,
    name: &'a str,
    value: &'a str,
    expires_in: u64,
    expires_at: String,
    refreshed_at: String,
}

fn token_body(cred: &Credential, token: &Token) -> Response {
    Json(TokenBody {
        app: &cred.key.app,
        name: &cred.key.name,
        value: &token.value,
        expires_in: token.remaining(SystemTime::now()).as_secs(),
        expires_at: rfc3339(token.expires_at),
        refreshed_at: rfc3339(token.refreshed_at),
    })
    .into_response()
}

/// `GET /v1/tokens/{app}/{name}`.
pub async fn get_token(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(&state, ROUTE_TOKEN, &headers, peer)?;
    let (app, name) = path_pair(path)?;
    let cred = credential(&state, &caller, ROUTE_TOKEN, (&app, &name), Action::Read)?;
    match state.refresher.serve(&app, &name) {
        Ok(token) => Ok(token_body(&cred, &token)),
        Err(LookupError::Unknown) => Err(ApiError::v1(Code::NotFound, "no such token")),
        Err(LookupError::NotReady) => Err(not_ready(&app, &name)),
    }
}

fn not_ready(app: &str, name: &str) -> ApiError {
    ApiError::v1(
        Code::NotReady,
        format!(
            "token {name} of app {app} has not been fetched yet (or has expired); retry shortly"
        ),
    )
}

/// The body of a refresh request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    /// The token WeChat rejected; without it, any newer token will do.
    stale: Option<String>,
}

/// `POST /v1/tokens/{app}/{name}/refresh` with an optional `{"stale": "..."}`.
pub async fn refresh(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(super::error::body_rejected)?;
    let caller = caller(&state, ROUTE_REFRESH, &headers, peer)?;
    let (app, name) = path_pair(path)?;
    let cred = credential(
        &state,
        &caller,
        ROUTE_REFRESH,
        (&app, &name),
        Action::Refresh,
    )?;
    let stale = parse_refresh_body(&body)?;
    match state.refresher.force_refresh(&cred, stale.as_deref()).await {
        Ok((_, Decision::RateLimited)) => {
            let wait = state
                .refresher
                .settings()
                .force_min_interval
                .as_secs()
                .max(1);
            Err(ApiError::v1(
                Code::RateLimited,
                format!(
                    "{app}/{name} was refreshed less than {wait} s ago; GET it, or send the rejected token as \"stale\""
                ),
            )
            .with_retry_after(wait))
        }
        Ok((token, decision)) => {
            tracing::debug!(
                app,
                token = name,
                decision = decision.as_str(),
                "force refresh"
            );
            Ok(token_body(&cred, &token))
        }
        Err(error) => Err(ApiError::v1_refresh(&error)),
    }
}

fn parse_refresh_body(body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.len() > MAX_BODY_LEN {
        return Err(ApiError::v1(
            Code::BadRequest,
            format!("body longer than {MAX_BODY_LEN} bytes"),
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice::<RefreshBody>(body)
        .map(|b| b.stale.filter(|s| !s.is_empty()))
        .map_err(|e| {
            ApiError::v1(
                Code::BadRequest,
                format!("body must be empty or {{\"stale\": \"<token>\"}}: {e}"),
            )
        })
}

/// `GET /v1/status`: every app and token the caller may read, with state and last
/// error, never a value.
pub async fn status(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&state, ROUTE_STATUS, &headers, peer)?;
    let now = SystemTime::now();
    let mut apps: Vec<Value> = Vec::new();
    for entry in state.refresher.snapshot().apps() {
        let app = entry.name();
        let tokens: Vec<Value> = entry
            .creds
            .iter()
            .filter(|c| caller.check(app, &c.key.name, Action::Read).is_ok())
            .map(|c| token_status(c, now))
            .collect();
        if tokens.is_empty() {
            continue;
        }
        let platform = entry.preset().map(|p| p.platform.as_str());
        apps.push(json!({"app": app, "platform": platform, "tokens": tokens}));
    }
    Ok(Json(json!({"apps": apps})).into_response())
}

fn token_status(cred: &Credential, now: SystemTime) -> Value {
    let status = cred.status();
    let current = cred.current();
    let state = match &current {
        Some(token) if token.is_live(now) => "ok",
        Some(_) => "expired",
        None => "pending",
    };
    let last_error = status.last_error.as_ref().map(|(error, at)| {
        json!({
            "errcode": error.errcode(),
            "outcome": error.outcome(),
            "message": error.to_string(),
            "at": rfc3339(*at),
        })
    });
    json!({
        "name": cred.key.name,
        "state": state,
        "expires_in": current.as_ref().filter(|t| t.is_live(now)).map(|t| t.remaining(now).as_secs()),
        "expires_at": current.as_ref().map(|t| rfc3339(t.expires_at)),
        "refreshed_at": current.as_ref().map(|t| rfc3339(t.refreshed_at)),
        "version": current.as_ref().map(|t| t.version),
        "consecutive_failures": status.consecutive_failures,
        "last_error": last_error,
    })
}

/// `GET /v1/jssdk/{app}/signature?url=URL`: what the page's `wx.config` (and, for WeCom
/// apps with an agent_config ticket, `wx.agentConfig`) needs.
pub async fn jssdk_signature(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let caller = caller(&state, ROUTE_JSSDK, &headers, peer)?;
    let Path(app) = path.map_err(|e| ApiError::v1(Code::BadRequest, e.body_text()))?;
    let raw_url = form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "url")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| {
            ApiError::v1(
                Code::BadRequest,
                "missing ?url= (the page URL, URL-encoded)",
            )
        })?;
    let url = jssdk::page_url(&raw_url).map_err(|m| ApiError::v1(Code::BadRequest, m))?;
    permit_app(&state.refusals, &caller, ROUTE_JSSDK, &app).map_err(denied)?;
    let entry = state.refresher.app(&app);
    let preset = entry.as_ref().and_then(|e| e.preset()).ok_or_else(|| {
        ApiError::v1(
            Code::NotFound,
            format!("no preset app {app:?}: JS-SDK signatures need an [apps.NAME] (or a registry app) of platform mp or wecom"),
        )
    })?;
    let ticket = ticket(&state, &caller, &app, "jsapi_ticket", "jsapi")?;
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let nonce = jssdk::nonce();
    let mut body = json!({
        "appId": preset.id,
        "timestamp": timestamp,
        "nonceStr": nonce,
        "signature": jssdk::sign(&ticket.value, &nonce, timestamp, url),
        "url": url,
    });
    let agent = match (preset.platform, preset.agentid) {
        (Platform::Wecom, Some(agentid))
            if state
                .refresher
                .credential(&app, "agent_config_ticket")
                .is_some()
                && caller
                    .check(&app, "agent_config_ticket", Action::Read)
                    .is_ok() =>
        {
            Some(agentid)
        }
        _ => None,
    };
    if let Some(agentid) = agent {
        let ticket = ticket_value(&state, &app, "agent_config_ticket")?;
        let nonce = jssdk::nonce();
        body["agentConfig"] = json!({
            "corpid": preset.id,
            "agentid": agentid,
            "timestamp": timestamp,
            "nonceStr": nonce,
            "signature": jssdk::sign(&ticket.value, &nonce, timestamp, url),
        });
    }
    Ok(Json(body).into_response())
}

/// The ticket `name` of `app`, checking the caller may read it.
fn ticket(
    state: &AppState,
    caller: &Caller,
    app: &str,
    name: &str,
    config_name: &str,
) -> Result<std::sync::Arc<Token>, ApiError> {
    permit(
        &state.refusals,
        caller,
        ROUTE_JSSDK,
        app,
        name,
        Action::Read,
    )
    .map_err(denied)?;
    if state.refresher.credential(app, name).is_none() {
        return Err(ApiError::v1(
            Code::NotFound,
            format!("app {app:?} has no {name}: add tickets = [\"{config_name}\"] to [apps.{app}]"),
        ));
    }
    ticket_value(state, app, name)
}

fn ticket_value(
    state: &AppState,
    app: &str,
    name: &str,
) -> Result<std::sync::Arc<Token>, ApiError> {
    state.refresher.serve(app, name).map_err(|e| match e {
        LookupError::Unknown => ApiError::v1(Code::NotFound, "no such ticket"),
        LookupError::NotReady => not_ready(app, name),
    })
}

/// `GET /v1/openapi.json`: public, like any API documentation; it holds no secret.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// JSON 404 for unknown paths under `/v1`.
pub fn not_found() -> ApiError {
    ApiError::v1(
        Code::NotFound,
        "no such route; GET /v1/openapi.json lists them",
    )
}
