//! The WeChat HTTP client: one call to a token source, its reply parsed, WeChat's
//! `errcode` turned into a typed error that callers can match on.

pub mod errcode;
pub mod template;

use std::time::Duration;

use reqwest::{Client, Url};
use serde_json::Value;

use crate::config::{Method, SourceConfig};

/// WeChat errcodes meaning "the access_token you sent is not (or no longer) valid".
pub const TOKEN_REJECTED_CODES: [i64; 3] = [40001, 42001, 40014];

/// Longest lifetime we accept from a reply (a week). WeChat's are two hours and its
/// Open Platform refresh tokens far less than this; anything longer is a broken reply,
/// and would overflow time arithmetic further on.
pub const MAX_LIFETIME_SECS: u64 = 7 * 24 * 3600;

/// Longest token we accept; WeChat asks for at least 512 characters of room.
const MAX_TOKEN_LEN: usize = 8192;

/// Why a call to WeChat failed. `Clone` so that every caller that shared one refresh
/// gets the same error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// WeChat answered with a non-zero errcode.
    #[error("WeChat refused: errcode {errcode}: {errmsg}")]
    WeChat { errcode: i64, errmsg: String },
    /// The host answered with an HTTP error status.
    #[error("WeChat answered HTTP {0}")]
    Status(u16),
    #[error("WeChat did not answer in time")]
    Timeout,
    #[error("cannot reach WeChat: {0}")]
    Transport(String),
    #[error("WeChat's reply is malformed: {0}")]
    Malformed(String),
    /// A `{{name}}` argument could not be resolved because that token is unavailable.
    #[error("token {0} it depends on is not available")]
    Dependency(String),
    /// WeChat was not called: the cluster could not agree who refreshes (shared store
    /// unreachable while the current token is still good, or another instance busy).
    #[error("refresh deferred: {0}")]
    Deferred(String),
}

impl Error {
    /// Is this WeChat saying that the access_token we sent is invalid or expired?
    pub fn is_token_rejected(&self) -> bool {
        matches!(self, Error::WeChat { errcode, .. } if TOKEN_REJECTED_CODES.contains(errcode))
    }

    /// WeChat's errcode, when WeChat gave one.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            Error::WeChat { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }

    /// A short label for metrics and status: the errcode, `http_502`, `timeout`, ...
    pub fn outcome(&self) -> String {
        match self {
            Error::WeChat { errcode, .. } => errcode.to_string(),
            Error::Status(status) => format!("http_{status}"),
            Error::Timeout => "timeout".into(),
            Error::Transport(_) => "unreachable".into(),
            Error::Malformed(_) => "malformed".into(),
            Error::Dependency(_) => "dependency".into(),
            Error::Deferred(_) => "deferred".into(),
        }
    }

    /// Should the next host of a fallback list be tried? Only when this host failed,
    /// not when WeChat gave an answer.
    fn try_next_host(&self) -> bool {
        matches!(
            self,
            Error::Status(_) | Error::Timeout | Error::Transport(_)
        )
    }
}

/// A token as WeChat returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub value: String,
    /// Lifetime from the reply; `None` when the reply has no expiry field.
    pub expires_in: Option<Duration>,
}

/// The HTTP client for token sources. Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    client: Client,
}

impl Upstream {
    /// # Errors
    /// When the TLS backend cannot be initialised.
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("wechat-token-server/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client })
    }

    /// Fetches one token from `source`; `lookup` gives the current value of each token
    /// the source refers to. Hosts are tried in order until one answers.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn fetch(
        &self,
        source: &SourceConfig,
        lookup: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<Fetched, Error> {
        self.fetch_with_body(source, source.body.as_ref(), lookup)
            .await
    }

    /// Like [`fetch`](Self::fetch) with stable_token's forced-mode body instead of the
    /// source's own (which is the normal mode). Falls back to `fetch` for a source
    /// without a forced mode.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn fetch_forced(
        &self,
        source: &SourceConfig,
        lookup: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<Fetched, Error> {
        let body = source
            .forced
            .as_ref()
            .map_or(source.body.as_ref(), |f| Some(&f.body));
        self.fetch_with_body(source, body, lookup).await
    }

