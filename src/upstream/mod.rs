//! The WeChat HTTP client: one call to a token source, its reply parsed, WeChat's
//! `errcode` turned into a typed error that callers can match on.

pub mod errcode;
mod error;
pub mod template;

use std::time::Duration;

use reqwest::{Client, Url};
use serde_json::Value;

use crate::config::{Method, SourceConfig};

pub use error::{Cause, Error};

/// WeChat errcodes meaning "the access_token you sent is not (or no longer) valid".
pub const TOKEN_REJECTED_CODES: [i64; 3] = [40001, 42001, 40014];

/// Longest lifetime we accept from a reply (a week). WeChat's are two hours and its
/// Open Platform refresh tokens far less than this; anything longer is a broken reply,
/// and would overflow time arithmetic further on.
pub const MAX_LIFETIME_SECS: u64 = 7 * 24 * 3600;

/// Largest reply body we read from a token source (SPEC "Never served": 1 MiB). A token
/// reply is a few hundred bytes; a host sending more is broken or hostile, and is cut
/// off there instead of filling memory.
pub const MAX_REPLY_BYTES: usize = 1024 * 1024;

pub use crate::domain::{MAX_TOKEN_BYTES as MAX_TOKEN_LEN, is_usable_token};

/// A token as WeChat returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub value: String,
    /// Lifetime from the reply; `None` when the reply has no expiry field.
    pub expires_in: Option<Duration>,
    /// The new value of the held value the source rotates (`SourceConfig::rotates`),
    /// when the reply carries a usable one.
    pub rotated: Option<String>,
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
            // A redirect is an error, never followed: the request carries the app
            // secret (in the query or the body), which must go to no other host.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { client })
    }

    /// Fetches one token from `source`; `lookup` gives the current value of each token
    /// the source refers to. Hosts are tried in order until one answers.
    ///
    /// # Errors
    /// See [`Error`]. When several hosts failed, the error is the last one's, unless an
    /// earlier host may have issued a token ([`Error::may_have_issued`]) and the last
    /// did not: then the earlier error is returned, so the caller knows a token may be
    /// out.
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
        let mut last = no_url();
        for url in &source.urls {
            let host = url.host_str().unwrap_or("");
            let e = match self.call(url, source, &args, body.as_ref()).await {
                Ok(reply) => {
                    match parse_reply(&reply, &source.token_field, &source.expires_field) {
                        Ok(mut fetched) => {
                            fetched.rotated = source
                                .rotates
                                .as_deref()
                                .and_then(|f| field(&reply, f))
                                .and_then(Value::as_str)
                                .filter(|v| is_usable_token(v))
                                .map(str::to_owned);
                            return Ok(fetched);
                        }
                        Err(e) => e,
                    }
                }
                Err(e) if e.try_next_host() => {
                    tracing::warn!(host, error = %e, "token host failed");
                    last = keep_unknown_outcome(last, e);
                    continue;
                }
                Err(e) => e,
            };
            if last.may_have_issued() && !e.may_have_issued() {
                tracing::warn!(host, error = %e, "token host failed after an earlier host's outcome was lost");
            }
            return Err(keep_unknown_outcome(last, e));
        }
        Err(last)
    }

    /// Makes the request of `source` (its body rendered without references) and checks
    /// only WeChat's errcode: for calls that return no token, such as
    /// `api_start_push_ticket`. Hosts are tried in order until one answers.
    /// Calls `source` for its effect only (`api_start_push_ticket`: WeChat answers
    /// errcode 0 and pushes the value later), hosts in order until one answers.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn request(&self, source: &SourceConfig) -> Result<(), Error> {
        let body = source
            .body
            .as_ref()
            .map(|b| render_json(b, &|_| None))
            .transpose()?;
        let mut last = no_url();
        for url in &source.urls {
            match self.call(url, source, &[], body.as_ref()).await {
                Ok(reply) => {
                    return match reply.get("errcode").and_then(Value::as_i64) {
                        None | Some(0) => Ok(()),
                        Some(errcode) => Err(refusal(&reply, errcode)),
                    };
                }
                Err(e) if e.try_next_host() => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// POSTs `body` as JSON with `query` to each of `urls` in turn until one answers
    /// (as a token call falls back: an unreachable host or an HTTP error, never an
    /// errcode); WeChat's reply, read with the same size cap. For WeChat calls that are
    /// not a token source's (the Open Platform's component API).
    ///
    /// # Errors
    /// The last host's, when none answered.
    pub async fn post_json(
        &self,
        urls: &[Url],
        query: &[(&str, &str)],
        body: &Value,
    ) -> Result<Value, Error> {
        let mut last = no_url();
        for url in urls {
            match Self::send(self.client.post(url.clone()).query(query).json(body)).await {
                Ok(reply) => return Ok(reply),
                Err(e) if e.try_next_host() => last = e,
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
        let mut last = no_url();
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
                        Some(errcode) => Err(refusal(&reply, errcode)),
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

    /// Sends a request and reads its JSON reply; an HTTP error status (a redirect
    /// included: none is followed) is an error.
    async fn send(request: reqwest::RequestBuilder) -> Result<Value, Error> {
        let mut response = request.send().await.map_err(Error::from_send)?;
        let status = response.status();
        if !status.is_success() {
            return Err(Error::Status(status.as_u16()));
        }
        let bytes = read_capped(&mut response).await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Malformed(format!("not JSON ({e})")))
    }
}

/// The error of a call that failed on host after host: the latest, unless an earlier
/// host may have issued a token and the latest did not. What a later host says (cannot
/// be reached, or an errcode) tells nothing about the earlier request, and the caller
/// must know that a token may be out ([`Error::may_have_issued`]) more than it needs
/// the later host's errcode, which is logged.
fn keep_unknown_outcome(earlier: Error, latest: Error) -> Error {
    if earlier.may_have_issued() && !latest.may_have_issued() {
        earlier
    } else {
        latest
    }
}

/// WeChat's refusal `errcode` in `reply`, with its errmsg.
fn refusal(reply: &Value, errcode: i64) -> Error {
    Error::WeChat {
        errcode,
        errmsg: reply
            .get("errmsg")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    }
}

/// The error of a call with no host to send it to.
fn no_url() -> Error {
    Error::Connect(Cause::message("no URL configured"))
}

/// Reads a reply's body chunk by chunk, up to [`MAX_REPLY_BYTES`]: a larger body is
/// refused as soon as its declared length or the bytes read so far pass the limit, and
/// the rest is never read (dropping the response closes the connection).
async fn read_capped(response: &mut reqwest::Response) -> Result<Vec<u8>, Error> {
    let too_large =
        || Error::Malformed(format!("reply larger than {MAX_REPLY_BYTES} bytes (1 MiB)"));
    let declared = response.content_length();
    if declared.is_some_and(|len| len > MAX_REPLY_BYTES as u64) {
        return Err(too_large());
    }
    // Trust a declared length for the first allocation only, and only up to the cap.
    let mut body = Vec::with_capacity(declared.map_or(0, |len| len as usize));
    while let Some(chunk) = response.chunk().await.map_err(Error::from_body)? {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn render_json(value: &Value, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Value, Error> {
    Ok(match value {
        Value::String(s) => {
            // The config loader checks body templates, so this is a broken
            // SourceConfig; either way the request is never sent.
            let template = template::Template::parse(s).map_err(|e| {
                Error::Connect(Cause::message(format!("bad template in the body: {e}")))
            })?;
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
    if !is_usable_token(value) {
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
        rotated: None,
    })
}

/// Looks up a dotted path such as `data.token`.
fn field<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

#[cfg(test)]
mod http_tests;

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
                expires_in: Some(Duration::from_secs(7200)),
                rotated: None,
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

    fn token_of(value: &str) -> Result<Fetched, Error> {
        parse_reply(
            &json!({"access_token": value, "expires_in": 7200}),
            "access_token",
            "expires_in",
        )
    }

    fn assert_unusable(value: &str) {
        assert!(
            matches!(token_of(value), Err(Error::Malformed(m)) if m.contains("not a usable token")),
            "{value:?} was accepted"
        );
    }

    #[test]
    fn an_empty_or_whitespace_token_is_malformed() {
        // Tokens are opaque words: whitespace anywhere (a Unicode line separator
        // included) would split a header or a log line downstream.
        for value in [
            "",
            " ",
            "   ",
            "\u{3000}",
            " \u{a0} ",
            " T ",
            "T T",
            "T\u{2028}T",
        ] {
            assert_unusable(value);
        }
        assert_eq!(token_of("T-1_x").unwrap().value, "T-1_x");
    }

    #[test]
    fn a_token_over_2048_bytes_is_malformed() {
        assert_eq!(token_of(&"a".repeat(2048)).unwrap().value.len(), 2048);
        assert_unusable(&"a".repeat(2049));
        // Bytes, not characters: 683 three-byte characters are 2049 bytes.
        assert_unusable(&"字".repeat(683));
        assert!(token_of(&"字".repeat(682)).is_ok());
    }

    #[test]
    fn a_token_holding_a_control_character_is_malformed() {
        for value in ["T\nX", "T\rX", "T\tX", "\u{0}T", "T\u{7f}", "T\u{85}"] {
            assert_unusable(value);
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
