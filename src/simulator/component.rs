//! Open Platform (第三方平台) components: their accounts, what WeChat remembers for each
//! (verify tickets, pre-auth and authorization codes, authorizers and their refresh
//! tokens), and the rules of WeChat's `/cgi-bin/component/*` endpoints.
//!
//! The endpoints' rules are in `component_rules.rs`, pushing events to a component's URL
//! in `push.rs`; neither this file nor the rules do I/O.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use super::SimConfig;
use super::state::{Owner, random_credential};
use super::wechat::WxError;
use crate::wxcrypt::{KeyError, MsgCrypt};

/// Demo component accepted when no `--component` is given.
pub const DEMO_COMPONENT_APPID: &str = "wx_demo_component";
/// Secret (component_appsecret) of [`DEMO_COMPONENT_APPID`].
pub const DEMO_COMPONENT_SECRET: &str = "demo_component_secret";
/// Message verification Token of [`DEMO_COMPONENT_APPID`].
pub const DEMO_COMPONENT_TOKEN: &str = "demo_component_token";
/// EncodingAESKey of [`DEMO_COMPONENT_APPID`]: 43 base64 characters, as the console shows.
pub const DEMO_COMPONENT_AES_KEY: &str = "DemoComponentEncodingAesKey0123456789abcdef";

/// A verify ticket is accepted for 12 hours after its CreateTime.
pub const TICKET_LIFE: Duration = Duration::from_secs(12 * 3600);
/// Lifetime of a pre_auth_code (WeChat: 1800 s).
pub const PRE_AUTH_LIFE: Duration = Duration::from_secs(1800);
/// Lifetime of an authorization code (the `AuthorizationCodeExpiredTime` WeChat sends
/// is CreateTime + 3600).
pub const AUTH_CODE_LIFE: Duration = Duration::from_secs(3600);
/// Largest `count` of `api_get_authorizer_list`.
pub const LIST_MAX: u64 = 500;
/// Tickets remembered per component, so an old one is told apart from a made-up one
/// (both 61006, but the stats and docs can say which). Bounded: a push every second for
/// a day must not grow without end.
const TICKETS_KEPT: usize = 16;

pub(super) const TICKET_INVALID: WxError = WxError {
    code: 61006,
    msg: "component ticket is invalid",
};
pub(super) const TICKET_EXPIRED: WxError = WxError {
    code: 61005,
    msg: "component ticket is expired",
};
pub(super) const NOT_AUTHORIZED: WxError = WxError {
    code: 61003,
    msg: "component is not authorized by this account",
};
pub(super) const BAD_REFRESH: WxError = WxError {
    code: 61023,
    msg: "refresh_token is invalid",
};
pub(super) const CODE_INVALID: WxError = WxError {
    code: 61009,
    msg: "code is invalid",
};
pub(super) const CODE_EXPIRED: WxError = WxError {
    code: 61010,
    msg: "code is expired",
};
pub(super) const NOT_OWNER: WxError = WxError {
    code: 40013,
    msg: "invalid appid, component_appid does not own this component_access_token",
};

/// An Open Platform component the simulator accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentAccount {
    /// component_appid.
    pub appid: String,
    /// component_appsecret.
    pub secret: String,
    /// The message verification Token events are signed with.
    pub token: String,
    /// The 43-character EncodingAESKey events are encrypted with.
    pub aes_key: String,
}

impl ComponentAccount {
    /// A component with these credentials (the key is checked when it is first used:
    /// `--component` checks it at start).
    pub fn new(
        appid: impl Into<String>,
        secret: impl Into<String>,
        token: impl Into<String>,
        aes_key: impl Into<String>,
    ) -> Self {
        Self {
            appid: appid.into(),
            secret: secret.into(),
            token: token.into(),
            aes_key: aes_key.into(),
        }
    }

    /// The public demo component (the `DEMO_COMPONENT_*` constants).
    pub fn demo() -> Self {
        Self::new(
            DEMO_COMPONENT_APPID,
            DEMO_COMPONENT_SECRET,
            DEMO_COMPONENT_TOKEN,
            DEMO_COMPONENT_AES_KEY,
        )
    }

