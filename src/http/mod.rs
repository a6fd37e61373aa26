//! The HTTP API: the router and the state its handlers share.
//!
//! - [`legacy`]: the Python original's `/wechat/token` routes.
//! - [`health`]: `/healthz`, `/readyz`.
//! - [`status_page`]: `/`, the status page for people.
//! - [`metrics`]: `/metrics` and the request-measuring middleware.
//! - [`error`]: error responses.

pub mod error;
mod health;
mod legacy;
mod metrics;
mod status_page;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::get;
use tower_http::timeout::TimeoutLayer;

use crate::auth::Auth;
use crate::refresh::Refresher;

/// A request taking longer than this is cut off, so that one stuck client cannot hold
/// up a graceful shutdown. Force refreshes wait for at most one upstream call.
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
    let metrics = state.refresher.metrics().clone();
    Router::new()
        .route("/wechat/token", get(legacy::get_token))
        .route("/wechat/token/forcerefresh", get(legacy::force_refresh))
        .route("/", get(status_page::index))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .fallback(|| async { error::ApiError::not_found() })
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        // Outermost, so that timeouts are measured too. `Router::layer` wraps each
        // route after it was matched, so `MatchedPath` is there; the fallback has none
        // and is counted as "unmatched".
        .layer(middleware::from_fn_with_state(metrics, metrics::track))
        .with_state(state)
}
