//! The HTTP API: the router and the state its handlers share.
//!
//! - [`legacy`]: the Python original's `/wechat/token` routes.
//! - [`health`]: `/`, `/healthz`, `/readyz`.
//! - [`error`]: error responses.

pub mod error;
mod health;
mod legacy;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tower_http::timeout::TimeoutLayer;

use crate::auth::Auth;
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
        }
    }
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    // Only routes that can wait (on WeChat) get a timeout: a timer per request would
    // be a measurable cost on the token route, which never waits.
    let timeout = || TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT);
    Router::new()
        .route("/wechat/token", get(legacy::get_token))
        .route(
            "/wechat/token/forcerefresh",
            get(legacy::force_refresh).layer(timeout()),
        )
        .route("/", get(health::index))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(|| async { error::ApiError::not_found() })
        .with_state(state)
}
