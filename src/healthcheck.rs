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

/// The path checked when `--url` names a server but no path.
pub const READINESS_PATH: &str = "/readyz";

/// The URL to ask: `url` itself when it has a path, else its `/readyz`. A base URL
/// (`http://127.0.0.1:12123`, the natural thing to write in a `HEALTHCHECK`) would
/// otherwise reach the status page, which answers 200 whatever state the server is in,
/// and the check could never fail.
///
/// # Errors
/// When `url` is not an absolute http(s) URL.
pub fn readiness_url(url: &str) -> anyhow::Result<reqwest::Url> {
    let mut parsed = reqwest::Url::parse(url)
        .with_context(|| format!("--url {url:?} is not a URL such as http://127.0.0.1:12123"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        anyhow::bail!("--url {url:?} must start with http:// or https://");
    }
    if parsed.path() == "/" {
        parsed.set_path(READINESS_PATH);
    }
    Ok(parsed)
}

/// Succeeds when `url` (see [`readiness_url`]) answers 200.
///
/// # Errors
/// When the URL is not one, the server cannot be reached, or it answers anything else;
/// the message carries the status and the server's list of problems.
pub async fn check(url: &str) -> anyhow::Result<()> {
    let url = readiness_url(url)?;
    let url = url.as_str();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_checks_readyz_and_a_path_is_kept() {
        let checked = |url| readiness_url(url).unwrap().to_string();
        assert_eq!(
            checked("http://127.0.0.1:12123"),
            "http://127.0.0.1:12123/readyz"
        );
        assert_eq!(checked("http://h:1/"), "http://h:1/readyz");
        assert_eq!(checked("https://h/?x=1"), "https://h/readyz?x=1");
        assert_eq!(checked("http://h:1/healthz"), "http://h:1/healthz");
        assert_eq!(checked("http://h:1/readyz"), "http://h:1/readyz");
        assert!(readiness_url("127.0.0.1:12123").is_err());
        assert!(readiness_url("ftp://h/").is_err());
    }
}
