//! Configuration: TOML with `${VAR}` expansion, unknown keys rejected, every value
//! checked and turned into a typed [`Config`] whose errors name the offending key.

mod clients;
pub mod component;
mod env;
mod masked;
mod presets;
mod raw;
mod sources;
mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use clients::{ClientConfig, MIN_KEY_LEN, Scope, sha256};
pub use presets::{
    MP_API_BASE, Platform, Preset, SECRET_KEYS, TOKEN_NAMES, WECOM_API_BASE, preset_app,
};
pub use raw::{Backend, Method};
pub use sources::{AppConfig, ForcedMode, SourceConfig};
pub use store::REDIS_SCHEMES;

use crate::domain::Secret;

/// Name of the app that `[sources.*]` belong to, as in the Python original.
pub const DEFAULT_APP: &str = "default";

/// Why a config was rejected. Every variant names the key so the user can fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The I/O error is the source, not part of the message: `{:#}` chains print it
    /// once.
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config is not valid TOML: {0}")]
    Syntax(String),
    #[error("{key}: environment variable {var} is not set")]
    MissingEnv { key: String, var: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl Error {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub refresh: RefreshConfig,
    pub quota: QuotaConfig,
    pub metrics: MetricsConfig,
    pub gateway: GatewayConfig,
    /// Every app with its sources in dependency order: `default` (from `[sources]`)
    /// first, then `[apps.NAME]` by name.
    pub apps: Vec<AppConfig>,
    /// `[clients.NAME]`, by name.
    pub clients: Vec<ClientConfig>,
}

/// `[gateway]`: the WeChat API gateway (SPEC.md, "WeChat-compatible facade and API
/// gateway").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GatewayConfig {
    /// Largest request or response body forwarded, in bytes.
    pub max_body: usize,
    /// Longest one forwarded call may take (each of a retried pair).
    pub timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_body: raw::DEFAULT_GATEWAY_MAX_BODY as usize,
            timeout: Duration::from_secs(30),
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address the HTTP API listens on.
    pub bind: SocketAddr,
    /// The seed's `requestSecret`: may read and refresh every token.
    pub request_secret: Secret,
    /// At most this many connections are open at once; past it, new connections wait
    /// in the listen backlog until one closes (SPEC.md, "Inbound limits").
    pub max_connections: usize,
    /// How long a graceful shutdown waits for open requests and connections before it
    /// closes them.
    pub shutdown_timeout: Duration,
    /// A connection that has not sent a whole request head this long after it opened,
    /// or after the first byte of its next request, is closed (slowloris).
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no request under way and no new one started this
    /// long is closed.
    pub idle_timeout: Duration,
    /// Peers whose `X-Forwarded-For` / `X-Real-IP` are believed (reverse proxies); the
    /// headers of anyone else are ignored. Empty: nobody's.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// HTTPS instead of HTTP: `server.tls_cert` and `server.tls_key`.
    pub tls: Option<TlsFiles>,
}

/// PEM files of the HTTPS certificate chain and its private key. Read when the server
/// starts (and again on a reload); `check-config` reads them too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[store]`.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backend: Backend,
    /// Folder of the embedded store.
    pub path: PathBuf,
    /// Redis URL; a secret because it may carry a password.
    pub redis_url: Secret,
    /// PEM file of the CA that a `rediss://` server's certificate is checked against
    /// (`store.redis_ca`); none: the system's roots.
    pub redis_ca: Option<PathBuf>,
    /// Prefix of every Redis key; "" keeps the seed's plain keys.
    pub key_prefix: String,
    /// Seals the registry's app secrets at rest (`store.encryption_key`, 32 bytes).
    pub encryption_key: Option<EncryptionKey>,
}

/// A 32-byte key for the AEAD that seals secrets at rest. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionKey(pub [u8; 32]);

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKey(***)")
    }
}

impl EncryptionKey {
    /// Parses 64 hex digits or the base64 of 32 bytes.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `store.encryption_key`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        use base64::Engine;
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .ok()
        } else {
            base64::engine::general_purpose::STANDARD.decode(text).ok()
        };
        match bytes.map(<[u8; 32]>::try_from) {
            Some(Ok(key)) => Ok(Self(key)),
            _ => Err(Error::invalid(
                "store.encryption_key",
                "must be 32 bytes written as 64 hex digits or in base64 (make one with: openssl rand -hex 32)",
            )),
        }
    }
}

