//! The WeChat API gateway: any WeChat API call sent to this server is forwarded to the
//! app's `api_base` with the current access token put in, and a reply saying the token
//! is bad (40001, 42001, 40014) leads to one shared refresh and one retry, so business
//! code never handles an expired token (SPEC.md, "API gateway").
//!
//! - [`spool`]: the request body, kept replayable without holding it in memory.
//! - [`rate`]: per-client token buckets.
//!
//! The handler that ties a request to an app and a caller is `http::gateway`; this
//! module only forwards.

pub mod rate;
pub mod spool;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;

use crate::config::GatewayConfig;
use crate::domain::token_prefix;
use crate::refresh::{Credential, Refresher};
use spool::{SpoolError, Spooled};

/// The path prefixes forwarded (SPEC.md); the facade's own paths are routed first.
pub const PREFIXES: [&str; 9] = [
    "/cgi-bin/",
    "/wxa/",
    "/wxaapi/",
    "/datacube/",
    "/card/",
    "/customservice/",
    "/merchant/",
    "/product/",
    "/shop/",
];

/// Is `path` one the gateway forwards (and whose bodies may be `gateway.max_body`)?
pub fn is_gateway_path(path: &str) -> bool {
    PREFIXES.iter().any(|p| path.starts_with(p))
}

/// WeChat's "this token is bad" codes: a refresh and one retry follow.
const TOKEN_REJECTED: [i64; 3] = [40001, 42001, 40014];

/// Replies up to this size with a JSON or text type are read whole to see their errcode;
/// anything else (media, images) streams through untouched.
const INSPECT_LIMIT: usize = 64 * 1024;

/// Headers that belong to one connection, never forwarded (RFC 9110 7.6.1), plus ours.
const DROPPED: [&str; 13] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "authorization",
    "x-wts-app",
];

/// The forwarding half of the gateway.
pub struct Gateway {
    client: reqwest::Client,
    settings: GatewayConfig,
    pub rates: rate::RateLimiter,
}

/// One request to forward.
pub struct Forward {
    pub app: Arc<str>,
    pub cred: Arc<Credential>,
    pub method: Method,
    /// The path as received (a gateway prefix).
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
}

/// How a forwarded request ended, for `wts_gateway_requests_total{outcome}`.
pub struct Outcome {
    pub label: String,
    pub response: Response,
}

impl Gateway {
    /// # Errors
    /// When the HTTP client cannot be built (no TLS roots).
    pub fn new(settings: GatewayConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            // The request carries a token: it goes to the app's api_base only.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            client,
            settings,
            rates: rate::RateLimiter::default(),
        })
    }

    pub fn settings(&self) -> &GatewayConfig {
        &self.settings
    }

    /// Forwards `request` with `body` for its app; on a token rejection, one shared
    /// force refresh (stale = the token used) and one retry.
    pub async fn forward(
        &self,
        refresher: &Arc<Refresher>,
        request: Forward,
        body: Body,
    ) -> Outcome {
        let spooled = match Spooled::read(body, self.settings.max_body).await {
            Ok(spooled) => spooled,
            Err(SpoolError::TooLarge(max)) => {
                return outcome(
                    "too_large",
                    wx_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        44002,
                        &format!("request body over gateway.max_body ({max} bytes)"),
                    ),
                );
            }
            Err(e) => {
                return outcome(
                    "bad_body",
                    wx_error(StatusCode::BAD_REQUEST, 44002, &e.to_string()),
                );
            }
        };
        let bases = api_bases(&request.cred);
        let now = refresher.clock().now();
        let Some(token) = request.cred.live_token(now) else {
            return outcome(
                "not_ready",
                wx_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    -1,
                    "system error: the app's access token is not fetched yet; retry in a moment",
                ),
            );
        };
        let first = self.attempt(&bases, &request, &token.value, &spooled).await;
        let first = match first {
            Ok(reply) => reply,
            Err(failure) => return failure,
        };
        let Some(code) = first.errcode.filter(|c| TOKEN_REJECTED.contains(c)) else {
            return first.finish(false);
        };
        tracing::info!(app = %request.app, path = %request.path, errcode = code, token = %token_prefix(&token.value),
            "WeChat rejected the token: refreshing once and retrying");
        let fresh = match refresher
            .force_refresh(&request.cred, Some(&token.value))
            .await
        {
            Ok((fresh, _)) => fresh,
            Err(error) => {
                tracing::warn!(app = %request.app, %error, "refresh after a rejected token failed; answering WeChat's reply");
                return first.finish(false);
            }
        };
        match self.attempt(&bases, &request, &fresh.value, &spooled).await {
            Ok(second) => second.finish(true),
            Err(failure) => failure,
        }
    }

    /// One send to the first base that answers; the reply, read whole if it may be a
    /// WeChat error, else left to stream.
    async fn attempt(
        &self,
        bases: &[String],
        request: &Forward,
        token: &str,
        body: &Spooled,
    ) -> Result<Reply, Outcome> {
        let mut last_error = None;
        for base in bases {
            let url = format!(
                "{base}{}?{}",
                request.path,
                with_token(request.query.as_deref(), token)
            );
            let mut headers = forwarded_headers(&request.headers);
            if !body.is_empty() || request.method == Method::POST || request.method == Method::PUT {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            }
            let sent = body.body().map_err(|e| {
                outcome(
                    "spool_error",
                    wx_error(StatusCode::INTERNAL_SERVER_ERROR, -1, &e.to_string()),
                )
            })?;
            match self
                .client
                .request(request.method.clone(), &url)
                .headers(headers)
                .body(sent)
                .send()
                .await
            {
                Ok(response) => return Reply::read(response, self.settings.max_body).await,
                Err(e) if e.is_connect() => last_error = Some(e),
                Err(e) => return Err(upstream_failure(&e)),
            }
        }
        Err(match last_error {
            Some(e) => upstream_failure(&e),
            None => outcome(
                "unreachable",
                wx_error(
                    StatusCode::BAD_GATEWAY,
                    -1,
                    "system error: the app has no api_base",
                ),
            ),
        })
    }
}