    /// Its message crypto.
    ///
    /// # Errors
    /// When the token, key or appid can't make one.
    pub fn crypt(&self) -> Result<MsgCrypt, KeyError> {
        MsgCrypt::new(&self.token, &self.aes_key, &self.appid)
    }
}

/// One verify ticket WeChat pushed.
#[derive(Debug, Clone)]
struct VerifyTicket {
    value: String,
    /// Its CreateTime (unix seconds on the simulator's clock).
    create_time: u64,
    /// Push order, to rank tickets of equal CreateTime.
    seq: u64,
}

/// An authorization code waiting for `api_query_auth`.
#[derive(Debug, Clone)]
pub(super) struct AuthCode {
    /// Whose authorisation it is.
    pub(super) authorizer: String,
    /// Refused (61010) from then on.
    pub(super) expires_at: Instant,
}

/// An account that authorised the component.
#[derive(Debug, Clone)]
pub struct Authorizer {
    /// The only refresh token accepted now.
    pub refresh_token: String,
    /// Unix seconds of the authorisation.
    pub auth_time: u64,
    /// Successful `api_authorizer_token` calls, for `--component-rotate-every`.
    pub(super) token_calls: u64,
    /// `/sim/component/rotate` asked for a new refresh token at the next call.
    pub(super) rotate_next: bool,
}

/// What WeChat remembers for one component.
#[derive(Debug)]
pub struct Component {
    /// Its credentials.
    pub account: ComponentAccount,
    /// The URL events are pushed to, once one is known.
    pub url: Option<String>,
    /// Tickets pushed, oldest first by (CreateTime, push order).
    tickets: Vec<VerifyTicket>,
    /// Unexpired pre_auth_codes and when they expire.
    pub(super) pre_auth_codes: HashMap<String, Instant>,
    /// The last pre_auth_code created, for the `authorized` event's PreAuthCode.
    pub(super) last_pre_auth: Option<String>,
    /// Authorization codes not yet exchanged.
    pub(super) auth_codes: HashMap<String, AuthCode>,
    /// By authorizer appid: the list's stable order.
    pub(super) authorizers: BTreeMap<String, Authorizer>,
}

/// Every component, by appid.
#[derive(Debug)]
pub struct Components {
    /// In the order given; an index is a component's number (see `authorizer_owner`).
    pub(super) list: Vec<Component>,
    by_appid: HashMap<String, usize>,
    /// Components whose ticket `api_start_push_ticket` asked to push; `routes.rs`
    /// sends them once the state is unlocked.
    pub(super) push_requests: Vec<String>,
    /// Tickets pushed since start, for [`VerifyTicket::seq`].
    pushed: u64,
    /// `--component-rotate-every`.
    pub(super) rotate_every: u32,
}

impl Components {
    /// The components of `config`; the demo one when none is listed.
    pub fn new(config: &SimConfig) -> Self {
        let accounts = if config.components.is_empty() {
            vec![ComponentAccount::demo()]
        } else {
            config.components.clone()
        };
        let mut by_appid = HashMap::new();
        let list = accounts
            .into_iter()
            .enumerate()
            .map(|(i, account)| {
                by_appid.entry(account.appid.clone()).or_insert(i);
                Component {
                    account,
                    url: None,
                    tickets: Vec::new(),
                    pre_auth_codes: HashMap::new(),
                    last_pre_auth: None,
                    auth_codes: HashMap::new(),
                    authorizers: BTreeMap::new(),
                }
            })
            .collect();
        Self {
            list,
            by_appid,
            push_requests: Vec::new(),
            pushed: 0,
            rotate_every: config.component_rotate_every,
        }
    }

    /// The index of component `appid`.
    pub fn index(&self, appid: &str) -> Option<usize> {
        self.by_appid.get(appid).copied()
    }

    /// Component `appid`.
    pub fn get_mut(&mut self, appid: &str) -> Option<&mut Component> {
        let i = self.index(appid)?;
        self.list.get_mut(i)
    }

    /// Component `appid`.
    pub fn get(&self, appid: &str) -> Option<&Component> {
        self.list.get(self.index(appid)?)
    }

