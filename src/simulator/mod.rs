//! WeChat API simulator: WeChat's token rules, offline, for tests, `demo` and users.
//!
//! It serves the endpoints the server calls with WeChat's request and reply shapes and the
//! rules of `WECHAT-API.md`: lifetimes, a replaced credential valid for a grace period, the
//! daily quota, stable_token's normal and forced modes, the error codes. An admin surface
//! under `/sim/` counts calls, tells whether a credential is accepted, injects faults,
//! resets and moves the clock. See `docs/simulator.md` for the user's guide.
//!
//! Layout:
//! - `endpoint.rs`: the endpoints, by name and path.
//! - `accounts.rs`: the apps and corps accepted (listed, or any under a secret rule).
//! - `in_flight.rs`: token and ticket calls answered at once.
//! - `clock.rs`: an advanceable clock and WeChat's day (UTC+8).
//! - `state.rs`: issued credentials, validity, quotas, counters.
//! - `wechat.rs`: each endpoint's rules and error codes.
//! - `faults.rs`: fault requests and their per-endpoint queue.
//! - `component.rs`, `component_rules.rs`: Open Platform components (tickets, codes,
//!   authorizers) and the rules of their endpoints.
//! - `push.rs`: encrypted authorisation events pushed to a component's URL.
//! - `routes.rs`, `admin.rs`, `component_admin.rs`: HTTP for WeChat's routes and for
//!   `/sim/*`.
//! - `command.rs`: the `simulate` command.

mod accounts;
mod admin;
mod apis;
mod clock;
mod command;
mod component;
mod component_admin;
mod component_rules;
mod endpoint;
mod faults;
mod in_flight;
mod push;
mod routes;
mod state;
mod wechat;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use accounts::any_app_secret;
pub use clock::wechat_day;
pub use command::{parse_component, parse_credential, run_cli};
pub use component::{
    ComponentAccount, DEMO_COMPONENT_AES_KEY, DEMO_COMPONENT_APPID, DEMO_COMPONENT_SECRET,
    DEMO_COMPONENT_TOKEN,
};
pub use endpoint::Endpoint;
pub use faults::{Fault, FaultError, FaultKind};
pub use push::{PushError, Pushed, TicketPush};
pub use state::Stats;
pub use wechat::{FORCED_PER_DAY, FORCED_SPACING};

use in_flight::InFlight;
use state::{Lookup, State};

/// Demo Official Account id accepted when no `--app` is given.
pub const DEMO_APPID: &str = "wx_demo_appid";
/// Secret of [`DEMO_APPID`].
pub const DEMO_SECRET: &str = "demo_secret";
/// Demo WeCom corp id accepted when no `--corp` is given.
pub const DEMO_CORPID: &str = "ww_demo_corpid";
/// Secret of [`DEMO_CORPID`].
pub const DEMO_CORPSECRET: &str = "demo_corpsecret";

/// Shown after `simulate --help`.
pub const DEMO_HELP: &str = "\
Demo apps (public, for trying things out):
  without --app:  appid wx_demo_appid, secret demo_secret
  without --corp: corpid ww_demo_corpid, corpsecret demo_corpsecret
  without --component: Open Platform component wx_demo_component, secret
    demo_component_secret, Token demo_component_token, EncodingAESKey
    DemoComponentEncodingAesKey0123456789abcdef

Thousands of apps: --apps-file FILE (one APPID:SECRET a line, '#' comments), or
--accept-any-app: any appid or corpid not listed is accepted with the secret
\"secret-\" + the id (appid wx123 -> secret-wx123; corp ww1 -> secret-ww1, and also
secret-ww1-NAME, one WeCom app per distinct secret).

Admin routes: GET /sim/stats (also in_flight and max_in_flight: token and ticket
calls answered at once), GET /sim/valid?access_token=T (or ?ticket=T),
POST /sim/faults, POST /sim/reset, POST /sim/advance {\"seconds\": N};
Open Platform: POST /sim/component/push_ticket {\"component_appid\", \"url\"},
/sim/component/authorize and /unauthorize {\"component_appid\", \"authorizer_appid\",
\"url\"}, /sim/component/rotate, /sim/component/url (see docs/simulator.md).
Example: curl 'http://127.0.0.1:9099/cgi-bin/token?grant_type=client_credential&appid=wx_demo_appid&secret=demo_secret'";

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// (appid, secret) pairs; empty means the demo app.
    pub apps: Vec<(String, String)>,
    /// (corpid, corpsecret) pairs, one per WeCom secret; empty means the demo corp.
    pub corps: Vec<(String, String)>,
    /// Lifetime of issued credentials (WeChat: 2 hours).
    pub expires_in: Duration,
    /// How long a replaced credential stays valid, and how early a stable_token is renewed
    /// in normal mode (WeChat: 5 minutes for both).
    pub grace: Duration,
    /// Successful calls per app and endpoint per WeChat day before 45009.
    pub daily_quota: u64,
    /// Also accept any appid or corpid not in `apps`/`corps`, with the secret
    /// [`any_app_secret`] gives (`secret-ID`; WeCom also `secret-ID-NAME`, one WeCom app
    /// per distinct secret).
    pub accept_any_app: bool,
    /// Open Platform components; empty means the demo component.
    pub components: Vec<ComponentAccount>,
    /// Every N-th successful `api_authorizer_token` call of an authorizer returns a new
    /// refresh token and makes the old one invalid at once; 0 never rotates.
    pub component_rotate_every: u32,
    /// Push a fresh verify ticket this often to each component whose URL is known
    /// (WeChat: every 10 minutes); `None` pushes only on request.
    pub component_push_every: Option<Duration>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            apps: Vec::new(),
            corps: Vec::new(),
            expires_in: Duration::from_secs(7200),
            grace: Duration::from_secs(300),
            daily_quota: 2000,
            accept_any_app: false,
            components: Vec::new(),
            component_rotate_every: 0,
            component_push_every: None,
        }
    }
}

