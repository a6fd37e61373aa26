//! Pushing authorisation events to a component's URL, as WeChat does: the event's fields
//! as XML, sealed with the component's Token and EncodingAESKey (`wxcrypt`), POSTed to
//! `URL?timestamp=&nonce=&encrypt_type=aes&msg_signature=`.
//!
//! The state is locked only to record what WeChat would (a ticket, a code, a removal)
//! and to read the key and URL; the POST happens with the lock released, so the
//! receiver may call back into the simulator (`api_query_auth`) while it handles the
//! push.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::Simulator;
use super::component::{AUTH_CODE_LIFE, authorizer_owner};
use super::state::Kind;
use crate::wxcrypt::{Fields, KeyError, MsgCrypt, to_xml};

/// How long a push waits for the receiver's answer: WeChat's own 5 s, after which it
/// gives up on that delivery.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// A push that was delivered (whatever the receiver answered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The event's fields as sent, before encryption: `InfoType`, `CreateTime`,
    /// `ComponentVerifyTicket` or `AuthorizationCode`...
    pub fields: Fields,
    /// The URL it went to, with the signed query string.
    pub url: String,
    /// The receiver's HTTP status.
    pub status: u16,
    /// The receiver's body (WeChat expects `success`).
    pub reply: String,
}

/// Why a push (or the admin action behind it) could not happen.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// No such component.
    #[error("unknown component_appid {0:?}: give one of --component (default: the demo component)")]
    UnknownComponent(String),
    /// The account has not authorised the component (or withdrew).
    #[error("authorizer {authorizer:?} has not authorised component {component:?}")]
    UnknownAuthorizer {
        /// component_appid.
        component: String,
        /// authorizer_appid.
        authorizer: String,
    },
    /// No URL given, and none remembered for the component.
    #[error("no URL known for component {0:?}: give \"url\" (or POST /sim/component/url first)")]
    NoUrl(String),
    /// The URL is not http(s).
    #[error("bad URL {0:?}: give an http:// or https:// URL")]
    BadUrl(String),
    /// The component's Token or EncodingAESKey is unusable.
    #[error("component {0:?} has a bad Token or EncodingAESKey: {1}")]
    BadKey(String, #[source] KeyError),
    /// The POST failed (refused, timed out, reset).
    #[error("pushing to {url} failed: {message}")]
    Delivery {
        /// Where it was going.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// What an admin push asks for beyond the component and URL.
#[derive(Debug, Clone, Default)]
pub struct TicketPush {
    /// CreateTime to send; default now. An older one models a late delivery.
    pub create_time: Option<u64>,
    /// The ticket to send; default a new random one.
    pub ticket: Option<String>,
}

impl Simulator {
    /// Issues a new `component_verify_ticket` for `component_appid` and pushes it to `url`
    /// (remembered for later pushes), waiting for the answer.
    ///
    /// # Errors
    /// See [`PushError`]; the ticket counts as issued even when delivery fails, as at
    /// WeChat.
    pub async fn push_ticket(&self, component_appid: &str, url: &str) -> Result<Pushed, PushError> {
        self.push_ticket_with(component_appid, Some(url), TicketPush::default())
            .await
    }

    /// [`Simulator::push_ticket`] with a chosen CreateTime or ticket; `url` `None` uses
    /// the remembered one.
    ///
    /// # Errors
    /// See [`PushError`].
    pub async fn push_ticket_with(
        &self,
        component_appid: &str,
        url: Option<&str>,
        push: TicketPush,
    ) -> Result<Pushed, PushError> {
        let (crypt, url, fields, now) = {
            let mut state = self.lock();
            let now = state.clock.unix_secs();
            let (crypt, url) = prepare(&mut state, component_appid, url)?;
            let create_time = push.create_time.unwrap_or(now);
            let ticket = state
                .components
                .add_ticket(component_appid, push.ticket, create_time)
                .ok_or_else(|| PushError::UnknownComponent(component_appid.to_owned()))?;
            let fields = event(component_appid, create_time, "component_verify_ticket")
                .chain([("ComponentVerifyTicket", ticket)])
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            (crypt, url, fields, now)
        };
        self.deliver(&crypt, &url, fields, now).await
    }

    /// An account authorises the component (or, with `update`, changes what it
    /// authorised): it becomes an authorizer with a fresh refresh token (an existing one
    /// keeps its own), an authorization code is created, and an `authorized` (or
    /// `updateauthorized`) event is pushed to `url` (`None`: the remembered one).
    ///
    /// # Errors
    /// See [`PushError`]; the authorisation stands even when delivery fails.
    pub async fn authorize(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
        url: Option<&str>,
        update: bool,
    ) -> Result<Pushed, PushError> {
        let (crypt, url, fields, now) = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let now = state.clock.unix_secs();
            let (crypt, url) = prepare(state, component_appid, url)?;
            let instant = state.clock.now();
            let component = state
                .components
                .get_mut(component_appid)
                .ok_or_else(|| PushError::UnknownComponent(component_appid.to_owned()))?;
            let (code, pre_auth) = component.authorize(authorizer_appid, instant, now);
            let info = if update {
                "updateauthorized"
            } else {
                "authorized"
            };
            let expires = now + AUTH_CODE_LIFE.as_secs();
            let fields = event(component_appid, now, info)
                .chain([
                    ("AuthorizerAppid", authorizer_appid.to_owned()),
                    ("AuthorizationCode", code),
                    ("AuthorizationCodeExpiredTime", expires.to_string()),
                    ("PreAuthCode", pre_auth),
                ])
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            (crypt, url, fields, now)
        };
        self.deliver(&crypt, &url, fields, now).await
    }

    /// An authorizer withdraws: it is removed, its tokens and tickets are rejected from
    /// now on, and an `unauthorized` event is pushed.
    ///
    /// # Errors
    /// See [`PushError`]; the removal stands even when delivery fails.
    pub async fn unauthorize(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
        url: Option<&str>,
    ) -> Result<Pushed, PushError> {
        let (crypt, url, fields, now) = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let now = state.clock.unix_secs();
            let (crypt, url) = prepare(state, component_appid, url)?;
            let index = state
                .components
                .index(component_appid)
                .ok_or_else(|| PushError::UnknownComponent(component_appid.to_owned()))?;
            let removed = state
                .components
                .get_mut(component_appid)
                .is_some_and(|c| c.unauthorize(authorizer_appid));
            if !removed {
                return Err(PushError::UnknownAuthorizer {
                    component: component_appid.to_owned(),
                    authorizer: authorizer_appid.to_owned(),
                });
            }
            state.revoke_owner(
                &authorizer_owner(authorizer_appid, index),
                &[Kind::AuthorizerToken, Kind::JsapiTicket, Kind::WxCardTicket],
            );
            let fields = event(component_appid, now, "unauthorized")
                .chain([("AuthorizerAppid", authorizer_appid.to_owned())])
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            (crypt, url, fields, now)
        };
        self.deliver(&crypt, &url, fields, now).await
    }

    /// Makes the next `api_authorizer_token` call of the authorizer return a new refresh
    /// token (the old one refused from then on).
    ///
    /// # Errors
    /// An unknown component or authorizer.
    pub fn rotate_refresh_token(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
    ) -> Result<(), PushError> {
        let mut state = self.lock();
        let component = state
            .components
            .get_mut(component_appid)
            .ok_or_else(|| PushError::UnknownComponent(component_appid.to_owned()))?;
        if component.rotate(authorizer_appid) {
            Ok(())
        } else {
            Err(PushError::UnknownAuthorizer {
                component: component_appid.to_owned(),
                authorizer: authorizer_appid.to_owned(),
            })
        }
    }

    /// Remembers the URL events of `component_appid` are pushed to.
    ///
    /// # Errors
    /// An unknown component or a URL that is not http(s).
    pub fn set_component_url(&self, component_appid: &str, url: &str) -> Result<(), PushError> {
        let mut state = self.lock();
        prepare(&mut state, component_appid, Some(url)).map(|_| ())
    }

    /// The refresh token WeChat accepts now for an authorizer, if it is authorised.
    pub fn authorizer_refresh_token(
        &self,
        component_appid: &str,
        authorizer_appid: &str,
    ) -> Option<String> {
        let state = self.lock();
        let component = state.components.get(component_appid)?;
        Some(
            component
                .authorizer(authorizer_appid)?
                .refresh_token
                .clone(),
        )
    }

    /// Pushes a fresh ticket to every component whose URL is known: what
    /// `api_start_push_ticket` and `--component-push-every` do. Failures are logged.
    pub(super) async fn push_tickets_to_known_urls(&self, only: Option<&str>) {
        let appids = self.lock().components.with_url();
        for appid in appids.iter().filter(|a| only.is_none_or(|o| o == *a)) {
            match self
                .push_ticket_with(appid, None, TicketPush::default())
                .await
            {
                Ok(pushed) => {
                    tracing::debug!(component = %appid, status = pushed.status, "pushed a verify ticket")
                }
                Err(e) => {
                    tracing::warn!(component = %appid, error = %e, "pushing a verify ticket failed")
                }
            }
        }
    }

    /// Every `every`, pushes a fresh ticket to each component whose URL is known, until
    /// `shutdown`: WeChat's ten-minute push, at the pace a test wants.
    pub(super) async fn push_periodically(self, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.cancelled() => return,
            }
            self.push_tickets_to_known_urls(None).await;
        }
    }

    /// Seals `fields` and POSTs them; the answer, whatever its status, is a [`Pushed`].
    async fn deliver(
        &self,
        crypt: &MsgCrypt,
        url: &str,
        fields: Fields,
        now: u64,
    ) -> Result<Pushed, PushError> {
        let (nonce, random) = {
            let mut rng = rand::rng();
            (
                rng.random_range(100_000_000u32..1_000_000_000),
                rng.random::<[u8; 16]>(),
            )
        };
        let timestamp = now.to_string();
        let nonce = nonce.to_string();
        let (body, signature) = crypt.seal(&to_xml(&fields), &timestamp, &nonce, random);
        let separator = if url.contains('?') { '&' } else { '?' };
        let target = format!(
            "{url}{separator}timestamp={timestamp}&nonce={nonce}&encrypt_type=aes&msg_signature={signature}"
        );
        let failed = |e: reqwest::Error| PushError::Delivery {
            url: url.to_owned(),
            message: e.without_url().to_string(),
        };
        let response = self
            .http
            .post(&target)
            .header(reqwest::header::CONTENT_TYPE, "text/xml")
            .body(body)
            .send()
            .await
            .map_err(failed)?;
        let status = response.status().as_u16();
        let reply = response.text().await.map_err(failed)?;
        Ok(Pushed {
            fields,
            url: target,
            status,
            reply,
        })
    }
}

/// The component's crypto and the URL to push to (`url`, remembered, or the one
/// remembered before).
fn prepare(
    state: &mut super::state::State,
    appid: &str,
    url: Option<&str>,
) -> Result<(MsgCrypt, String), PushError> {
    let component = state
        .components
        .get_mut(appid)
        .ok_or_else(|| PushError::UnknownComponent(appid.to_owned()))?;
    let crypt = component
        .account
        .crypt()
        .map_err(|e| PushError::BadKey(appid.to_owned(), e))?;
    if let Some(url) = url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(PushError::BadUrl(url.to_owned()));
        }
        component.url = Some(url.to_owned());
    }
    let url = component
        .url
        .clone()
        .ok_or_else(|| PushError::NoUrl(appid.to_owned()))?;
    Ok((crypt, url))
}

/// The fields every authorisation event has.
fn event(
    appid: &str,
    create_time: u64,
    info_type: &str,
) -> impl Iterator<Item = (&'static str, String)> {
    [
        ("AppId", appid.to_owned()),
        ("CreateTime", create_time.to_string()),
        ("InfoType", info_type.to_owned()),
    ]
    .into_iter()
}
