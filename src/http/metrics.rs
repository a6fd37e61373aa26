//! `GET /metrics` and the middleware that measures every HTTP request.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::State;
use axum::http::{Request, header};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::AppState;
use crate::metrics::RouteMetrics;

/// `GET /metrics`: the Prometheus text format. Gauges that describe the present
/// (tokens by state, time to expiry, today's quota use, readiness) are computed here,
/// at scrape time, from the credentials as they are now: exact whenever read, and
/// nothing to keep up to date in between (see [`Scrape`](crate::metrics::Scrape)).
pub async fn metrics(State(state): State<AppState>) -> Response {
    let refresher = &state.refresher;
    let metrics = refresher.metrics();
    let now = refresher.clock().now();
    let quota = refresher.quota();
    let mut scrape = metrics.scrape(quota.settings().daily_limit);
    // Each app's endpoint once, whatever order the credentials come in.
    let mut endpoints_seen = HashSet::new();
    for cred in refresher.credentials().iter() {
        let state = cred.state(now, cred.consecutive_failures());
        let left = cred.with_live_token(now, |t| t.remaining(now).as_secs());
        scrape.token(&cred.labels, state, left);
        if endpoints_seen.insert((&*cred.labels.app, &*cred.labels.endpoint)) {
            let usage = quota.usage(&cred.labels, now);
            scrape.quota(&cred.labels, usage.used, usage.exhausted);
        }
    }
    metrics.set_ready(refresher.readiness_problems().await.is_empty());
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        metrics.render(&scrape),
    )
        .into_response()
}

/// Counts and times every request of one route, by its route pattern (never the raw
/// path, which would let any client create series), including the error responses of
/// the layers inside it. One layer per route, with handles resolved in advance (see
/// [`Metrics::route`](crate::metrics::Metrics::route)). A plain tower layer rather than
/// `axum::middleware::from_fn`: it boxes no future, which shows on the token route.
#[derive(Clone)]
pub struct MeasureLayer(pub RouteMetrics);

impl<S> Layer<S> for MeasureLayer {
    type Service = Measure<S>;

    fn layer(&self, inner: S) -> Measure<S> {
        Measure {
            inner,
            route: self.0.clone(),
        }
    }
}

/// The service of [`MeasureLayer`].
#[derive(Clone)]
pub struct Measure<S> {
    inner: S,
    route: RouteMetrics,
}

impl<S, B> Service<Request<B>> for Measure<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Measured<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Measured {
            inner: self.inner.call(request),
            route: self.route.clone(),
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request being answered; records it when the response is ready.
    pub struct Measured<F> {
        #[pin]
        inner: F,
        route: RouteMetrics,
        started: Instant,
    }
}

impl<F, E> Future for Measured<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &output {
            this.route
                .record(response.status().as_u16(), this.started.elapsed());
        }
        Poll::Ready(output)
    }
}
