//! `/v1/apps`: the runtime app registry over HTTP (SPEC.md, "Apps at runtime and
//! scale"). The request secret or an `admin = true` client key, as Bearer; a
//! definition is the JSON form of an `[apps.NAME]` table; secrets are never shown.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::caller::{Denied, Peer, identify};
use super::error::{ApiError, Code};
use crate::auth::presented_secret;
use crate::domain::is_valid_name;
use crate::registry::{self, MAX_PAGE, Put};

const ROUTE_APPS: &str = "/v1/apps";
const ROUTE_APP: &str = "/v1/apps/{app}";
const ROUTE_RELOAD: &str = "/v1/reload";

/// Apps listed per page when `limit` is not given.
const DEFAULT_PAGE: usize = 100;

/// Checks the caller may manage the registry.
pub(super) fn admin(
    state: &AppState,
    route: &'static str,
    headers: &HeaderMap,
    peer: Peer,
) -> Result<(), ApiError> {
    let denied = |denied: Denied| match denied {
        Denied::Unauthenticated => ApiError::v1(
            Code::Unauthorized,
            "send Authorization: Bearer <key> (the request secret or an admin client's key)",
        ),
        Denied::Refused(refusal) => ApiError::v1(Code::Forbidden, refusal.to_string()),
    };
    let caller = identify(
        &state.auth.load(),
        &state.refusals,
        route,
        presented_secret(headers, None),
        peer,
    )
    .map_err(denied)?;
    caller
        .check_admin()
        .map_err(|refusal| denied(Denied::Refused(refusal)))
}

pub(super) fn app_name(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(name) = path.map_err(|e| ApiError::v1(Code::BadRequest, e.body_text()))?;
    if is_valid_name(&name) {
        Ok(name)
    } else {
        Err(ApiError::v1(
            Code::BadRequest,
            format!(
                "{name:?} is not an app name: 1 to 64 letters, digits, '_', '-' and '.', not starting with '.'"
            ),
        ))
    }
}

pub(super) fn registry_error(error: registry::Error) -> ApiError {
    match error {
        registry::Error::Invalid(message) => ApiError::v1(Code::BadRequest, message),
        registry::Error::Conflict(message) => ApiError::v1(Code::Conflict, message),
        registry::Error::NotFound(name) => ApiError::v1(
            Code::NotFound,
            format!("no app {name:?}; GET /v1/apps lists them"),
        ),
        registry::Error::Store(error) => {
            tracing::error!(%error, "the registry could not use the store");
            ApiError::v1(
                Code::NotReady,
                format!(
                    "the store did not answer ({error}); the change may or may not have been stored: retrying is safe"
                ),
            )
        }
    }
}

/// `PUT /v1/apps/{app}`: adds (201) or replaces (200) a registry app.
pub async fn put(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(super::error::body_rejected)?;
    admin(&state, ROUTE_APP, &headers, peer)?;
    let name = app_name(path)?;
    let definition: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::v1(
            Code::BadRequest,
            format!("the body must be a JSON object (the keys of an [apps.NAME] table): {e}"),
        )
    })?;
    let (put, shown) = state
        .registry
        .put(&name, definition)
        .await
        .map_err(registry_error)?;
    Ok(put_response(put, shown))
}

/// 201 with the thing shown when it was created, 200 when replaced or unchanged.
pub(super) fn put_response(put: Put, shown: serde_json::Value) -> Response {
    let status = match put {
        Put::Created => StatusCode::CREATED,
        Put::Replaced | Put::Unchanged => StatusCode::OK,
    };
    (status, Json(shown)).into_response()
}

/// `GET /v1/apps/{app}`.
pub async fn get(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    admin(&state, ROUTE_APP, &headers, peer)?;
    let name = app_name(path)?;
    match state.registry.get(&name).await {
        Some(shown) => Ok(Json(shown).into_response()),
        None => Err(registry_error(registry::Error::NotFound(name))),
    }
}

/// `DELETE /v1/apps/{app}`: 204.
pub async fn delete(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    admin(&state, ROUTE_APP, &headers, peer)?;
    let name = app_name(path)?;
    state.registry.delete(&name).await.map_err(registry_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/apps?limit=N&after=NAME`: apps by name, a page at a time.
pub async fn list(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    admin(&state, ROUTE_APPS, &headers, peer)?;
    let (limit, after) = page_query(query.as_deref())?;
    let (apps, next) = state.registry.list(limit, after.as_deref()).await;
    Ok(Json(json!({"apps": apps, "next": next})).into_response())
}

/// A list's `?limit=N&after=NAME` (100 by default, at most [`MAX_PAGE`]).
pub(super) fn page_query(query: Option<&str>) -> Result<(usize, Option<String>), ApiError> {
    let mut limit = DEFAULT_PAGE;
    let mut after = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::v1(
                            Code::BadRequest,
                            format!("limit must be a number from 1 to {MAX_PAGE}"),
                        )
                    })?;
            }
            "after" => after = Some(value.into_owned()),
            other => {
                return Err(ApiError::v1(
                    Code::BadRequest,
                    format!("unknown parameter {other:?}: use limit= and after="),
                ));
            }
        }
    }
    Ok((limit, after))
}

/// `POST /v1/reload`: reads the config file again (as SIGHUP does) and says what
/// changed; a file that does not load changes nothing and is a 400 naming the key.
pub async fn reload(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&state, ROUTE_RELOAD, &headers, peer)?;
    match state.reloader.reload().await {
        Ok(summary) => Ok(Json(summary).into_response()),
        Err(error) => {
            tracing::error!(%error, "config not reloaded");
            Err(match error {
                crate::reload::Error::Invalid(message) => ApiError::v1(Code::BadRequest, message),
                crate::reload::Error::NoFile | crate::reload::Error::Conflict(_) => {
                    ApiError::v1(Code::Conflict, error.to_string())
                }
                crate::reload::Error::Store(_) => ApiError::v1(Code::NotReady, error.to_string()),
            })
        }
    }
}
