//! WeChat's component API calls other than the token's: `api_query_auth`,
//! `api_create_preauthcode`, `api_get_authorizer_list`. Each is made with the
//! platform's current component_access_token; a reply saying that token is no longer
//! valid gets it refreshed once (through the shared single-flight path) and the call
//! retried once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Error;
use crate::config::component::{COMPONENT_TOKEN, ComponentConfig};
use crate::refresh::Refresher;
use crate::upstream::{TOKEN_REJECTED_CODES, Upstream};

/// The component API's calls, on the token sources' HTTP client.
#[derive(Clone)]
pub struct ComponentApi {
    upstream: Upstream,
}

impl ComponentApi {
    /// # Errors
    /// When the TLS backend cannot be initialised.
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            upstream: Upstream::new(timeout)?,
        })
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
        self.upstream
            .post_json(&urls, &[(COMPONENT_TOKEN, token)], body)
            .await
            .map_err(|e| Error::Upstream(format!("{path}: {e}")))
    }
}

fn errcode(reply: &Value) -> Option<i64> {
    reply.get("errcode").and_then(Value::as_i64)
}
