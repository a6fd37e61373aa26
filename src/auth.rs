//! Who may read and refresh tokens: the seed's `request_secret` (everything) and the
//! `[clients.NAME]` keys (their scope, from their networks).
//!
//! Every comparison is constant-time in the compared bytes. The request secret, which
//! most requests carry, is compared as it is (timing may show whether a key had its
//! length, never any of its bytes); client keys are known only by their SHA-256
//! (`key_sha256`), so a presented key that is not the request secret is hashed and the
//! digests compared, which reveals nothing, not even a length.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

use crate::config::{ClientConfig, sha256};
use crate::domain::Secret;

/// Checks presented secrets.
pub struct Auth {
    /// The request secret: it may read and refresh everything.
    request_secret: Secret,
    clients: Vec<Arc<ClientConfig>>,
}

/// Who a request comes from, once its secret is recognised.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The request secret: may read and refresh everything, from anywhere.
    Admin,
    /// A `[clients.NAME]` key.
    Client(Arc<ClientConfig>),
}

/// What a caller wants to do with a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Refresh,
}

/// Why a recognised caller is refused (a 403). Shown in logs and error messages; it
/// names the rule, never the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the request comes from a network the client may not use")]
    Network,
    #[error("the client may not use this app")]
    App,
    #[error("the client may not use this token")]
    Token,
    #[error("the client may read but not refresh tokens")]
    Refresh,
    #[error("the client may not manage apps (it needs admin = true)")]
    Admin,
}

impl Auth {
    /// Only the request secret; see [`with_clients`](Self::with_clients).
    pub fn new(request_secret: Secret) -> Self {
        Self {
            request_secret,
            clients: Vec::new(),
        }
    }

    /// The request secret and clients of `config`.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self::new(config.server.request_secret.clone()).with_clients(config.clients.clone())
    }

    /// Adds the `[clients.NAME]` keys.
    pub fn with_clients(mut self, clients: impl IntoIterator<Item = ClientConfig>) -> Self {
        self.clients = clients.into_iter().map(Arc::new).collect();
        self
    }

    /// The caller whose secret or key `presented` is, if any. Every digest is compared,
    /// each in constant time.
    pub fn authenticate(&self, presented: &str) -> Option<Caller> {
        // Most requests carry the request secret: a constant-time comparison of the
        // bytes answers them without hashing (the hash costs more than the rest of
        // authentication on the token route). What timing may reveal is only whether
        // the key was the request secret, never any of its bytes.
        if bool::from(
            presented
                .as_bytes()
                .ct_eq(self.request_secret.expose().as_bytes()),
        ) {
            return Some(Caller::Admin);
        }
        let digest = sha256(presented);
        let mut found = None;
        for client in &self.clients {
            if bool::from(client.key_sha256.ct_eq(&digest)) {
                found = Some(Caller::Client(client.clone()));
            }
        }
        found
    }
}

impl Caller {
    /// A name for logs: the client's table name, or `request_secret`.
    pub fn name(&self) -> &str {
        match self {
            Caller::Admin => "request_secret",
            Caller::Client(client) => &client.name,
        }
    }

    /// May the caller call from `peer`? An unknown peer passes only without a
    /// network restriction.
    ///
    /// # Errors
    /// [`Refusal::Network`].
    pub fn check_network(&self, peer: Option<IpAddr>) -> Result<(), Refusal> {
        let Caller::Client(client) = self else {
            return Ok(());
        };
        let Some(networks) = &client.networks else {
            return Ok(());
        };
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let peer = peer.map(|ip| match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        });
        match peer {
            Some(ip) if networks.iter().any(|net| net.contains(&ip)) => Ok(()),
            _ => Err(Refusal::Network),
        }
    }

    /// May the caller manage the runtime app registry (`/v1/apps`)? The request
    /// secret and `admin = true` clients.
    ///
    /// # Errors
    /// [`Refusal::Admin`].
    pub fn check_admin(&self) -> Result<(), Refusal> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Client(client) if client.admin => Ok(()),
            Caller::Client(_) => Err(Refusal::Admin),
        }
    }

    /// May the caller see anything of `app`?
    pub fn may_use_app(&self, app: &str) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Client(client) => client.apps.allows(app),
        }
    }

    /// May the caller do `action` on token `name` of `app`?
    ///
    /// # Errors
    /// The first rule that refuses.
    pub fn check(&self, app: &str, name: &str, action: Action) -> Result<(), Refusal> {
        let Caller::Client(client) = self else {
            return Ok(());
        };
        if !client.apps.allows(app) {
            return Err(Refusal::App);
        }
        if !client.tokens.allows(name) {
            return Err(Refusal::Token);
        }
        if action == Action::Refresh && !client.refresh {
            return Err(Refusal::Refresh);
        }
        Ok(())
    }
}

