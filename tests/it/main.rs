//! One integration-test binary (one link step), one module per feature.

mod helpers;
mod process;
mod prom;

mod cli;
mod force_refresh;
mod health;
mod legacy_api;
mod metrics;
mod quota;
mod refresh;
mod restart;
mod status_page;
