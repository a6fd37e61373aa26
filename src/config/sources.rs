//! Token sources: how one token is fetched, and the dependency order within an app.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use reqwest::Url;

use super::Error;
use super::raw::{Method, RawSource};
use crate::domain::is_valid_name;
use crate::held::HeldValue;
use crate::upstream::template::Template;

/// One app (an Official Account, a WeCom app, the seed's `default`) and its tokens.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub name: String,
    /// Sources in dependency order: every source comes after those it refers to.
    pub sources: Vec<SourceConfig>,
    /// What the app is on WeChat when it comes from an `[apps.NAME]` preset: JS-SDK
    /// signatures need its id. `None` for `[sources]`.
    pub preset: Option<super::presets::Preset>,
    /// Identifies the definition of a registry app (a digest of it), stored with its
    /// tokens so that a token of an earlier definition is never served for a later
    /// one. `None` for the config file's apps.
    pub generation: Option<String>,
    /// Secrets kept for the app that its sources refer to by name and WeChat may
    /// rotate (an authorizer's refresh token); see [`crate::held`].
    pub held: Vec<Arc<HeldValue>>,
    /// An Open Platform app (`platform = "component"`): what its event endpoint and
    /// authorizers need.
    pub component: Option<Arc<super::component::ComponentConfig>>,
    /// An authorizer of an Open Platform app: that app's name.
    pub authorizer_of: Option<String>,
}

impl AppConfig {
    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// The held value `name`.
    pub fn held(&self, name: &str) -> Option<&Arc<HeldValue>> {
        self.held.iter().find(|h| h.name() == name)
    }
}

/// How to fetch one token.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Token name, e.g. `access_token`.
    pub name: String,
    /// Endpoints tried in order: the first is the main host, the rest are fallbacks
    /// used when a host cannot be reached or answers with an HTTP error.
    pub urls: Vec<Url>,
    pub method: Method,
    /// Query (GET) or form body (POST) arguments.
    pub args: Vec<(String, Template)>,
    /// JSON body for POST; string values may hold templates.
    pub body: Option<serde_json::Value>,
    /// Response field holding the token (dotted path allowed).
    pub token_field: String,
    /// Response field holding the lifetime in seconds.
    pub expires_field: String,
    /// Tokens of the same app this source refers to through `{{name}}`.
    pub deps: Vec<String>,
    /// stable_token's forced mode, for the access_token of an `mp` preset with
    /// `stable_token = true`. `None` everywhere else.
    pub forced: Option<ForcedMode>,
    /// Where WeChat tells whether it accepts a token of this source
    /// (`/cgi-bin/getcallbackip` per host): access tokens of presets, and generic
    /// sources on WeChat's token paths. Empty for tickets, which have no such probe.
    pub probe_urls: Vec<Url>,
    /// Does each successful call issue a new token that replaces the previous one
    /// (after WeChat's grace)? True for `/cgi-bin/token`, gettoken and tickets; false
    /// for stable_token's normal mode, which returns the current token. Only calls
    /// that replace need the unknown-outcome and cluster rules of `refresh::decide`.
    pub replaces_previous: bool,
    /// Pushed by WeChat, never fetched (the Open Platform's `component_verify_ticket`):
    /// the value arrives at the event endpoint; `urls` and `body` ask WeChat to push
    /// one now (`api_start_push_ticket`) when none is held.
    pub pushed: bool,
    /// The held value (see [`AppConfig::held`]) that a reply may rotate: the reply
    /// field of that name carries its new value (`authorizer_refresh_token`).
    pub rotates: Option<String>,
}

/// How to make a *forced* stable_token call, and how to check first that it is needed.
///
/// The source itself (`body` with `force_refresh: false`) is the normal mode used by
/// every refresh; this is only used by `refresh::stable` for a client's force refresh of
/// a token that WeChat really rejects, within WeChat's limits (see WECHAT-API.md).
#[derive(Debug, Clone)]
pub struct ForcedMode {
    /// The JSON body with `force_refresh: true`.
    pub body: serde_json::Value,
    /// `{api_base}/cgi-bin/getcallbackip` per host, in fallback order: a cheap call that
    /// tells whether WeChat still accepts a token.
    pub probe_urls: Vec<Url>,
}

impl SourceConfig {
    /// Names of argument keys whose value is a secret, so logs and `check-config`
    /// mask them.
    pub fn is_secret_arg(key: &str) -> bool {
        let key = key.to_ascii_lowercase();
        ["secret", "password", "key", "token"]
            .iter()
            .any(|s| key.contains(s))
    }
}

/// Builds an app from `[sources.*]` tables.
pub fn generic_app(app: &str, raw: BTreeMap<String, RawSource>) -> Result<AppConfig, Error> {
    let mut sources = Vec::new();
    for (name, source) in raw {
        sources.push(parse_source(&format!("sources.{name}"), name, source)?);
    }
    order_app(app, "sources", sources)
}

