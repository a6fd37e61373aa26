//! WeChat's own token and ticket endpoints, answered from the tokens this server
//! manages, so that an SDK or hand-written code changes only its host: WeChat's
//! paths, shapes and error codes (SPEC.md, "WeChat-compatible facade"). No call here
//! ever reaches WeChat's token APIs: a `force_refresh` is a report about the current
//! token, on the same single-flight path as `/wechat/token/forcerefresh`.
//!
//! Every answer is HTTP 200 with WeChat's JSON, errors included, as WeChat does: SDKs
//! read `errcode`, not the status.

use std::borrow::Cow;
use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::caller::{Peer, identify, permit};
use super::wxapps::{ACCESS_TOKEN, WxApp};
use crate::auth::Action;
use crate::config::Platform;
use crate::refresh::{AppEntry, RefreshError, Token};

/// A WeChat error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WxError {
    pub code: i64,
    pub msg: Cow<'static, str>,
}

const fn wx(code: i64, msg: &'static str) -> WxError {
    WxError {
        code,
        msg: Cow::Borrowed(msg),
    }
}

pub const INVALID_TOKEN: WxError = wx(
    40001,
    "invalid credential, access_token is invalid or not latest",
);
const BAD_GRANT_TYPE: WxError = wx(40002, "invalid grant_type");
const BAD_APPID: WxError = wx(40013, "invalid appid");
const BAD_CORPID: WxError = wx(40013, "invalid corpid");
const BAD_SECRET: WxError = wx(40125, "invalid appsecret");
const BAD_CORPSECRET: WxError = wx(40001, "invalid credential, corpsecret is wrong");
const BAD_ARGS: WxError = wx(40097, "invalid args");
const NO_TOKEN: WxError = wx(41001, "access_token missing");
const NO_APPID: WxError = wx(41002, "appid missing");
const NO_CORPID: WxError = wx(41002, "corpid missing");
const NO_SECRET: WxError = wx(41004, "appsecret missing");
const NO_CORPSECRET: WxError = wx(41004, "corpsecret missing");
const BAD_DATA: WxError = wx(47001, "data format error");
/// A caller with a client key that may not refresh asked for `force_refresh`.
const NO_REFRESH: WxError = wx(
    48001,
    "api unauthorized: this client may not force a refresh",
);

impl WxError {
    fn with(code: i64, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: Cow::Owned(msg.into()),
        }
    }

    /// WeChat's "system busy" with why: the token is not fetched yet, or a refresh
    /// failed in a way WeChat itself did not say.
    fn busy(why: impl Into<String>) -> Self {
        Self::with(-1, format!("system error: {}", why.into()))
    }

    fn refresh(error: &RefreshError) -> Self {
        Self::with(error.errcode().unwrap_or(-1), error.errmsg())
    }
}

impl IntoResponse for WxError {
    fn into_response(self) -> Response {
        Json(json!({"errcode": self.code, "errmsg": self.msg})).into_response()
    }
}

/// Route names in refusal logs.
const ROUTE_TOKEN: &str = "/cgi-bin/token";
const ROUTE_STABLE: &str = "/cgi-bin/stable_token";
const ROUTE_CORP: &str = "/cgi-bin/gettoken";

/// The query's parameters, the first of each name (as WeChat reads them); empty counts
/// as missing.
fn params(query: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if !v.is_empty() {
            out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
    }
    out
}

/// Finds the app and checks the caller: its own secret, or a client key (or the
/// request secret) that may do `action` on its access token from this network.
fn authorize(
    state: &AppState,
    route: &'static str,
    peer: Peer,
    id: &str,
    platform: Platform,
    presented: &str,
    action: Action,
) -> Result<WxApp, WxError> {
    let (unknown, wrong) = match platform {
        Platform::Mp | Platform::Component => (BAD_APPID, BAD_SECRET),
        Platform::Wecom => (BAD_CORPID, BAD_CORPSECRET),
    };
    let app = state
        .wxapps
        .find(&state.refresher, id, platform)
        .ok_or(unknown)?;
    if app.secret_matches(presented) {
        return Ok(app);
    }
    let auth = state.auth.load();
    let caller = identify(&auth, &state.refusals, route, Some(presented), peer)
        .map_err(|_| wrong.clone())?;
    permit(
        &state.refusals,
        &caller,
        route,
        app.entry.name(),
        ACCESS_TOKEN,
        Action::Read,
    )
    .map_err(|_| wrong.clone())?;
    if action == Action::Refresh {
        permit(
            &state.refusals,
            &caller,
            route,
            app.entry.name(),
            ACCESS_TOKEN,
            action,
        )
        .map_err(|_| NO_REFRESH)?;
    }
    Ok(app)
}