fn outcome(label: &str, response: Response) -> Outcome {
    Outcome {
        label: label.to_owned(),
        response,
    }
}

/// A WeChat-shaped error with an HTTP status of ours.
pub fn wx_error(status: StatusCode, code: i64, msg: &str) -> Response {
    (status, axum::Json(json!({"errcode": code, "errmsg": msg}))).into_response()
}

fn upstream_failure(e: &reqwest::Error) -> Outcome {
    if e.is_timeout() {
        outcome(
            "timeout",
            wx_error(
                StatusCode::GATEWAY_TIMEOUT,
                -1,
                "system error: WeChat did not answer within gateway.timeout",
            ),
        )
    } else {
        outcome(
            "unreachable",
            wx_error(
                StatusCode::BAD_GATEWAY,
                -1,
                &format!("system error: cannot reach WeChat: {e}"),
            ),
        )
    }
}

/// The app's API hosts in order: its token source's URLs without WeChat's token path
/// (`https://api.weixin.qq.com/cgi-bin/token` -> `https://api.weixin.qq.com`).
pub fn api_bases(cred: &Credential) -> Vec<String> {
    cred.source
        .urls
        .iter()
        .map(|url| {
            let mut url = url.clone();
            url.set_query(None);
            url.set_fragment(None);
            let path = url.path().to_owned();
            let prefix = [
                "/cgi-bin/token",
                "/cgi-bin/stable_token",
                "/cgi-bin/gettoken",
            ]
            .iter()
            .find_map(|p| path.strip_suffix(p))
            .unwrap_or("")
            .to_owned();
            url.set_path(&prefix);
            url.as_str().trim_end_matches('/').to_owned()
        })
        .collect()
}

/// The query with `access_token` set to `token` (other parameters as sent, in order).
fn with_token(query: Option<&str>, token: &str) -> String {
    let mut out: String = query
        .unwrap_or("")
        .split('&')
        .filter(|pair| {
            !pair.is_empty() && !pair.starts_with("access_token=") && *pair != "access_token"
        })
        .flat_map(|pair| [pair, "&"])
        .collect();
    out.push_str("access_token=");
    out.extend(form_urlencoded::byte_serialize(token.as_bytes()));
    out
}

/// The caller's headers minus hop-by-hop ones, ours, and `Accept-Encoding` (a reply
/// must stay readable for its errcode).
fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect();
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let lower = name.as_str();
        if DROPPED.contains(&lower)
            || lower == "accept-encoding"
            || named.iter().any(|n| n == lower)
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// A reply from WeChat: read whole (a small JSON or text reply), or its head and the
/// stream of the rest.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: ReplyBody,
    errcode: Option<i64>,
}

