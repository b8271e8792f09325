//! Per-key rules: which audiences, hosts and callers a key may sign for, and whether the key
//! signs each request itself (strict) or through delegated session keys. A key without a rule
//! is unrestricted (beyond the socket's `allowed_uids`) and strict; each list present in a rule
//! is an allow-list, and an empty list allows nothing.

use serde::Deserialize;

use hwsign_proto::keys::check_key_id;
use hwsign_proto::limits::MAX_AUTHORITY_LEN;
use hwsign_proto::scope::check_audience;

use super::ConfigError;

/// `[[key_rules]]`: restrictions on one key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRule {
    /// The key (`hk1_…`).
    pub key_id: String,
    /// Audiences (scope) the key may sign for.
    #[serde(default)]
    pub audiences: Option<Vec<String>>,
    /// Hosts the key may sign for: `api.example.com` (any port), `api.example.com:8443`
    /// (that port only), or `*.example.com` (any subdomain, not the apex).
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// Caller uids that may use the key (a subset of the socket's `allowed_uids`).
    #[serde(default)]
    pub uids: Option<Vec<u32>>,
    /// Who signs each request: the key itself, or a session key it delegates to.
    #[serde(default)]
    pub mode: KeyMode,
    /// Delegated mode: lifetime of each delegation statement, 1 to 900 seconds (default 900).
    #[serde(default)]
    pub session_lifetime_secs: Option<u64>,
    /// FIDO2 keys: ask the key for user verification (its PIN, from `[backends.fido2] askpass`,
    /// or its built-in biometrics) on every assertion, delegation statements included.
    #[serde(default)]
    pub user_verification: bool,
}

/// How requests signed with a key are signed (docs/PROTOCOL.md §8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    /// The key itself signs every request (a TPM signature per request).
    #[default]
    Strict,
    /// An in-memory session key signs, under a statement the key signs every few minutes.
    /// Presigned URLs are still signed by the key itself.
    Delegated,
}

/// Why a rule refuses a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleRefusal {
    /// The audience is not in the key's list.
    Audience,
    /// The host is not in the key's list.
    Host,
    /// The caller's uid is not in the key's list.
    Caller,
}

impl std::fmt::Display for RuleRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Audience => "this key may not sign for this audience",
            Self::Host => "this key may not sign for this host",
            Self::Caller => "this caller may not use this key",
        })
    }
}

impl KeyRule {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |what: String| ConfigError::Invalid(format!("key_rules[{}]: {what}", self.key_id));
        check_key_id(&self.key_id).map_err(|_| {
            bad(
                "key_id is not an hk1_ key id (expected hk1_ then 32 lowercase hex digits, as \
                 `hwsign keys list` prints it)"
                    .into(),
            )
        })?;
        if let Some(lifetime) = self.session_lifetime_secs {
            if self.mode != KeyMode::Delegated {
                return Err(bad(
                    "session_lifetime_secs needs mode = \"delegated\"".into()
                ));
            }
            let max = hwsign_proto::delegation::MAX_DELEGATION_SECS.unsigned_abs();
            if !(1..=max).contains(&lifetime) {
                return Err(bad(format!("session_lifetime_secs must be 1 to {max}")));
            }
        }
        for audience in self.audiences.iter().flatten() {
            check_audience(audience).map_err(|_| {
                bad(format!(
                    "invalid audience {audience:?} (expected 1 to {} characters of a-z, 0-9, \
                     '.', '-' and '_')",
                    hwsign_proto::limits::MAX_AUDIENCE_LEN
                ))
            })?;
        }
        for host in self.hosts.iter().flatten() {
            let bare = host.strip_prefix("*.").unwrap_or(host);
            if bare.is_empty()
                || host.len() > MAX_AUTHORITY_LEN
                || bare.contains('*')
                || !bare
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'@')
            {
                return Err(bad(format!(
                    "invalid host pattern {host:?} (expected \"api.example.com\", \
                     \"api.example.com:8443\" or \"*.example.com\")"
                )));
            }
        }
        Ok(())
    }

    /// Whether `uid` may use the key at all: for signing, attestation and credential
    /// activation alike.
    pub fn check_caller(&self, uid: u32) -> Result<(), RuleRefusal> {
        match &self.uids {
            Some(uids) if !uids.contains(&uid) => Err(RuleRefusal::Caller),
            _ => Ok(()),
        }
    }

    /// Whether the key may sign a request for `audience` to `authority` on behalf of `uid`.
    pub fn check(&self, audience: &str, authority: &str, uid: u32) -> Result<(), RuleRefusal> {
        self.check_caller(uid)?;
        if let Some(audiences) = &self.audiences {
            if !audiences.iter().any(|a| a == audience) {
                return Err(RuleRefusal::Audience);
            }
        }
        if let Some(hosts) = &self.hosts {
            if !hosts.iter().any(|pattern| host_matches(pattern, authority)) {
                return Err(RuleRefusal::Host);
            }
        }
        Ok(())
    }
}

