//! The Open Platform (第三方平台): what a `platform = "component"` app does beyond its
//! tokens (SPEC.md, "Open Platform").
//!
//! - [`events`]: the authorisation-event endpoint's messages (verify tickets,
//!   authorisations, revocations), after [`crate::wxcrypt`] checked and opened them.
//! - [`api`]: WeChat's component calls with the component token.
//!
//! Authorizers are registry apps `PLATFORM.APPID` (see `config::component`): kept in
//! the store with their refresh tokens (sealed when `store.encryption_key` is set),
//! followed by every instance of a cluster, refreshed like any app.

pub mod api;
pub mod events;

use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::component::{ComponentConfig, REFRESH_TOKEN};
use crate::held::HeldValue;
use crate::refresh::HeldStore;
use crate::refresh::{Origin, Refresher};
use crate::registry::spec::AUTHORIZED_AT;
use crate::registry::{self, Put, Registry};
use api::ComponentApi;

/// Most authorizers `api_get_authorizer_list` returns a page (WeChat's limit).
pub const LIST_PAGE: u64 = 500;

/// Why a platform request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No Open Platform app of that name.
    #[error("no Open Platform app {0:?} (platform = \"component\")")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// A push that is not WeChat's (bad signature, ciphertext or appid).
    #[error("{0}")]
    Rejected(String),
    /// WeChat could not be reached, or its reply is not what it documents.
    #[error("{0}")]
    Upstream(String),
    /// WeChat answered with an errcode.
    #[error("{message}")]
    WeChat { errcode: i64, message: String },
    /// Nothing to call WeChat with yet (no component token), or the store failed.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Registry(#[from] registry::Error),
}

/// The Open Platform apps of one instance.
pub struct Platforms {
    refresher: Arc<Refresher>,
    registry: Arc<Registry>,
    api: ComponentApi,
}

impl Platforms {
    pub fn new(refresher: Arc<Refresher>, registry: Arc<Registry>, api: ComponentApi) -> Self {
        Self {
            refresher,
            registry,
            api,
        }
    }

