//! Header fields across the hop: hop-by-hop fields removed (RFC 9110 §7.6.1), incoming identity
//! headers removed, the verified identity added.
//!
//! The identity headers the upstream reads (`X-Hws-Verified-*`) are set by this proxy alone:
//! every incoming field whose name starts with `x-hws-verified-` is removed before forwarding,
//! whether or not this proxy then sets it, so a client cannot pre-set one this proxy leaves out
//! (`-Device` for a key without a device, `-User`).

use http::HeaderMap;
use http::header::{
    CONNECTION, EXPECT, HeaderName, HeaderValue, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE, VIA,
};
use hwsign_verifier::VerifiedPrincipal;

/// The prefix of every identity header.
pub(crate) const IDENTITY_PREFIX: &str = "x-hws-verified-";
/// The verified key id (for a delegated request: the device key behind the session key).
pub const VERIFIED_KEY: HeaderName = HeaderName::from_static("x-hws-verified-key");
/// The enrolled device the key belongs to; absent when it has none.
pub const VERIFIED_DEVICE: HeaderName = HeaderName::from_static("x-hws-verified-device");
/// The user the device belongs to; reserved: the registry does not know users yet, so it is
/// never set (and always stripped).
pub const VERIFIED_USER: HeaderName = HeaderName::from_static("x-hws-verified-user");
/// The key's level: `software`, `hardware-unattested` or `tpm`.
pub const VERIFIED_LEVEL: HeaderName = HeaderName::from_static("x-hws-verified-level");
/// `true` when a delegated session key signed, else `false`.
pub const VERIFIED_DELEGATED: HeaderName = HeaderName::from_static("x-hws-verified-delegated");
/// The header names the signature covers, lower case, sorted, joined by `;` (as in
/// `SignedHeaders`). A header not listed may have been added or changed on the way.
pub const VERIFIED_SIGNED_HEADERS: HeaderName =
    HeaderName::from_static("x-hws-verified-signed-headers");

/// This hop in `Via`.
const VIA_SELF: &str = "1.1 hwsign-verifier";

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes the hop-by-hop fields: those named in `Connection`, `Connection` itself, and the
/// fields that are hop-by-hop by definition (`Keep-Alive`, `Proxy-Connection`, `TE`,
/// `Transfer-Encoding`, `Upgrade`, `Trailer`, `Proxy-Authenticate`, `Proxy-Authorization`).
/// The body is re-framed by this hop, so `Transfer-Encoding` never crosses it.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        TE,
        TRANSFER_ENCODING,
        UPGRADE,
        TRAILER,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
}

/// Prepares a verified request's headers for the upstream: hop-by-hop fields, `Expect` (this
/// proxy already read the body) and every incoming identity header removed, the principal's
/// identity added.
pub(crate) fn for_upstream(headers: &mut HeaderMap, principal: &VerifiedPrincipal) {
    remove_hop_by_hop(headers);
    headers.remove(EXPECT);
    remove_identity(headers);
    let mut set = |name: HeaderName, value: &str| {
        // Key ids, device ids, levels and header names are ASCII tokens; a value that is not a
        // valid field value is left out rather than forwarded mangled.
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(VERIFIED_KEY, &principal.key_id);
    if let Some(device) = &principal.device_id {
        set(VERIFIED_DEVICE, device);
    }
    set(VERIFIED_LEVEL, principal.level.as_str());
    set(
        VERIFIED_DELEGATED,
        if principal.delegated { "true" } else { "false" },
    );
    set(VERIFIED_SIGNED_HEADERS, &principal.signed_headers.join(";"));
    // RFC 9110 §7.6.3: a proxy adds itself to Via.
    headers.append(VIA, HeaderValue::from_static(VIA_SELF));
}

/// Removes every field whose name starts with `x-hws-verified-`.
pub(crate) fn remove_identity(headers: &mut HeaderMap) {
    let incoming: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(IDENTITY_PREFIX))
        .cloned()
        .collect();
    for name in incoming {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use hwsign_verifier::KeyLevel;

    use super::*;

    fn principal(device: Option<&str>) -> VerifiedPrincipal {
        VerifiedPrincipal {
            key_id: "hk1_abc".into(),
            label: "laptop".into(),
            device_id: device.map(str::to_owned),
            user_id: None,
            level: KeyLevel::Tpm,
            delegated: true,
            signed_headers: vec!["host".into(), "x-hws-date".into()],
        }
    }

    #[test]
    fn incoming_identity_is_replaced_or_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-hws-verified-key", "hk1_forged"),
            ("X-Hws-Verified-Device", "forged"),
            ("x-hws-verified-user", "root"),
            ("x-hws-verified-anything", "x"),
            ("x-hws-date", "20261130T000000Z"),
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        for_upstream(&mut headers, &principal(None));
        assert_eq!(headers[VERIFIED_KEY], "hk1_abc");
        assert_eq!(headers.get_all(VERIFIED_KEY).iter().count(), 1);
        assert!(!headers.contains_key(VERIFIED_DEVICE));
        assert!(!headers.contains_key(VERIFIED_USER));
        assert!(!headers.contains_key("x-hws-verified-anything"));
        assert_eq!(headers[VERIFIED_LEVEL], "tpm");
        assert_eq!(headers[VERIFIED_DELEGATED], "true");
        assert_eq!(headers[VERIFIED_SIGNED_HEADERS], "host;x-hws-date");
        assert_eq!(headers["x-hws-date"], "20261130T000000Z");
        assert_eq!(headers[VIA], "1.1 hwsign-verifier");
        let mut with_device = HeaderMap::new();
        for_upstream(&mut with_device, &principal(Some("dev1")));
        assert_eq!(with_device[VERIFIED_DEVICE], "dev1");
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "secret"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("expect", "100-continue"),
            ("content-type", "application/json"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        for_upstream(&mut headers, &principal(None));
        for gone in [
            "connection",
            "keep-alive",
            "x-private",
            "te",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "expect",
        ] {
            assert!(!headers.contains_key(gone), "{gone} crossed the hop");
        }
        assert_eq!(headers["content-type"], "application/json");
    }
}
