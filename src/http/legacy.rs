//! The Python original's routes, with its exact shapes and status codes:
//! `GET /wechat/token?type=NAME&secret=S` and `GET /wechat/token/forcerefresh?...`.

use std::borrow::Cow;
use std::time::SystemTime;

use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;
use tower_service::Service;

use super::AppState;
use super::caller::{Denied, Peer, identify, permit};
use super::error::ApiError;
use crate::auth::{Action, presented_secret};
use crate::metrics::RouteMetrics;
use crate::refresh::{Catalog, Credential, Token};
use crate::server::Shortcut;

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
        for (key, value) in query_pairs(query) {
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

/// The pairs of `query` exactly as [`form_urlencoded::parse`] yields them, with its
/// decoding skipped for the pieces that have nothing to decode (no `%`, no `+`): those
/// are borrowed as they are, which is every piece of a usual token query. The query is
/// a `&str` already, so a borrowed piece is valid UTF-8 as `parse` would have left it.
/// One pass over the bytes finds a piece's end, its `=` and whether it is encoded.
fn query_pairs(query: &str) -> QueryPairs<'_> {
    QueryPairs { rest: query }
}

struct QueryPairs<'q> {
    rest: &'q str,
}

impl<'q> Iterator for QueryPairs<'q> {
    type Item = (Cow<'q, str>, Cow<'q, str>);

    fn next(&mut self) -> Option<Self::Item> {
        while !self.rest.is_empty() {
            let bytes = self.rest.as_bytes();
            let (mut end, mut eq, mut encoded) = (bytes.len(), None, false);
            for (i, &b) in bytes.iter().enumerate() {
                match b {
                    b'&' => {
                        end = i;
                        break;
                    }
                    b'=' if eq.is_none() => eq = Some(i),
                    b'%' | b'+' => encoded = true,
                    _ => {}
                }
            }
            // Cut at ASCII bytes: always on a char boundary.
            let piece = &self.rest[..end];
            self.rest = self.rest.get(end + 1..).unwrap_or("");
            if piece.is_empty() {
                continue;
            }
            if encoded {
                // One non-empty piece with no '&': parse yields exactly one pair.
                return form_urlencoded::parse(piece.as_bytes()).next();
            }
            let (key, value) = eq.map_or((piece, ""), |i| (&piece[..i], &piece[i + 1..]));
            return Some((Cow::Borrowed(key), Cow::Borrowed(value)));
        }
        None
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

/// `GET /wechat/token`: the current token from memory. The hot path, so a tower
/// service of its own rather than an axum handler: no extractors (the peer is read
/// from the request's extensions, the request is borrowed whole so that neither
/// headers nor query are copied), and it measures itself rather than through
/// [`MeasureLayer`](super::metrics::MeasureLayer), with the same monotonic reading
/// that decides whether the token may be served. The server's accept loop also
/// answers it without the router (see [`crate::server::Shortcut`]).
#[derive(Clone)]
pub struct TokenRoute {
    state: AppState,
    metrics: RouteMetrics,
}

impl TokenRoute {
    pub fn new(state: AppState) -> Self {
        let metrics = state.refresher.metrics().route(ROUTE_TOKEN);
        Self { state, metrics }
    }

    /// The answer to `GET /wechat/token` at `uri` with `headers`, from `peer`, counted
    /// and timed in the route's metrics.
    pub fn answer(&self, uri: &Uri, headers: &HeaderMap, peer: Peer) -> Response {
        let started = Instant::now();
        let response = self
            .token(uri, headers, peer, started)
            .unwrap_or_else(IntoResponse::into_response);
        self.metrics
            .record(response.status().as_u16(), started.elapsed());
        response
    }

    fn token(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        peer: Peer,
        instant: Instant,
    ) -> Result<Response, ApiError> {
        let state = &self.state;
        // The catalog of this moment, borrowed for the request: no reference count is
        // touched on the hot path.
        let catalog = state.refresher.catalog();
        let params = Params::parse(uri.query())?;
        let cred = resolve(
            state,
            &catalog,
            ROUTE_TOKEN,
            Action::Read,
            (headers, peer),
            &params,
        )?;
        let now = SystemTime::now();
        cred.with_current(|token| {
            let left = token.serving_life(now, instant)?;
            Some(json_response(
                reply_name(&params, cred),
                &token.value,
                left.as_secs(),
            ))
        })
        .ok_or_else(|| ApiError::not_ready(&cred.key.app, &cred.key.name))
    }
}

impl std::fmt::Debug for TokenRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(ROUTE_TOKEN)
    }
}

