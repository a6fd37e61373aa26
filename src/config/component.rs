//! Open Platform (第三方平台) apps: `platform = "component"` and its authorizers.
//!
//! A platform app has two credentials: `component_verify_ticket`, pushed by WeChat to
//! the event endpoint (never fetched; see `SourceConfig::pushed`), and
//! `component_access_token`, fetched with the newest ticket. Each authorizer is a
//! registry app `PLATFORM.AUTHORIZER_APPID` whose `access_token` comes from
//! `api_authorizer_token` with the platform's component token (a reference to another
//! app, `{{PLATFORM:component_access_token}}`) and the authorizer's refresh token (a
//! held value, rotated when a reply carries a new one), and whose tickets are an
//! Official Account's.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use super::presets::{
    MP_API_BASE, Platform, Preset, RawBases, bases, ticket_source, tickets, urls,
};
use super::raw::Method;
use super::sources::{AppConfig, SourceConfig, order_app};
use super::{Error, serde_error};
use crate::domain::Secret;
use crate::held::HeldValue;
use crate::upstream::template::Template;

/// The held value of an authorizer: its `authorizer_refresh_token`.
pub const REFRESH_TOKEN: &str = "authorizer_refresh_token";
/// The pushed credential of a platform app.
pub const VERIFY_TICKET: &str = "component_verify_ticket";
/// The fetched credential of a platform app.
pub const COMPONENT_TOKEN: &str = "component_access_token";

/// What an Open Platform app is: its event endpoint's keys and what its authorizers
/// are built with.
#[derive(Debug)]
pub struct ComponentConfig {
    /// The platform app's name (`[apps.NAME]`).
    pub name: String,
    pub component_appid: String,
    pub component_appsecret: Secret,
    /// The console's message verification Token.
    pub token: Secret,
    /// The console's 43-character EncodingAESKey.
    pub encoding_aes_key: Secret,
    /// Tickets kept for every authorizer: `jsapi`, `wx_card`.
    pub authorizer_tickets: Vec<&'static str>,
    /// WeChat's API hosts, in fallback order, without a trailing `/`.
    pub bases: Vec<String>,
}

impl ComponentConfig {
    /// The URL of `path` on each host.
    ///
    /// # Errors
    /// Never for a checked config; a message otherwise.
    pub fn urls(&self, path: &str) -> Result<Vec<reqwest::Url>, Error> {
        urls(&format!("apps.{}", self.name), &self.bases, path)
    }

    /// The registry name of the authorizer `appid` of this platform.
    pub fn authorizer_app(&self, appid: &str) -> String {
        format!("{}.{appid}", self.name)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawComponent {
    component_appid: String,
    component_appsecret: String,
    token: String,
    encoding_aes_key: String,
    #[serde(default)]
    authorizer_tickets: Vec<String>,
    api_base: Option<RawBases>,
}

/// The platform app `name` of `[apps.NAME]` with `platform = "component"`.
pub(super) fn component_app(name: &str, key: &str, value: toml::Value) -> Result<AppConfig, Error> {
    let raw: RawComponent =
        serde_path_to_error::deserialize(value).map_err(|e| serde_error(key, e))?;
    for (field, value) in [
        ("component_appid", &raw.component_appid),
        ("component_appsecret", &raw.component_appsecret),
        ("token", &raw.token),
    ] {
        if value.trim().is_empty() {
            return Err(Error::invalid(
                format!("{key}.{field}"),
                "must not be empty",
            ));
        }
    }
    if !raw
        .component_appid
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Error::invalid(
            format!("{key}.component_appid"),
            "must be the platform's AppID from the console (letters, digits, '_' and '-')",
        ));
    }
    check_aes_key(&format!("{key}.encoding_aes_key"), &raw.encoding_aes_key)?;
    let authorizer_tickets = tickets(key, raw.authorizer_tickets, &["jsapi", "wx_card"])
        .map_err(|e| rename(e, "tickets", "authorizer_tickets"))?;
    let bases = bases(key, raw.api_base, MP_API_BASE)?;
    let ticket = SourceConfig {
        name: VERIFY_TICKET.to_owned(),
        urls: urls(key, &bases, "/cgi-bin/component/api_start_push_ticket")?,
        method: Method::POST,
        args: Vec::new(),
        body: Some(json!({
            "component_appid": raw.component_appid,
            "component_secret": raw.component_appsecret,
        })),
        token_field: VERIFY_TICKET.to_owned(),
        expires_field: "expires_in".to_owned(),
        deps: Vec::new(),
        forced: None,
        probe_urls: Vec::new(),
        replaces_previous: false,
        pushed: true,
        rotates: None,
    };
    let token = SourceConfig {
        name: COMPONENT_TOKEN.to_owned(),
        urls: urls(key, &bases, "/cgi-bin/component/api_component_token")?,
        body: Some(json!({
            "component_appid": raw.component_appid,
            "component_appsecret": raw.component_appsecret,
            "component_verify_ticket": format!("{{{{{VERIFY_TICKET}}}}}"),
        })),
        token_field: COMPONENT_TOKEN.to_owned(),
        deps: vec![VERIFY_TICKET.to_owned()],
        pushed: false,
        replaces_previous: true,
        ..ticket.clone()
    };
    let mut app = order_app(name, key, vec![ticket, token])?;
    app.preset = Some(Preset {
        platform: Platform::Component,
        id: raw.component_appid.clone(),
        agentid: None,
    });
    app.component = Some(Arc::new(ComponentConfig {
        name: name.to_owned(),
        component_appid: raw.component_appid,
        component_appsecret: Secret::new(raw.component_appsecret),
        token: Secret::new(raw.token),
        encoding_aes_key: Secret::new(raw.encoding_aes_key),
        authorizer_tickets,
        bases,
    }));
    Ok(app)
}