/// Splits `host[:port]` (IPv6 literals in brackets) into host and optional port.
fn split_authority(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let host = &authority[..end + 2];
            let port = rest[end + 1..].strip_prefix(':');
            return (host, port);
        }
        return (authority, None);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

fn host_matches(pattern: &str, authority: &str) -> bool {
    let (host, port) = split_authority(authority);
    let (pattern_host, pattern_port) = split_authority(pattern);
    if pattern_port.is_some() && pattern_port != port {
        return false;
    }
    match pattern_host.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host
                    .get(host.len() - suffix.len()..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => pattern_host.eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(hosts: &[&str]) -> KeyRule {
        KeyRule {
            key_id: format!("hk1_{}", "0".repeat(32)),
            audiences: None,
            hosts: Some(hosts.iter().map(|h| (*h).to_owned()).collect()),
            uids: None,
            mode: KeyMode::Strict,
            session_lifetime_secs: None,
            user_verification: false,
        }
    }

    #[test]
    fn host_patterns() {
        let r = rule(&[
            "api.example.com",
            "*.example.org",
            "pinned.example.net:8443",
        ]);
        assert!(r.check("a", "api.example.com", 0).is_ok());
        assert!(r.check("a", "API.example.com:443", 0).is_ok());
        assert!(r.check("a", "x.example.org", 0).is_ok());
        assert!(r.check("a", "a.b.example.org:1", 0).is_ok());
        assert_eq!(r.check("a", "example.org", 0), Err(RuleRefusal::Host));
        assert_eq!(r.check("a", "evilexample.org", 0), Err(RuleRefusal::Host));
        assert!(r.check("a", "pinned.example.net:8443", 0).is_ok());
        assert_eq!(
            r.check("a", "pinned.example.net", 0),
            Err(RuleRefusal::Host)
        );
        assert_eq!(
            r.check("a", "api.example.com.evil", 0),
            Err(RuleRefusal::Host)
        );
    }

    #[test]
    fn ipv6_authority() {
        let r = rule(&["[::1]"]);
        assert!(r.check("a", "[::1]:8080", 0).is_ok());
        assert_eq!(r.check("a", "[::2]", 0), Err(RuleRefusal::Host));
    }

    #[test]
    fn audiences_and_uids() {
        let r = KeyRule {
            key_id: format!("hk1_{}", "0".repeat(32)),
            audiences: Some(vec!["payments".into()]),
            hosts: None,
            uids: Some(vec![1000]),
            mode: KeyMode::Strict,
            session_lifetime_secs: None,
            user_verification: false,
        };
        assert!(r.check("payments", "h", 1000).is_ok());
        assert_eq!(r.check("billing", "h", 1000), Err(RuleRefusal::Audience));
        assert_eq!(r.check("payments", "h", 1001), Err(RuleRefusal::Caller));
    }
}
