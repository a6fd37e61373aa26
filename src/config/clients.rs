//! `[clients.NAME]`: per-client keys with the apps and tokens they may read or refresh
//! and the networks they may call from. Only the key's SHA-256 is kept, so a config
//! written with `key_sha256` never holds the key at all.

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::Error;
use super::raw::{RawClient, RawScope};
use super::sources::AppConfig;
use crate::domain::is_valid_name;

/// Shortest `key` accepted: a key is a password that never needs typing, and a short one
/// could be guessed from its SHA-256 if that leaked.
pub const MIN_KEY_LEN: usize = 16;

/// Which apps or tokens a client may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `"*"`.
    All,
    /// Exactly these names.
    Only(Vec<String>),
}

impl Scope {
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(names) => names.iter().any(|n| n == name),
        }
    }
}

/// One validated client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The table name, shown in logs (never the key).
    pub name: String,
    /// SHA-256 of the key; presented keys are hashed and compared in constant time.
    pub key_sha256: [u8; 32],
    pub apps: Scope,
    pub tokens: Scope,
    /// May it force-refresh the tokens it may read?
    pub refresh: bool,
    /// Source networks it may call from; `None`: any.
    pub networks: Option<Vec<IpNet>>,
    /// May it manage the runtime app registry (`/v1/apps`)?
    pub admin: bool,
    /// Gateway requests per second it may make; `None`: unlimited.
    pub rate: Option<f64>,
}

/// Validates every `[clients.NAME]` against the configured apps.
///
/// # Errors
/// [`Error::Invalid`] naming `clients.NAME.KEY`.
pub fn parse_clients(
    raw: std::collections::BTreeMap<String, RawClient>,
    apps: &[AppConfig],
    request_secret: &str,
) -> Result<Vec<ClientConfig>, Error> {
    let mut clients: Vec<ClientConfig> = Vec::new();
    for (name, raw) in raw {
        let key = format!("clients.{name}");
        if !is_valid_name(&name) {
            return Err(Error::invalid(
                key,
                "a client name may only use letters, digits, '_', '-' and '.'",
            ));
        }
        let digest = key_digest(&key, raw.key.as_deref(), raw.key_sha256.as_deref())?;
        if digest == sha256(request_secret) {
            return Err(Error::invalid(
                key,
                "its key is server.request_secret; give each client a key of its own",
            ));
        }
        if let Some(other) = clients.iter().find(|c| c.key_sha256 == digest) {
            return Err(Error::invalid(
                key,
                format!(
                    "has the same key as clients.{}; keys must differ",
                    other.name
                ),
            ));
        }
        let apps_scope = scope(&format!("{key}.apps"), raw.apps)?;
        // A name the config does not define may be an app of the runtime registry,
        // which the config cannot know; a name that could never be an app is refused.
        if let Scope::Only(names) = &apps_scope
            && let Some(bad) = names.iter().find(|n| !is_valid_name(n))
        {
            return Err(Error::invalid(
                format!("{key}.apps"),
                format!("{bad:?} is not an app name (letters, digits, '_', '-' and '.')"),
            ));
        }
        // May the scope reach registry apps, whose tokens have the presets' names?
        let registry_apps = match &apps_scope {
            Scope::All => true,
            Scope::Only(names) => names.iter().any(|n| !apps.iter().any(|a| &a.name == n)),
        };
        let tokens = scope(&format!("{key}.tokens"), raw.tokens)?;
        if let Scope::Only(names) = &tokens {
            let reachable = |token: &str| {
                (registry_apps && super::presets::TOKEN_NAMES.contains(&token))
                    || apps
                        .iter()
                        .filter(|a| apps_scope.allows(&a.name))
                        .any(|a| a.source(token).is_some())
            };
            if let Some(unknown) = names.iter().find(|n| !reachable(n)) {
                return Err(Error::invalid(
                    format!("{key}.tokens"),
                    format!("none of the client's apps has a token named {unknown:?}"),
                ));
            }
        }
        let networks = raw
            .networks
            .map(|list| networks(&format!("{key}.networks"), list))
            .transpose()?;
        if let Some(rate) = raw.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(Error::invalid(
                format!("{key}.rate"),
                format!("must be a positive number of gateway requests per second, got {rate}"),
            ));
        }
        clients.push(ClientConfig {
            rate: raw.rate,
            name,
            key_sha256: digest,
            apps: apps_scope,
            tokens,
            refresh: raw.refresh,
            networks,
            admin: raw.admin,
        });
    }
    Ok(clients)
}

