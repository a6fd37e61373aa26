//! `GET /metrics` and the middleware that measures every HTTP request.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::AppState;
use crate::metrics::{Metrics, UNMATCHED_ROUTE};

/// `GET /metrics`: the Prometheus text format. Gauges that describe the present (time
/// to expiry, today's quota use, readiness) are set here, at scrape time, so they are
/// exact whenever they are read and cost nothing in between.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let refresher = &state.refresher;
    let metrics = refresher.metrics();
    let now = SystemTime::now();
    for cred in refresher.credentials() {
        let left = cred.live_token(now).map_or(0, |t| {
            i64::try_from(t.remaining(now).as_secs()).unwrap_or(i64::MAX)
        });
        metrics.set_token_expires_in(&cred.labels, left);
        let usage = refresher.quota().usage(&cred.labels, now);
        metrics.set_quota(
            &cred.labels.app,
            &cred.labels.endpoint,
            usage.used,
            usage.exhausted,
        );
    }
    metrics.set_ready(refresher.readiness_problems().await.is_empty());
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        metrics.render(),
    )
        .into_response()
}

/// Counts and times every request by its matched route pattern (never the raw path,
/// which would let any client create series), including the error responses of the
/// layers inside it.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    metrics.http_request(route, response.status().as_u16(), started.elapsed());
    response
}
