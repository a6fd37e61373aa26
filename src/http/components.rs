//! The Open Platform over HTTP (SPEC.md, "Open Platform"): WeChat's authorisation-event
//! URL, which WeChat's signature authenticates, and `/v1/components/...`, which needs
//! the request secret or an admin client key like `/v1/apps`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::apps::{admin, app_name, page_query, put_response, registry_error};
use super::caller::Peer;
use super::error::{ApiError, Code};
use crate::component::Error;
use crate::component::events::Signed;
use crate::wxcrypt::MAX_BODY;

const ROUTE_PREAUTHCODE: &str = "/v1/components/{app}/preauthcode";
const ROUTE_AUTHORIZERS: &str = "/v1/components/{app}/authorizers";
const ROUTE_AUTHORIZER: &str = "/v1/components/{app}/authorizers/{appid}";
const ROUTE_SYNC: &str = "/v1/components/{app}/sync";

fn component_error(error: Error) -> ApiError {
    match error {
        Error::NotFound(name) => ApiError::v1(
            Code::NotFound,
            format!(
                "no Open Platform app {name:?} (an [apps.NAME] table with platform = \"component\")"
            ),
        ),
        Error::Invalid(message) | Error::Rejected(message) => {
            ApiError::v1(Code::BadRequest, message)
        }
        Error::Upstream(message) | Error::WeChat { message, .. } => {
            ApiError::v1(Code::UpstreamError, message)
        }
        Error::Unavailable(message) => ApiError::v1(Code::NotReady, message),
        Error::Registry(error) => registry_error(error),
    }
}

fn plain(status: StatusCode, text: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// `POST /wechat/component/{app}/events`: WeChat's pushes. `success` (text/plain) for
/// every message that opened, acted on or not; 400 for one that did not open or lacks
/// a field, which changes nothing; 503 when it could not be acted on now (WeChat
/// pushes it again).
pub async fn events(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Signed>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(Path(name)) = path else {
        return plain(StatusCode::NOT_FOUND, "no such platform\n".into());
    };
    let Ok(Query(signed)) = query else {
        return plain(
            StatusCode::BAD_REQUEST,
            "the query must be WeChat's ?timestamp=&nonce=&msg_signature=&encrypt_type=aes\n"
                .into(),
        );
    };
    let body = match body {
        Ok(body) if body.len() <= MAX_BODY => body,
        Ok(_) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("an event is at most {MAX_BODY} bytes\n"),
            );
        }
        Err(error) => return plain(error.status(), format!("{}\n", error.body_text())),
    };
    // Run to the end whatever becomes of the connection (WeChat gives up after 5 s;
    // a shutdown's deadline closes connections): an authorisation code exchanged and
    // not yet saved must not be dropped halfway with the request.
    let platforms = state.platforms.clone();
    let app = name.clone();
    let handled = tokio::spawn(async move { platforms.handle_event(&app, &signed, &body).await })
        .await
        .unwrap_or_else(|e| {
            Err(Error::Unavailable(format!(
                "the event's handling failed: {e}"
            )))
        });
    match handled {
        Ok(handled) => {
            tracing::debug!(app = %name, ?handled, "component event handled");
            plain(StatusCode::OK, "success".into())
        }
        Err(error) => {
            let status = match &error {
                Error::NotFound(_) => StatusCode::NOT_FOUND,
                Error::Rejected(_) | Error::Invalid(_) => StatusCode::BAD_REQUEST,
                Error::Registry(crate::registry::Error::Invalid(_)) => StatusCode::BAD_REQUEST,
                Error::Upstream(_)
                | Error::WeChat { .. }
                | Error::Unavailable(_)
                | Error::Registry(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            if status == StatusCode::SERVICE_UNAVAILABLE {
                tracing::error!(app = %name, %error, "a component event could not be acted on; WeChat will push it again");
                // The cause is in the log; the sender learns only to try again.
                return plain(status, "not acted on now; push it again later\n".into());
            }
            tracing::warn!(app = %name, %error, "a component event was refused");
            plain(status, format!("{error}\n"))
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PreauthRequest {
    redirect_uri: String,
    #[serde(default = "both_kinds")]
    auth_type: u8,
}

/// Official Accounts and Mini Programs (WeChat's `auth_type=3`).
fn both_kinds() -> u8 {
    3
}

fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    what: &str,
) -> Result<T, ApiError> {
    let body = body.map_err(super::error::body_rejected)?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::v1(Code::BadRequest, format!("the body must be {what}: {e}")))
}

/// `POST /v1/components/{app}/preauthcode` `{"redirect_uri", "auth_type"}`.
pub async fn preauthcode(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    admin(&state, ROUTE_PREAUTHCODE, &headers, peer)?;
    let name = app_name(path)?;
    let request: PreauthRequest =
        json_body(body, r#"{"redirect_uri": "https://...", "auth_type": 3}"#)?;
    let page = state
        .platforms
        .preauthcode(&name, &request.redirect_uri, request.auth_type)
        .await
        .map_err(component_error)?;
    Ok(Json(page).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    refresh_token: String,
}

fn authorizer_path(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    let Path((name, appid)) = path.map_err(|e| ApiError::v1(Code::BadRequest, e.body_text()))?;
    let name = app_name(Ok(Path(name)))?;
    Ok((name, appid))
}

/// `PUT /v1/components/{app}/authorizers/{appid}` `{"refresh_token"}`: imports an
/// authorizer (201) or replaces its refresh token (200).
pub async fn put_authorizer(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    admin(&state, ROUTE_AUTHORIZER, &headers, peer)?;
    let (name, appid) = authorizer_path(path)?;
    let request: ImportRequest = json_body(body, r#"{"refresh_token": "..."}"#)?;
    let (put, shown) = state
        .platforms
        .put_authorizer(&name, &appid, &request.refresh_token)
        .await
        .map_err(component_error)?;
    Ok(put_response(put, shown))
}

/// `DELETE /v1/components/{app}/authorizers/{appid}`: 204.
pub async fn delete_authorizer(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    admin(&state, ROUTE_AUTHORIZER, &headers, peer)?;
    let (name, appid) = authorizer_path(path)?;
    state
        .platforms
        .delete_authorizer(&name, &appid)
        .await
        .map_err(component_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/components/{app}/authorizers?limit=&after=`: never a refresh token.
pub async fn authorizers(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    admin(&state, ROUTE_AUTHORIZERS, &headers, peer)?;
    let name = app_name(path)?;
    let (limit, after) = page_query(query.as_deref())?;
    let (list, next): (Vec<Value>, Option<String>) = state
        .platforms
        .authorizers(&name, limit, after.as_deref())
        .map_err(component_error)?;
    Ok(Json(json!({"authorizers": list, "next": next})).into_response())
}

/// `POST /v1/components/{app}/sync`: imports every authorizer of
/// `api_get_authorizer_list`.
pub async fn sync(
    State(state): State<AppState>,
    peer: Peer,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    admin(&state, ROUTE_SYNC, &headers, peer)?;
    let name = app_name(path)?;
    let summary = state.platforms.sync(&name).await.map_err(component_error)?;
    Ok(Json(summary).into_response())
}
