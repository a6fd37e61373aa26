//! One integration-test binary (one link step), one module per feature.

mod apps;
mod helpers;
mod process;
mod prom;
mod redis_server;

mod cli;
mod clients;
mod cluster;
mod cluster_processes;
mod deploy;
mod faults;
mod force_refresh;
mod health;
mod inbound_limits;
mod jssdk;
mod legacy_api;
mod metrics;
mod openapi;
mod platforms;
mod proxies;
mod quota;
mod redis_ha;
mod refresh;
mod registry;
mod reload;
mod restart;
mod scale;
mod simulator;
mod stable_token;
mod status_page;
mod store_contract;
mod tls;
mod v1_api;
