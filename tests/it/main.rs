//! One integration-test binary (one link step), one module per feature.

mod helpers;
mod process;

mod cli;
mod force_refresh;
mod legacy_api;
mod refresh;
mod restart;
mod simulator;
