//! wechat-token-server: a central-control server (中控服务器) for WeChat credentials.
//!
//! It alone calls WeChat's token APIs, refreshes every token ahead of expiry, keeps it in
//! a store and serves it to business servers over HTTP, turning any storm of "this token
//! is bad" reports into at most one upstream call.
//!
//! Layout:
//! - [`cli`]: clap types for `serve`, `demo`, `simulate`, `check-config`, `healthcheck`.
//! - [`config`]: TOML loading, `${VAR}` expansion, validation, masked display.
//! - [`domain`]: small shared types (secrets, credential keys, log-safe token prefixes).
//! - [`upstream`]: the WeChat HTTP client and `{{name}}` templates.
//! - [`store`]: the `TokenStore` trait (versioned compare-and-set saves, pending marks,
//!   leases) with embedded (files), Redis and memory backends.
//! - [`refresh`]: the rules as pure functions (`decide`), one flight task per token
//!   (mailbox, shared flight, schedule) and its executor, the cluster lease and sync,
//!   the quota guard, readiness; tested in `tests/sim` by deterministic simulation.
//! - [`registry`]: the runtime app registry (`/v1/apps`), kept in the store and
//!   followed by every instance; secrets sealed at rest.
//! - [`reload`]: reading the config file again (SIGHUP, `POST /v1/reload`).
//! - [`auth`]: the request secret and client keys, scopes and networks.
//! - [`http`]: the router, the seed routes, the JSON API `/v1`, health and status page,
//!   `/metrics`.
//! - [`server`]: the accept loop under the router, with the inbound limits (timeouts,
//!   body limit, connection bound, panic guard, shutdown deadline).
//! - [`gateway`]: forwarding WeChat API calls with the current token, one retry after
//!   a rejected token; the facade (WeChat's token endpoints) is in [`http`].
//! - [`jssdk`]: JS-SDK signatures.
//! - [`wxcrypt`]: WeChat's message encryption (Open Platform events): sign, seal, open.
//! - [`metrics`]: every metric name and label, and the Prometheus rendering.
//! - [`healthcheck`]: the `healthcheck` command for container healthchecks.
//! - [`app`]: wiring of all the above; [`demo`]: the one-command demo.
//! - [`simulator`]: an offline WeChat token API with WeChat's rules and fault injection.
//! - [`telemetry`], [`shutdown`], [`log_limit`]: logging, signals, rate-limited log lines.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod demo;
pub mod domain;
pub mod gateway;
pub mod healthcheck;
pub mod http;
pub mod jssdk;
pub mod log_limit;
pub mod metrics;
pub mod refresh;
pub mod registry;
pub mod reload;
pub mod server;
pub mod shutdown;
pub mod simulator;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod wxcrypt;
