//! Who is calling, from where, and whether they may: shared by the seed routes and
//! `/v1`, which differ only in how a refusal is rendered. Every refusal is logged here,
//! once, with the client's name, the route and the reason, never the key.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::auth::{Action, Auth, Caller, Refusal};

/// The TCP peer's address, from `ConnectInfo` (set by `App::run`). `None` when the
/// router is driven without a socket (e.g. `tower::ServiceExt::oneshot` in tests):
/// then clients limited to networks are refused, and the others are unaffected.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        ))
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
///
/// # Errors
/// [`Denied`], already logged.
pub fn identify(
    auth: &Auth,
    route: &'static str,
    presented: Option<&str>,
    peer: Peer,
) -> Result<Caller, Denied> {
    let Some(caller) = presented.and_then(|secret| auth.authenticate(secret)) else {
        let reason = if presented.is_some() {
            "unknown key"
        } else {
            "no key"
        };
        tracing::warn!(route, peer = %peer, reason, "request refused");
        return Err(Denied::Unauthenticated);
    };
    caller.check_network(peer.0).map_err(|refusal| {
        tracing::warn!(route, client = caller.name(), peer = %peer, reason = %refusal, "request refused");
        Denied::Refused(refusal)
    })?;
    Ok(caller)
}

/// Checks that `caller` may do `action` on `app`/`name`.
///
/// # Errors
/// [`Denied::Refused`], already logged.
pub fn permit(
    caller: &Caller,
    route: &'static str,
    app: &str,
    name: &str,
    action: Action,
) -> Result<(), Denied> {
    caller.check(app, name, action).map_err(|refusal| {
        tracing::warn!(route, client = caller.name(), app, token = name, reason = %refusal, "request refused");
        Denied::Refused(refusal)
    })
}

/// Checks that `caller` may see `app` at all (for routes about an app, not a token).
///
/// # Errors
/// [`Denied::Refused`], already logged.
pub fn permit_app(caller: &Caller, route: &'static str, app: &str) -> Result<(), Denied> {
    if caller.may_use_app(app) {
        Ok(())
    } else {
        tracing::warn!(route, client = caller.name(), app, reason = %Refusal::App, "request refused");
        Err(Denied::Refused(Refusal::App))
    }
}
