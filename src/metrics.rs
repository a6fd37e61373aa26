//! Every metric the server exports, in one place: names, labels, help texts, buckets,
//! and the `/metrics` rendering (Prometheus text format 0.0.4).
//!
//! Metric names and labels are part of the contract (users write alerts on them), so
//! they live here and nowhere else. The registry belongs to the [`Metrics`] value
//! handed to the refresher and the router: no global state, so each test server has
//! its own counters.
//!
//! The serving path stays cheap: label sets hold `Arc<str>`s resolved once per
//! credential ([`CredentialLabels`]) or interned once per route, so recording a
//! request costs a hash lookup and an atomic add, not an allocation.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::MetricsConfig;

mod atomic_histogram;
mod scrape;

use atomic_histogram::AtomicHistogram;

pub use scrape::Scrape;

/// `Content-Type` of `GET /metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

// Names as exported. Counters are registered without `_total`: the encoder adds it.
/// Counter: calls to WeChat by endpoint and outcome.
pub const UPSTREAM_CALLS: &str = "wts_upstream_calls_total";
/// Histogram: duration of calls to WeChat by endpoint.
pub const UPSTREAM_DURATION: &str = "wts_upstream_duration_seconds";
/// Counter: refreshes by trigger and outcome.
pub const REFRESHES: &str = "wts_refreshes_total";
/// Counter (`per_app`): failed refreshes by app, token and outcome.
pub const REFRESH_FAILURES: &str = "wts_refresh_failures_total";
/// Counter: force-refresh requests by decision.
pub const FORCE_REFRESH: &str = "wts_force_refresh_total";
/// Gauge: tokens in each state (ok, refreshing, failing, expired).
pub const TOKENS: &str = "wts_tokens";
/// Gauge: the least life left of any token served.
pub const TOKEN_MIN_EXPIRES_IN: &str = "wts_token_min_expires_in_seconds";
/// Gauge (`per_app`): seconds until each token expires (0 when none is held).
pub const TOKEN_EXPIRES_IN: &str = "wts_token_expires_in_seconds";
/// Gauge: the most calls any app made today (WeChat's day) to an endpoint.
pub const QUOTA_USED_MAX: &str = "wts_quota_used_max";
/// Gauge: how many apps WeChat stopped today (45009) on an endpoint.
pub const QUOTA_EXHAUSTED_APPS: &str = "wts_quota_exhausted_apps";
/// Gauge (`per_app`): calls counted today by app and endpoint, for the endpoints that
/// used at least [`QUOTA_SERIES_SHARE`] of the daily limit.
pub const QUOTA_USED: &str = "wts_quota_used";
/// Gauge (`per_app`): 1 while WeChat's quota of an app's endpoint is used up (45009).
pub const QUOTA_EXHAUSTED: &str = "wts_quota_exhausted";
/// Counter: HTTP requests by matched route and status.
pub const HTTP_REQUESTS: &str = "wts_http_requests_total";
/// Histogram: HTTP request duration by matched route.
pub const HTTP_DURATION: &str = "wts_http_request_duration_seconds";
/// Counter: store operations by backend and operation.
pub const STORE_OPERATIONS: &str = "wts_store_operations_total";
/// Counter: failed store operations by backend and operation.
pub const STORE_ERRORS: &str = "wts_store_errors_total";
/// Gauge: 1 when `/readyz` would answer 200.
pub const READY: &str = "wts_ready";

/// Route label of requests that matched no route, so scanners cannot create series.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// `wts_quota_used{app,endpoint}` is exported for an endpoint once it used this share
/// (1/10) of `[quota] daily_limit` today. An app refreshing on schedule makes about a
/// dozen calls a day, one burning its quota hundreds: the series that matter are there
/// (alerts at 1500 of 2000 work), and 10,000 quiet apps do not cost 20,000 series.
pub const QUOTA_SERIES_SHARE: u64 = 10;

/// Upper bounds of the upstream latency buckets: WeChat answers in tens of ms, a
/// struggling host in seconds, and the client times out at `refresh.upstream_timeout`.
const UPSTREAM_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of the HTTP latency buckets: serving a token takes microseconds, a
/// force refresh one upstream call.
static HTTP_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// The labels of one credential, resolved once so that recording never allocates.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CredentialLabels {
    pub app: Arc<str>,
    pub token: Arc<str>,
    /// The URL path of the token's source, e.g. `/cgi-bin/token`: WeChat counts quota
    /// per API, and the host does not matter.
    pub endpoint: Arc<str>,
}