/// Shared simulator state; cheap to clone, every clone sees the same WeChat.
#[derive(Clone)]
pub struct Simulator {
    state: Arc<Mutex<State>>,
    in_flight: Arc<InFlight>,
    /// Pushes events to components' URLs.
    http: reqwest::Client,
}

impl Simulator {
    /// A simulator with nothing issued yet; its clock starts now.
    pub fn new(config: SimConfig) -> Self {
        // No proxy: pushes go to the test's or developer's own receiver, usually on
        // loopback, which a proxy from the environment must not intercept.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(push::PUSH_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            state: Arc::new(Mutex::new(State::new(config))),
            in_flight: Arc::default(),
            http,
        }
    }

    /// Binds 127.0.0.1 on a free port and serves on a new task until `shutdown` of the
    /// returned handle is cancelled. What tests and `demo` use.
    ///
    /// # Errors
    /// When the loopback port can't be bound.
    pub async fn spawn(config: SimConfig) -> std::io::Result<SimHandle> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let sim = Self::new(config);
        let shutdown = CancellationToken::new();
        let server = sim.clone().serve(listener, shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "WeChat simulator stopped");
            }
        });
        Ok(SimHandle {
            addr,
            sim,
            shutdown,
        })
    }

    /// Serves WeChat's routes and `/sim/*` until `shutdown` is cancelled, then lets
    /// requests in flight finish (injected delays are cut short).
    ///
    /// # Errors
    /// When accepting connections fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        if let Some(every) = self.lock().config.component_push_every {
            tokio::spawn(self.clone().push_periodically(every, shutdown.clone()));
        }
        let app = routes::router(self, shutdown.clone());
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }

    /// The state, locked. Never held across an await (see `state.rs`).
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while locked can only come from a bug; the counters and maps are still
        // usable, and a simulator that keeps answering is more useful to a test than one
        // that fails every later call.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls counted for `endpoint` (e.g. "/cgi-bin/token") since start or reset, failed
    /// and faulted ones included; 0 for a path the simulator does not serve.
    pub fn calls(&self, endpoint: &str) -> u64 {
        Endpoint::from_path(endpoint).map_or(0, |e| self.lock().calls(e))
    }

    /// Is this access_token (of any platform) accepted by WeChat right now?
    pub fn access_token_valid(&self, token: &str) -> bool {
        matches!(self.lock().lookup(token, true), Lookup::Valid(..))
    }

    /// Is this ticket accepted by WeChat right now?
    pub fn ticket_valid(&self, ticket: &str) -> bool {
        matches!(self.lock().lookup(ticket, false), Lookup::Valid(..))
    }

    /// Counters, as `GET /sim/stats` shows them.
    pub fn stats(&self) -> Stats {
        let mut stats = self.lock().stats();
        (stats.in_flight, stats.max_in_flight) = self.in_flight.read();
        stats
    }

    /// Queues a fault for the next `fault.count` calls of its endpoint.
    pub fn inject_fault(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Forgets faults, counters, quotas and issued credentials; the clock keeps its offset.
    pub fn reset(&self) {
        self.lock().reset();
        self.in_flight.reset();
    }

    /// Moves the simulator's clock ahead, so expiry and grace can be tested without waiting.
    pub fn advance(&self, by: Duration) {
        self.lock().clock.advance(by);
    }
}

/// A simulator running on its own task, for tests and `demo`.
pub struct SimHandle {
    /// Where it listens (127.0.0.1 and a free port).
    pub addr: SocketAddr,
    /// The running simulator's state, for assertions and fault injection.
    pub sim: Simulator,
    /// Cancel to stop it.
    pub shutdown: CancellationToken,
}

impl SimHandle {
    /// Base URL to use as `api_base`, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
