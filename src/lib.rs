//! wechat-token-server: a central-control server (中控服务器) for WeChat credentials.
//!
//! Layout:
//! - [`cli`]: clap types for the `serve`, `demo`, `simulate` and `check-config` commands.
//! - [`simulator`]: an offline WeChat token API with WeChat's rules and fault injection.

pub mod cli;
pub mod simulator;