enum ReplyBody {
    Whole(Bytes),
    Stream(reqwest::Response),
}

impl Reply {
    async fn read(response: reqwest::Response, max: usize) -> Result<Self, Outcome> {
        let status = response.status();
        let headers = response.headers().clone();
        if response
            .content_length()
            .is_some_and(|len| len > max as u64)
        {
            return Err(outcome(
                "too_large",
                wx_error(
                    StatusCode::BAD_GATEWAY,
                    -1,
                    &format!("system error: WeChat's reply is over gateway.max_body ({max} bytes)"),
                ),
            ));
        }
        let textual = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|t| t.contains("json") || t.starts_with("text/"));
        let small = response
            .content_length()
            .is_none_or(|len| len <= INSPECT_LIMIT as u64);
        if !(textual && small) {
            return Ok(Self {
                status,
                headers,
                body: ReplyBody::Stream(response),
                errcode: None,
            });
        }
        let mut response = response;
        let mut whole = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    whole.extend_from_slice(&chunk);
                    if whole.len() > max {
                        return Err(outcome(
                            "too_large",
                            wx_error(
                                StatusCode::BAD_GATEWAY,
                                -1,
                                "system error: WeChat's reply is over gateway.max_body",
                            ),
                        ));
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(upstream_failure(&e)),
            }
        }
        let errcode = serde_json::from_slice::<serde_json::Value>(&whole)
            .ok()
            .and_then(|v| v.get("errcode")?.as_i64());
        Ok(Self {
            status,
            headers,
            body: ReplyBody::Whole(Bytes::from(whole)),
            errcode,
        })
    }

    /// The response for the caller; `retried`: this is the retry's reply.
    fn finish(self, retried: bool) -> Outcome {
        let label = match self.errcode {
            Some(code) if code != 0 => code.to_string(),
            _ if retried => "retried".to_owned(),
            _ if !self.status.is_success() => format!("http_{}", self.status.as_u16()),
            _ => "ok".to_owned(),
        };
        let mut builder = Response::builder().status(self.status);
        let keep_length = matches!(self.body, ReplyBody::Stream(_));
        for (name, value) in &self.headers {
            let lower = name.as_str();
            if (DROPPED.contains(&lower) && !(keep_length && name == header::CONTENT_LENGTH))
                || lower == "set-cookie"
            {
                continue;
            }
            builder = builder.header(name, value);
        }
        let body = match self.body {
            ReplyBody::Whole(bytes) => Body::from(bytes),
            ReplyBody::Stream(response) => Body::from_stream(
                response
                    .bytes_stream()
                    .map(|r| r.map_err(std::io::Error::other)),
            ),
        };
        let response = builder.body(body).unwrap_or_else(|_| {
            wx_error(
                StatusCode::BAD_GATEWAY,
                -1,
                "system error: WeChat's reply had invalid headers",
            )
        });
        Outcome { label, response }
    }
}

/// `X-WTS-App`: the app a client that holds no token means.
pub static APP_HEADER: HeaderName = HeaderName::from_static("x-wts-app");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_replaces_any_given_and_other_parameters_stay_as_sent() {
        assert_eq!(with_token(None, "T+1"), "access_token=T%2B1");
        assert_eq!(
            with_token(Some("access_token=old&type=image&x=%E4"), "N"),
            "type=image&x=%E4&access_token=N"
        );
        assert_eq!(
            with_token(Some("a=1&access_token"), "N"),
            "a=1&access_token=N"
        );
    }

    #[test]
    fn paths_under_the_prefixes_only() {
        assert!(is_gateway_path("/cgi-bin/menu/get"));
        assert!(is_gateway_path("/wxa/getwxacodeunlimit"));
        assert!(!is_gateway_path("/wechat/token"));
        assert!(!is_gateway_path("/v1/status"));
    }

    #[test]
    fn hop_by_hop_and_our_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-secret-hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("authorization", "Bearer key".parse().unwrap());
        h.insert("x-wts-app", "shop".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        let out = forwarded_headers(&h);
        assert_eq!(out.len(), 1);
        assert!(out.contains_key("content-type"));
    }
}