/// The secret a request presents: `Authorization: Bearer <secret>` if present, else the
/// `secret` query parameter.
pub fn presented_secret<'a>(
    headers: &'a HeaderMap,
    query_secret: Option<&'a str>,
) -> Option<&'a str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .or(query_secret)
}

fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Scope;

    #[test]
    fn only_the_exact_secret_is_accepted() {
        let auth = Auth::new(Secret::new("abc123"));
        assert!(matches!(auth.authenticate("abc123"), Some(Caller::Admin)));
        for wrong in ["", "abc", "abc1234", "ABC123", "abc12"] {
            assert!(auth.authenticate(wrong).is_none(), "{wrong}");
        }
    }

    fn client(name: &str, key: &str, networks: Option<&str>) -> ClientConfig {
        ClientConfig {
            name: name.into(),
            key_sha256: sha256(key),
            apps: Scope::Only(vec!["shop".into()]),
            tokens: Scope::Only(vec!["access_token".into()]),
            refresh: false,
            networks: networks.map(|n| vec![n.parse().unwrap()]),
            admin: false,
            rate: None,
        }
    }

    #[test]
    fn keys_identify_their_client_and_the_secret_is_admin() {
        let auth = Auth::new(Secret::new("abc123")).with_clients([
            client("a", "key-a-0123456789", None),
            client("b", "key-b-0123456789", None),
        ]);
        assert!(matches!(auth.authenticate("abc123"), Some(Caller::Admin)));
        assert_eq!(auth.authenticate("key-b-0123456789").unwrap().name(), "b");
        assert!(auth.authenticate("key-b-012345678").is_none());
        assert!(auth.authenticate("").is_none());
    }

    #[test]
    fn scope_and_networks_are_enforced_for_clients_only() {
        let c = Caller::Client(Arc::new(client("a", "k", Some("10.0.0.0/8"))));
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let inside: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(c.check_network(Some(local)), Err(Refusal::Network));
        assert_eq!(c.check_network(None), Err(Refusal::Network));
        assert_eq!(c.check_network(Some(inside)), Ok(()));
        assert_eq!(c.check("shop", "access_token", Action::Read), Ok(()));
        assert_eq!(
            c.check("shop", "access_token", Action::Refresh),
            Err(Refusal::Refresh)
        );
        assert_eq!(
            c.check("shop", "jsapi_ticket", Action::Read),
            Err(Refusal::Token)
        );
        assert_eq!(
            c.check("office", "access_token", Action::Read),
            Err(Refusal::App)
        );
        assert_eq!(Caller::Admin.check_network(Some(local)), Ok(()));
        assert_eq!(Caller::Admin.check("x", "y", Action::Refresh), Ok(()));
    }

    #[test]
    fn bearer_header_wins_over_the_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_secret(&headers, Some("q")), Some("q"));
        headers.insert(AUTHORIZATION, "Bearer  tok ".parse().unwrap());
        assert_eq!(presented_secret(&headers, Some("q")), Some("tok"));
        headers.insert(AUTHORIZATION, "bearer tok2".parse().unwrap());
        assert_eq!(presented_secret(&headers, None), Some("tok2"));
        headers.insert(AUTHORIZATION, "Basic xyz".parse().unwrap());
        assert_eq!(presented_secret(&headers, None), None);
    }
}
