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

use axum::Router;
use axum::handler::Handler;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};

use crate::auth::Auth;
use crate::config::{AppConfig, Preset};
use crate::log_limit::LogLimiter;
use crate::metrics::UNMATCHED_ROUTE;
use crate::refresh::Refresher;

/// What every handler can reach. One `Arc`: axum clones the state for every request,
/// and one atomic increment is all that should cost on the token route.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The contents of [`AppState`].
pub struct Shared {
    pub refresher: Arc<Refresher>,
    pub auth: Auth,
    /// The app used when a request names none: `default`, else the only app.
    pub default_app: Option<Arc<str>>,
    /// What each preset app is on WeChat, for JS-SDK signatures and `/v1/status`.
    pub presets: HashMap<String, Preset>,
    /// Keeps refused requests from flooding the log (see [`caller`]); `App::run` writes
    /// its summary lines.
    pub refusals: LogLimiter,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// `apps`: the configured apps, whose presets (`[apps.NAME]`) JS-SDK signatures and
    /// `/v1/status` need.
    pub fn new<'a>(
        refresher: Arc<Refresher>,
        auth: Auth,
        apps: impl IntoIterator<Item = &'a AppConfig>,
    ) -> Self {
        let names: Vec<&str> = refresher.app_names().collect();
        let default_app = if names.contains(&crate::config::DEFAULT_APP) {
            Some(crate::config::DEFAULT_APP.into())
        } else if names.len() == 1 {
            Some(names[0].into())
        } else {
            None
        };
        let presets = apps
            .into_iter()
            .filter_map(|a| Some((a.name.clone(), a.preset.clone()?)))
            .collect();
        Self(Arc::new(Shared {
            refresher,
            auth,
            default_app,
            presets,
            refusals: LogLimiter::default(),
        }))
    }
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let routes: [(&'static str, MethodRouter<AppState>); 13] = [
        ("/wechat/token", get(legacy::get_token)),
        ("/wechat/token/forcerefresh", get(legacy::force_refresh)),
        ("/v1/tokens/{app}/{name}", get(v1::get_token)),
        ("/v1/tokens/{app}/{name}/refresh", post(v1::refresh)),
        ("/v1/status", get(v1::status)),
        ("/v1/jssdk/{app}/signature", get(v1::jssdk_signature)),
        ("/v1/openapi.json", get(v1::openapi)),
        ("/", get(status_page::index)),
        ("/healthz", get(health::healthz)),
        ("/readyz", get(health::readyz)),
        ("/metrics", get(metrics::metrics)),
        // Browsers ask for it on every visit of the status page.
        ("/favicon.ico", get(|| async { StatusCode::NO_CONTENT })),
        (
            "/robots.txt",
            get(|| async { "User-agent: *\nDisallow: /\n" }),
        ),
    ];
    // Each route is measured by its own pre-resolved metric handles, outermost so that
    // timeouts are measured too; the fallback counts as "unmatched".
    let registry = state.refresher.metrics().clone();
    let measured = |route: &str| metrics::MeasureLayer(registry.route(route));
    let mut router = Router::new();
    for (path, method_router) in routes {
        router = router.route(path, method_router.layer(measured(path)));
    }
    // After every route: it replaces the default 405 of the routes added so far (axum
    // keeps their `Allow` header).
    router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found.layer(measured(UNMATCHED_ROUTE)))
        .with_state(state)
}

pub use caller::report_suppressed;

/// 405 for a known path and another method, in the style of the route family (axum's
/// own has an empty body, which clients that parse every error cannot read).
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let message = format!(
        "{method} is not allowed on {}; see the Allow header",
        uri.path()
    );
    if error::is_v1_path(uri.path()) {
        error::ApiError::v1(error::Code::MethodNotAllowed, message).into_response()
    } else {
        error::ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            .with_message(message)
            .into_response()
    }
}

/// 404 for unknown paths, in the style of the route family the path belongs to.
async fn not_found(uri: Uri) -> Response {
    if error::is_v1_path(uri.path()) {
        v1::not_found().into_response()
    } else {
        error::ApiError::not_found().into_response()
    }
}
