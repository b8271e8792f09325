//! The signed `host` against the authorities a verifier serves (docs/PROTOCOL.md §6 step 2).
//!
//! Matching is case-insensitive; the default ports 80 and 443 are dropped from both the signed
//! host and the configured entry before comparing (a signer may or may not have stripped them);
//! `*.example.com` stands for exactly one label in front of `example.com`.

/// The `hosts` entry that accepts any signed host (re-exported as `config::ANY_HOST`).
pub(crate) const ANY_HOST: &str = "*";

/// One `hosts` entry, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    /// `*`: any host (insecure opt-out).
    Any,
    /// `host` or `host:port`.
    Exact { host: String, port: Option<u16> },
    /// `*.domain` or `*.domain:port`; `suffix` is `.domain`.
    Wildcard { suffix: String, port: Option<u16> },
}

/// A default port is no port: `api.example.com:443` is `api.example.com`.
fn without_default(port: Option<u16>) -> Option<u16> {
    port.filter(|p| *p != 80 && *p != 443)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'
}

fn valid_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.chars().all(is_name_char)
        && !host.starts_with('.')
        && !host.contains("..")
}

fn valid_ipv6_literal(host: &str) -> bool {
    host.len() > 2
        && host.starts_with('[')
        && host.ends_with(']')
        && host[1..host.len() - 1]
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
}

/// Splits an authority into its lower-cased host and its port, default ports dropped. `None`
/// when it is not `host`, `host:port` or `[v6]`, `[v6]:port`.
pub(crate) fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    // One allocation: the lower-cased authority, cut down to its host.
    let mut lower = authority.to_ascii_lowercase();
    let (host_len, port) = if lower.starts_with('[') {
        let end = lower.find(']')?;
        let (host, rest) = lower.split_at(end + 1);
        if !valid_ipv6_literal(host) {
            return None;
        }
        match rest {
            "" => (host.len(), None),
            _ => (host.len(), Some(parse_port(rest.strip_prefix(':')?)?)),
        }
    } else {
        let (host, port) = match lower.split_once(':') {
            Some((host, port)) => (host, Some(parse_port(port)?)),
            None => (lower.as_str(), None),
        };
        if !valid_name(host) {
            return None;
        }
        (host.len(), port)
    };
    lower.truncate(host_len);
    Some((lower, without_default(port)))
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl HostPattern {
    /// Parses a `hosts` entry; `None` when it is not one of the documented forms.
    pub(crate) fn parse(entry: &str) -> Option<Self> {
        if entry == ANY_HOST {
            return Some(Self::Any);
        }
        if let Some(rest) = entry.strip_prefix("*.") {
            let (domain, port) = split_authority(rest)?;
            // A wildcard over an IP literal or a bare label (`*.com`) is refused.
            if domain.starts_with('[') || !domain.contains('.') {
                return None;
            }
            return Some(Self::Wildcard {
                suffix: format!(".{domain}"),
                port,
            });
        }
        let (host, port) = split_authority(entry)?;
        Some(Self::Exact { host, port })
    }

    /// Whether a signed host, already split by [`split_authority`], matches.
    pub(crate) fn matches(&self, host: &str, port: Option<u16>) -> bool {
        match self {
            Self::Any => true,
            Self::Exact { host: h, port: p } => h == host && *p == port,
            Self::Wildcard { suffix, port: p } => {
                *p == port
                    && host
                        .strip_suffix(suffix.as_str())
                        .is_some_and(|label| !label.is_empty() && !label.contains('.'))
            }
        }
    }
}

/// The parsed `hosts` list of a validated configuration.
#[derive(Debug, Clone)]
pub(crate) struct HostList(Vec<HostPattern>);

impl HostList {
    /// Parses validated entries (an entry that does not parse matches nothing).
    pub(crate) fn new(entries: &[String]) -> Self {
        Self(
            entries
                .iter()
                .filter_map(|entry| HostPattern::parse(entry))
                .collect(),
        )
    }

    /// Whether the signed `host` value is one this verifier serves.
    pub(crate) fn serves(&self, signed_host: &str) -> bool {
        let Some((host, port)) = split_authority(signed_host.trim()) else {
            return false;
        };
        self.0.iter().any(|pattern| pattern.matches(&host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> HostList {
        HostList::new(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn exact_default_ports_and_case() {
        let hosts = list(&["api.example.com", "api.example.com:8443"]);
        for ok in [
            "api.example.com",
            "API.Example.COM",
            "api.example.com:443",
            "api.example.com:80",
            "api.example.com:8443",
        ] {
            assert!(hosts.serves(ok), "{ok}");
        }
        for bad in [
            "api.example.com:8080",
            "api.example.com.",
            "staging.example.com",
            "example.com",
            "api.example.com:",
            "api.example.com:x",
            "",
            "api.example.com:443:443",
        ] {
            assert!(!hosts.serves(bad), "{bad}");
        }
        let explicit = list(&["api.example.com:443"]);
        assert!(explicit.serves("api.example.com"));
    }

    #[test]
    fn wildcard_is_one_label() {
        let hosts = list(&["*.example.com"]);
        assert!(hosts.serves("a.example.com"));
        assert!(hosts.serves("A.EXAMPLE.com:443"));
        assert!(!hosts.serves("example.com"));
        assert!(!hosts.serves("a.b.example.com"));
        assert!(!hosts.serves("a.example.com:8443"));
        assert!(!hosts.serves("aexample.com"));
    }

    #[test]
    fn ip_literals_and_invalid_entries() {
        let hosts = list(&["127.0.0.1:8080", "[::1]:8080"]);
        assert!(hosts.serves("127.0.0.1:8080"));
        assert!(hosts.serves("[::1]:8080"));
        assert!(!hosts.serves("127.0.0.1"));
        assert!(!hosts.serves("[::2]:8080"));
        for bad in [
            "",
            "*.com",
            "a.*.com",
            "**.example.com",
            "host:99999",
            "a b",
            "[::1",
        ] {
            assert_eq!(HostPattern::parse(bad), None, "{bad}");
        }
        assert_eq!(HostPattern::parse("*"), Some(HostPattern::Any));
        assert!(list(&["*"]).serves("anything.at.all:1234"));
    }
}