/// The app's access token as WeChat's token endpoints answer it.
fn token_reply(state: &AppState, entry: &AppEntry, wecom: bool) -> Response {
    match state.refresher.serve(entry.name(), ACCESS_TOKEN) {
        Ok(token) => token_json(&token, state, wecom).into_response(),
        Err(_) => WxError::busy("the token is not fetched yet; retry in a moment").into_response(),
    }
}

fn token_json(token: &Token, state: &AppState, wecom: bool) -> Json<Value> {
    let expires_in = token.remaining(state.refresher.clock().now()).as_secs();
    if wecom {
        Json(
            json!({"errcode": 0, "errmsg": "ok", "access_token": token.value, "expires_in": expires_in}),
        )
    } else {
        Json(json!({"access_token": token.value, "expires_in": expires_in}))
    }
}

/// `GET /cgi-bin/token?grant_type=client_credential&appid=A&secret=S`.
pub async fn token(
    State(state): State<AppState>,
    peer: Peer,
    RawQuery(query): RawQuery,
) -> Response {
    let p = params(query.as_deref());
    let result = (|| {
        if p.get("grant_type").map(String::as_str) != Some("client_credential") {
            return Err(BAD_GRANT_TYPE);
        }
        let appid = p.get("appid").ok_or(NO_APPID)?;
        let secret = p.get("secret").ok_or(NO_SECRET)?;
        authorize(
            &state,
            ROUTE_TOKEN,
            peer,
            appid,
            Platform::Mp,
            secret,
            Action::Read,
        )
    })();
    match result {
        Ok(app) => token_reply(&state, &app.entry, false),
        Err(e) => e.into_response(),
    }
}

/// `GET /cgi-bin/gettoken?corpid=C&corpsecret=S` (WeCom).
pub async fn gettoken(
    State(state): State<AppState>,
    peer: Peer,
    RawQuery(query): RawQuery,
) -> Response {
    let p = params(query.as_deref());
    let result = (|| {
        let corpid = p.get("corpid").ok_or(NO_CORPID)?;
        let secret = p.get("corpsecret").ok_or(NO_CORPSECRET)?;
        authorize(
            &state,
            ROUTE_CORP,
            peer,
            corpid,
            Platform::Wecom,
            secret,
            Action::Read,
        )
    })();
    match result {
        Ok(app) => token_reply(&state, &app.entry, true),
        Err(e) => e.into_response(),
    }
}

/// `POST /cgi-bin/stable_token` with `{"grant_type", "appid", "secret", "force_refresh"}`.
/// `force_refresh: true` reports the current token as rejected: the answer is a token
/// newer than it, from one shared refresh (or the current one when the report is
/// stale, rate-limited or WeChat still accepts it, as for `forcerefresh`).
pub async fn stable_token(State(state): State<AppState>, peer: Peer, body: Bytes) -> Response {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        return BAD_DATA.into_response();
    };
    let field = |name: &str| -> Result<Option<&str>, WxError> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str()).filter(|s| !s.is_empty())),
            Some(_) => Err(BAD_DATA),
        }
    };
    let force = match body.get("force_refresh") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return BAD_DATA.into_response(),
    };
    let action = if force { Action::Refresh } else { Action::Read };
    let result = (|| {
        if field("grant_type")? != Some("client_credential") {
            return Err(BAD_GRANT_TYPE);
        }
        let appid = field("appid")?.ok_or(NO_APPID)?;
        let secret = field("secret")?.ok_or(NO_SECRET)?;
        authorize(
            &state,
            ROUTE_STABLE,
            peer,
            appid,
            Platform::Mp,
            secret,
            action,
        )
    })();
    let app = match result {
        Ok(app) => app,
        Err(e) => return e.into_response(),
    };
    if !force {
        return token_reply(&state, &app.entry, false);
    }
    let Some(cred) = app.entry.credential(ACCESS_TOKEN).cloned() else {
        return BAD_APPID.into_response();
    };
    let now = state.refresher.clock().now();
    let stale = cred.live_token(now).map(|t| t.value.clone());
    match state.refresher.force_refresh(&cred, stale.as_deref()).await {
        Ok((token, _)) => token_json(&token, &state, false).into_response(),
        Err(error) => WxError::refresh(&error).into_response(),
    }
}