    /// Appids and URLs of the components whose URL is known.
    pub fn with_url(&self) -> Vec<String> {
        self.list
            .iter()
            .filter(|c| c.url.is_some())
            .map(|c| c.account.appid.clone())
            .collect()
    }

    /// The pushes `api_start_push_ticket` asked for since the last call.
    pub fn take_push_requests(&mut self) -> Vec<String> {
        std::mem::take(&mut self.push_requests)
    }
}

/// An identifier like WeChat's: a prefix and random URL-safe characters.
pub(super) fn code(prefix: &str) -> String {
    format!("{prefix}{}", random_credential(43))
}

impl Component {
    /// Records a pushed ticket (a new random one unless `value` is given) and returns it.
    pub fn add_ticket(&mut self, value: Option<String>, create_time: u64, seq: u64) -> String {
        let value = value.unwrap_or_else(|| code("ticket@@@"));
        self.tickets.push(VerifyTicket {
            value: value.clone(),
            create_time,
            seq,
        });
        self.tickets.sort_by_key(|t| (t.create_time, t.seq));
        if self.tickets.len() > TICKETS_KEPT {
            self.tickets.remove(0);
        }
        value
    }

    /// WeChat's verdict on a ticket given to `api_component_token`: one of the two with
    /// the newest CreateTime, and less than 12 hours old.
    pub(super) fn check_ticket(&self, ticket: &str, now_unix: u64) -> Result<(), WxError> {
        let newest_two = self.tickets.iter().rev().take(2);
        let Some(found) = newest_two.into_iter().find(|t| t.value == ticket) else {
            return Err(TICKET_INVALID);
        };
        if now_unix >= found.create_time.saturating_add(TICKET_LIFE.as_secs()) {
            return Err(TICKET_EXPIRED);
        }
        Ok(())
    }

    /// A new authorization code for `authorizer` (created, with a fresh refresh token,
    /// if it was not authorised yet; kept as it is otherwise). Returns the code and the
    /// pre_auth_code the event names.
    pub fn authorize(&mut self, authorizer: &str, now: Instant, now_unix: u64) -> (String, String) {
        self.authorizers
            .entry(authorizer.to_owned())
            .or_insert_with(|| Authorizer {
                refresh_token: code("refreshtoken@@@"),
                auth_time: now_unix,
                token_calls: 0,
                rotate_next: false,
            });
        let auth_code = code("queryauthcode@@@");
        self.auth_codes.insert(
            auth_code.clone(),
            AuthCode {
                authorizer: authorizer.to_owned(),
                expires_at: now + AUTH_CODE_LIFE,
            },
        );
        let pre_auth = self
            .last_pre_auth
            .clone()
            .filter(|p| self.pre_auth_codes.get(p).is_some_and(|&at| at > now))
            .unwrap_or_else(|| code("preauthcode@@@"));
        (auth_code, pre_auth)
    }

    /// Removes an authorizer and its pending codes; false when it was not there.
    pub fn unauthorize(&mut self, authorizer: &str) -> bool {
        self.auth_codes.retain(|_, c| c.authorizer != authorizer);
        self.authorizers.remove(authorizer).is_some()
    }

    /// Makes the next `api_authorizer_token` call of `authorizer` rotate its refresh
    /// token; false when it is not authorised.
    pub fn rotate(&mut self, authorizer: &str) -> bool {
        self.authorizers
            .get_mut(authorizer)
            .map(|a| a.rotate_next = true)
            .is_some()
    }

    /// An authorizer's current record.
    pub fn authorizer(&self, authorizer: &str) -> Option<&Authorizer> {
        self.authorizers.get(authorizer)
    }
}

impl Components {
    /// Records a pushed ticket for component `appid`; `None` if there is no such component.
    pub fn add_ticket(
        &mut self,
        appid: &str,
        value: Option<String>,
        create_time: u64,
    ) -> Option<String> {
        self.pushed += 1;
        let seq = self.pushed;
        Some(self.get_mut(appid)?.add_ticket(value, create_time, seq))
    }
}

/// The owner of an authorizer's token held by component number `component`.
pub fn authorizer_owner(authorizer: &str, component: usize) -> Owner {
    Owner {
        id: authorizer.to_owned(),
        secret: component + 1,
    }
}