fn parse_source(key: &str, name: String, raw: RawSource) -> Result<SourceConfig, Error> {
    if !is_valid_name(&name) {
        return Err(Error::invalid(
            key,
            "a token name may only use letters, digits, '_', '-' and '.'",
        ));
    }
    let url = parse_url(&format!("{key}.url"), &raw.url)?;
    let mut args = Vec::new();
    for (arg, value) in raw.args {
        let template = Template::parse(&value.into_text())
            .map_err(|e| Error::invalid(format!("{key}.args.{arg}"), e.to_string()))?;
        args.push((arg, template));
    }
    let body = match raw.body {
        None => None,
        Some(table) => {
            if raw.method != Method::POST {
                return Err(Error::invalid(
                    format!("{key}.body"),
                    "a JSON body needs method = \"POST\"",
                ));
            }
            let json = serde_json::to_value(&table)
                .map_err(|e| Error::invalid(format!("{key}.body"), e.to_string()))?;
            check_body_templates(&format!("{key}.body"), &json)?;
            Some(json)
        }
    };
    let mut deps: Vec<String> = args
        .iter()
        .flat_map(|(_, t)| t.references().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    if let Some(body) = &body {
        body_references(body, &mut deps);
    }
    deps.sort();
    deps.dedup();
    let token_field = raw.token_field.unwrap_or_else(|| name.clone());
    let expires_field = raw.expires_field.unwrap_or_else(|| "expires_in".to_owned());
    for (field, value) in [
        ("token_field", &token_field),
        ("expires_field", &expires_field),
    ] {
        if value.is_empty() {
            return Err(Error::invalid(
                format!("{key}.{field}"),
                "must not be empty",
            ));
        }
    }
    Ok(SourceConfig {
        name,
        method: raw.method,
        args,
        body,
        token_field,
        expires_field,
        deps,
        forced: None,
        probe_urls: probe_urls_for(&url),
        replaces_previous: true,
        pushed: false,
        rotates: None,
        urls: vec![url],
    })
}

/// WeChat's token paths, whose tokens `/cgi-bin/getcallbackip` on the same host can
/// check.
const TOKEN_PATHS: [&str; 3] = [
    "/cgi-bin/token",
    "/cgi-bin/stable_token",
    "/cgi-bin/gettoken",
];

/// `getcallbackip` on the host of a generic source on one of WeChat's token paths.
fn probe_urls_for(url: &Url) -> Vec<Url> {
    if !TOKEN_PATHS.contains(&url.path()) {
        return Vec::new();
    }
    let mut probe = url.clone();
    probe.set_path("/cgi-bin/getcallbackip");
    probe.set_query(None);
    vec![probe]
}

/// Parses an http(s) URL, naming `key` on failure.
pub fn parse_url(key: &str, text: &str) -> Result<Url, Error> {
    let url = Url::parse(text)
        .map_err(|e| Error::invalid(key, format!("not a valid URL ({e}): {text:?}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::invalid(
            key,
            format!("must be an http:// or https:// URL, got {text:?}"),
        ));
    }
    Ok(url)
}

fn check_body_templates(key: &str, value: &serde_json::Value) -> Result<(), Error> {
    match value {
        serde_json::Value::String(s) => Template::parse(s)
            .map(|_| ())
            .map_err(|e| Error::invalid(key, e.to_string())),
        serde_json::Value::Array(items) => {
            items.iter().try_for_each(|v| check_body_templates(key, v))
        }
        serde_json::Value::Object(map) => map
            .iter()
            .try_for_each(|(k, v)| check_body_templates(&format!("{key}.{k}"), v)),
        _ => Ok(()),
    }
}

fn body_references(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => {
            if let Ok(t) = Template::parse(s) {
                out.extend(t.references().map(str::to_owned));
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| body_references(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| body_references(v, out)),
        _ => {}
    }
}

/// Is `dep` a token of another app (`app:name`), as an authorizer's reference to its
/// platform's `component_access_token`? Those are resolved when the call is made.
pub fn is_external(dep: &str) -> bool {
    dep.contains(':')
}

/// Checks references and sorts the sources so that each comes after its dependencies.
/// `section` is the config table the sources came from, for error messages.
pub fn order_app(app: &str, section: &str, sources: Vec<SourceConfig>) -> Result<AppConfig, Error> {
    let index: HashMap<&str, usize> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    for source in &sources {
        for dep in source.deps.iter().filter(|d| !is_external(d)) {
            if !index.contains_key(dep.as_str()) {
                return Err(Error::invalid(
                    format!("{section}.{}", source.name),
                    format!("refers to {{{{{dep}}}}}, which is not a token of app {app:?}"),
                ));
            }
            if dep == &source.name {
                return Err(Error::invalid(
                    format!("{section}.{}", source.name),
                    "refers to itself ({{{{name}}}} must name another token)",
                ));
            }
        }
    }
    // Depth-first topological sort; a node met again while on the path is a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(
        i: usize,
        sources: &[SourceConfig],
        index: &HashMap<&str, usize>,
        marks: &mut [Mark],
        path: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<(), Vec<String>> {
        match marks[i] {
            Mark::Done => return Ok(()),
            Mark::OnPath => {
                let start = path.iter().position(|&p| p == i).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..]
                    .iter()
                    .map(|&p| sources[p].name.clone())
                    .collect();
                cycle.push(sources[i].name.clone());
                return Err(cycle);
            }
            Mark::New => {}
        }
        marks[i] = Mark::OnPath;
        path.push(i);
        for dep in sources[i].deps.iter().filter(|d| !is_external(d)) {
            visit(index[dep.as_str()], sources, index, marks, path, order)?;
        }
        path.pop();
        marks[i] = Mark::Done;
        order.push(i);
        Ok(())
    }
    let mut marks = vec![Mark::New; sources.len()];
    let mut order = Vec::with_capacity(sources.len());
    for i in 0..sources.len() {
        visit(i, &sources, &index, &mut marks, &mut Vec::new(), &mut order).map_err(|cycle| {
            Error::invalid(section, format!("dependency cycle: {}", cycle.join(" -> ")))
        })?;
    }
    let mut slots: Vec<Option<SourceConfig>> = sources.into_iter().map(Some).collect();
    let sources = order
        .into_iter()
        .map(|i| slots[i].take().expect("each index is ordered exactly once"))
        .collect();
    Ok(AppConfig {
        name: app.to_owned(),
        generation: None,
        sources,
        preset: None,
        held: Vec::new(),
        component: None,
        authorizer_of: None,
    })
}
