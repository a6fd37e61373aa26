//! The Python original's routes, with its exact shapes and status codes:
//! `GET /wechat/token?type=NAME&secret=S` and `GET /wechat/token/forcerefresh?...`.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::auth::presented_secret;
use crate::refresh::{Credential, LookupError, Token};

/// Longest query string accepted. Real queries are a few hundred bytes (a 512-byte
/// `stale` token at most); anything longer is hostile or broken.
const MAX_QUERY_LEN: usize = 4096;

/// The parameters of a seed request, each given at most once.
#[derive(Default)]
struct Params {
    kind: Option<String>,
    secret: Option<String>,
    app: Option<String>,
    stale: Option<String>,
}

impl Params {
    fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let query = query.unwrap_or("");
        if query.len() > MAX_QUERY_LEN {
            return Err(ApiError::bad_request(format!(
                "query string longer than {MAX_QUERY_LEN} bytes"
            )));
        }
        let mut params = Params::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match key.as_ref() {
                "type" => &mut params.kind,
                "secret" => &mut params.secret,
                "app" => &mut params.app,
                "stale" => &mut params.stale,
                _ => continue, // unknown parameters are ignored, as the original did
            };
            if slot.is_some() {
                return Err(ApiError::bad_request(format!(
                    "parameter {key} given more than once"
                )));
            }
            *slot = Some(value.into_owned());
        }
        Ok(params)
    }
}

/// Authenticates, then finds the credential the request names.
fn resolve<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
    params: &Params,
) -> Result<&'a std::sync::Arc<Credential>, ApiError> {
    let secret = presented_secret(headers, params.secret.as_deref())
        .ok_or_else(ApiError::invalid_request)?;
    if !state.auth.is_request_secret(secret) {
        return Err(ApiError::invalid_request());
    }
    let app = match (&params.app, &state.default_app) {
        (Some(app), _) => app.as_str(),
        (None, Some(default)) => default,
        (None, None) => {
            return Err(ApiError::not_found()
                .with_message("several apps are configured: name one with app="));
        }
    };
    let name = params.kind.as_deref().ok_or_else(|| {
        ApiError::not_found().with_message("missing type= (the token name, e.g. access_token)")
    })?;
    state
        .refresher
        .credential(app, name)
        .ok_or_else(ApiError::not_found)
}

/// `GET /wechat/token`: the current token from memory.
pub async fn get_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let result = Params::parse(query.as_deref()).and_then(|params| {
        let cred = resolve(&state, &headers, &params)?;
        match state.refresher.serve(&cred.key.app, &cred.key.name) {
            Ok(token) => Ok(token_response(&cred.key.name, &token)),
            Err(LookupError::Unknown) => Err(ApiError::not_found()),
            Err(LookupError::NotReady) => Err(ApiError::not_ready(&cred.key.app, &cred.key.name)),
        }
    });
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /wechat/token/forcerefresh`: a token newer than `stale`, at most one upstream
/// call however many clients ask at once.
pub async fn force_refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match Params::parse(query.as_deref()) {
        Ok(params) => params,
        Err(e) => return e.into_response(),
    };
    let cred = match resolve(&state, &headers, &params) {
        Ok(cred) => cred.clone(),
        Err(e) => return e.into_response(),
    };
    match state
        .refresher
        .force_refresh(&cred, params.stale.as_deref())
        .await
    {
        Ok((token, decision)) => {
            tracing::debug!(app = %cred.key.app, token = %cred.key.name, decision = decision.as_str(), "force refresh");
            token_response(&cred.key.name, &token)
        }
        Err(error) => ApiError::refresh(&error).into_response(),
    }
}

/// `{"NAME": "<token>", "expires_in": N}`, built by hand: it is the hot path and its
/// key is dynamic.
fn token_response(name: &str, token: &Token) -> Response {
    let expires_in = token.remaining(std::time::SystemTime::now()).as_secs();
    let body = format!(
        "{{{}:{},\"expires_in\":{expires_in}}}",
        serde_json::Value::from(name),
        serde_json::Value::from(token.value.as_str())
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
