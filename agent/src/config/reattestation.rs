//! `[reattestation]`: the agent's own re-attestation schedule (docs/POLICY.md
//! "Re-attestation"). Without it the agent attests only when asked (the client library answers
//! a verifier's `attestation_required` through `GET /v1/keys/{id}/attestation`).

use serde::Deserialize;

use super::ConfigError;

/// Default seconds between two attestations.
pub const DEFAULT_INTERVAL_SECS: u64 = 3600;
/// Longest interval accepted.
pub const MAX_INTERVAL_SECS: u64 = 7 * 24 * 3600;
/// Most keys named.
pub const MAX_REATTESTATION_KEYS: usize = 64;

/// `[reattestation]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReattestationSchedule {
    /// The verifier's base URL, `http://host:port` (plain HTTP, like `hwsign enroll`: run it
    /// over a trusted network or a TLS-terminating proxy on the same host; the evidence holds
    /// no secret, but an attacker on the path could withhold it).
    pub verifier: String,
    /// Seconds between two attestations (default 3600; the first one right after start).
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// Keys to attest (`hk1_…`); default: every key of the TPM backend.
    #[serde(default)]
    pub keys: Vec<String>,
}

fn default_interval() -> u64 {
    DEFAULT_INTERVAL_SECS
}

impl ReattestationSchedule {
    /// The verifier's scheme-less authority (`host:port`) and any path prefix, checked.
    pub fn verifier_uri(&self) -> Result<http::Uri, ConfigError> {
        let invalid = |why: &str| ConfigError::Invalid(format!("reattestation.verifier: {why}"));
        let uri: http::Uri = self.verifier.parse().map_err(|_| invalid("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(invalid("only http:// URLs are supported"));
        }
        if uri.authority().is_none() || uri.query().is_some() {
            return Err(invalid("expected http://host:port with no query"));
        }
        Ok(uri)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.verifier_uri()?;
        if !(1..=MAX_INTERVAL_SECS).contains(&self.interval_secs) {
            return Err(ConfigError::Invalid(format!(
                "reattestation.interval_secs must be 1 to {MAX_INTERVAL_SECS}"
            )));
        }
        if self.keys.len() > MAX_REATTESTATION_KEYS {
            return Err(ConfigError::Invalid(format!(
                "reattestation.keys: at most {MAX_REATTESTATION_KEYS} keys"
            )));
        }
        for key in &self.keys {
            hwsign_proto::keys::check_key_id(key).map_err(|_| {
                ConfigError::Invalid(format!("reattestation.keys: {key:?} is not a key id"))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn parse(section: &str) -> Result<Config, String> {
        Config::parse(&format!(
            "state_dir = \"/tmp/s\"\nsocket_path = \"/tmp/s/a.sock\"\n[reattestation]\n{section}"
        ))
        .map_err(|e| crate::error_chain(&e))
    }

    #[test]
    fn the_schedule_needs_an_http_verifier_and_sane_bounds() {
        let config = parse("verifier = \"http://127.0.0.1:8080\"\n").unwrap();
        let schedule = config.reattestation.unwrap();
        assert_eq!(schedule.interval_secs, super::DEFAULT_INTERVAL_SECS);
        assert!(schedule.keys.is_empty());
        for (section, why) in [
            ("verifier = \"https://v.example\"\n", "only http://"),
            ("verifier = \"v.example:80\"\n", "only http://"),
            ("verifier = \"http://v?x=1\"\n", "no query"),
            (
                "verifier = \"http://v\"\ninterval_secs = 0\n",
                "interval_secs",
            ),
            ("verifier = \"http://v\"\nkeys = [\"k1\"]\n", "not a key id"),
            ("verfier = \"http://v\"\n", "unknown field"),
        ] {
            let error = parse(section).unwrap_err();
            assert!(error.contains(why), "{section}: {error}");
        }
    }
}
