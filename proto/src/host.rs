//! The signed host: how a signer turns the URL it sends to into the value of the signed `host`
//! header (docs/PROTOCOL.md §2, "Signed host"). Every signer (the agent API, `hwsign sign`, the
//! client library) derives it here, so the same URL is signed the same way whichever way it came.

use crate::error::ProtoError;
use crate::limits::MAX_AUTHORITY_LEN;

/// The port a scheme implies when the URL names none: `443` for `https`/`wss`, `80` for
/// `http`/`ws`. `None` for any other scheme.
pub fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") {
        Some(443)
    } else if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("ws") {
        Some(80)
    } else {
        None
    }
}

/// The signed host for a request to `authority` (`host[:port]`, as in the URL) over `scheme`
/// (`None`: `https`, the scheme HWS1 APIs are served on): the host lower-cased, and the port
/// left out when it is the scheme's default — the `Host` header HTTP clients write for that URL.
///
/// Refused ([`ProtoError::InvalidAuthority`]): an empty or over-long authority, user info,
/// anything that is not `host[:port]` (`/`, `?`, `#`, `\`, spaces, controls), an empty host, an
/// IPv6 literal without brackets, an empty, non-decimal, zero-led or out-of-range port, and a
/// scheme without a known default port.
pub fn signed_host(scheme: Option<&str>, authority: &str) -> Result<String, ProtoError> {
    use ProtoError::InvalidAuthority as Bad;
    let default = match scheme {
        None => 443,
        Some(scheme) => default_port(scheme).ok_or(Bad("unknown scheme"))?,
    };
    if authority.is_empty() || authority.len() > MAX_AUTHORITY_LEN {
        return Err(Bad("must be 1 to 261 characters"));
    }
    if !authority
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#' | b'@' | b'\\'))
    {
        return Err(Bad("must be host[:port] of printable characters"));
    }
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']').ok_or(Bad("unclosed IPv6 literal"))?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, None),
            rest => (
                host,
                Some(
                    rest.strip_prefix(':')
                        .ok_or(Bad("junk after IPv6 literal"))?,
                ),
            ),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host == "[]" || (!host.starts_with('[') && host.contains(':')) {
        return Err(Bad("invalid host"));
    }
    let mut out = host.to_ascii_lowercase();
    if let Some(port) = port {
        if port.is_empty()
            || port.len() > 5
            || port.starts_with('0')
            || !port.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(Bad(
                "port must be a decimal number 1-65535 without leading zeros",
            ));
        }
        let number: u32 = port.parse().map_err(|_| Bad("invalid port"))?;
        if number > u32::from(u16::MAX) {
            return Err(Bad(
                "port must be a decimal number 1-65535 without leading zeros",
            ));
        }
        if number != u32::from(default) {
            out.push(':');
            out.push_str(port);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_are_dropped_and_hosts_lower_cased() -> Result<(), ProtoError> {
        assert_eq!(
            signed_host(Some("https"), "API.Example.com:443")?,
            "api.example.com"
        );
        assert_eq!(signed_host(None, "h:443")?, "h");
        assert_eq!(signed_host(Some("http"), "h:80")?, "h");
        assert_eq!(signed_host(Some("http"), "h:443")?, "h:443");
        assert_eq!(signed_host(Some("HTTPS"), "h:8443")?, "h:8443");
        assert_eq!(signed_host(None, "[::1]:443")?, "[::1]");
        assert_eq!(signed_host(None, "[::1]:8443")?, "[::1]:8443");
        Ok(())
    }

    #[test]
    fn malformed_authorities_are_refused() {
        for bad in [
            "", "h:", "h:0443", "h:65536", "h:x", "u@h", "h/p", "h?q", "::1", "[::1", "[::1]x",
            ":443", "h h", "[]",
        ] {
            assert!(signed_host(None, bad).is_err(), "{bad:?}");
        }
        assert!(signed_host(Some("ftp"), "h").is_err());
    }
}
