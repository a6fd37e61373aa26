//! WeChat API simulator (stub: being written; see issue 3).
//!
//! Public surface that the rest of the crate and the tests rely on.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Demo Official Account id accepted when no `--app` is given.
pub const DEMO_APPID: &str = "wx_demo_appid";
/// Secret of [`DEMO_APPID`].
pub const DEMO_SECRET: &str = "demo_secret";
/// Demo WeCom corp id accepted when no `--corp` is given.
pub const DEMO_CORPID: &str = "ww_demo_corpid";
/// Secret of [`DEMO_CORPID`].
pub const DEMO_CORPSECRET: &str = "demo_corpsecret";

/// Shown after `simulate --help`.
pub const DEMO_HELP: &str = "Demo app (accepted when no --app/--corp is given): appid wx_demo_appid, secret demo_secret; corpid ww_demo_corpid, corpsecret demo_corpsecret.";

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// (appid, secret) pairs; empty means the demo app.
    pub apps: Vec<(String, String)>,
    /// (corpid, corpsecret) pairs; empty means the demo corp.
    pub corps: Vec<(String, String)>,
    /// Lifetime of issued credentials.
    pub expires_in: Duration,
    /// How long a replaced credential stays valid.
    pub grace: Duration,
    /// Successful calls per app and endpoint per day.
    pub daily_quota: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            apps: Vec::new(),
            corps: Vec::new(),
            expires_in: Duration::from_secs(7200),
            grace: Duration::from_secs(300),
            daily_quota: 2000,
        }
    }
}

/// Shared simulator state; cheap to clone.
#[derive(Clone)]
pub struct Simulator {}

impl Simulator {
    pub fn new(_config: SimConfig) -> Self {
        Self {}
    }
    /// Calls counted for `endpoint` (e.g. "/cgi-bin/token") since start or reset.
    pub fn calls(&self, _endpoint: &str) -> u64 {
        0
    }
    /// Is this access_token accepted by WeChat right now?
    pub fn access_token_valid(&self, _token: &str) -> bool {
        false
    }
    /// Is this ticket accepted by WeChat right now?
    pub fn ticket_valid(&self, _ticket: &str) -> bool {
        false
    }
    /// Serves WeChat's routes and `/sim/*` until `shutdown` is cancelled.
    pub async fn serve(
        self,
        _listener: TcpListener,
        _shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

/// A simulator running on its own task, for tests and `demo`.
pub struct SimHandle {
    pub addr: SocketAddr,
    pub sim: Simulator,
    pub shutdown: CancellationToken,
}

/// `simulate` (stub).
pub async fn run_cli(
    _args: crate::cli::SimulateArgs,
    _shutdown: CancellationToken,
) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
