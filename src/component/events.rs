//! The authorisation-event endpoint's messages (`POST /wechat/component/{app}/events`):
//! WeChat's pushes to a platform, checked and opened by [`MsgCrypt`], then acted on.
//!
//! - `component_verify_ticket`: stored durably with its `CreateTime` as the version, so
//!   the newest wins on every instance and a late, older push changes nothing.
//! - `authorized` / `updateauthorized`: the authorisation code is exchanged
//!   (`api_query_auth`) for the authorizer's refresh token, and the authorizer is
//!   registered. The code is single-use: when the exchange worked but the registry
//!   could not save (or the reply was lost), WeChat's retry of the push finds the code
//!   used, and the refresh token is read from `api_get_authorizer_list` instead.
//! - `unauthorized`: the authorizer is removed.
//!
//! Anything that does not open (signature, ciphertext, appid) is refused before
//! anything is read from it; other InfoTypes are acknowledged and ignored, as WeChat
//! expects `success` for every message.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::{Error, Platforms};
use crate::config::component::{ComponentConfig, VERIFY_TICKET};
use crate::refresh::{Accepted, PushError};
use crate::wxcrypt::{Fields, MsgCrypt};

/// WeChat's errcodes for an authorisation code used already, and expired.
const CODE_USED: i64 = 61009;
const CODE_EXPIRED: i64 = 61010;

/// The query of an event push: `?timestamp=&nonce=&msg_signature=&encrypt_type=aes`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Signed {
    #[serde(default)]
    pub timestamp: String,
    #[serde(default)]
    pub nonce: String,
    #[serde(default)]
    pub msg_signature: String,
    #[serde(default)]
    pub encrypt_type: Option<String>,
}

/// What an event did, for the log and the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// A verify ticket, newest or not.
    Ticket(Accepted),
    /// An authorizer registered or updated.
    Authorized(String),
    /// An authorizer removed (or there was none).
    Unauthorized(String),
    /// An InfoType this server does not act on.
    Ignored(String),
}

