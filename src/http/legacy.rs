//! The Python original's routes, with its exact shapes and status codes:
//! `GET /wechat/token?type=NAME&secret=S` and `GET /wechat/token/forcerefresh?...`.

use std::borrow::Cow;
use std::io::Write;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::caller::{Denied, Peer, identify, permit};
use super::error::ApiError;
use crate::auth::{Action, presented_secret};
use crate::refresh::{Catalog, Credential, Token};

/// Longest query string accepted. Real queries are a few hundred bytes (a 512-byte
/// `stale` token at most); anything longer is hostile or broken.
const MAX_QUERY_LEN: usize = 4096;

/// Route names in refusal logs.
const ROUTE_TOKEN: &str = "/wechat/token";
const ROUTE_FORCE: &str = "/wechat/token/forcerefresh";

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

/// The seed's answers to a denied request: 401 `invalid request` as in the original,
/// and 403 `forbidden` for a client key outside its scope.
fn denied(denied: Denied) -> ApiError {
    match denied {
        Denied::Unauthenticated => ApiError::invalid_request(),
        Denied::Refused(refusal) => ApiError::forbidden(refusal.to_string()),
    }
}

/// The token a seed request means by `name`: `ticket` is the jsapi ticket of apps
/// that have no token called `ticket` (presets name it `jsapi_ticket`).
fn canonical_name<'a>(catalog: &Catalog, app: &str, name: &'a str) -> &'a str {
    if name == "ticket"
        && catalog.credential(app, name).is_none()
        && catalog.credential(app, "jsapi_ticket").is_some()
    {
        "jsapi_ticket"
    } else {
        name
    }
}

/// Authenticates, checks the caller's scope, then finds the credential the request
/// names.
fn resolve<'a>(
    state: &AppState,
    catalog: &'a Catalog,
    route: &'static str,
    action: Action,
    (headers, peer): (&HeaderMap, Peer),
    params: &Params,
) -> Result<&'a std::sync::Arc<Credential>, ApiError> {
    let secret = presented_secret(headers, params.secret.as_deref());
    let caller =
        identify(&state.auth.load(), &state.refusals, route, secret, peer).map_err(denied)?;
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
    let name = canonical_name(catalog, app, name);
    // Scope before existence, so that a client learns nothing outside its scope.
    permit(&state.refusals, &caller, route, app, name, action).map_err(denied)?;
    catalog
        .credential(app, name)
        .ok_or_else(ApiError::not_found)
}

/// `GET /wechat/token`: the current token from memory. The hot path: the request is
/// taken whole so that neither headers nor query are copied.
pub async fn get_token(State(state): State<AppState>, peer: Peer, request: Request) -> Response {
    // The catalog of this moment, borrowed for the request: no reference count is
    // touched on the hot path.
    let catalog = state.refresher.catalog();
    let result = Params::parse(request.uri().query()).and_then(|params| {
        let cred = resolve(
            &state,
            &catalog,
            ROUTE_TOKEN,
            Action::Read,
            (request.headers(), peer),
            &params,
        )?;
        let now = SystemTime::now();
        match cred.with_live_token(now, |token| {
            token_response(reply_name(&params, cred), token, now)
        }) {
            Some(response) => Ok(response),
            None => Err(ApiError::not_ready(&cred.key.app, &cred.key.name)),
        }
    });
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /wechat/token/forcerefresh`: a token newer than `stale`, at most one upstream
/// call however many clients ask at once.
pub async fn force_refresh(
    State(state): State<AppState>,
    peer: Peer,
    request: Request,
) -> Response {
    let params = match Params::parse(request.uri().query()) {
        Ok(params) => params,
        Err(e) => return e.into_response(),
    };
    let cred = match resolve(
        &state,
        &state.refresher.catalog(),
        ROUTE_FORCE,
        Action::Refresh,
        (request.headers(), peer),
        &params,
    ) {
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
            token_response(reply_name(&params, &cred), &token, SystemTime::now())
        }
        Err(error) => ApiError::refresh(&error).into_response(),
    }
}

/// The key of the reply: the name the client asked for (`ticket` stays `ticket`).
fn reply_name<'a>(params: &'a Params, cred: &'a Credential) -> &'a str {
    params.kind.as_deref().unwrap_or(&cred.key.name)
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
    let _ = write!(body, "{}", token.remaining(now).as_secs()); // into a Vec: no allocation, cannot fail
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