/// Which ticket a ticket endpoint serves.
#[derive(Clone, Copy)]
enum TicketRoute {
    /// `/cgi-bin/ticket/getticket?type=jsapi|wx_card` (Official Accounts).
    GetTicket,
    /// WeCom `/cgi-bin/get_jsapi_ticket` (the corp ticket).
    CorpJsapi,
    /// WeCom `/cgi-bin/ticket/get?type=agent_config`.
    Agent,
}

/// `GET /cgi-bin/ticket/getticket?access_token=T&type=jsapi|wx_card`.
pub async fn getticket(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    ticket(&state, query.as_deref(), TicketRoute::GetTicket)
}

/// `GET /cgi-bin/get_jsapi_ticket?access_token=T` (WeCom).
pub async fn corp_jsapi_ticket(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Response {
    ticket(&state, query.as_deref(), TicketRoute::CorpJsapi)
}

/// `GET /cgi-bin/ticket/get?access_token=T&type=agent_config` (WeCom).
pub async fn agent_ticket(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    ticket(&state, query.as_deref(), TicketRoute::Agent)
}

/// The ticket this server holds, for a token it handed out for the same app (current,
/// or the previous one within WeChat's grace); anything else is WeChat's 40001.
fn ticket(state: &AppState, query: Option<&str>, route: TicketRoute) -> Response {
    let p = params(query);
    let result = (|| {
        let presented = p.get("access_token").ok_or(NO_TOKEN)?;
        let (entry, _, _) = state
            .refresher
            .issued_token(presented)
            .ok_or(INVALID_TOKEN)?;
        let platform = super::wxapps::platform_of(&entry);
        let kind = p.get("type").map(String::as_str);
        let name = match (route, platform) {
            (TicketRoute::GetTicket, Some(Platform::Mp) | None) => match kind {
                Some("jsapi") => "jsapi_ticket",
                Some("wx_card") => "wx_card_ticket",
                _ => return Err(BAD_ARGS),
            },
            (TicketRoute::CorpJsapi, Some(Platform::Wecom) | None) => "jsapi_ticket",
            (TicketRoute::Agent, Some(Platform::Wecom) | None) => {
                if kind != Some("agent_config") {
                    return Err(BAD_ARGS);
                }
                "agent_config_ticket"
            }
            // A token of the other platform: WeChat has never seen it on this path.
            _ => return Err(wx(40014, "invalid access_token")),
        };
        // `[sources]` apps call the jsapi ticket `ticket` (the seed's name).
        let name = if name == "jsapi_ticket"
            && entry.credential(name).is_none()
            && entry.credential("ticket").is_some()
        {
            "ticket"
        } else {
            name
        };
        if entry.credential(name).is_none() {
            return Err(WxError::with(
                BAD_ARGS.code,
                format!(
                    "invalid args: this server keeps no {name} for the app (add it to the app's tickets)"
                ),
            ));
        }
        state
            .refresher
            .serve(entry.name(), name)
            .map_err(|_| WxError::busy("the ticket is not fetched yet; retry in a moment"))
    })();
    match result {
        Ok(ticket) => {
            let expires_in = ticket.remaining(state.refresher.clock().now()).as_secs();
            Json(json!({"errcode": 0, "errmsg": "ok", "ticket": ticket.value, "expires_in": expires_in}))
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}
