//! JS-SDK signatures (`wx.config`, WeCom's `wx.agentConfig`), the reason the jsapi
//! ticket exists: business servers get a signature without ever holding the ticket.
//!
//! The algorithm (WECHAT-API.md): sort the fields `jsapi_ticket`, `noncestr`,
//! `timestamp`, `url` by name, join as `key=value` with `&` using the raw values (no URL
//! encoding), SHA-1, lowercase hex. The `url` is the page URL without `#` and what
//! follows, and must be exactly what the page's `location.href` shows: it is not
//! normalised here, since `http://a.b` and `http://a.b/` sign differently.

use std::fmt::Write;

use rand::Rng;
use rand::distr::Alphanumeric;
use sha1::{Digest, Sha1};

/// Length of a generated nonce; WeChat allows up to 32 characters.
pub const NONCE_LEN: usize = 16;

/// Longest page URL accepted for signing.
pub const MAX_URL_LEN: usize = 2048;

/// The signature of `url` with `ticket`.
pub fn sign(ticket: &str, noncestr: &str, timestamp: u64, url: &str) -> String {
    let plain =
        format!("jsapi_ticket={ticket}&noncestr={noncestr}&timestamp={timestamp}&url={url}");
    let digest = Sha1::digest(plain.as_bytes());
    digest.iter().fold(String::with_capacity(40), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// A fresh random nonce of letters and digits.
pub fn nonce() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(NONCE_LEN)
        .map(char::from)
        .collect()
}

/// The URL to sign: the page URL without its `#fragment`.
///
/// # Errors
/// A message for the client when it is not an absolute http(s) URL of sane length.
pub fn page_url(raw: &str) -> Result<&str, String> {
    let url = raw.split('#').next().unwrap_or_default();
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err("url must be the page's absolute http:// or https:// URL".into());
    }
    if url.len() > MAX_URL_LEN {
        return Err(format!("url is longer than {MAX_URL_LEN} bytes"));
    }
    if url.chars().any(|c| c.is_control() || c == ' ') {
        return Err("url must not contain spaces or control characters".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICKET: &str =
        "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg";
    const NONCE: &str = "Wm3WZYTPz0wzccnW";
    const TIMESTAMP: u64 = 1_414_587_457;

    #[test]
    fn wechats_published_example_signs_as_published() {
        assert_eq!(
            sign(
                TICKET,
                NONCE,
                TIMESTAMP,
                "http://mp.weixin.qq.com?params=value"
            ),
            "0f9de62fce790f9a083d5c99e95740ceb90c27ed"
        );
    }

    #[test]
    fn the_second_published_vector_without_query_signs_as_published() {
        assert_eq!(
            sign(TICKET, NONCE, TIMESTAMP, "http://mp.weixin.qq.com"),
            "f4d90daf4b3bca3078ab155816175ba34c443a7b"
        );
    }

    #[test]
    fn the_fragment_is_cut_and_the_rest_kept_as_given() {
        assert_eq!(
            page_url("http://mp.weixin.qq.com?params=value#top"),
            Ok("http://mp.weixin.qq.com?params=value")
        );
        assert_eq!(
            page_url("HTTPS://a.b/c d"),
            Err("url must not contain spaces or control characters".into())
        );
        assert!(page_url("ftp://a").is_err());
        assert!(page_url("/relative").is_err());
        assert!(page_url("").is_err());
    }

    #[test]
    fn nonces_are_alphanumeric_and_differ() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), NONCE_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
