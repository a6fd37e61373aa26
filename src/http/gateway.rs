//! The gateway's route: ties a request to an app and a caller, then hands it to
//! [`crate::gateway`]. A request tied to neither is refused with WeChat's 40001 and
//! never forwarded: the gateway is no open proxy.
//!
//! Tied by the `access_token=` it carries (a token this server handed out: the index
//! of issued tokens, current or within WeChat's grace), or by `X-WTS-App: NAME` with a
//! client key as Bearer, for clients that never hold a token.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::caller::{Peer, identify, permit};
use super::facade::INVALID_TOKEN;
use super::wxapps::ACCESS_TOKEN;
use crate::auth::{Action, Caller, presented_secret};
use crate::gateway::{APP_HEADER, Forward, wx_error};

const ROUTE: &str = "/cgi-bin/*";

/// Any method on a gateway path.
pub async fn forward(State(state): State<AppState>, peer: Peer, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let query = parts.uri.query().map(str::to_owned);
    let app_header = parts
        .headers
        .get(&APP_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut caller: Option<Caller> = None;
    let tied = if let Some(app) = app_header {
        // A client that holds no token: its key, and the app within its scope.
        let auth = state.auth.load();
        let presented = presented_secret(&parts.headers, None);
        match identify(&auth, &state.refusals, ROUTE, presented, peer).and_then(|c| {
            permit(&state.refusals, &c, ROUTE, &app, ACCESS_TOKEN, Action::Read).map(|()| c)
        }) {
            Ok(c) => {
                caller = Some(c);
                state
                    .refresher
                    .credential(&app, ACCESS_TOKEN)
                    .map(|cred| (app, cred))
            }
            Err(_) => None,
        }
    } else {
        let presented = query.as_deref().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "access_token")
                .map(|(_, v)| v.into_owned())
        });
        let tied = presented
            .and_then(|token| state.refresher.issued_token(&token))
            .map(|(entry, cred, _)| (entry.name().to_owned(), cred));
        // A client key given as well names the client for its rate.
        if tied.is_some()
            && let Some(key) = presented_secret(&parts.headers, None)
        {
            caller = state.auth.load().authenticate(key);
        }
        tied
    };
    let Some((app, cred)) = tied else {
        if state.refusals.admit(Instant::now()) {
            tracing::warn!(route = ROUTE, path = parts.uri.path(), peer = %peer, "gateway request refused: no token of this server and no X-WTS-App client");
        }
        state.refresher.metrics().gateway_request("", "refused");
        return INVALID_TOKEN.into_response();
    };
    if let Some(Caller::Client(client)) = &caller
        && let Some(rate) = client.rate
        && let Err(wait) = state
            .gateway
            .rates
            .admit(&client.name, rate, Instant::now())
    {
        state
            .refresher
            .metrics()
            .gateway_request(&app, "rate_limited");
        let mut response = wx_error(
            StatusCode::TOO_MANY_REQUESTS,
            45011,
            "api minute-rate-limit exceeded: this client's gateway rate is used up",
        );
        let seconds = wait.ceil().max(1.0) as u64;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return response;
    }
    let request = Forward {
        app: app.as_str().into(),
        cred,
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query,
        headers: parts.headers,
    };
    let outcome = state.gateway.forward(&state.refresher, request, body).await;
    state
        .refresher
        .metrics()
        .gateway_request(&app, &outcome.label);
    outcome.response
}
