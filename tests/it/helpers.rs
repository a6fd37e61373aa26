//! Test helpers: a simulator and a real server on port 0, talking real HTTP.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wechat_token_server::app::App;
use wechat_token_server::config::Config;
use wechat_token_server::refresh::Refresher;
use wechat_token_server::simulator::{DEMO_APPID, DEMO_SECRET, SimConfig, Simulator};

/// The request secret of every test server.
pub const SECRET: &str = "test-request-secret";

/// Polls `condition` every 20 ms until it holds; panics after `deadline`.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let waited = tokio::time::timeout(deadline, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "timed out after {deadline:?} waiting until {what}"
    );
}

/// An in-process WeChat simulator on a free loopback port. Clones share it; it stops
/// when the last clone is dropped.
#[derive(Clone)]
pub struct TestSim {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    _shutdown: Arc<tokio_util::sync::DropGuard>,
}

impl TestSim {
    pub async fn start(config: SimConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(Simulator::new(config).serve(listener, shutdown.clone()));
        Self {
            addr,
            client: reqwest::Client::new(),
            _shutdown: Arc::new(shutdown.drop_guard()),
        }
    }

    /// A simulator whose tokens live `expires_in` seconds with a `grace` second grace.
    pub async fn with_lifetime(expires_in: u64, grace: u64) -> Self {
        Self::start(SimConfig {
            expires_in: Duration::from_secs(expires_in),
            grace: Duration::from_secs(grace),
            ..SimConfig::default()
        })
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `/sim/stats`: calls and issued credentials per endpoint.
    pub async fn stats(&self) -> Value {
        let response = self
            .client
            .get(self.url("/sim/stats"))
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }

    /// Calls counted so far for `endpoint`, e.g. "/cgi-bin/token".
    pub async fn calls(&self, endpoint: &str) -> u64 {
        self.stats().await["calls"][endpoint].as_u64().unwrap_or(0)
    }

    /// Credentials issued so far by `endpoint`.
    pub async fn issued(&self, endpoint: &str) -> u64 {
        self.stats().await["issued"][endpoint].as_u64().unwrap_or(0)
    }

    /// Is `access_token` accepted by "WeChat" now?
    pub async fn token_valid(&self, token: &str) -> bool {
        self.valid("access_token", token).await
    }

    /// Is `ticket` accepted by "WeChat" now?
    pub async fn ticket_valid(&self, ticket: &str) -> bool {
        self.valid("ticket", ticket).await
    }

    async fn valid(&self, kind: &str, value: &str) -> bool {
        let reply: Value = self
            .client
            .get(self.url("/sim/valid"))
            .query(&[(kind, value)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        reply["valid"]
            .as_bool()
            .expect("/sim/valid answers {\"valid\": bool}")
    }

    /// Makes the next `count` calls to `endpoint` fail as `fault` says.
    pub async fn fault(&self, endpoint: &str, count: u64, fault: Value) {
        let mut body = json!({"endpoint": endpoint, "count": count});
        body.as_object_mut()
            .unwrap()
            .extend(fault.as_object().unwrap().clone());
        let status = self
            .client
            .post(self.url("/sim/faults"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK, "fault injection refused");
    }

    /// Moves the simulator's clock forward.
    pub async fn advance(&self, seconds: u64) {
        let status = self
            .client
            .post(self.url("/sim/advance"))
            .json(&json!({"seconds": seconds}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK);
    }

    /// Gets a token straight from the simulator, as a rogue second server would.
    pub async fn issue_token_directly(&self) -> String {
        let reply: Value = self
            .client
            .get(self.url("/cgi-bin/token"))
            .query(&[
                ("grant_type", "client_credential"),
                ("appid", DEMO_APPID),
                ("secret", DEMO_SECRET),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        reply["access_token"].as_str().unwrap().to_owned()
    }
}

/// `[refresh]` settings whose retries a test does not wait long for.
pub const FAST_RETRIES: &str = "min_retry_delay = 0.05\nmax_retry_delay = 0.5";

/// The `[store]` of most tests.
pub const MEMORY_STORE: &str = "backend = \"memory\"";

/// A config: `[server]` on port 0 with [`SECRET`], then `store` and `refresh` as the
/// bodies of their tables, then `rest` (sources, apps, ...).
pub fn config_with(store: &str, refresh: &str, rest: &str) -> String {
    format!(
        r#"
[server]
bind = "127.0.0.1:0"
request_secret = "{SECRET}"

[store]
{store}

[refresh]
{refresh}

{rest}
"#
    )
}

/// The demo app's access_token source on `sim`.
pub fn access_token_source(sim: SocketAddr) -> String {
    format!(
        r#"
[sources.access_token]
url = "http://{sim}/cgi-bin/token"
args = {{ grant_type = "client_credential", appid = "{DEMO_APPID}", secret = "{DEMO_SECRET}" }}
"#
    )
}

/// The seed's two sources on `sim`: the demo app's access_token and jsapi ticket.
pub fn seed_sources(sim: SocketAddr) -> String {
    access_token_source(sim)
        + &format!(
            r#"
[sources.ticket]
url = "http://{sim}/cgi-bin/ticket/getticket"
args = {{ type = "jsapi", access_token = "{{{{access_token}}}}" }}
"#
        )
}

/// The seed-style config of the tests: [`seed_sources`] with fast retries, plus
/// `refresh_extra` in the `[refresh]` table.
pub fn seed_config(sim: SocketAddr, store: &str, refresh_extra: &str) -> String {
    config_with(
        store,
        &format!("{FAST_RETRIES}\n{refresh_extra}"),
        &seed_sources(sim),
    )
}

/// Config for a server on the memory store whose retries are far apart, for tests
/// that look at the state before any retry. Needs the sim address filled in by
/// [`TestApp::start`]: the placeholder `SIM` is replaced there.
pub fn seed_config_for_memory_with_slow_retries() -> String {
    let sim = SIM_PLACEHOLDER.parse().unwrap();
    config_with(
        MEMORY_STORE,
        "min_retry_delay = 30\nmax_retry_delay = 60",
        &seed_sources(sim),
    )
}

/// Config for a server on the memory store with the tests' fast retries, on the
/// simulator given to [`TestApp::start`].
pub fn seed_config_for_memory_with_fast_retries() -> String {
    seed_config(SIM_PLACEHOLDER.parse().unwrap(), MEMORY_STORE, "")
}

/// Stands for the simulator's address in configs written before it is known.
pub const SIM_PLACEHOLDER: &str = "192.0.2.1:9";

/// A running server with its simulator.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub sim: TestSim,
    pub refresher: Arc<Refresher>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    /// A server on the memory store, on a fresh simulator with WeChat's defaults.
    pub async fn spawn() -> Self {
        Self::spawn_on(TestSim::start(SimConfig::default()).await, "").await
    }

    /// A server on the memory store, on `sim`, with extra `[refresh]` settings.
    pub async fn spawn_on(sim: TestSim, refresh_extra: &str) -> Self {
        let text = seed_config(sim.addr, "backend = \"memory\"", refresh_extra);
        Self::spawn_with(sim, &text).await
    }

    /// A server from config `text` on `sim`; waits until every token is served.
    pub async fn spawn_with(sim: TestSim, text: &str) -> Self {
        let app = Self::start(sim, text).await;
        let ready = app.base.clone() + "/readyz";
        let client = app.client.clone();
        wait_until("the server is ready", Duration::from_secs(10), || {
            let (client, ready) = (client.clone(), ready.clone());
            async move {
                client
                    .get(&ready)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::OK)
            }
        })
        .await;
        app
    }

    /// Like `spawn_with`, without waiting for readiness.
    pub async fn start(sim: TestSim, text: &str) -> Self {
        Self::start_with_routes(sim, text, axum::Router::new()).await
    }

    /// Like [`start`](Self::start), from the config file `path` holding `text` (so
    /// that `POST /v1/reload` reads it again).
    pub async fn start_from_file(sim: TestSim, text: &str, path: &std::path::Path) -> Self {
        std::fs::write(path, text.replace(SIM_PLACEHOLDER, &sim.addr.to_string())).unwrap();
        Self::launch(sim, text, axum::Router::new(), Some(path)).await
    }

    /// Like [`start`](Self::start), with the test's own `routes` added to the server's.
    pub async fn start_with_routes(sim: TestSim, text: &str, routes: axum::Router) -> Self {
        Self::launch(sim, text, routes, None).await
    }

    async fn launch(
        sim: TestSim,
        text: &str,
        routes: axum::Router,
        file: Option<&std::path::Path>,
    ) -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("wechat_token_server=debug")
                .with_test_writer()
                .try_init();
        }
        let text = text.replace(SIM_PLACEHOLDER, &sim.addr.to_string());
        let config = Config::parse(&text, &|_| None).expect("test config is valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut app = App::build(config, listener)
            .await
            .unwrap()
            .with_routes(routes);
        if let Some(path) = file {
            app = app.with_config_file(path.to_owned());
        }
        let base = format!("http://{}", app.local_addr().unwrap());
        let refresher = app.refresher();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run(shutdown.clone()));
        Self {
            base,
            client: reqwest::Client::new(),
            sim,
            refresher,
            shutdown,
            task,
        }
    }

    /// GET a path with the request secret as `secret=`; returns status and JSON body.
    pub async fn get(&self, path_and_query: &str) -> (StatusCode, Value) {
        let sep = if path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!("{}{path_and_query}{sep}secret={SECRET}", self.base);
        let response = self.client.get(url).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The token `name` as served, asserting a 200.
    pub async fn token(&self, name: &str) -> String {
        let (status, body) = self.get(&format!("/wechat/token?type={name}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body[name].as_str().unwrap().to_owned()
    }

    /// Force refresh of `name`, with an optional stale token.
    pub async fn force(&self, name: &str, stale: Option<&str>) -> (StatusCode, Value) {
        let mut query = vec![("type", name), ("secret", SECRET)];
        if let Some(stale) = stale {
            query.push(("stale", stale));
        }
        let response = self
            .client
            .get(format!("{}/wechat/token/forcerefresh", self.base))
            .query(&query)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GET `path` without credentials (status page, health): status and body text.
    pub async fn page(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// `GET /readyz`: its status and JSON body.
    pub async fn readiness(&self) -> (StatusCode, Value) {
        let response = self
            .client
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(self) {
        self.begin_stop();
        self.stopped_within(Duration::from_secs(10)).await;
    }

    /// Starts a graceful shutdown, as SIGTERM does.
    pub fn begin_stop(&self) {
        self.shutdown.cancel();
    }

    /// Waits for the server to stop, which must take less than `limit`.
    pub async fn stopped_within(self, limit: Duration) {
        tokio::time::timeout(limit, self.task)
            .await
            .unwrap_or_else(|_| panic!("server stops within {limit:?}"))
            .unwrap()
            .unwrap();
    }
}
