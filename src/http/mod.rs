//! The HTTP API: the router and the state its handlers share.
//!
//! - [`legacy`]: the Python original's `/wechat/token` routes.
//! - [`v1`]: the JSON API.
//! - [`apps`]: `/v1/apps`, the runtime app registry.
//! - [`caller`]: who is calling and what they may do, for both.
//! - [`health`]: `/healthz`, `/readyz`.
//! - [`status_page`]: `/`, the status page for people.
//! - [`metrics`]: `/metrics` and the request-measuring middleware.
//! - [`facade`]: WeChat's own token and ticket endpoints; [`wxapps`]: apps by appid.
//! - [`gateway`]: every other WeChat API path, forwarded by [`crate::gateway`].
//! - [`error`]: error responses.

mod apps;
mod caller;
mod components;
pub mod error;
mod facade;
mod gateway;
mod health;
mod legacy;
mod metrics;
mod status_page;
pub mod v1;
mod wxapps;

use std::sync::Arc;

use arc_swap::ArcSwap;

use axum::Router;
use axum::handler::Handler;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, get_service, post, put};

use crate::auth::Auth;
use crate::log_limit::LogLimiter;
use crate::metrics::UNMATCHED_ROUTE;
use crate::refresh::Refresher;
use crate::registry::Registry;
use crate::reload::Reloader;

/// What every handler can reach. One `Arc`: axum clones the state for every request,
/// and one atomic increment is all that should cost on the token route.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The contents of [`AppState`].
pub struct Shared {
    pub refresher: Arc<Refresher>,
    /// Who may call; replaced as a whole when the config is reloaded.
    pub auth: Arc<ArcSwap<Auth>>,
    /// The runtime app registry, `/v1/apps`.
    pub registry: Arc<Registry>,
    /// Reads the config file again (`POST /v1/reload`, SIGHUP).
    pub reloader: Arc<Reloader>,
    /// The app used when a request names none: `default`, else the only app of the
    /// config file.
    pub default_app: Option<Arc<str>>,
    /// Keeps refused requests from flooding the log (see [`caller`]); `App::run` writes
    /// its summary lines.
    pub refusals: LogLimiter,
    /// Apps by appid/corpid, for the facade.
    pub wxapps: wxapps::WxApps,
    /// Forwards WeChat API calls.
    pub gateway: Arc<crate::gateway::Gateway>,
    /// The Open Platform apps: events, authorizers.
    pub platforms: Arc<crate::component::Platforms>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(
        refresher: Arc<Refresher>,
        auth: Arc<ArcSwap<Auth>>,
        registry: Arc<Registry>,
        reloader: Arc<Reloader>,
        gateway: Arc<crate::gateway::Gateway>,
        platforms: Arc<crate::component::Platforms>,
    ) -> Self {
        let catalog = refresher.snapshot();
        let names: Vec<&str> = catalog
            .apps()
            .iter()
            .filter(|e| e.origin == crate::refresh::Origin::Config)
            .map(|e| e.name())
            .collect();
        let default_app = if names.contains(&crate::config::DEFAULT_APP) {
            Some(crate::config::DEFAULT_APP.into())
        } else if names.len() == 1 {
            Some(names[0].into())
        } else {
            None
        };
        Self(Arc::new(Shared {
            refresher,
            auth,
            registry,
            reloader,
            default_app,
            refusals: LogLimiter::default(),
            wxapps: wxapps::WxApps::default(),
            gateway,
            platforms,
        }))
    }
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let routes: [(&'static str, MethodRouter<AppState>); 35] = [
        ("/wechat/token/forcerefresh", get(legacy::force_refresh)),
        ("/v1/tokens/{app}/{name}", get(v1::get_token)),
        ("/v1/tokens/{app}/{name}/refresh", post(v1::refresh)),
        ("/v1/status", get(v1::status)),
        ("/v1/jssdk/{app}/signature", get(v1::jssdk_signature)),
        ("/v1/openapi.json", get(v1::openapi)),
        ("/v1/apps", get(apps::list)),
        ("/v1/reload", post(apps::reload)),
        (
            "/v1/apps/{app}",
            get(apps::get).put(apps::put).delete(apps::delete),
        ),
        ("/wechat/component/{app}/events", post(components::events)),
        (
            "/v1/components/{app}/preauthcode",
            post(components::preauthcode),
        ),
        (
            "/v1/components/{app}/authorizers",
            get(components::authorizers),
        ),
        (
            "/v1/components/{app}/authorizers/{appid}",
            put(components::put_authorizer).delete(components::delete_authorizer),
        ),
        ("/v1/components/{app}/sync", post(components::sync)),
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
        // WeChat's token and ticket endpoints, then the gateway for the rest of
        // WeChat's API paths (static paths win over the wildcards).
        ("/cgi-bin/token", get(facade::token)),
        ("/cgi-bin/stable_token", post(facade::stable_token)),
        ("/cgi-bin/gettoken", get(facade::gettoken)),
        ("/cgi-bin/ticket/getticket", get(facade::getticket)),
        ("/cgi-bin/get_jsapi_ticket", get(facade::corp_jsapi_ticket)),
        ("/cgi-bin/ticket/get", get(facade::agent_ticket)),
        ("/cgi-bin/{*path}", any(gateway::forward)),
        ("/wxa/{*path}", any(gateway::forward)),
        ("/wxaapi/{*path}", any(gateway::forward)),
        ("/datacube/{*path}", any(gateway::forward)),
        ("/card/{*path}", any(gateway::forward)),
        ("/customservice/{*path}", any(gateway::forward)),
        ("/merchant/{*path}", any(gateway::forward)),
        ("/product/{*path}", any(gateway::forward)),
        ("/shop/{*path}", any(gateway::forward)),
    ];
    // Each route is measured by its own pre-resolved metric handles, outermost so that
    // timeouts are measured too; the fallback counts as "unmatched".
    let registry = state.refresher.metrics().clone();
    let measured = |route: &str| metrics::MeasureLayer(registry.route(route));
    // The token route measures itself (see `legacy::TokenRoute`).
    let mut router = Router::new().route(
        "/wechat/token",
        get_service(legacy::TokenRoute::new(state.clone())),
    );
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

/// The route the server answers before the router (`GET /wechat/token`), answered as
/// the router's own route for it does.
pub fn shortcut(state: AppState) -> std::sync::Arc<dyn crate::server::Shortcut> {
    std::sync::Arc::new(legacy::TokenRoute::new(state))
}

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