impl CredentialLabels {
    pub fn new(app: &str, token: &str, endpoint: &str) -> Self {
        Self {
            app: app.into(),
            token: token.into(),
            endpoint: endpoint.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamCallLabels {
    endpoint: Arc<str>,
    outcome: Cow<'static, str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: Arc<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefreshLabels {
    trigger: &'static str,
    outcome: Cow<'static, str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FailureLabels {
    app: Arc<str>,
    token: Arc<str>,
    outcome: Cow<'static, str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    route: Arc<str>,
    status: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StoreLabels {
    backend: &'static str,
    op: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn upstream_histogram() -> Histogram {
    Histogram::new(UPSTREAM_BUCKETS)
}

fn http_histogram() -> AtomicHistogram {
    AtomicHistogram::new(&HTTP_BUCKETS)
}

/// The server's metrics. Cheap to share behind an `Arc`; every method takes `&self`.
///
/// What is recorded as it happens lives in the registry, by labels whose values are
/// bounded by the config (endpoints, triggers, outcomes, routes), never by the number
/// of apps; series are created when first used. With `per_app`, failures are also
/// counted per app and token (a series only for what failed). What describes the
/// present (tokens by state, time to expiry, quota use) is computed from the
/// credentials at each scrape ([`Scrape`]), so an app that is removed leaves nothing
/// behind and nothing is kept in between.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    per_app: bool,
    upstream_calls: Family<UpstreamCallLabels, Counter>,
    upstream_duration: HistogramFamily<EndpointLabels>,
    refreshes: Family<RefreshLabels, Counter>,
    refresh_failures: Family<FailureLabels, Counter>,
    force_refresh: Family<DecisionLabels, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    /// Lock-free: it is recorded on every request.
    http_duration: Family<RouteLabels, AtomicHistogram, fn() -> AtomicHistogram>,
    store_operations: Family<StoreLabels, Counter>,
    store_errors: Family<StoreLabels, Counter>,
    ready: Gauge,
    gateway_requests: Family<GatewayLabels, Counter>,
}

/// Labels of `wts_gateway_requests_total`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GatewayLabels {
    app: String,
    outcome: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `wts_x_total` is registered as `wts_x`: the encoder appends `_total` to counters.
fn counter_name(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

impl Metrics {
    /// Metrics with the default settings (`per_app = true`).
    pub fn new() -> Self {
        Self::with_config(MetricsConfig::default())
    }

    pub fn with_config(config: MetricsConfig) -> Self {
        let mut m = Self {
            registry: Registry::default(),
            per_app: config.per_app,
            upstream_calls: Family::default(),
            upstream_duration: Family::new_with_constructor(upstream_histogram as fn() -> _),
            refreshes: Family::default(),
            refresh_failures: Family::default(),
            force_refresh: Family::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(http_histogram as fn() -> _),
            store_operations: Family::default(),
            store_errors: Family::default(),
            ready: Gauge::default(),
            gateway_requests: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            counter_name(UPSTREAM_CALLS),
            "Calls to WeChat's token APIs, by outcome: ok, WeChat's errcode, http_<status>, timeout, unreachable, malformed",
            m.upstream_calls.clone(),
        );
        r.register(
            UPSTREAM_DURATION,
            "Duration of calls to WeChat's token APIs",
            m.upstream_duration.clone(),
        );
        r.register(
            counter_name(REFRESHES),
            "Token refreshes by trigger (scheduled, forced, dependency) and outcome (ok, errcode, quota_refused, ...)",
            m.refreshes.clone(),
        );
        if m.per_app {
            r.register(
                counter_name(REFRESH_FAILURES),
                "Failed refreshes by app, token and outcome (a series once a token failed that way)",
                m.refresh_failures.clone(),
            );
        }
        r.register(
            counter_name(FORCE_REFRESH),
            "Force-refresh requests by decision: performed, shared, stale, rate_limited, quota_refused",
            m.force_refresh.clone(),
        );
        r.register(
            counter_name(HTTP_REQUESTS),
            "HTTP requests by matched route pattern and status",
            m.http_requests.clone(),
        );
        r.register(
            HTTP_DURATION,
            "HTTP request duration by matched route pattern",
            m.http_duration.clone(),
        );
        r.register(
            counter_name(STORE_OPERATIONS),
            "Token store operations by backend and operation",
            m.store_operations.clone(),
        );
        r.register(
            counter_name(STORE_ERRORS),
            "Failed token store operations by backend and operation",
            m.store_errors.clone(),
        );
        r.register(
            READY,
            "1 when this instance is ready (GET /readyz answers 200)",
            m.ready.clone(),
        );
        r.register(
            "wts_gateway_requests",
            "WeChat API calls through the gateway by app and outcome: ok, WeChat's errcode, retried (after a refreshed token), refused (tied to no app), rate_limited, timeout, ...",
            m.gateway_requests.clone(),
        );
        m
    }

    /// Are series per app and token exported (`[metrics] per_app`)?
    pub fn per_app(&self) -> bool {
        self.per_app
    }

    /// One gateway request and how it ended.
    /// With `per_app = false` every app counts as `*`: the series stay bounded.
    pub fn gateway_request(&self, app: &str, outcome: &str) {
        let app = if self.per_app { app } else { "*" };
        self.gateway_requests
            .get_or_create(&GatewayLabels {
                app: app.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// One call to WeChat and how it ended (`ok` or [`crate::upstream::Error::outcome`]).
    pub fn upstream_call(
        &self,
        labels: &CredentialLabels,
        outcome: Cow<'static, str>,
        elapsed: Duration,
    ) {
        self.upstream_calls
            .get_or_create(&UpstreamCallLabels {
                endpoint: labels.endpoint.clone(),
                outcome,
            })
            .inc();
        self.upstream_duration
            .get_or_create(&EndpointLabels {
                endpoint: labels.endpoint.clone(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// One refresh attempt of a credential.
    pub fn refresh(
        &self,
        labels: &CredentialLabels,
        trigger: &'static str,
        outcome: Cow<'static, str>,
    ) {
        if self.per_app && outcome != "ok" {
            self.refresh_failures
                .get_or_create(&FailureLabels {
                    app: labels.app.clone(),
                    token: labels.token.clone(),
                    outcome: outcome.clone(),
                })
                .inc();
        }
        self.refreshes
            .get_or_create(&RefreshLabels { trigger, outcome })
            .inc();
    }

    /// One force-refresh request and what was decided. Counted for the whole server:
    /// by app it would be a series for every app ever force-refreshed, and the quota
    /// gauges already name an app whose refreshes are being forced (`labels` stays so
    /// that callers need not know).
    pub fn force_refresh(&self, _labels: &CredentialLabels, decision: &'static str) {
        self.force_refresh
            .get_or_create(&DecisionLabels { decision })
            .inc();
    }

    /// The handles that measure requests to `route` (a matched pattern, or
    /// [`UNMATCHED_ROUTE`]). Resolved once, when the router is built, so that measuring
    /// a request takes no lock on a metric family and builds no label set: on the token
    /// route that cost was a fifth of the throughput.
    pub fn route(self: &Arc<Self>, route: &str) -> RouteMetrics {
        let route: Arc<str> = Arc::from(route);
        let duration = self
            .http_duration
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .clone();
        let common = COMMON_STATUSES
            .iter()
            .map(|&status| {
                let labels = HttpLabels {
                    route: route.clone(),
                    status,
                };
                (status, self.http_requests.get_or_create(&labels).clone())
            })
            .collect();
        RouteMetrics(Arc::new(RouteHandles {
            metrics: self.clone(),
            route,
            duration,
            common,
        }))
    }

    /// Creates the store series of `backend` at zero, so that alerts on
    /// `increase(wts_store_errors_total[...])` work before the first error.
    pub fn declare_store(&self, backend: &'static str, ops: &[&'static str]) {
        for &op in ops {
            let labels = StoreLabels { backend, op };
            let _ = self.store_operations.get_or_create(&labels);
            let _ = self.store_errors.get_or_create(&labels);
        }
    }

    /// One store operation and whether it failed.
    pub fn store_operation(&self, backend: &'static str, op: &'static str, ok: bool) {
        let labels = StoreLabels { backend, op };
        self.store_operations.get_or_create(&labels).inc();
        if !ok {
            self.store_errors.get_or_create(&labels).inc();
        }
    }

    /// Whether `/readyz` would answer 200; set at scrape time.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// A scrape's gauges of the present, to be fed every credential.
    pub fn scrape(&self, quota_limit: u64) -> Scrape {
        Scrape::new(self.per_app, quota_limit)
    }

    /// Everything in the Prometheus text format: the registry, then `scrape`.
    pub fn render(&self, scrape: &Scrape) -> String {
        let mut out = String::with_capacity(64 * 1024 + scrape.len());
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        scrape.write(&mut out);
        out
    }
}

/// Statuses whose request counters are resolved in advance for every route; others
/// are looked up in the family when they happen.
const COMMON_STATUSES: [u16; 9] = [200, 400, 401, 403, 404, 405, 429, 502, 503];

/// Pre-resolved metric handles of one route; see [`Metrics::route`]. One `Arc`, so
/// that the per-request clone axum makes of a route's layers is one atomic increment.
#[derive(Clone)]
pub struct RouteMetrics(Arc<RouteHandles>);

struct RouteHandles {
    metrics: Arc<Metrics>,
    route: Arc<str>,
    duration: AtomicHistogram,
    common: Vec<(u16, Counter)>,
}

impl RouteMetrics {
    /// One request to this route that answered `status` after `elapsed`.
    pub fn record(&self, status: u16, elapsed: Duration) {
        let handles = &self.0;
        handles.duration.observe(elapsed);
        match handles.common.iter().find(|(s, _)| *s == status) {
            Some((_, counter)) => {
                counter.inc();
            }
            None => {
                handles
                    .metrics
                    .http_requests
                    .get_or_create(&HttpLabels {
                        route: handles.route.clone(),
                        status,
                    })
                    .inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> CredentialLabels {
        CredentialLabels::new("shop", "access_token", "/cgi-bin/token")
    }

    #[test]
    fn every_contract_name_is_exported_with_its_labels() {
        let m = Arc::new(Metrics::new());
        let l = labels();
        m.upstream_call(&l, "ok".into(), Duration::from_millis(30));
        m.upstream_call(&l, "45009".into(), Duration::from_millis(30));
        m.refresh(&l, "scheduled", "ok".into());
        m.refresh(&l, "forced", "45009".into());
        m.force_refresh(&l, "stale");
        m.route("/wechat/token")
            .record(200, Duration::from_micros(80));
        m.store_operation("embedded", "save", false);
        m.set_ready(true);
        let mut scrape = m.scrape(2000);
        scrape.token(&l, crate::refresh::TokenState::Ok, Some(7000));
        scrape.quota(&l, 3, false);
        let text = m.render(&scrape);
        for line in [
            r#"wts_upstream_calls_total{endpoint="/cgi-bin/token",outcome="ok"} 1"#,
            r#"wts_upstream_calls_total{endpoint="/cgi-bin/token",outcome="45009"} 1"#,
            r#"wts_upstream_duration_seconds_count{endpoint="/cgi-bin/token"} 2"#,
            r#"wts_refreshes_total{trigger="scheduled",outcome="ok"} 1"#,
            r#"wts_refreshes_total{trigger="forced",outcome="45009"} 1"#,
            r#"wts_refresh_failures_total{app="shop",token="access_token",outcome="45009"} 1"#,
            r#"wts_force_refresh_total{decision="stale"} 1"#,
            r#"wts_tokens{state="ok"} 1"#,
            "wts_token_min_expires_in_seconds 7000",
            r#"wts_token_expires_in_seconds{app="shop",token="access_token"} 7000"#,
            r#"wts_quota_used_max{endpoint="/cgi-bin/token"} 3"#,
            r#"wts_quota_exhausted_apps{endpoint="/cgi-bin/token"} 0"#,
            r#"wts_http_requests_total{route="/wechat/token",status="200"} 1"#,
            r#"wts_http_request_duration_seconds_count{route="/wechat/token"} 1"#,
            r#"wts_store_operations_total{backend="embedded",op="save"} 1"#,
            r#"wts_store_errors_total{backend="embedded",op="save"} 1"#,
            "wts_ready 1",
            "# TYPE wts_upstream_calls_total counter",
            "# TYPE wts_upstream_duration_seconds histogram",
            "# TYPE wts_token_expires_in_seconds gauge",
            "# TYPE wts_tokens gauge",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // No success is a series per app, and no histogram has an app label.
        assert!(!text.contains(r#"app="shop",token="access_token",outcome="ok""#));
        assert!(
            text.lines()
                .filter(|l| l.contains("_bucket{"))
                .all(|l| !l.contains("app=")),
            "{text}"
        );
    }

    #[test]
    fn without_per_app_nothing_names_an_app_or_a_token() {
        let m = Metrics::with_config(MetricsConfig { per_app: false });
        let l = labels();
        m.upstream_call(&l, "-1".into(), Duration::from_millis(30));
        m.refresh(&l, "scheduled", "-1".into());
        m.force_refresh(&l, "performed");
        let mut scrape = m.scrape(2000);
        scrape.token(&l, crate::refresh::TokenState::Failing, Some(600));
        scrape.quota(&l, 1900, false);
        let text = m.render(&scrape);
        assert!(!text.contains("shop"), "{text}");
        assert!(!text.contains("wts_refresh_failures_total"), "{text}");
        assert!(text.contains(r#"wts_refreshes_total{trigger="scheduled",outcome="-1"} 1"#));
        assert!(text.contains(r#"wts_tokens{state="failing"} 1"#));
        assert!(text.contains("wts_token_min_expires_in_seconds 600"));
    }

    #[test]
    fn route_handles_count_every_status_and_time_every_request() {
        let m = Arc::new(Metrics::new());
        let route = m.route("/healthz");
        route.record(200, Duration::ZERO);
        route.record(200, Duration::ZERO);
        route.record(418, Duration::ZERO); // not pre-resolved: through the family
        let text = m.render(&m.scrape(2000));
        assert!(
            text.contains("wts_http_requests_total{route=\"/healthz\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("wts_http_requests_total{route=\"/healthz\",status=\"418\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("wts_http_request_duration_seconds_count{route=\"/healthz\"} 3"),
            "{text}"
        );
    }
}