impl Shortcut for TokenRoute {
    fn path(&self) -> &str {
        ROUTE_TOKEN
    }

    fn answer(&self, uri: &Uri, headers: &HeaderMap, client: Option<IpAddr>) -> Response {
        TokenRoute::answer(self, uri, headers, Peer(client))
    }
}

impl<B> Service<Request<B>> for TokenRoute {
    type Response = Response;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let peer = Peer::of(request.extensions());
        std::future::ready(Ok(self.answer(request.uri(), request.headers(), peer)))
    }
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

/// `{"NAME": "<token>", "expires_in": N}`, written straight into one buffer, of the
/// exact size when nothing needs escaping (so that turning it into the body's bytes
/// reallocates nothing): it is the hot path and its key is dynamic.
fn token_response(name: &str, token: &Token, now: SystemTime) -> Response {
    json_response(name, &token.value, token.remaining(now).as_secs())
}

fn json_response(name: &str, value: &str, expires_in: u64) -> Response {
    let mut digits = [0u8; 20];
    let digits = decimal(expires_in, &mut digits);
    let body = if needs_no_escape(name) && needs_no_escape(value) {
        // `{"` `":"` `","expires_in":` `}`: 21 bytes around the three values.
        let mut body = Vec::with_capacity(name.len() + value.len() + digits.len() + 21);
        body.extend_from_slice(b"{\"");
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(b"\":\"");
        body.extend_from_slice(value.as_bytes());
        body.extend_from_slice(b"\",\"expires_in\":");
        body.extend_from_slice(digits);
        body.push(b'}');
        debug_assert_eq!(body.len(), body.capacity());
        body
    } else {
        let mut body = Vec::new();
        body.push(b'{');
        write_json_str(&mut body, name);
        body.push(b':');
        write_json_str(&mut body, value);
        body.extend_from_slice(b",\"expires_in\":");
        body.extend_from_slice(digits);
        body.push(b'}');
        body
    };
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Does `text` go into a JSON string as it is? WeChat's tokens always do (letters,
/// digits, `-`, `_`). No early exit, so that the check compiles to a vector loop.
fn needs_no_escape(text: &str) -> bool {
    !text.bytes().fold(false, |bad, b| {
        bad | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

fn write_json_str(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(out, text).expect("writing a str into a Vec cannot fail");
}

/// `n` in decimal, in the end of `buf` (without `core::fmt`'s machinery).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_are_those_of_form_urlencoded() {
        for query in [
            "",
            "&",
            "type=access_token&secret=s3cr3t",
            "type=access_token&&secret=s3cr3t&",
            "type&secret=&=x&==",
            "secret=a%20b&type=ac%63ess_token",
            "secret=a+b&app=shop+1&stale=x%2By",
            "bad=%zz&bad2=%E4%B8%AD&bad3=%FF",
            "k=v=w&中=文",
        ] {
            let ours: Vec<_> = query_pairs(query).collect();
            let theirs: Vec<_> = form_urlencoded::parse(query.as_bytes()).collect();
            assert_eq!(ours, theirs, "{query}");
        }
    }

    #[test]
    fn the_json_body_is_what_serde_json_writes() {
        for (name, value, expires_in) in [
            ("access_token", "ACCESS_TOKEN-abc_123", 7200),
            ("ticket", "", 0),
            ("we\"ird\\", "tab\there\u{1}中文", u64::MAX),
            ("jsapi_ticket", "x", 10),
        ] {
            let response = json_response(name, value, expires_in);
            let body = futures_util::FutureExt::now_or_never(axum::body::to_bytes(
                response.into_body(),
                usize::MAX,
            ))
            .expect("a full body is ready at once")
            .expect("a full body cannot fail");
            let expected = format!(
                "{{{}:{},\"expires_in\":{expires_in}}}",
                serde_json::to_string(name).unwrap(),
                serde_json::to_string(value).unwrap()
            );
            assert_eq!(std::str::from_utf8(&body).unwrap(), expected);
        }
    }
}
