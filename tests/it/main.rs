//! One integration-test binary (one link step), one module per feature.

mod helpers;
mod process;
mod redis_server;

mod cli;
mod cluster;
mod cluster_processes;
mod force_refresh;
mod legacy_api;
mod refresh;
mod restart;
mod simulator;
mod store_contract;
