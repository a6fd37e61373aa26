//! `[store]`: which backend, and the checks that catch a mistyped `path` or `redis_url`
//! in `check-config` rather than at the first save.

use super::raw::{Backend, RawStore};
use super::{Error, StoreConfig};
use crate::domain::Secret;

/// The `redis_url` schemes the Redis backend connects with: TCP, TLS, and a Unix socket
/// (the redis crate's two spellings).
pub const REDIS_SCHEMES: [&str; 4] = ["redis", "rediss", "redis+unix", "unix"];

/// Schemes SPEC.md names for highly available Redis that this build does not speak
/// yet: refused with a message saying so, rather than "unknown scheme".
const NOT_YET_SUPPORTED: [&str; 2] = ["redis-sentinel", "redis-cluster"];

/// Validates `[store]`.
///
/// # Errors
/// [`Error::Invalid`] naming `store.path` or `store.redis_url`.
pub fn store(raw: RawStore) -> Result<StoreConfig, Error> {
    if raw.backend == Backend::Embedded && raw.path.as_os_str().is_empty() {
        return Err(Error::invalid(
            "store.path",
            "must not be empty: the embedded store needs a folder (default \"./data\")",
        ));
    }
    if let Some(url) = &raw.redis_url {
        redis_url(url)?;
    } else if raw.backend == Backend::Redis {
        return Err(Error::invalid(
            "store.redis_url",
            "must be set when store.backend = \"redis\"",
        ));
    }
    Ok(StoreConfig {
        backend: raw.backend,
        path: raw.path,
        redis_url: Secret::new(raw.redis_url.unwrap_or_default()),
        key_prefix: raw.key_prefix,
        encryption_key: raw
            .encryption_key
            .as_deref()
            .map(super::EncryptionKey::parse)
            .transpose()?,
    })
}

/// Checks the scheme by name first (the redis crate's own message for `http://` is
/// "Redis URL did not parse"), then that the redis crate can use the URL. The messages
/// never repeat the URL: it may carry a password.
fn redis_url(url: &str) -> Result<(), Error> {
    let key = "store.redis_url";
    let supported = REDIS_SCHEMES.map(|s| format!("{s}://")).join(", ");
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(Error::invalid(
            key,
            format!("must be a URL such as redis://127.0.0.1:6379/0 (supported: {supported})"),
        ));
    };
    let scheme = scheme.to_ascii_lowercase();
    if NOT_YET_SUPPORTED.contains(&scheme.as_str()) {
        return Err(Error::invalid(
            key,
            format!(
                "{scheme}:// (Redis Sentinel / Cluster) is not supported yet by this version; supported: {supported}"
            ),
        ));
    }
    if !REDIS_SCHEMES.contains(&scheme.as_str()) {
        return Err(Error::invalid(
            key,
            format!("scheme {scheme:?} is not a Redis scheme; supported: {supported}"),
        ));
    }
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| Error::invalid(key, format!("not a usable Redis URL: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_are_checked_by_scheme_then_by_the_redis_crate() {
        for good in [
            "redis://127.0.0.1:6379/0",
            "redis://:pw@h:6379",
            "REDIS://h",
            "redis+unix:///run/redis.sock",
            "unix:///run/redis.sock",
        ] {
            assert!(redis_url(good).is_ok(), "{good}");
        }
        let message = |url| redis_url(url).unwrap_err().to_string();
        let e = message("http://x");
        assert!(
            e.starts_with("store.redis_url:") && e.contains("\"http\"") && e.contains("rediss://"),
            "{e}"
        );
        let e = message("127.0.0.1:6379");
        assert!(e.contains("redis://127.0.0.1:6379/0"), "{e}");
        for ha in [
            "redis-sentinel://h:26379#mymaster",
            "redis-cluster://h:7000",
        ] {
            let e = message(ha);
            assert!(e.contains("not supported yet"), "{e}");
        }
        let e = message("redis://:s3cret@[::1");
        assert!(
            e.starts_with("store.redis_url:") && !e.contains("s3cret"),
            "{e}"
        );
    }
}
