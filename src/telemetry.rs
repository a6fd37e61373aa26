//! Logging: text on a terminal, JSON lines for collectors; filter in `RUST_LOG` syntax.

use std::io::IsTerminal;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber writing to stderr.
///
/// # Errors
/// When the filter does not parse.
pub fn init(filter: &str, format: Option<LogFormat>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)
        .with_context(|| format!("invalid --log-level / WTS_LOG filter {filter:?}"))?;
    let stderr_is_tty = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format.unwrap_or(LogFormat::Text) {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.with_ansi(stderr_is_tty).init(),
    }
    Ok(())
}
