//! `wechat-token-server healthcheck [--url URL]`: asks a running server whether it is
//! ready, for container healthchecks (`HEALTHCHECK CMD wechat-token-server healthcheck`)
//! where no curl may be installed.

use std::time::Duration;

use anyhow::Context;

/// The readiness URL of a server on the default port of this machine.
pub const DEFAULT_URL: &str = "http://127.0.0.1:12123/readyz";

/// How long to wait for the answer: container runtimes kill slow checks anyway, and a
/// server that cannot answer a probe in this time is not healthy.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Succeeds when `url` answers 200.
///
/// # Errors
/// When the server cannot be reached, or answers anything else; the message carries
/// the status and the server's list of problems.
pub async fn check(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .context("cannot initialise the HTTP client")?;
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let problems = v.get("problems")?.as_array()?;
            Some(
                problems
                    .iter()
                    .filter_map(serde_json::Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
        .unwrap_or_else(|| body.chars().take(500).collect());
    anyhow::bail!("{url} answered {status}: {detail}")
}