/// SHA-256 of `text`.
pub fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn key_digest(key: &str, plain: Option<&str>, hex: Option<&str>) -> Result<[u8; 32], Error> {
    match (plain, hex) {
        (Some(plain), None) => {
            if plain.chars().count() < MIN_KEY_LEN {
                return Err(Error::invalid(
                    format!("{key}.key"),
                    format!(
                        "must be at least {MIN_KEY_LEN} characters (e.g. `openssl rand -hex 24`)"
                    ),
                ));
            }
            Ok(sha256(plain))
        }
        (None, Some(hex)) => parse_hex32(hex).ok_or_else(|| {
            Error::invalid(
                format!("{key}.key_sha256"),
                "must be 64 hex digits (`printf %s KEY | sha256sum`)",
            )
        }),
        (Some(_), Some(_)) => Err(Error::invalid(
            key,
            "give either key or key_sha256, not both",
        )),
        (None, None) => Err(Error::invalid(
            key,
            "needs key = \"...\" or key_sha256 = \"<hex>\"",
        )),
    }
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

fn scope(key: &str, raw: RawScope) -> Result<Scope, Error> {
    let names = match raw {
        RawScope::One(one) if one == "*" => return Ok(Scope::All),
        RawScope::One(one) => vec![one],
        RawScope::Many(many) if many.iter().any(|n| n == "*") => return Ok(Scope::All),
        RawScope::Many(many) => many,
    };
    if let Some(bad) = names.iter().find(|n| !is_valid_name(n)) {
        return Err(Error::invalid(key, format!("{bad:?} is not a valid name")));
    }
    Ok(Scope::Only(names))
}

fn networks(key: &str, list: Vec<String>) -> Result<Vec<IpNet>, Error> {
    if list.is_empty() {
        return Err(Error::invalid(
            key,
            "is empty, which would refuse every request; omit it to allow any network",
        ));
    }
    parse_nets(key, &list)
}

/// CIDRs or bare addresses (a bare address means that host alone).
///
/// # Errors
/// [`Error::Invalid`] naming `key` and the entry.
pub(super) fn parse_nets(key: &str, list: &[String]) -> Result<Vec<IpNet>, Error> {
    list.iter()
        .map(|text| {
            let text = text.trim();
            // A bare address means that host alone.
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    Error::invalid(
                        key,
                        format!("{text:?} is not a CIDR such as \"10.0.0.0/8\" or an address"),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digests_parse_in_either_case() {
        let digest = sha256("test");
        let hex: String = digest.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(parse_hex32(&hex), Some(digest));
        assert_eq!(parse_hex32(&hex.to_lowercase()), Some(digest));
        assert_eq!(parse_hex32(&hex[..62]), None);
        assert_eq!(parse_hex32(&format!("{}zz", &hex[..62])), None);
    }

    #[test]
    fn networks_take_cidrs_and_bare_addresses() {
        let nets = networks(
            "k",
            vec!["10.0.0.0/8".into(), "::1".into(), "127.0.0.1".into()],
        )
        .unwrap();
        assert!(nets[0].contains(&"10.1.2.3".parse::<std::net::IpAddr>().unwrap()));
        assert!(nets[1].contains(&"::1".parse::<std::net::IpAddr>().unwrap()));
        assert!(!nets[2].contains(&"127.0.0.2".parse::<std::net::IpAddr>().unwrap()));
        assert!(networks("k", vec!["10.0.0.0/33".into()]).is_err());
        assert!(networks("k", vec![]).is_err());
    }
}