    async fn fetch_with_body(
        &self,
        source: &SourceConfig,
        body: Option<&Value>,
        lookup: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> Result<Fetched, Error> {
        let mut args = Vec::with_capacity(source.args.len());
        for (key, template) in &source.args {
            args.push((
                key.as_str(),
                template.render(lookup).map_err(Error::Dependency)?,
            ));
        }
        let body = body.map(|b| render_json(b, lookup)).transpose()?;
        let mut last = Error::Transport("no URL configured".into());
        for url in &source.urls {
            match self.call(url, source, &args, body.as_ref()).await {
                Ok(reply) => {
                    return parse_reply(&reply, &source.token_field, &source.expires_field);
                }
                Err(e) if e.try_next_host() => {
                    tracing::warn!(host = url.host_str().unwrap_or(""), error = %e, "token host failed");
                    last = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Asks WeChat whether it accepts `access_token` now, with a cheap call such as
    /// `/cgi-bin/getcallbackip` on each of `urls` in turn until one answers.
    /// `Ok(false)` means WeChat rejected the token (40001, 42001, 40014).
    ///
    /// # Errors
    /// When no host answered, or WeChat answered with another error: then nobody knows.
    pub async fn probe_token(&self, urls: &[Url], access_token: &str) -> Result<bool, Error> {
        let mut last = Error::Transport("no URL configured".into());
        for url in urls {
            let request = self
                .client
                .get(url.clone())
                .query(&[("access_token", access_token)]);
            match Self::send(request).await {
                Ok(reply) => {
                    return match reply.get("errcode").and_then(Value::as_i64) {
                        None | Some(0) => Ok(true),
                        Some(code) if TOKEN_REJECTED_CODES.contains(&code) => Ok(false),
                        Some(errcode) => Err(Error::WeChat {
                            errcode,
                            errmsg: reply
                                .get("errmsg")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_owned(),
                        }),
                    };
                }
                Err(e) if e.try_next_host() => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    async fn call(
        &self,
        url: &Url,
        source: &SourceConfig,
        args: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let request = match source.method {
            Method::GET => self.client.get(url.clone()).query(args),
            Method::POST if body.is_some() => self.client.post(url.clone()).query(args).json(&body),
            Method::POST => self.client.post(url.clone()).form(args),
        };
        Self::send(request).await
    }

    /// Sends a request and reads its JSON reply; an HTTP error status is an error.
    async fn send(request: reqwest::RequestBuilder) -> Result<Value, Error> {
        let response = request.send().await.map_err(classify)?;
        let status = response.status();
        if !status.is_success() {
            return Err(Error::Status(status.as_u16()));
        }
        let bytes = response.bytes().await.map_err(classify)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Malformed(format!("not JSON ({e})")))
    }
}

fn classify(e: reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::Timeout
    } else {
        // Without the URL: it carries the app secret in its query string.
        Error::Transport(e.without_url().to_string())
    }
}

fn render_json(value: &Value, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Value, Error> {
    Ok(match value {
        Value::String(s) => {
            let template =
                template::Template::parse(s).map_err(|e| Error::Malformed(e.to_string()))?;
            Value::String(template.render(lookup).map_err(Error::Dependency)?)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_json(v, lookup))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_json(v, lookup)?)))
                .collect::<Result<_, Error>>()?,
        ),
        other => other.clone(),
    })
}

/// Reads the token and its lifetime from a reply.
fn parse_reply(reply: &Value, token_field: &str, expires_field: &str) -> Result<Fetched, Error> {
    if let Some(code) = reply.get("errcode") {
        let errcode = code
            .as_i64()
            .ok_or_else(|| Error::Malformed("errcode is not a number".into()))?;
        if errcode != 0 {
            let errmsg = reply
                .get("errmsg")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            return Err(Error::WeChat { errcode, errmsg });
        }
    }
    let value = field(reply, token_field)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Malformed(format!("no string field {token_field:?}")))?;
    if value.is_empty() || value.len() > MAX_TOKEN_LEN || value.chars().any(char::is_control) {
        return Err(Error::Malformed(format!(
            "field {token_field:?} is not a usable token"
        )));
    }
    let expires_in = match field(reply, expires_field) {
        None | Some(Value::Null) => None,
        Some(v) => {
            let secs = v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .filter(|&s| s > 0 && s <= MAX_LIFETIME_SECS)
                .ok_or_else(|| {
                    Error::Malformed(format!(
                        "field {expires_field:?} is not a number of seconds between 1 and {MAX_LIFETIME_SECS}"
                    ))
                })?;
            Some(Duration::from_secs(secs))
        }
    };
    Ok(Fetched {
        value: value.to_owned(),
        expires_in,
    })
}

/// Looks up a dotted path such as `data.token`.
fn field<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_success_reply_gives_token_and_lifetime() {
        let f = parse_reply(
            &json!({"access_token": "T", "expires_in": 7200}),
            "access_token",
            "expires_in",
        )
        .unwrap();
        assert_eq!(
            f,
            Fetched {
                value: "T".into(),
                expires_in: Some(Duration::from_secs(7200))
            }
        );
        let f = parse_reply(
            &json!({"errcode": 0, "ticket": "K", "expires_in": "60"}),
            "ticket",
            "expires_in",
        )
        .unwrap();
        assert_eq!(f.expires_in, Some(Duration::from_secs(60)));
    }

    #[test]
    fn a_nonzero_errcode_is_a_wechat_error() {
        let e = parse_reply(
            &json!({"errcode": 40001, "errmsg": "invalid credential"}),
            "access_token",
            "expires_in",
        )
        .unwrap_err();
        assert_eq!(
            e,
            Error::WeChat {
                errcode: 40001,
                errmsg: "invalid credential".into()
            }
        );
        assert!(e.is_token_rejected());
        assert_eq!(e.outcome(), "40001");
    }

    #[test]
    fn malformed_replies_are_rejected() {
        for reply in [
            json!({}),
            json!({"access_token": 5}),
            json!({"access_token": ""}),
            json!({"access_token": "T", "expires_in": -5}),
            json!({"access_token": "T", "expires_in": "soon"}),
            json!({"errcode": "x"}),
        ] {
            assert!(
                matches!(
                    parse_reply(&reply, "access_token", "expires_in"),
                    Err(Error::Malformed(_))
                ),
                "{reply}"
            );
        }
    }

    #[test]
    fn dotted_fields_reach_into_objects() {
        let f = parse_reply(&json!({"data": {"t": "X", "ttl": 5}}), "data.t", "data.ttl").unwrap();
        assert_eq!(f.value, "X");
        assert_eq!(f.expires_in, Some(Duration::from_secs(5)));
    }

    #[test]
    fn a_missing_expiry_is_reported_as_none() {
        let f = parse_reply(&json!({"access_token": "T"}), "access_token", "expires_in").unwrap();
        assert_eq!(f.expires_in, None);
    }
}
