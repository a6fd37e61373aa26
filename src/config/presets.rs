//! `[apps.NAME]` presets: a few lines per Official Account, Mini Program or WeCom app,
//! expanded into the same [`SourceConfig`]s as hand-written `[sources]`, so that
//! refresh, force refresh and the stores need not know presets exist.
//!
//! Token names are fixed per platform (SPEC.md) so that clients and dashboards can rely
//! on them: `mp` has `access_token`, `jsapi_ticket`, `wx_card_ticket`; `wecom` has
//! `access_token`, `jsapi_ticket` (the corp ticket), `agent_config_ticket`.

use reqwest::Url;
use serde::Deserialize;
use serde_json::json;

use super::raw::Method;
use super::sources::{AppConfig, ForcedMode, SourceConfig, order_app, parse_url};
use super::{Error, serde_error};
use crate::upstream::template::Template;

/// WeChat's public host for Official Accounts and Mini Programs.
pub const MP_API_BASE: &str = "https://api.weixin.qq.com";
/// WeChat's public host for WeCom.
pub const WECOM_API_BASE: &str = "https://qyapi.weixin.qq.com";

/// Every token name a preset app may have (of any platform).
pub const TOKEN_NAMES: [&str; 4] = [
    "access_token",
    "jsapi_ticket",
    "wx_card_ticket",
    "agent_config_ticket",
];

/// Keys of an `[apps.NAME]` table that hold secrets: never shown, sealed at rest.
pub const SECRET_KEYS: [&str; 6] = [
    "secret",
    "corpsecret",
    "component_appsecret",
    "encoding_aes_key",
    "refresh_token",
    "previous_refresh_token",
];

/// Which WeChat platform a preset app is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// An Official Account or a Mini Program.
    Mp,
    /// A WeCom (企业微信) app.
    Wecom,
    /// An Open Platform (第三方平台) app: its own tokens are the component's; its
    /// authorizers are `Mp` apps.
    Component,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Mp => "mp",
            Platform::Wecom => "wecom",
            Platform::Component => "component",
        }
    }
}

/// What a preset app is on WeChat, kept for the JS-SDK signature (`appId`, `agentid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    pub platform: Platform,
    /// The appid (mp) or corpid (wecom): the `appId` of `wx.config`.
    pub id: String,
    /// WeCom only: the app's agentid, for `wx.agentConfig`.
    pub agentid: Option<u64>,
}

/// `api_base` as written: one URL or an ordered list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawBases {
    One(String),
    Many(Vec<String>),
}

