//! WeChat's component API calls other than the token's: `api_query_auth`,
//! `api_create_preauthcode`, `api_get_authorizer_list`. Each is made with the
//! platform's current component_access_token; a reply saying that token is no longer
//! valid gets it refreshed once (through the shared single-flight path) and the call
//! retried once.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Client;
use serde_json::Value;

use super::Error;
use crate::config::component::{COMPONENT_TOKEN, ComponentConfig};
use crate::refresh::Refresher;
use crate::upstream::TOKEN_REJECTED_CODES;

/// Largest reply read (an authorizer list page of 500 is about 100 KB).
const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// The HTTP client for the component API.
#[derive(Clone)]
pub struct ComponentApi {
    client: Client,
}

impl ComponentApi {
    /// # Errors
    /// When the TLS backend cannot be initialised.
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("wechat-token-server/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { client })
    }

    /// POSTs `body` to `path` with the component token; WeChat's reply, errcode 0.
    ///
    /// # Errors
    /// [`Error::WeChat`] (its errcode); [`Error::Upstream`] (it could not be reached);
    /// [`Error::Unavailable`] when no component token can be had.
    pub async fn call(
        &self,
        refresher: &Arc<Refresher>,
        component: &ComponentConfig,
        path: &str,
        body: &Value,
    ) -> Result<Value, Error> {
        let cred = refresher
            .credential(&component.name, COMPONENT_TOKEN)
            .ok_or_else(|| Error::NotFound(component.name.clone()))?;
        let token = refresher.obtain(&cred).await.map_err(|e| {
            Error::Unavailable(format!("no component_access_token can be had: {e}"))
        })?;
        let reply = self.post(component, path, &token.value, body).await?;
        let reply = match errcode(&reply) {
            Some(code) if TOKEN_REJECTED_CODES.contains(&code) => {
                tracing::info!(app = %component.name, path, code, "WeChat rejected the component token; refreshing it once");
                let (fresh, _) = refresher
                    .force_refresh(&cred, Some(&token.value))
                    .await
                    .map_err(|e| {
                        Error::Unavailable(format!(
                            "the component_access_token was rejected and cannot be refreshed: {e}"
                        ))
                    })?;
                self.post(component, path, &fresh.value, body).await?
            }
            _ => reply,
        };
        match errcode(&reply) {
            None | Some(0) => Ok(reply),
            Some(code) => Err(Error::WeChat {
                errcode: code,
                message: format!(
                    "WeChat answered {path} with errcode {code}: {}",
                    reply.get("errmsg").and_then(Value::as_str).unwrap_or("")
                ),
            }),
        }
    }

    /// One POST, host after host until one answers.
    async fn post(
        &self,
        component: &ComponentConfig,
        path: &str,
        token: &str,
        body: &Value,
    ) -> Result<Value, Error> {
        let urls = component
            .urls(path)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let mut last = String::from("no API host configured");
        for url in urls {
            let request = self
                .client
                .post(url.clone())
                .query(&[(COMPONENT_TOKEN, token)])
                .json(body);
            match request.send().await {
                Ok(mut response) => {
                    if !response.status().is_success() {
                        last = format!("{} answered HTTP {}", url.path(), response.status());
                        continue;
                    }
                    let mut bytes = Vec::new();
                    while let Some(chunk) = response
                        .chunk()
                        .await
                        .map_err(|e| Error::Upstream(format!("reading {path}: {e}")))?
                    {
                        if bytes.len() + chunk.len() > MAX_REPLY_BYTES {
                            return Err(Error::Upstream(format!("{path}: reply over 4 MiB")));
                        }
                        bytes.extend_from_slice(&chunk);
                    }
                    return serde_json::from_slice(&bytes)
                        .map_err(|e| Error::Upstream(format!("{path}: reply is not JSON ({e})")));
                }
                Err(e) => last = format!("{path}: {e}"),
            }
        }
        Err(Error::Upstream(last))
    }
}

fn errcode(reply: &Value) -> Option<i64> {
    reply.get("errcode").and_then(Value::as_i64)
}