    /// The Open Platform app `name`.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn component(&self, name: &str) -> Result<Arc<ComponentConfig>, Error> {
        self.registry
            .component(name)
            .ok_or_else(|| Error::NotFound(name.to_owned()))
    }

    /// A pre-authorisation code and the merchant's authorisation page for it.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad `redirect_uri` or `auth_type`; WeChat's errors.
    pub async fn preauthcode(
        &self,
        name: &str,
        redirect_uri: &str,
        auth_type: u8,
    ) -> Result<Value, Error> {
        let component = self.component(name)?;
        let redirect = reqwest::Url::parse(redirect_uri)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "redirect_uri must be an http(s) URL on the platform's authorised domain, got {redirect_uri:?}"
                ))
            })?;
        if !(1..=6).contains(&auth_type) {
            return Err(Error::Invalid(
                "auth_type must be 1 (Official Accounts), 2 (Mini Programs), 3 (both) or WeChat's 4 to 6".into(),
            ));
        }
        let reply = self
            .api
            .call(
                &self.refresher,
                &component,
                "/cgi-bin/component/api_create_preauthcode",
                &json!({"component_appid": component.component_appid}),
            )
            .await?;
        let code = reply
            .get("pre_auth_code")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Error::Upstream("api_create_preauthcode: no pre_auth_code in the reply".into())
            })?;
        let mut page = reqwest::Url::parse("https://mp.weixin.qq.com/cgi-bin/componentloginpage")
            .expect("a constant, valid URL");
        page.query_pairs_mut()
            .append_pair("component_appid", &component.component_appid)
            .append_pair("pre_auth_code", code)
            .append_pair("redirect_uri", redirect.as_str())
            .append_pair("auth_type", &auth_type.to_string());
        Ok(json!({
            "pre_auth_code": code,
            "expires_in": reply.get("expires_in").and_then(Value::as_u64).unwrap_or(1800),
            "auth_url": page.as_str(),
        }))
    }

    /// Registers (or updates the refresh token of) the authorizer `appid`.
    ///
    /// # Errors
    /// [`Error::Registry`] (a bad appid or token, the store).
    pub async fn put_authorizer(
        &self,
        name: &str,
        appid: &str,
        refresh_token: &str,
    ) -> Result<(Put, Value), Error> {
        self.register(name, appid, refresh_token, None).await
    }

    /// Registers the authorizer `appid` with `refresh_token`; `authorized_at` is the
    /// CreateTime of the `authorized` push that gave it (kept from before when none).
    pub(crate) async fn register(
        &self,
        name: &str,
        appid: &str,
        refresh_token: &str,
        authorized_at: Option<u64>,
    ) -> Result<(Put, Value), Error> {
        let component = self.component(name)?;
        let app = component.authorizer_app(appid);
        // The refresh token held already (WeChat's list and a re-authorisation give
        // it again): nothing to store, and the previous one kept after a rotation
        // stays.
        let current = self.registry.get(&app).await;
        let known_at = current
            .as_ref()
            .and_then(|c| c.get(AUTHORIZED_AT))
            .and_then(Value::as_u64);
        let authorized_at = authorized_at.max(known_at);
        if let Some(entry) = self.refresher.app(&app)
            && entry.config.authorizer_of.as_deref() == Some(name)
            && let Some(held) = entry.config.held(REFRESH_TOKEN)
            && *held.current() == refresh_token
            && authorized_at == known_at
            && let Some(shown) = current
        {
            return Ok((Put::Unchanged, authorizer_shown(appid, shown)));
        }
        let mut definition = json!({
            "platform": registry::spec::AUTHORIZER,
            "component": name,
            "authorizer_appid": appid,
            "refresh_token": refresh_token,
        });
        if let Some(at) = authorized_at {
            definition[AUTHORIZED_AT] = json!(at);
        }
        let (put, shown) = self.registry.put(&app, definition).await?;
        Ok((put, authorizer_shown(appid, shown)))
    }

    /// When the authorizer `appid` was last authorised, by WeChat's clock (Unix
    /// seconds), if a push said so.
    pub(crate) async fn authorized_at(&self, name: &str, appid: &str) -> Option<u64> {
        let app = self.component(name).ok()?.authorizer_app(appid);
        self.registry.get(&app).await?.get(AUTHORIZED_AT)?.as_u64()
    }

    /// Removes the authorizer `appid`: no longer served, its tokens deleted.
    ///
    /// # Errors
    /// [`Error::Registry`] (`NotFound` when there is none).
    pub async fn delete_authorizer(&self, name: &str, appid: &str) -> Result<(), Error> {
        let component = self.component(name)?;
        Ok(self
            .registry
            .delete(&component.authorizer_app(appid))
            .await?)
    }

    /// Up to `limit` authorizers of the platform `name` by appid, after `after`, and
    /// the appid to ask for the next page after, if there are more. Refresh tokens
    /// are never shown.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn authorizers(
        &self,
        name: &str,
        limit: usize,
        after: Option<&str>,
    ) -> Result<(Vec<Value>, Option<String>), Error> {
        self.component(name)?;
        let catalog = self.refresher.snapshot();
        let prefix = format!("{name}.");
        let mut apps: Vec<(&str, &Arc<crate::refresh::AppEntry>)> = catalog
            .apps()
            .iter()
            .filter(|e| {
                e.origin == Origin::Registry && e.config.authorizer_of.as_deref() == Some(name)
            })
            .filter_map(|e| e.name().strip_prefix(&prefix).map(|appid| (appid, e)))
            .collect();
        apps.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let start = after.map_or(0, |after| {
            apps.partition_point(|(appid, _)| *appid <= after)
        });
        let page = &apps[start..(start + limit).min(apps.len())];
        let now = self.refresher.clock().now();
        let shown = page
            .iter()
            .map(|(appid, entry)| {
                let tokens: Vec<Value> = entry
                    .creds
                    .iter()
                    .map(|c| {
                        json!({
                            "name": c.key.name,
                            "state": c.state(now, c.consecutive_failures()).as_str(),
                        })
                    })
                    .collect();
                json!({"authorizer_appid": appid, "app": entry.name(), "tokens": tokens})
            })
            .collect();
        let next = (start + page.len() < apps.len())
            .then(|| page.last().map(|(appid, _)| (*appid).to_owned()))
            .flatten();
        Ok((shown, next))
    }

    /// Imports every authorizer that `api_get_authorizer_list` returns (the way to
    /// recover refresh tokens): how many were added, updated and already current.
    ///
    /// # Errors
    /// WeChat's errors; [`Error::Registry`]. Authorizers imported before the error
    /// stay imported.
    pub async fn sync(&self, name: &str) -> Result<Value, Error> {
        let component = self.component(name)?;
        let (mut created, mut updated, mut unchanged, mut skipped) = (0u64, 0u64, 0u64, 0u64);
        let mut offset = 0u64;
        loop {
            let (total, list) = self.authorizer_page(&component, offset).await?;
            for item in &list {
                let appid = item.get("authorizer_appid").and_then(Value::as_str);
                let token = item.get("refresh_token").and_then(Value::as_str);
                let (Some(appid), Some(token)) = (appid, token) else {
                    skipped += 1;
                    continue;
                };
                // When the merchant authorised, by WeChat: an unauthorized push older
                // than that is a replay.
                let auth_time = item.get("auth_time").and_then(Value::as_u64);
                match self.register(name, appid, token, auth_time).await {
                    Ok((Put::Created, _)) => created += 1,
                    Ok((Put::Replaced, _)) => updated += 1,
                    Ok((Put::Unchanged, _)) => unchanged += 1,
                    Err(Error::Registry(registry::Error::Invalid(problem))) => {
                        tracing::warn!(app = %name, appid, %problem, "an authorizer in WeChat's list cannot be imported");
                        skipped += 1;
                    }
                    Err(error) => return Err(error),
                }
            }
            offset += list.len() as u64;
            if list.is_empty() || offset >= total {
                break;
            }
        }
        tracing::info!(app = %name, created, updated, unchanged, skipped, "authorizers synchronised from WeChat's list");
        Ok(json!({
            "created": created,
            "updated": updated,
            "unchanged": unchanged,
            "skipped": skipped,
        }))
    }

    /// The refresh token WeChat holds for the authorizer `appid`, from its list.
    async fn listed_refresh_token(
        &self,
        component: &ComponentConfig,
        appid: &str,
    ) -> Result<Option<String>, Error> {
        let mut offset = 0u64;
        loop {
            let (total, list) = self.authorizer_page(component, offset).await?;
            if let Some(token) = list
                .iter()
                .find(|i| i.get("authorizer_appid").and_then(Value::as_str) == Some(appid))
                .and_then(|i| i.get("refresh_token").and_then(Value::as_str))
            {
                return Ok(Some(token.to_owned()));
            }
            offset += list.len() as u64;
            if list.is_empty() || offset >= total {
                return Ok(None);
            }
        }
    }

    /// One page of `api_get_authorizer_list`: the total and the page's items.
    async fn authorizer_page(
        &self,
        component: &ComponentConfig,
        offset: u64,
    ) -> Result<(u64, Vec<Value>), Error> {
        let reply = self
            .api
            .call(
                &self.refresher,
                component,
                "/cgi-bin/component/api_get_authorizer_list",
                &json!({
                    "component_appid": component.component_appid,
                    "offset": offset,
                    "count": LIST_PAGE,
                }),
            )
            .await?;
        let total = reply
            .get("total_count")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let list = match reply.get("list") {
            Some(Value::Array(items)) => items.clone(),
            None | Some(Value::Null) => Vec::new(),
            Some(_) => {
                return Err(Error::Upstream(
                    "api_get_authorizer_list: list is not an array".into(),
                ));
            }
        };
        Ok((total, list))
    }
}

