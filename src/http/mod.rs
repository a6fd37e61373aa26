//! The HTTP API: the router and the state its handlers share.
//!
//! - [`legacy`]: the Python original's `/wechat/token` routes.
//! - [`v1`]: the JSON API.
//! - [`caller`]: who is calling and what they may do, for both.
//! - [`health`]: `/healthz`, `/readyz`.
//! - [`status_page`]: `/`, the status page for people.
//! - [`metrics`]: `/metrics` and the request-measuring middleware.
//! - [`error`]: error responses.

mod caller;
pub mod error;
mod health;
mod legacy;
mod metrics;
mod status_page;
pub mod v1;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::timeout::TimeoutLayer;

use crate::auth::Auth;
use crate::config::{AppConfig, Preset};
use crate::refresh::Refresher;

/// A request that waits on WeChat longer than this is cut off, so that a stuck upstream
/// cannot hold up a graceful shutdown. A force refresh waits for at most one upstream
/// call (itself bounded by `refresh.upstream_timeout`) and its dependencies.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub refresher: Arc<Refresher>,
    pub auth: Arc<Auth>,
    /// The app used when a request names none: `default`, else the only app.
    pub default_app: Option<Arc<str>>,
    /// What each preset app is on WeChat, for JS-SDK signatures and `/v1/status`.
    pub presets: Arc<HashMap<String, Preset>>,
}

impl AppState {
    pub fn new(refresher: Arc<Refresher>, auth: Auth) -> Self {
        let names: Vec<&str> = refresher.app_names().collect();
        let default_app = if names.contains(&crate::config::DEFAULT_APP) {
            Some(crate::config::DEFAULT_APP.into())
        } else if names.len() == 1 {
            Some(names[0].into())
        } else {
            None
        };
        Self {
            refresher,
            auth: Arc::new(auth),
            default_app,
            presets: Arc::default(),
        }
    }

    /// Adds the preset info of `apps` (those from `[apps.NAME]`).
    pub fn with_presets<'a>(mut self, apps: impl IntoIterator<Item = &'a AppConfig>) -> Self {
        self.presets = Arc::new(
            apps.into_iter()
                .filter_map(|a| Some((a.name.clone(), a.preset.clone()?)))
                .collect(),
        );
        self
    }
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    // Only routes that can wait (on WeChat) get a timeout: a timer per request would
    // be a measurable cost on the token route, which never waits.
    let timeout = || TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT);
    let metrics = state.refresher.metrics().clone();
    Router::new()
        .route("/wechat/token", get(legacy::get_token))
        .route(
            "/wechat/token/forcerefresh",
            get(legacy::force_refresh).layer(timeout()),
        )
        .route("/v1/tokens/{app}/{name}", get(v1::get_token))
        .route(
            "/v1/tokens/{app}/{name}/refresh",
            post(v1::refresh).layer(timeout()),
        )
        .route("/v1/status", get(v1::status))
        .route("/v1/jssdk/{app}/signature", get(v1::jssdk_signature))
        .route("/v1/openapi.json", get(v1::openapi))
        .route("/", get(status_page::index))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        // Outermost, so that timeouts are measured too. `Router::layer` wraps each
        // route after it was matched, so `MatchedPath` is there; the fallback has none
        // and is counted as "unmatched".
        .layer(middleware::from_fn_with_state(metrics, metrics::track))
        .with_state(state)
}

/// 404 for unknown paths, in the style of the route family the path belongs to.
async fn not_found(uri: Uri) -> Response {
    if uri.path() == "/v1" || uri.path().starts_with("/v1/") {
        v1::not_found().into_response()
    } else {
        error::ApiError::not_found().into_response()
    }
}