/// `[refresh]`: when and how tokens are renewed.
#[derive(Debug, Clone)]
pub struct RefreshConfig {
    /// Upper bound on a token's cached lifetime (the seed's `tokenExpireTime`).
    pub token_expire_time: Option<Duration>,
    /// First retry delay after a failed refresh; doubles up to `max_retry_delay`.
    pub min_retry_delay: Duration,
    pub max_retry_delay: Duration,
    /// A force refresh without `stale` is performed at most this often per token.
    pub force_min_interval: Duration,
    /// Timeout of one call to WeChat.
    pub upstream_timeout: Duration,
    /// Retry delay after an error that only a person can fix (wrong AppSecret, IP not
    /// whitelisted, ...): retrying at full speed would only spend quota and fill logs.
    pub needs_person_retry_delay: Duration,
    /// How long WeChat keeps a replaced token valid (5 minutes). A call whose outcome
    /// is unknown may have replaced the served token: from the call's start, that
    /// token is trusted only this long.
    pub upstream_grace: Duration,
    /// The most token and ticket calls to WeChat in flight at once, over every app: a
    /// first start with 10,000 apps must not open 20,000 connections at once.
    pub max_concurrent_calls: usize,
}

/// `[quota]`: the guard that keeps force refreshes and retries from spending the quota
/// that scheduled refreshes need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaConfig {
    /// WeChat's daily limit per app and token API (2000 for `/cgi-bin/token`).
    pub daily_limit: u64,
    /// Calls kept for scheduled refreshes: force refreshes and retries stop once
    /// `daily_limit - reserve` calls were made today. Always below `daily_limit`.
    pub reserve: u64,
}

impl QuotaConfig {
    /// Calls today after which force refreshes and retries stop.
    pub fn discretionary_limit(&self) -> u64 {
        self.daily_limit - self.reserve
    }
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            daily_limit: 2000,
            reserve: 200,
        }
    }
}

/// `[metrics]`: what `/metrics` exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Export series per app and token (`app`/`token` labels): one gauge per token and
    /// counters of the failures that happened. `false` keeps `/metrics` to aggregates
    /// whose size does not grow with the number of apps (for thousands of apps, when
    /// the status page and the logs are where a person looks for the app).
    pub per_app: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { per_app: true }
    }
}

