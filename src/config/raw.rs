//! The config file as written: serde types with defaults, unknown keys rejected.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Default listen address, the Python original's `bindIp`/`bindPort` defaults.
pub const DEFAULT_BIND: &str = "0.0.0.0:12123";

/// Default `server.max_connections` (SPEC.md, "Inbound limits"): far above what the
/// business servers of one deployment keep open, far below the file descriptors a
/// systemd service gets (`LimitNOFILE` 524288 on current systemd).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Default `server.shutdown_timeout` in seconds (SPEC.md): systemd's default
/// `TimeoutStopSec` is 90 s, Kubernetes' grace period 30 s; requests get all of it.
pub const DEFAULT_SHUTDOWN_TIMEOUT: f64 = 30.0;

/// Default `server.header_read_timeout` in seconds (SPEC.md): a client on any real
/// network sends its request headers in well under a second; slowloris never does.
pub const DEFAULT_HEADER_READ_TIMEOUT: f64 = 30.0;

/// Default `server.idle_timeout` in seconds (SPEC.md): longer than the header timeout,
/// so that pools which keep connections a little while (nginx `keepalive`) reuse them.
pub const DEFAULT_IDLE_TIMEOUT: f64 = 60.0;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub store: RawStore,
    pub refresh: RawRefresh,
    pub quota: RawQuota,
    pub metrics: RawMetrics,
    pub gateway: RawGateway,
    pub sources: BTreeMap<String, RawSource>,
    /// `[apps.NAME]` presets, kept as tables: which keys are allowed depends on the
    /// `platform` key, so each is deserialised by `presets` once that is known.
    pub apps: BTreeMap<String, toml::Table>,
    /// `[clients.NAME]`: keys with a scope.
    pub clients: BTreeMap<String, RawClient>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub bind: SocketAddr,
    pub request_secret: Option<String>,
    pub max_connections: usize,
    /// Seconds, fractions allowed (as every duration of the file).
    pub shutdown_timeout: f64,
    pub header_read_timeout: f64,
    pub idle_timeout: f64,
    /// CIDRs or addresses of reverse proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<String>,
    /// PEM files for HTTPS; both or neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            bind: DEFAULT_BIND
                .parse()
                .expect("DEFAULT_BIND is a valid socket address"),
            request_secret: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            trusted_proxies: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// Where tokens are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Files under `store.path`: survives restarts, no extra service.
    #[default]
    Embedded,
    /// A Redis server shared by a cluster of instances.
    Redis,
    /// Process memory only: for tests; tokens are lost on restart.
    Memory,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Redis => "redis",
            Backend::Memory => "memory",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    pub backend: Backend,
    pub path: PathBuf,
    pub redis_url: Option<String>,
    pub redis_ca: Option<PathBuf>,
    pub key_prefix: String,
    pub encryption_key: Option<String>,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            backend: Backend::Embedded,
            path: PathBuf::from("./data"),
            redis_url: None,
            redis_ca: None,
            key_prefix: String::new(),
            encryption_key: None,
        }
    }
}

/// Refresh timing, in seconds (fractions allowed).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRefresh {
    pub token_expire_time: Option<f64>,
    pub min_retry_delay: f64,
    pub max_retry_delay: f64,
    pub force_min_interval: f64,
    pub upstream_timeout: f64,
    pub needs_person_retry_delay: f64,
    pub upstream_grace: f64,
    pub max_concurrent_calls: usize,
}

/// Default `refresh.max_concurrent_calls` (SPEC.md).
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 32;

impl Default for RawRefresh {
    fn default() -> Self {
        Self {
            token_expire_time: None,
            min_retry_delay: 1.0,
            max_retry_delay: 60.0,
            force_min_interval: 30.0,
            upstream_timeout: 10.0,
            needs_person_retry_delay: 300.0,
            upstream_grace: 300.0,
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
        }
    }
}

/// `[quota]`: calls per app and API per WeChat day.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawQuota {
    pub daily_limit: u64,
    pub reserve: u64,
}

impl Default for RawQuota {
    fn default() -> Self {
        Self {
            daily_limit: 2000,
            reserve: 200,
        }
    }
}

/// `[metrics]`: what `/metrics` exports.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    pub per_app: bool,
}

impl Default for RawMetrics {
    fn default() -> Self {
        Self { per_app: true }
    }
}

/// Default `gateway.max_body` in bytes (SPEC.md): WeChat's largest media upload
/// (a 20 MB video) fits.
pub const DEFAULT_GATEWAY_MAX_BODY: u64 = 20 * 1024 * 1024;

/// `[gateway]`: the WeChat API gateway.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGateway {
    /// Largest request or response body forwarded, in bytes.
    pub max_body: u64,
    /// Longest one forwarded call may take, in seconds.
    pub timeout: f64,
}

impl Default for RawGateway {
    fn default() -> Self {
        Self {
            max_body: DEFAULT_GATEWAY_MAX_BODY,
            timeout: 30.0,
        }
    }
}

/// HTTP method of a source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Method {
    #[default]
    #[serde(alias = "get")]
    GET,
    #[serde(alias = "post")]
    POST,
}

/// An argument value: strings, numbers and booleans are all sent as text.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ArgValue {
    Text(String),
    Integer(i64),
    Bool(bool),
}

impl ArgValue {
    pub fn into_text(self) -> String {
        match self {
            ArgValue::Text(s) => s,
            ArgValue::Integer(i) => i.to_string(),
            ArgValue::Bool(b) => b.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub url: String,
    #[serde(default)]
    pub method: Method,
    #[serde(default)]
    pub args: BTreeMap<String, ArgValue>,
    pub body: Option<toml::Table>,
    pub token_field: Option<String>,
    pub expires_field: Option<String>,
}

/// `"*"` or a list of names, as `apps` and `tokens` of a client take.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawScope {
    One(String),
    Many(Vec<String>),
}

/// `[clients.NAME]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    pub key: Option<String>,
    pub key_sha256: Option<String>,
    pub apps: RawScope,
    pub tokens: RawScope,
    #[serde(default)]
    pub refresh: bool,
    pub networks: Option<Vec<String>>,
    #[serde(default)]
    pub admin: bool,
    /// Gateway requests per second (a token bucket of one second's burst).
    pub rate: Option<f64>,
}