/// An error of the shared `tickets` check, under this platform's key name.
fn rename(error: Error, from: &str, to: &str) -> Error {
    match error {
        Error::Invalid { key, message } => Error::Invalid {
            key: key.replace(from, to),
            message,
        },
        other => other,
    }
}

/// Checks the Open Platform apps against each other and the rest: a platform's name
/// has no `.` and no other app is named `PLATFORM.*` (those names are its
/// authorizers'), and no two platforms share a component appid (each refresh of one
/// would replace the tokens the other serves).
///
/// # Errors
/// [`Error::Invalid`] naming the app at fault.
pub(super) fn check_platforms(apps: &[AppConfig]) -> Result<(), Error> {
    let platforms: Vec<&ComponentConfig> =
        apps.iter().filter_map(|a| a.component.as_deref()).collect();
    for (i, platform) in platforms.iter().enumerate() {
        if platform.name.contains('.') {
            return Err(Error::invalid(
                format!("apps.{}", platform.name),
                "an Open Platform app's name cannot contain '.': its authorizers are named NAME.APPID",
            ));
        }
        if let Some(other) = platforms[..i]
            .iter()
            .find(|o| o.component_appid == platform.component_appid)
        {
            return Err(Error::invalid(
                format!("apps.{}.component_appid", platform.name),
                format!(
                    "the same as apps.{}'s: one platform must be one app (two would replace each other's component and authorizer tokens)",
                    other.name
                ),
            ));
        }
        let prefix = format!("{}.", platform.name);
        if let Some(app) = apps.iter().find(|a| a.name.starts_with(&prefix)) {
            return Err(Error::invalid(
                format!("apps.{}", app.name),
                format!(
                    "names {prefix}* belong to the authorizers of the Open Platform app {:?}; rename this app",
                    platform.name
                ),
            ));
        }
    }
    Ok(())
}

/// Checks an EncodingAESKey as the event endpoint will use it (43 characters of
/// base64 for 32 bytes of key; WeChat's keys may carry trailing bits).
fn check_aes_key(key: &str, value: &str) -> Result<(), Error> {
    crate::wxcrypt::MsgCrypt::new("token", value, "appid")
        .map(|_| ())
        .map_err(|e| Error::invalid(key, e.to_string()))
}

/// What an authorizer is made of, as the registry keeps it.
pub struct Authorizer<'a> {
    pub appid: &'a str,
    pub refresh_token: &'a str,
    pub previous_refresh_token: Option<&'a str>,
}