impl Config {
    /// Reads and validates the config file at `path`, expanding `${VAR}` from the process
    /// environment.
    ///
    /// # Errors
    /// See [`Error`]; every message names the file position or key at fault.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &|name| std::env::var(name).ok())
    }

    /// Parses config text; `lookup` resolves `${VAR}` (a parameter so tests need no
    /// process environment).
    ///
    /// # Errors
    /// See [`Error`].
    pub fn parse(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| Error::Syntax(e.to_string()))?;
        env::expand_table(&mut table, "", lookup)?;
        let raw: raw::RawConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| serde_error("", e))?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: raw::RawConfig) -> Result<Self, Error> {
        let request_secret = raw.server.request_secret.unwrap_or_default();
        if request_secret.is_empty() {
            return Err(Error::invalid(
                "server.request_secret",
                "must be set: it is the secret business servers present (secret= or Bearer); use \"${WTS_REQUEST_SECRET}\" to read it from the environment",
            ));
        }
        // The request secret may do more than any client key: it gets at least their
        // length rule.
        if request_secret.chars().count() < MIN_KEY_LEN {
            return Err(Error::invalid(
                "server.request_secret",
                format!(
                    "must be at least {MIN_KEY_LEN} characters, like client keys (e.g. openssl rand -hex 16)"
                ),
            ));
        }
        let max_connections = max_connections(raw.server.max_connections)?;
        let store = store::store(raw.store)?;
        let refresh = RefreshConfig {
            token_expire_time: raw
                .refresh
                .token_expire_time
                .map(token_expire_time)
                .transpose()?,
            min_retry_delay: seconds("refresh.min_retry_delay", raw.refresh.min_retry_delay)?,
            max_retry_delay: seconds("refresh.max_retry_delay", raw.refresh.max_retry_delay)?,
            force_min_interval: non_negative_seconds(
                "refresh.force_min_interval",
                raw.refresh.force_min_interval,
            )?,
            upstream_timeout: seconds("refresh.upstream_timeout", raw.refresh.upstream_timeout)?,
            needs_person_retry_delay: seconds(
                "refresh.needs_person_retry_delay",
                raw.refresh.needs_person_retry_delay,
            )?,
            upstream_grace: seconds("refresh.upstream_grace", raw.refresh.upstream_grace)?,
            max_concurrent_calls: max_concurrent_calls(raw.refresh.max_concurrent_calls)?,
        };
        if refresh.max_retry_delay < refresh.min_retry_delay {
            return Err(Error::invalid(
                "refresh.max_retry_delay",
                "must not be smaller than refresh.min_retry_delay",
            ));
        }
        let quota = quota(&raw.quota)?;
        let gateway = GatewayConfig {
            max_body: match usize::try_from(raw.gateway.max_body) {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(Error::invalid(
                        "gateway.max_body",
                        "must be a positive number of bytes (default 20971520, 20 MiB)",
                    ));
                }
            },
            timeout: seconds("gateway.timeout", raw.gateway.timeout)?,
        };
        let mut apps = Vec::new();
        if !raw.sources.is_empty() {
            apps.push(sources::generic_app(DEFAULT_APP, raw.sources)?);
        }
        for (name, table) in raw.apps {
            if name == DEFAULT_APP && !apps.is_empty() {
                return Err(Error::invalid(
                    format!("apps.{DEFAULT_APP}"),
                    "the app name \"default\" is taken by the [sources] tables; rename this app",
                ));
            }
            apps.push(presets::preset_app(&name, table)?);
        }
        if apps.is_empty() {
            return Err(Error::invalid(
                "sources",
                "no token is configured: add [apps.NAME] or [sources.access_token] (see wechat-token-server.example.toml)",
            ));
        }
        if let Some(platform) = apps.iter().find(|a| a.component.is_some())
            && store.backend == Backend::Redis
            && store.encryption_key.is_none()
        {
            return Err(Error::invalid(
                format!("apps.{}", platform.name),
                "an Open Platform app keeps its authorizers' refresh tokens in the shared store, only sealed: set store.encryption_key (32 bytes, e.g. openssl rand -hex 32) on every instance",
            ));
        }
        component::check_platforms(&apps)?;
        let clients = clients::parse_clients(raw.clients, &apps, &request_secret)?;
        Ok(Config {
            server: ServerConfig {
                bind: raw.server.bind,
                request_secret: Secret::new(request_secret),
                max_connections,
                shutdown_timeout: seconds("server.shutdown_timeout", raw.server.shutdown_timeout)?,
                header_read_timeout: seconds(
                    "server.header_read_timeout",
                    raw.server.header_read_timeout,
                )?,
                idle_timeout: seconds("server.idle_timeout", raw.server.idle_timeout)?,
                trusted_proxies: clients::parse_nets(
                    "server.trusted_proxies",
                    &raw.server.trusted_proxies,
                )?,
                tls: tls_files(raw.server.tls_cert, raw.server.tls_key)?,
            },
            store,
            refresh,
            quota,
            metrics: MetricsConfig {
                per_app: raw.metrics.per_app,
            },
            gateway,
            apps,
            clients,
        })
    }

    /// The resolved config as TOML with every secret replaced by `***`.
    pub fn to_masked_toml(&self) -> String {
        masked::render(self)
    }

    /// Finds an app by name.
    pub fn app(&self, name: &str) -> Option<&AppConfig> {
        self.apps.iter().find(|a| a.name == name)
    }
}

/// A serde error as [`Error::Invalid`] naming the full key: `prefix` plus the path
/// serde reached (which ends with the offending key, unknown keys included).
fn serde_error(prefix: &str, e: serde_path_to_error::Error<toml::de::Error>) -> Error {
    let path = e.path().to_string();
    let mut key = match (prefix, path.as_str()) {
        ("", ".") => String::new(),
        ("", path) => path.to_owned(),
        (prefix, ".") => prefix.to_owned(),
        (prefix, path) => format!("{prefix}.{path}"),
    };
    let message = e.inner().message().to_owned();
    if key.is_empty() {
        key = "config".to_owned();
    }
    Error::invalid(key, message)
}

