//! `X-Forwarded-*`: which peers may speak for the client, and the headers the upstream gets.
//!
//! From a peer in `trusted_proxies` (the TLS terminator in front, e.g. nginx), the incoming
//! `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host` are passed on, the peer's
//! address appended to `X-Forwarded-For`, and a missing `X-Forwarded-Proto` / `-Host` filled in
//! from this hop. From anyone else they are removed (with `Forwarded`) and replaced by what this
//! proxy saw: the peer's address, this listener's scheme, the request's `Host`. So the upstream's
//! `X-Forwarded-Proto: https` is true whenever it arrives: set by this proxy's own TLS or by a
//! peer the operator trusts.
//!
//! Verification never reads these headers: the signed `host` is the request's `Host` header,
//! which a TLS terminator must pass through unchanged (nginx: `proxy_set_header Host
//! $http_host;`). HWS1 does not sign the scheme.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{FORWARDED, HOST, HeaderName, HeaderValue};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Self { network, prefix })
    }

    fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        match (self.network, address) {
            (IpAddr::V4(net), IpAddr::V4(addr)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(addr) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(addr)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(addr) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 peer (`::ffff:127.0.0.1`, a dual-stack listener) is its IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The peers whose `X-Forwarded-*` headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Parses addresses and CIDR blocks; the error is the first entry that is neither.
    pub(crate) fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|entry| Cidr::parse(entry).ok_or_else(|| entry.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether `peer` is trusted.
    pub(crate) fn trusts(&self, peer: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(peer))
    }
}

/// The client's address: from a trusted peer, the last address in its `X-Forwarded-For` (the
/// one it saw; earlier entries are the client's word); else the peer itself.
pub(crate) fn client_addr(headers: &HeaderMap, peer: IpAddr, trusted: bool) -> IpAddr {
    if !trusted {
        return canonical(peer);
    }
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .and_then(|last| last.trim().parse::<IpAddr>().ok())
        .map_or(canonical(peer), canonical)
}

/// Rewrites the `X-Forwarded-*` headers of a request from `peer`, received over `scheme`
/// (`http` or `https`), as the module documentation says.
pub(crate) fn rewrite(headers: &mut HeaderMap, peer: IpAddr, scheme: &'static str, trusted: bool) {
    let peer = canonical(peer).to_string();
    if !trusted {
        for name in [
            X_FORWARDED_FOR,
            X_FORWARDED_PROTO,
            X_FORWARDED_HOST,
            FORWARDED,
        ] {
            headers.remove(name);
        }
    }
    // One X-Forwarded-For line: the trusted chain (joined, if it came in several lines), then
    // the peer.
    let chain: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let joined = if chain.is_empty() {
        peer
    } else {
        format!("{}, {peer}", chain.join(", "))
    };
    if let Ok(value) = HeaderValue::from_str(&joined) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    }
    if !headers.contains_key(X_FORWARDED_HOST)
        && let Some(host) = headers.get(HOST).cloned()
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn cidr_blocks_match_their_addresses_only() {
        let trusted = proxies(&["10.0.0.0/8", "192.168.1.7", "fd00::/8"]);
        assert!(trusted.trusts("10.200.3.4".parse().unwrap()));
        assert!(trusted.trusts("192.168.1.7".parse().unwrap()));
        assert!(trusted.trusts("::ffff:10.1.1.1".parse().unwrap()));
        assert!(trusted.trusts("fd12::1".parse().unwrap()));
        assert!(!trusted.trusts("11.0.0.1".parse().unwrap()));
        assert!(!trusted.trusts("192.168.1.8".parse().unwrap()));
        assert!(!trusted.trusts("fe80::1".parse().unwrap()));
        assert!(proxies(&["0.0.0.0/0"]).trusts("8.8.8.8".parse().unwrap()));
        assert!(!TrustedProxies::default().trusts("127.0.0.1".parse().unwrap()));
    }

    /// The device policy's `source_ip`: the peer, or from a trusted peer the address it saw
    /// (the last `X-Forwarded-For` entry); a client's own entries never count.
    #[test]
    fn the_client_address_is_the_peer_or_what_a_trusted_proxy_saw() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(client_addr(&headers, peer, true), peer);
        headers.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_static("6.6.6.6, 203.0.113.9"),
        );
        assert_eq!(
            client_addr(&headers, peer, true),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_addr(&headers, peer, false), peer);
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("junk"));
        assert_eq!(client_addr(&headers, peer, true), peer);
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        assert_eq!(client_addr(&HeaderMap::new(), mapped, false), peer);
    }

    #[test]
    fn invalid_entries_are_named() {
        for bad in ["10.0.0.0/33", "localhost", "::/129", "1.2.3.4/-1", ""] {
            assert_eq!(
                TrustedProxies::parse(&[bad.to_owned()]),
                Err(bad.to_owned())
            );
        }
    }

    fn incoming() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("api.example.com"));
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        headers.insert(X_FORWARDED_HOST, HeaderValue::from_static("evil.example"));
        headers.insert(FORWARDED, HeaderValue::from_static("for=1.2.3.4"));
        headers
    }

    #[test]
    fn untrusted_peers_cannot_speak_for_the_client() {
        let mut headers = incoming();
        rewrite(&mut headers, "198.51.100.1".parse().unwrap(), "http", false);
        assert_eq!(headers[X_FORWARDED_FOR], "198.51.100.1");
        assert_eq!(headers[X_FORWARDED_PROTO], "http");
        assert_eq!(headers[X_FORWARDED_HOST], "api.example.com");
        assert!(!headers.contains_key(FORWARDED));
    }

    #[test]
    fn trusted_peers_are_appended_to() {
        let mut headers = incoming();
        rewrite(&mut headers, "127.0.0.1".parse().unwrap(), "http", true);
        assert_eq!(headers[X_FORWARDED_FOR], "203.0.113.9, 127.0.0.1");
        assert_eq!(headers[X_FORWARDED_PROTO], "https");
        assert_eq!(headers[X_FORWARDED_HOST], "evil.example");
    }
}
