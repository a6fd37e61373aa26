//! Who is calling, from where, and whether they may: shared by the seed routes and
//! `/v1`, which differ only in how a refusal is rendered. Every refusal is logged here,
//! once, with the client's name, the route and the reason, never the key; at most a few
//! lines per interval (a [`LogLimiter`]), the rest counted in one summary line per
//! interval (see `App::run`), so that a client retrying with a wrong key cannot flood
//! the log.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::Extensions;
use axum::http::request::Parts;

use crate::auth::{Action, Auth, Caller, Refusal};
use crate::log_limit::LogLimiter;
use crate::server::ForwardedClient;

/// The client's address, for `networks` checks and logs: what a trusted proxy says
/// (`server.trusted_proxies`; the server sets [`ForwardedClient`]), else the TCP
/// peer's, from `ConnectInfo` (set by the server). `None` when a trusted proxy sent a
/// header naming no address, or the router is driven without a socket (e.g.
/// `tower::ServiceExt::oneshot` in tests): then clients limited to networks are
/// refused, and the others are unaffected.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer::of(&parts.extensions))
    }
}

impl Peer {
    /// The peer of a request with these extensions (see [`Peer`]).
    pub fn of(extensions: &Extensions) -> Self {
        if let Some(ForwardedClient(client)) = extensions.get::<ForwardedClient>() {
            return Peer(*client);
        }
        Peer(
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        )
    }
}

/// Written only when a refusal is logged: the serving path formats nothing.
impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

/// Why a request is denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No secret, or one that is neither the request secret nor a client key: 401.
    Unauthenticated,
    /// A known caller outside its scope or networks: 403.
    Refused(Refusal),
}

/// Recognises the caller from the secret it presented and checks its network.
/// Refusals are logged through `log`.
///
/// # Errors
/// [`Denied`], already logged.
pub fn identify(
    auth: &Auth,
    log: &LogLimiter,
    route: &'static str,
    presented: Option<&str>,
    peer: Peer,
) -> Result<Caller, Denied> {
    let Some(caller) = presented.and_then(|secret| auth.authenticate(secret)) else {
        if log.admit(Instant::now()) {
            let reason = if presented.is_some() {
                "unknown key"
            } else {
                "no key"
            };
            tracing::warn!(route, peer = %peer, reason, "request refused");
        }
        return Err(Denied::Unauthenticated);
    };
    caller.check_network(peer.0).map_err(|refusal| {
        if log.admit(Instant::now()) {
            tracing::warn!(route, client = caller.name(), peer = %peer, reason = %refusal, "request refused");
        }
        Denied::Refused(refusal)
    })?;
    Ok(caller)
}

/// Checks that `caller` may do `action` on `app`/`name`.
///
/// # Errors
/// [`Denied::Refused`], already logged.
pub fn permit(
    log: &LogLimiter,
    caller: &Caller,
    route: &'static str,
    app: &str,
    name: &str,
    action: Action,
) -> Result<(), Denied> {
    caller.check(app, name, action).map_err(|refusal| {
        if log.admit(Instant::now()) {
            tracing::warn!(route, client = caller.name(), app, token = name, reason = %refusal, "request refused");
        }
        Denied::Refused(refusal)
    })
}

/// Checks that `caller` may see `app` at all (for routes about an app, not a token).
///
/// # Errors
/// [`Denied::Refused`], already logged.
pub fn permit_app(
    log: &LogLimiter,
    caller: &Caller,
    route: &'static str,
    app: &str,
) -> Result<(), Denied> {
    if caller.may_use_app(app) {
        Ok(())
    } else {
        if log.admit(Instant::now()) {
            tracing::warn!(route, client = caller.name(), app, reason = %Refusal::App, "request refused");
        }
        Err(Denied::Refused(Refusal::App))
    }
}

/// Writes the summary of the refusals `log` kept out of the log since the last call,
/// if there were any: the one line per interval that stands for them.
pub fn report_suppressed(log: &LogLimiter, interval: std::time::Duration) {
    let suppressed = log.take_suppressed();
    if suppressed > 0 {
        tracing::warn!(
            suppressed,
            "{suppressed} more requests refused in the last {} s (not logged one by one)",
            interval.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{ClientConfig, Scope, sha256};
    use crate::domain::Secret;

    #[test]
    fn every_kind_of_refusal_is_logged_through_the_limiter() {
        let shop_only = ClientConfig {
            name: "shop-web".into(),
            key_sha256: sha256("shop-key"),
            apps: Scope::Only(vec!["shop".into()]),
            tokens: Scope::Only(vec!["access_token".into()]),
            refresh: false,
            networks: Some(vec!["10.0.0.0/8".parse().unwrap()]),
            admin: false,
            rate: None,
        };
        let auth = Auth::new(Secret::new("secret")).with_clients([shop_only]);
        let log = LogLimiter::new(2, Duration::from_secs(3600));
        let inside = Peer(Some("10.1.2.3".parse().unwrap()));
        let outside = Peer(Some("192.0.2.1".parse().unwrap()));
        for _ in 0..10 {
            assert!(identify(&auth, &log, "/r", Some("wrong"), inside).is_err());
            assert!(identify(&auth, &log, "/r", None, inside).is_err());
            assert!(identify(&auth, &log, "/r", Some("shop-key"), outside).is_err());
            let caller = identify(&auth, &log, "/r", Some("shop-key"), inside).unwrap();
            assert!(permit(&log, &caller, "/r", "office", "access_token", Action::Read).is_err());
            assert!(permit_app(&log, &caller, "/r", "office").is_err());
        }
        // 50 refusals: 2 lines, 48 counted for the summary line.
        assert_eq!(log.take_suppressed(), 48);
    }
}
