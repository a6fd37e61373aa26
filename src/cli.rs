//! Command-line interface: clap types only, no logic.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Central-control server (中控服务器) for WeChat access_token and tickets.
///
/// It alone talks to WeChat's token APIs, refreshes each credential ahead of expiry,
/// stores it and serves it to your business servers over HTTP.
#[derive(Debug, Parser)]
#[command(name = "wechat-token-server", version, about, long_about)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Logging flags shared by every command. Logs go to stderr.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log filter in `RUST_LOG` syntax, e.g. `info` or `wechat_token_server=debug`.
    #[arg(long, global = true, env = "WTS_LOG", default_value = "info")]
    pub log_level: String,

    /// Log format: human-readable text (default on a terminal) or one JSON object per line.
    #[arg(long, global = true, env = "WTS_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the token server.
    Serve(ServeArgs),
    /// Run the built-in WeChat simulator and a server wired to it: try it with no setup.
    Demo(DemoArgs),
    /// Run the WeChat API simulator alone, for offline development and tests.
    Simulate(SimulateArgs),
    /// Validate a config file and print it resolved, with every secret masked.
    CheckConfig(ConfigArgs),
    /// Ask a running server whether it is ready: exit 0 when its /readyz answers 200,
    /// else print what is wrong and exit 1. For container healthchecks.
    Healthcheck(HealthcheckArgs),
    /// Make a running server read its config file again: SIGHUP to the process of a
    /// pid file, or POST /v1/reload to a URL (which answers what changed).
    Reload(ReloadArgs),
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Write the process id here (for `reload --pid-file`); removed on exit.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
}

/// Flags of `reload`: exactly one of `--pid-file` and `--url`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["pid_file", "url"])))]
pub struct ReloadArgs {
    /// The pid file of `serve --pid-file`: the process gets SIGHUP.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// The server's base URL, e.g. http://127.0.0.1:12123: POST /v1/reload.
    #[arg(long)]
    pub url: Option<String>,
    /// With --url: the request secret or an admin client's key.
    #[arg(long, env = "WTS_REQUEST_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

/// Flags of `healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The server to check: a base URL (`http://HOST:PORT`) checks its `/readyz`; a URL
    /// with a path checks that path.
    #[arg(long, default_value = crate::healthcheck::DEFAULT_URL)]
    pub url: String,
}

/// Where the config file is.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Config file (TOML). Default: `$WTS_CONFIG`, else `./wechat-token-server.toml`.
    #[arg(
        long,
        short,
        env = "WTS_CONFIG",
        default_value = "wechat-token-server.toml"
    )]
    pub config: PathBuf,
}

/// Flags of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Port for the token server on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 12123)]
    pub port: u16,

    /// Keep the demo store in `./demo-data` instead of a temporary folder.
    #[arg(long)]
    pub keep_data: bool,
}

/// Flags of `simulate`.
#[derive(Debug, Args)]
#[command(after_help = crate::simulator::DEMO_HELP)]
pub struct SimulateArgs {
    /// Address to listen on. Loopback by default: the simulator has no authentication.
    #[arg(long, default_value = "127.0.0.1:9099")]
    pub bind: SocketAddr,

    /// An Official Account / Mini Program the simulator accepts, as APPID:SECRET (repeatable).
    #[arg(long = "app", value_name = "APPID:SECRET")]
    pub apps: Vec<String>,

    /// A WeCom corp the simulator accepts, as CORPID:SECRET (repeatable).
    #[arg(long = "corp", value_name = "CORPID:SECRET")]
    pub corps: Vec<String>,

    /// A file of apps to accept, one APPID:SECRET per line; blank lines and lines
    /// starting with '#' are skipped. Adds to --app.
    #[arg(long, value_name = "FILE")]
    pub apps_file: Option<PathBuf>,

    /// Also accept any appid or corpid not listed, with the secret "secret-" followed by
    /// the id (appid wx123: secret-wx123). A WeCom corp ww1 also takes secret-ww1-NAME,
    /// each distinct secret its own WeCom app. For tests with thousands of apps.
    #[arg(long)]
    pub accept_any_app: bool,

    /// Lifetime in seconds of every token and ticket issued (WeChat: 7200).
    #[arg(long, default_value_t = 7200)]
    pub expires_in: u64,

    /// Seconds a replaced access_token or ticket stays valid; also how early stable_token
    /// renews in normal mode (WeChat: 300 for both).
    #[arg(long, default_value_t = 300)]
    pub grace: u64,

    /// Successful calls per app and per API per WeChat day (midnight UTC+8) before 45009
    /// (WeChat: 2000 for /cgi-bin/token). Applies to every simulated API alike.
    #[arg(long, default_value_t = 2000)]
    pub daily_quota: u64,

    /// An Open Platform component (第三方平台) the simulator accepts, as
    /// APPID:SECRET:TOKEN:AESKEY: component_appid, component_appsecret, the message
    /// Token and the 43-character EncodingAESKey (repeatable).
    #[arg(long = "component", value_name = "APPID:SECRET:TOKEN:AESKEY")]
    pub components: Vec<String>,

    /// Every N-th api_authorizer_token call of an authorizer returns a new
    /// authorizer_refresh_token, the old one refused at once (0: never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub component_rotate_every: u32,

    /// Push a fresh component_verify_ticket every SECS seconds to each component's
    /// remembered URL (WeChat: every 600). Default: only when asked.
    #[arg(long, value_name = "SECS")]
    pub component_push_every: Option<u64>,
}