impl Platforms {
    /// Checks, opens and acts on one push to the platform `name`.
    ///
    /// # Errors
    /// [`Error::Rejected`] when the push does not open (nothing was read from it);
    /// [`Error::Invalid`] for a message missing a field it needs; WeChat's and the
    /// store's errors (WeChat pushes again when the answer is not `success`).
    pub async fn handle_event(
        &self,
        name: &str,
        signed: &Signed,
        body: &[u8],
    ) -> Result<Handled, Error> {
        let component = self.component(name)?;
        if signed
            .encrypt_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("aes"))
        {
            return Err(Error::Rejected(
                "encrypt_type must be aes: set the platform's message encryption to secure mode (安全模式)".into(),
            ));
        }
        let crypt = MsgCrypt::new(
            component.token.expose(),
            component.encoding_aes_key.expose(),
            &component.component_appid,
        )
        .map_err(|e| Error::Invalid(format!("apps.{name}.encoding_aes_key: {e}")))?;
        let fields = crypt
            .open(
                &signed.timestamp,
                &signed.nonce,
                &signed.msg_signature,
                body,
            )
            .map_err(|e| Error::Rejected(format!("the push was refused: {e}")))?;
        if let Some(appid) = fields
            .get("AppId")
            .filter(|a| **a != component.component_appid)
        {
            return Err(Error::Rejected(format!(
                "the push is for the component {appid:?}, not {:?}",
                component.component_appid
            )));
        }
        let info_type = fields.get("InfoType").map_or("", String::as_str);
        if matches!(
            info_type,
            "authorized" | "updateauthorized" | "unauthorized"
        ) {
            // Another instance of a cluster may have just changed this authorizer:
            // act on the shared registry as it is now, not as last followed.
            self.registry.follow().await;
        }
        let handled = match info_type {
            "component_verify_ticket" => self.verify_ticket(&component, &fields).await?,
            "authorized" | "updateauthorized" => self.authorized(&component, &fields).await?,
            "unauthorized" => {
                let appid = required(&fields, "AuthorizerAppid")?;
                let created = create_time(&fields)?;
                if let Some(at) = self.authorized_at(name, appid).await
                    && created < at
                {
                    // A replayed or late push: the merchant authorised again since.
                    tracing::warn!(app = %name, authorizer = appid, created, authorized_at = at, "an unauthorized push older than the last authorisation was ignored (replayed or late)");
                    return Ok(Handled::Ignored(
                        "unauthorized (older than the last authorisation)".into(),
                    ));
                }
                match self.delete_authorizer(name, appid).await {
                    Ok(()) | Err(Error::Registry(crate::registry::Error::NotFound(_))) => {}
                    Err(error) => return Err(error),
                }
                tracing::info!(app = %name, authorizer = appid, "authorisation revoked; the authorizer is removed");
                Handled::Unauthorized(appid.to_owned())
            }
            other => {
                tracing::debug!(app = %name, info_type = other, "an event this server does not act on");
                Handled::Ignored(other.to_owned())
            }
        };
        Ok(handled)
    }

    async fn verify_ticket(
        &self,
        component: &ComponentConfig,
        fields: &Fields,
    ) -> Result<Handled, Error> {
        let ticket = required(fields, "ComponentVerifyTicket")?;
        let created = SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_secs(create_time(fields)?))
            .ok_or_else(|| Error::Invalid("CreateTime is out of range".into()))?;
        let accepted = self
            .refresher
            .accept_pushed(&component.name, VERIFY_TICKET, ticket, created)
            .await
            .map_err(|e| match e {
                PushError::Store(error) => {
                    Error::Unavailable(format!("the verify ticket could not be stored: {error}"))
                }
                other => Error::Invalid(other.to_string()),
            })?;
        match accepted {
            Accepted::Newest => {
                tracing::debug!(app = %component.name, "a new component_verify_ticket is stored");
            }
            Accepted::Older => {
                tracing::info!(app = %component.name, "a late component_verify_ticket, older than the one held, was ignored");
            }
        }
        Ok(Handled::Ticket(accepted))
    }

    async fn authorized(
        &self,
        component: &ComponentConfig,
        fields: &Fields,
    ) -> Result<Handled, Error> {
        let appid = required(fields, "AuthorizerAppid")?;
        let code = required(fields, "AuthorizationCode")?;
        let refresh_token = match self.query_auth(component, appid, code).await {
            Ok(token) => token,
            Err(error) => {
                // The code is single-use: if an earlier delivery of this push used it,
                // WeChat's list still has the refresh token.
                tracing::warn!(app = %component.name, authorizer = appid, %error, "api_query_auth failed; looking the authorizer up in api_get_authorizer_list");
                match self.listed_refresh_token(component, appid).await? {
                    Some(token) => token,
                    // The code is used or expired and WeChat lists no such authorizer
                    // (withdrawn since): pushing this again cannot succeed.
                    None if matches!(
                        error,
                        Error::WeChat {
                            errcode: CODE_USED | CODE_EXPIRED,
                            ..
                        }
                    ) =>
                    {
                        tracing::warn!(app = %component.name, authorizer = appid, "an authorisation whose code is spent, for an account WeChat no longer lists, was ignored");
                        return Ok(Handled::Ignored("authorized (no longer authorised)".into()));
                    }
                    None => return Err(error),
                }
            }
        };
        let created = create_time(fields)?;
        let (put, _) = self
            .register(&component.name, appid, &refresh_token, Some(created))
            .await?;
        tracing::info!(app = %component.name, authorizer = appid, outcome = ?put, "authorizer registered from an authorisation event");
        Ok(Handled::Authorized(appid.to_owned()))
    }

    /// The refresh token of the authorisation `code`, from `api_query_auth`.
    async fn query_auth(
        &self,
        component: &ComponentConfig,
        appid: &str,
        code: &str,
    ) -> Result<String, Error> {
        let reply = self
            .api
            .call(
                &self.refresher,
                component,
                "/cgi-bin/component/api_query_auth",
                &json!({
                    "component_appid": component.component_appid,
                    "authorization_code": code,
                }),
            )
            .await?;
        let info = reply.get("authorization_info");
        let field = |name: &str| info.and_then(|i| i.get(name)).and_then(Value::as_str);
        match (field("authorizer_appid"), field("authorizer_refresh_token")) {
            (Some(got), Some(token)) if got == appid && !token.is_empty() => Ok(token.to_owned()),
            (Some(got), Some(_)) => Err(Error::Upstream(format!(
                "api_query_auth answered for the authorizer {got:?}, the event named {appid:?}"
            ))),
            _ => Err(Error::Upstream(
                "api_query_auth: no authorizer_appid and authorizer_refresh_token in authorization_info".into(),
            )),
        }
    }
}

/// The push's CreateTime, Unix seconds by WeChat's clock.
fn create_time(fields: &Fields) -> Result<u64, Error> {
    let text = required(fields, "CreateTime")?;
    text.parse::<u64>()
        .ok()
        .filter(|secs| *secs < 1 << 40)
        .ok_or_else(|| Error::Invalid(format!("CreateTime {text:?} is not a Unix time in seconds")))
}

fn required<'a>(fields: &'a Fields, name: &str) -> Result<&'a str, Error> {
    fields
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::Invalid(format!("the event has no {name}")))
}