/// A WeCom agentid: an integer, or digits (what `${VAR}` expansion yields).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawAgentId {
    Number(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMp {
    appid: String,
    secret: String,
    #[serde(default)]
    stable_token: bool,
    #[serde(default)]
    tickets: Vec<String>,
    api_base: Option<RawBases>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWecom {
    corpid: String,
    corpsecret: String,
    agentid: Option<RawAgentId>,
    #[serde(default)]
    tickets: Vec<String>,
    api_base: Option<RawBases>,
}

/// Expands `[apps.NAME]` into an app with its sources.
///
/// # Errors
/// [`Error::Invalid`] naming `apps.NAME.KEY`.
pub fn preset_app(name: &str, mut table: toml::Table) -> Result<AppConfig, Error> {
    let key = format!("apps.{name}");
    if !crate::domain::is_valid_name(name) {
        return Err(Error::invalid(
            key,
            "an app name may only use letters, digits, '_', '-' and '.'",
        ));
    }
    let platform = match table.remove("platform") {
        Some(toml::Value::String(p)) => p,
        Some(_) => {
            return Err(Error::invalid(
                format!("{key}.platform"),
                "must be a string",
            ));
        }
        None => {
            return Err(Error::invalid(
                format!("{key}.platform"),
                "missing: set platform = \"mp\" (Official Account, Mini Program) or \"wecom\"",
            ));
        }
    };
    let value = toml::Value::Table(table);
    match platform.as_str() {
        "mp" => {
            let raw: RawMp =
                serde_path_to_error::deserialize(value).map_err(|e| serde_error(&key, e))?;
            mp(name, &key, raw)
        }
        "wecom" => {
            let raw: RawWecom =
                serde_path_to_error::deserialize(value).map_err(|e| serde_error(&key, e))?;
            wecom(name, &key, raw)
        }
        "component" => super::component::component_app(name, &key, value),
        other => Err(Error::invalid(
            format!("{key}.platform"),
            format!("unknown platform {other:?}: expected \"mp\", \"wecom\" or \"component\""),
        )),
    }
}

fn mp(name: &str, key: &str, raw: RawMp) -> Result<AppConfig, Error> {
    required(key, "appid", &raw.appid)?;
    required(key, "secret", &raw.secret)?;
    let tickets = tickets(key, raw.tickets, &["jsapi", "wx_card"])?;
    let bases = bases(key, raw.api_base, MP_API_BASE)?;
    let mut sources = Vec::new();
    if raw.stable_token {
        let body = |force: bool| {
            json!({
                "grant_type": "client_credential",
                "appid": raw.appid,
                "secret": raw.secret,
                "force_refresh": force,
            })
        };
        let mut source = source(key, &bases, "access_token", "/cgi-bin/stable_token", &[])?;
        source.method = Method::POST;
        source.body = Some(body(false));
        source.forced = Some(ForcedMode {
            body: body(true),
            probe_urls: urls(key, &bases, "/cgi-bin/getcallbackip")?,
        });
        // Normal mode returns the current token: a call never replaces it.
        source.replaces_previous = false;
        source.probe_urls = urls(key, &bases, "/cgi-bin/getcallbackip")?;
        sources.push(source);
    } else {
        let mut source = source(
            key,
            &bases,
            "access_token",
            "/cgi-bin/token",
            &[
                ("grant_type", "client_credential"),
                ("appid", &raw.appid),
                ("secret", &raw.secret),
            ],
        )?;
        source.probe_urls = urls(key, &bases, "/cgi-bin/getcallbackip")?;
        sources.push(source);
    }
    for ticket in tickets {
        let name = format!("{ticket}_ticket");
        sources.push(ticket_source(
            key,
            &bases,
            &name,
            "/cgi-bin/ticket/getticket",
            Some(ticket),
        )?);
    }
    let mut app = order_app(name, key, sources)?;
    app.preset = Some(Preset {
        platform: Platform::Mp,
        id: raw.appid,
        agentid: None,
    });
    Ok(app)
}

fn wecom(name: &str, key: &str, raw: RawWecom) -> Result<AppConfig, Error> {
    required(key, "corpid", &raw.corpid)?;
    required(key, "corpsecret", &raw.corpsecret)?;
    let tickets = tickets(key, raw.tickets, &["jsapi", "agent_config"])?;
    let bases = bases(key, raw.api_base, WECOM_API_BASE)?;
    let agentid = match raw.agentid {
        None => None,
        Some(RawAgentId::Number(n)) => Some(n),
        Some(RawAgentId::Text(t)) => Some(t.trim().parse().map_err(|_| {
            Error::invalid(
                format!("{key}.agentid"),
                format!("must be a number (WeCom's AgentId), got {t:?}"),
            )
        })?),
    };
    let mut token = source(
        key,
        &bases,
        "access_token",
        "/cgi-bin/gettoken",
        &[("corpid", &raw.corpid), ("corpsecret", &raw.corpsecret)],
    )?;
    token.probe_urls = urls(key, &bases, "/cgi-bin/getcallbackip")?;
    let mut sources = vec![token];
    for ticket in tickets {
        sources.push(match ticket {
            "jsapi" => ticket_source(key, &bases, "jsapi_ticket", "/cgi-bin/get_jsapi_ticket", None)?,
            _ => {
                if agentid.is_none() {
                    return Err(Error::invalid(
                        format!("{key}.agentid"),
                        "must be set for the agent_config ticket (tickets = [\"agent_config\"]): it is the app's AgentId in the WeCom admin console",
                    ));
                }
                ticket_source(
                    key,
                    &bases,
                    "agent_config_ticket",
                    "/cgi-bin/ticket/get",
                    Some("agent_config"),
                )?
            }
        });
    }
    let mut app = order_app(name, key, sources)?;
    app.preset = Some(Preset {
        platform: Platform::Wecom,
        id: raw.corpid,
        agentid,
    });
    Ok(app)
}

fn required(key: &str, field: &str, value: &str) -> Result<(), Error> {
    if value.trim().is_empty() {
        return Err(Error::invalid(
            format!("{key}.{field}"),
            "must not be empty",
        ));
    }
    Ok(())
}

/// Checks `tickets` against the platform's list; returns them deduplicated, as the
/// `'static` names of `allowed`.
pub(super) fn tickets(
    key: &str,
    given: Vec<String>,
    allowed: &[&'static str],
) -> Result<Vec<&'static str>, Error> {
    let mut out = Vec::new();
    for ticket in given {
        let known = allowed.iter().find(|a| **a == ticket).ok_or_else(|| {
            Error::invalid(
                format!("{key}.tickets"),
                format!("unknown ticket {ticket:?}: expected any of {allowed:?}"),
            )
        })?;
        if !out.contains(known) {
            out.push(*known);
        }
    }
    Ok(out)
}

/// The API hosts in fallback order, without a trailing `/`.
pub(super) fn bases(key: &str, raw: Option<RawBases>, default: &str) -> Result<Vec<String>, Error> {
    let list = match raw {
        None => vec![default.to_owned()],
        Some(RawBases::One(one)) => vec![one],
        Some(RawBases::Many(many)) => many,
    };
    let key = format!("{key}.api_base");
    if list.is_empty() {
        return Err(Error::invalid(
            key,
            "must list at least one URL (omit it for WeChat's public host)",
        ));
    }
    list.into_iter()
        .map(|base| {
            let url = parse_url(&key, &base)?;
            if url.query().is_some() || url.fragment().is_some() {
                return Err(Error::invalid(
                    &key,
                    format!("must be a base URL without ?query or #fragment, got {base:?}"),
                ));
            }
            Ok(base.trim_end_matches('/').to_owned())
        })
        .collect()
}

pub(super) fn urls(key: &str, bases: &[String], path: &str) -> Result<Vec<Url>, Error> {
    bases
        .iter()
        .map(|base| parse_url(&format!("{key}.api_base"), &format!("{base}{path}")))
        .collect()
}

/// A GET source on `path` of every base with literal `args`. Values are literals, not
/// templates, so a secret containing `{{` is sent as written.
fn source(
    key: &str,
    bases: &[String],
    name: &str,
    path: &str,
    args: &[(&str, &str)],
) -> Result<SourceConfig, Error> {
    Ok(SourceConfig {
        name: name.to_owned(),
        urls: urls(key, bases, path)?,
        method: Method::GET,
        args: args
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Template::literal(*v)))
            .collect(),
        body: None,
        token_field: "access_token".to_owned(),
        expires_field: "expires_in".to_owned(),
        deps: Vec::new(),
        forced: None,
        probe_urls: Vec::new(),
        replaces_previous: true,
        pushed: false,
        rotates: None,
    })
}

/// A ticket source: `access_token={{access_token}}` (and `type=...`), reply field `ticket`.
pub(super) fn ticket_source(
    key: &str,
    bases: &[String],
    name: &str,
    path: &str,
    kind: Option<&str>,
) -> Result<SourceConfig, Error> {
    let mut source = source(key, bases, name, path, &[])?;
    source.args.push((
        "access_token".to_owned(),
        Template::parse("{{access_token}}").expect("a constant, valid template"),
    ));
    if let Some(kind) = kind {
        source
            .args
            .push(("type".to_owned(), Template::literal(kind)));
    }
    source.token_field = "ticket".to_owned();
    source.deps = vec!["access_token".to_owned()];
    Ok(source)
}