fn tls_files(cert: Option<PathBuf>, key: Option<PathBuf>) -> Result<Option<TlsFiles>, Error> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => {
            for (name, path) in [("server.tls_cert", &cert), ("server.tls_key", &key)] {
                if path.as_os_str().is_empty() {
                    return Err(Error::invalid(name, "must not be empty"));
                }
            }
            Ok(Some(TlsFiles { cert, key }))
        }
        (Some(_), None) => Err(Error::invalid(
            "server.tls_key",
            "must be set with server.tls_cert (the PEM file of the certificate's private key)",
        )),
        (None, Some(_)) => Err(Error::invalid(
            "server.tls_cert",
            "must be set with server.tls_key (the PEM file of the certificate chain)",
        )),
    }
}

fn quota(raw: &raw::RawQuota) -> Result<QuotaConfig, Error> {
    if raw.daily_limit == 0 {
        return Err(Error::invalid(
            "quota.daily_limit",
            "must be at least 1 (WeChat's limit for /cgi-bin/token is 2000)",
        ));
    }
    if raw.reserve >= raw.daily_limit {
        return Err(Error::invalid(
            "quota.reserve",
            format!(
                "must be smaller than quota.daily_limit ({}), or force refreshes could never call WeChat",
                raw.daily_limit
            ),
        ));
    }
    Ok(QuotaConfig {
        daily_limit: raw.daily_limit,
        reserve: raw.reserve,
    })
}

fn max_connections(value: usize) -> Result<usize, Error> {
    // The upper bound is the most a tokio semaphore can count, which holds them.
    let most = tokio::sync::Semaphore::MAX_PERMITS;
    if (1..=most).contains(&value) {
        Ok(value)
    } else {
        Err(Error::invalid(
            "server.max_connections",
            format!("must be between 1 and {most} (default 10000), got {value}"),
        ))
    }
}

/// Most `refresh.max_concurrent_calls`: beyond it a single instance would only trade
/// WeChat's patience (and its own file descriptors) for nothing; 20,000 tokens are
/// fetched well within a minute at the default 32.
pub const MOST_CONCURRENT_CALLS: usize = 1024;

fn max_concurrent_calls(value: usize) -> Result<usize, Error> {
    if (1..=MOST_CONCURRENT_CALLS).contains(&value) {
        Ok(value)
    } else {
        Err(Error::invalid(
            "refresh.max_concurrent_calls",
            format!(
                "must be between 1 and {MOST_CONCURRENT_CALLS} (default {}), got {value}",
                raw::DEFAULT_MAX_CONCURRENT_CALLS
            ),
        ))
    }
}

/// Shortest `refresh.token_expire_time`: below a minute the server would refresh so
/// often that it spends WeChat's daily quota within hours (a value meant in hours,
/// written in seconds, is the usual mistake).
const MIN_TOKEN_EXPIRE_TIME: f64 = 60.0;

fn token_expire_time(value: f64) -> Result<Duration, Error> {
    let key = "refresh.token_expire_time";
    let cap = seconds(key, value)?;
    if value < MIN_TOKEN_EXPIRE_TIME {
        return Err(Error::invalid(
            key,
            format!(
                "must be at least {MIN_TOKEN_EXPIRE_TIME} seconds (it is in seconds: WeChat's tokens live 7200), got {value}"
            ),
        ));
    }
    Ok(cap)
}

fn seconds(key: &str, value: f64) -> Result<Duration, Error> {
    if value.is_finite() && value > 0.0 && value < 1e9 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(Error::invalid(
            key,
            format!("must be a positive number of seconds, got {value}"),
        ))
    }
}

fn non_negative_seconds(key: &str, value: f64) -> Result<Duration, Error> {
    if value == 0.0 {
        Ok(Duration::ZERO)
    } else {
        seconds(key, value)
    }
}

#[cfg(test)]
mod tests;
