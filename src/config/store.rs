//! `[store]`: which backend, and the checks that catch a mistyped `path` or `redis_url`
//! in `check-config` rather than at the first save.

use super::raw::{Backend, RawStore};
use super::{Error, StoreConfig};
use crate::domain::Secret;

/// The `redis_url` schemes the Redis backend connects with: TCP, TLS, a Unix socket
/// (the redis crate's two spellings), a Sentinel-monitored master and a Redis Cluster.
pub const REDIS_SCHEMES: [&str; 6] = [
    "redis",
    "rediss",
    "redis+unix",
    "unix",
    "redis-sentinel",
    "redis-cluster",
];

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
        if let Some(ca) = &raw.redis_ca {
            redis_ca(url, ca, &raw.key_prefix)?;
        }
        if url.to_ascii_lowercase().starts_with("redis-cluster://")
            && (raw.key_prefix.contains('{') || raw.key_prefix.contains('}'))
        {
            return Err(Error::invalid(
                "store.key_prefix",
                "may not contain '{' or '}' with a Redis Cluster: the keys' hash tags would change",
            ));
        }
    } else if raw.redis_ca.is_some() {
        return Err(Error::invalid(
            "store.redis_ca",
            "is set but store.redis_url is not: it applies to rediss:// URLs only",
        ));
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
        redis_ca: raw.redis_ca,
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
    if !REDIS_SCHEMES.contains(&scheme.as_str()) {
        return Err(Error::invalid(
            key,
            format!("scheme {scheme:?} is not a Redis scheme; supported: {supported}"),
        ));
    }
    crate::store::redis::target::parse(url)
        .map(drop)
        .map_err(|e| Error::invalid(key, e))
}

/// `store.redis_ca`: a readable PEM file, for a `rediss://` URL.
fn redis_ca(url: &str, ca: &std::path::Path, prefix: &str) -> Result<(), Error> {
    let key = "store.redis_ca";
    if !url.to_ascii_lowercase().starts_with("rediss://") {
        return Err(Error::invalid(
            key,
            "applies to rediss:// URLs only (store.redis_url has no TLS)",
        ));
    }
    let pem = std::fs::read(ca)
        .map_err(|e| Error::invalid(key, format!("cannot read {}: {}", ca.display(), e.kind())))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(Error::invalid(
            key,
            format!("{} holds no PEM certificate", ca.display()),
        ));
    }
    crate::store::RedisStore::open_with_ca(url, prefix, Some(&pem))
        .map(drop)
        .map_err(|e| Error::invalid(key, format!("{}: {e}", ca.display())))
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
            "rediss://h:6380",
        ] {
            assert!(redis_url(ha).is_ok(), "{ha}");
        }
        let e = message("redis-sentinel://h:26379");
        assert!(
            e.starts_with("store.redis_url:") && e.contains("'#'"),
            "{e}"
        );
        let e = message("redis://:s3cret@[::1");
        assert!(
            e.starts_with("store.redis_url:") && !e.contains("s3cret"),
            "{e}"
        );
    }

    #[test]
    fn a_redis_ca_must_be_a_pem_file_for_a_tls_url() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let message =
            |url: &str, ca: &std::path::Path| redis_ca(url, ca, "").unwrap_err().to_string();
        let e = message("redis://h:6379", &missing);
        assert!(
            e.starts_with("store.redis_ca:") && e.contains("rediss://"),
            "{e}"
        );
        let e = message("rediss://h:6380", &missing);
        assert!(
            e.contains("cannot read") && e.contains("missing.pem"),
            "{e}"
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = message("rediss://h:6380", &junk);
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
