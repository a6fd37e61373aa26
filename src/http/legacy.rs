//! The Python original's routes, with its exact shapes and status codes:
//! `GET /wechat/token?type=NAME&secret=S` and `GET /wechat/token/forcerefresh?...`.

use std::borrow::Cow;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::auth::presented_secret;
use crate::refresh::{Credential, Token};

/// Longest query string accepted. Real queries are a few hundred bytes (a 512-byte
/// `stale` token at most); anything longer is hostile or broken.
const MAX_QUERY_LEN: usize = 4096;

/// The parameters of a seed request, each given at most once. Borrowed from the query
/// string unless percent-decoding changed them: the token route allocates nothing here.
#[derive(Default)]
struct Params<'q> {
    kind: Option<Cow<'q, str>>,
    secret: Option<Cow<'q, str>>,
    app: Option<Cow<'q, str>>,
    stale: Option<Cow<'q, str>>,
}

impl<'q> Params<'q> {
    fn parse(query: Option<&'q str>) -> Result<Self, ApiError> {
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
            *slot = Some(value);
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
        (Some(app), _) => app.as_ref(),
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

/// `GET /wechat/token`: the current token from memory. The hot path: the request is
/// taken whole so that neither headers nor query are copied.
pub async fn get_token(State(state): State<AppState>, request: Request) -> Response {
    let result = Params::parse(request.uri().query()).and_then(|params| {
        let cred = resolve(&state, request.headers(), &params)?;
        let now = SystemTime::now();
        match cred.live_token(now) {
            Some(token) => Ok(token_response(&cred.key.name, &token, now)),
            None => Err(ApiError::not_ready(&cred.key.app, &cred.key.name)),
        }
    });
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /wechat/token/forcerefresh`: a token newer than `stale`, at most one upstream
/// call however many clients ask at once.
pub async fn force_refresh(State(state): State<AppState>, request: Request) -> Response {
    let params = match Params::parse(request.uri().query()) {
        Ok(params) => params,
        Err(e) => return e.into_response(),
    };
    let cred = match resolve(&state, request.headers(), &params) {
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
            token_response(&cred.key.name, &token, SystemTime::now())
        }
        Err(error) => ApiError::upstream(&error).into_response(),
    }
}

/// `{"NAME": "<token>", "expires_in": N}`, written straight into one buffer: it is the
/// hot path and its key is dynamic.
fn token_response(name: &str, token: &Token, now: SystemTime) -> Response {
    let mut body = Vec::with_capacity(token.value.len() + name.len() + 40);
    body.push(b'{');
    write_json_str(&mut body, name);
    body.push(b':');
    write_json_str(&mut body, &token.value);
    body.extend_from_slice(b",\"expires_in\":");
    body.extend_from_slice(token.remaining(now).as_secs().to_string().as_bytes());
    body.push(b'}');
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn write_json_str(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(out, text).expect("writing a str into a Vec cannot fail");
}
