//! One integration-test binary (one link step), one module per feature.

mod apps;
mod helpers;
mod process;

mod cli;
mod clients;
mod force_refresh;
mod jssdk;
mod legacy_api;
mod openapi;
mod platforms;
mod refresh;
mod restart;
mod stable_token;
mod v1_api;