/// The registry app of an authorizer of `component`.
///
/// # Errors
/// [`Error::Invalid`] naming the field (an empty appid or refresh token).
pub fn authorizer_app(
    component: &ComponentConfig,
    authorizer: &Authorizer,
) -> Result<AppConfig, Error> {
    let name = component.authorizer_app(authorizer.appid);
    let key = format!("apps.{name}");
    if !crate::domain::is_valid_name(authorizer.appid) {
        return Err(Error::invalid(
            format!("{key}.authorizer_appid"),
            "an appid may only use letters, digits, '_', '-' and '.'",
        ));
    }
    if !crate::domain::is_usable_token(authorizer.refresh_token) {
        return Err(Error::invalid(
            format!("{key}.refresh_token"),
            "must be the authorizer_refresh_token WeChat gave (no spaces)",
        ));
    }
    let reference = format!("{{{{{}:{COMPONENT_TOKEN}}}}}", component.name);
    let token = SourceConfig {
        name: "access_token".to_owned(),
        urls: component.urls("/cgi-bin/component/api_authorizer_token")?,
        method: Method::POST,
        args: vec![(
            COMPONENT_TOKEN.to_owned(),
            Template::parse(&reference).map_err(|e| Error::invalid(&key, e.to_string()))?,
        )],
        body: Some(json!({
            "component_appid": component.component_appid,
            "authorizer_appid": authorizer.appid,
            "authorizer_refresh_token": format!("{{{{{REFRESH_TOKEN}}}}}"),
        })),
        token_field: "authorizer_access_token".to_owned(),
        expires_field: "expires_in".to_owned(),
        deps: vec![format!("{}:{COMPONENT_TOKEN}", component.name)],
        forced: None,
        probe_urls: component.urls("/cgi-bin/getcallbackip")?,
        replaces_previous: true,
        pushed: false,
        rotates: Some(REFRESH_TOKEN.to_owned()),
    };
    let mut sources = vec![token];
    for ticket in &component.authorizer_tickets {
        sources.push(ticket_source(
            &key,
            &component.bases,
            &format!("{ticket}_ticket"),
            "/cgi-bin/ticket/getticket",
            Some(ticket),
        )?);
    }
    let mut app = order_app(&name, &key, sources)?;
    app.preset = Some(Preset {
        platform: Platform::Mp,
        id: authorizer.appid.to_owned(),
        agentid: None,
    });
    app.held = vec![HeldValue::new(
        REFRESH_TOKEN,
        authorizer.refresh_token.to_owned(),
        authorizer.previous_refresh_token.map(str::to_owned),
    )];
    app.authorizer_of = Some(component.name.clone());
    Ok(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform() -> AppConfig {
        let table: toml::Table = toml::from_str(
            r#"
            component_appid = "wxcomp"
            component_appsecret = "csecret"
            token = "msgtoken"
            encoding_aes_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
            authorizer_tickets = ["jsapi"]
            api_base = "http://127.0.0.1:9"
            "#,
        )
        .unwrap();
        component_app("platform", "apps.platform", toml::Value::Table(table)).unwrap()
    }

    #[test]
    fn a_platform_has_the_pushed_ticket_then_the_component_token() {
        let app = platform();
        let names: Vec<&str> = app.sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [VERIFY_TICKET, COMPONENT_TOKEN]);
        assert!(app.sources[0].pushed);
        assert_eq!(app.sources[1].deps, [VERIFY_TICKET]);
        let component = app.component.unwrap();
        assert_eq!(component.component_appid, "wxcomp");
        assert!(!format!("{component:?}").contains("csecret"));
    }

    #[test]
    fn an_authorizer_refers_to_its_platform_and_holds_its_refresh_token() {
        let platform = platform();
        let component = platform.component.as_ref().unwrap();
        let app = authorizer_app(
            component,
            &Authorizer {
                appid: "wxabc",
                refresh_token: "refresh-1",
                previous_refresh_token: None,
            },
        )
        .unwrap();
        assert_eq!(app.name, "platform.wxabc");
        assert_eq!(app.authorizer_of.as_deref(), Some("platform"));
        let names: Vec<&str> = app.sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["access_token", "jsapi_ticket"]);
        assert_eq!(app.sources[0].deps, ["platform:component_access_token"]);
        assert_eq!(app.sources[0].rotates.as_deref(), Some(REFRESH_TOKEN));
        assert_eq!(*app.held(REFRESH_TOKEN).unwrap().current(), "refresh-1");
        assert_eq!(app.preset.unwrap().id, "wxabc");
        assert!(
            authorizer_app(
                component,
                &Authorizer {
                    appid: "wx abc",
                    refresh_token: "r",
                    previous_refresh_token: None
                }
            )
            .is_err()
        );
    }

    #[test]
    fn platforms_that_would_collide_are_config_errors() {
        let table = |name: &str, appid: &str| {
            format!(
                "[apps.{name}]\nplatform = \"component\"\ncomponent_appid = \"{appid}\"\ncomponent_appsecret = \"s\"\ntoken = \"t\"\nencoding_aes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\n"
            )
        };
        let config = |rest: String| {
            format!(
                "[server]\nrequest_secret = \"0123456789abcdef0123\"\n[store]\nbackend = \"memory\"\n{rest}"
            )
        };
        let error = |rest: String| {
            crate::config::Config::parse(&config(rest), &|_| None)
                .unwrap_err()
                .to_string()
        };
        let same = error(table("one", "wxcomp") + &table("two", "wxcomp"));
        assert!(
            same.starts_with("apps.two.component_appid: the same as apps.one"),
            "{same}"
        );
        let dotted = error(table("\"plat.form\"", "wxcomp"));
        assert!(
            dotted.starts_with("apps.plat.form: an Open Platform app's name cannot contain '.'"),
            "{dotted}"
        );
        let taken = error(
            table("platform", "wxcomp")
                + "[apps.\"platform.wxabc\"]\nplatform = \"mp\"\nappid = \"wxabc\"\nsecret = \"s\"\n",
        );
        assert!(
            taken.starts_with("apps.platform.wxabc: names platform.* belong"),
            "{taken}"
        );
        let spaced = error(table("platform", "wx comp"));
        assert!(
            spaced.starts_with("apps.platform.component_appid: must be"),
            "{spaced}"
        );
        assert!(
            crate::config::Config::parse(&config(table("platform", "wxcomp")), &|_| None).is_ok()
        );
    }

    #[test]
    fn a_bad_aes_key_is_named() {
        for bad in ["short", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF!"] {
            let error = check_aes_key("apps.p.encoding_aes_key", bad).unwrap_err();
            assert!(
                error.to_string().contains("apps.p.encoding_aes_key"),
                "{error}"
            );
        }
    }
}
