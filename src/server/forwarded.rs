//! The client's address behind a reverse proxy: `X-Forwarded-For` and `X-Real-IP`,
//! believed only when the TCP peer is one of `server.trusted_proxies`.
//!
//! Anyone can send these headers, so a header from an untrusted peer is ignored, and
//! `X-Forwarded-For` is read from the right: each trusted proxy appends the address it
//! got the request from, so the rightmost entry that is not a trusted proxy is the
//! first address no trusted party vouches for beyond, i.e. the client. Entries to its
//! left were written by the client itself and mean nothing.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The address a request came from as far as the trusted proxies say, set by the
/// server on requests from a trusted proxy (`http::caller::Peer` reads it). `None`:
/// a trusted proxy forwarded a header that names no address, so the client's address
/// is unknown (clients limited to networks are then refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedClient(pub Option<IpAddr>);

/// `server.trusted_proxies`.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// Whether no proxy is trusted: the headers are never read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that `peer` sent with `headers`: `None` when `peer` is
    /// not trusted (the peer is the client, nothing to add); else the rightmost
    /// untrusted `X-Forwarded-For` hop, or `X-Real-IP`, or the peer itself when the
    /// proxy sent neither.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> Option<ForwardedClient> {
        if !self.trusts(peer.ip()) {
            return None;
        }
        let mut forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|value| value.to_str().ok())
            .peekable();
        if forwarded.peek().is_some() {
            let mut hops: Vec<Option<&str>> = Vec::new();
            for value in forwarded {
                match value {
                    Some(list) => hops.extend(list.split(',').map(Some)),
                    None => hops.push(None),
                }
            }
            let mut nearest = peer.ip();
            for hop in hops.into_iter().rev() {
                let Some(ip) = hop.and_then(parse_hop) else {
                    return Some(ForwardedClient(None));
                };
                if !self.trusts(ip) {
                    return Some(ForwardedClient(Some(ip)));
                }
                nearest = ip;
            }
            // Every hop is a trusted proxy: the leftmost is as far as anyone knows.
            return Some(ForwardedClient(Some(nearest)));
        }
        if let Some(real) = headers.get("x-real-ip") {
            let ip = real.to_str().ok().and_then(parse_hop);
            return Some(ForwardedClient(ip));
        }
        Some(ForwardedClient(Some(peer.ip())))
    }
}

/// One hop: an address, possibly with a port (`1.2.3.4:5678`, `[::1]:80`).
fn parse_hop(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(canonical)
}

/// An IPv4 address on a dual-stack socket shows up as `::ffff:a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn proxies() -> TrustedProxies {
        TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.168.1.1/32".parse().unwrap(),
        ])
    }

    fn client(peer: &str, headers: &[(&'static str, &str)]) -> Option<ForwardedClient> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        proxies().client(format!("{peer}:4000").parse().unwrap(), &map)
    }

    fn ip(text: &str) -> Option<ForwardedClient> {
        Some(ForwardedClient(Some(text.parse().unwrap())))
    }

    #[test]
    fn headers_of_an_untrusted_peer_are_ignored() {
        assert_eq!(
            client("203.0.113.9", &[("x-forwarded-for", "10.1.1.1")]),
            None
        );
        assert_eq!(client("203.0.113.9", &[("x-real-ip", "10.1.1.1")]), None);
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        // The client wrote 10.9.9.9 itself, then came through 192.168.1.1 and 10.0.0.2.
        let xff = "10.9.9.9, 198.51.100.7, 192.168.1.1, 10.0.0.2";
        assert_eq!(
            client("10.0.0.3", &[("x-forwarded-for", xff)]),
            ip("198.51.100.7")
        );
        // Split over several header lines, with ports and IPv6.
        assert_eq!(
            client(
                "10.0.0.3",
                &[
                    ("x-forwarded-for", "[2001:db8::1]:443"),
                    ("x-forwarded-for", "10.0.0.2:80")
                ]
            ),
            ip("2001:db8::1")
        );
        assert_eq!(
            client("10.0.0.3", &[("x-forwarded-for", "10.0.0.5, 10.0.0.2")]),
            ip("10.0.0.5"),
            "only proxies: the leftmost"
        );
        // X-Forwarded-For wins over X-Real-IP.
        assert_eq!(
            client(
                "10.0.0.3",
                &[
                    ("x-real-ip", "198.51.100.1"),
                    ("x-forwarded-for", "198.51.100.2")
                ]
            ),
            ip("198.51.100.2")
        );
    }

    #[test]
    fn x_real_ip_and_no_header_and_garbage() {
        assert_eq!(
            client("10.0.0.3", &[("x-real-ip", " 198.51.100.1 ")]),
            ip("198.51.100.1")
        );
        assert_eq!(client("10.0.0.3", &[]), ip("10.0.0.3"));
        let unknown = Some(ForwardedClient(None));
        assert_eq!(
            client("10.0.0.3", &[("x-forwarded-for", "198.51.100.2, nonsense")]),
            unknown
        );
        assert_eq!(client("10.0.0.3", &[("x-real-ip", "nonsense")]), unknown);
        // Garbage to the left of the client is the client's own business.
        assert_eq!(
            client("10.0.0.3", &[("x-forwarded-for", "nonsense, 198.51.100.2")]),
            ip("198.51.100.2")
        );
    }

    #[test]
    fn a_dual_stack_peer_is_matched_as_ipv4() {
        let peer: SocketAddr = "[::ffff:10.0.0.3]:4000".parse().unwrap();
        let mut map = HeaderMap::new();
        map.insert("x-real-ip", HeaderValue::from_static("198.51.100.1"));
        assert_eq!(proxies().client(peer, &map), ip("198.51.100.1"));
    }
}