/// An authorizer as `/v1/components/.../authorizers` shows it: never its refresh
/// token.
fn authorizer_shown(appid: &str, mut shown: Value) -> Value {
    if let Value::Object(fields) = &mut shown {
        fields.remove("refresh_token");
        fields.remove("previous_refresh_token");
        fields.insert("authorizer_appid".into(), json!(appid));
    }
    shown
}

/// Authorizers' refresh tokens are kept in their registry records; when WeChat refuses
/// one and the record holds no other (a crash between WeChat's rotation and the save
/// lost it), WeChat's own list has the current one.
#[async_trait::async_trait]
impl HeldStore for Platforms {
    async fn store_held(&self, app: &str, held: &HeldValue) -> Result<(), String> {
        self.registry.store_held(app, held).await
    }

    async fn reload_held(&self, app: &str, held: &HeldValue) -> bool {
        if self.registry.reload_held(app, held).await {
            return true;
        }
        let Some(entry) = self.refresher.app(app) else {
            return false;
        };
        let (Some(platform), Some(preset)) = (&entry.config.authorizer_of, entry.preset()) else {
            return false;
        };
        let Ok(component) = self.component(platform) else {
            return false;
        };
        match self.listed_refresh_token(&component, &preset.id).await {
            Ok(Some(listed)) if *held.current() != listed => {
                tracing::warn!(%app, "the refresh token held was refused; WeChat's authorizer list has another, which is used and stored");
                held.rotate(&listed);
                if let Err(error) = self.registry.store_held(app, held).await {
                    tracing::error!(%app, %error, "cannot store the refresh token read from WeChat's list");
                }
                true
            }
            Ok(_) => false,
            Err(error) => {
                tracing::warn!(%app, %error, "cannot read WeChat's authorizer list to recover a refresh token");
                false
            }
        }
    }
}
