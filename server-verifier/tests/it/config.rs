//! Verifier configuration: the annotated sample parses, defaults apply, and every invalid
//! fixture is refused with the right error.

use std::path::Path;

use anyhow::Result;
use hwsign_verifier::config::{
    ConfigError, DEFAULT_CLOCK_SKEW_SECS, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_PRESIGN_EXPIRY_SECS,
    DEFAULT_REPLAY_QUOTA_PER_KEY,
};
use hwsign_verifier::{KeyLevel, PresignPolicy, RouteRule, VerifierConfig};

#[test]
fn sample_config_parses() -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("verifier.example.toml");
    let config = VerifierConfig::load(&path)?;
    assert_eq!(config.audience, "payments");
    assert_eq!(config.clock_skew_secs, 300);
    assert_eq!(config.max_body_bytes, 10 * 1024 * 1024);
    assert_eq!(
        config.hosts,
        [
            "api.example.com",
            "api.example.com:8443",
            "*.payments.example.com"
        ]
    );
    assert_eq!(config.max_presign_expiry_secs, 900);
    assert_eq!(config.replay_quota_per_key, 10_000);
    assert_eq!(
        config.route_rules,
        vec![
            RouteRule {
                path_prefix: "/admin/".into(),
                min_level: KeyLevel::Tpm,
                strict: false,
                presigned: PresignPolicy::Deny,
            },
            RouteRule {
                path_prefix: "/v1/payments/".into(),
                min_level: KeyLevel::HardwareUnattested,
                strict: false,
                presigned: PresignPolicy::GetHeadOnly,
            },
        ]
    );
    Ok(())
}

#[test]
fn defaults_apply() -> Result<()> {
    let config =
        VerifierConfig::from_toml_str("audience = \"api\"\nhosts = [\"api.example.com\"]")?;
    assert_eq!(config, VerifierConfig::new("api", ["api.example.com"]));
    assert_eq!(config.clock_skew_secs, DEFAULT_CLOCK_SKEW_SECS);
    assert_eq!(config.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    assert_eq!(
        config.max_presign_expiry_secs,
        DEFAULT_MAX_PRESIGN_EXPIRY_SECS
    );
    assert_eq!(config.max_presign_expiry_secs, 900);
    assert_eq!(config.replay_quota_per_key, DEFAULT_REPLAY_QUOTA_PER_KEY);
    assert!(config.route_rules.is_empty());
    Ok(())
}

#[test]
fn invalid_fixtures_are_refused() -> Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let error = VerifierConfig::load(&path).err();
        let ok = match name.as_str() {
            "invalid-audience.toml" => matches!(error, Some(ConfigError::InvalidAudience(_))),
            "invalid-skew.toml" => matches!(error, Some(ConfigError::SkewTooLarge(86400))),
            "invalid-route-prefix.toml" => {
                matches!(error, Some(ConfigError::InvalidRoutePrefix(_)))
            }
            "invalid-empty-hosts.toml" => matches!(error, Some(ConfigError::NoHosts)),
            "invalid-host.toml" => {
                matches!(error, Some(ConfigError::InvalidHost(ref h)) if h == "*.com")
            }
            "invalid-presign-expiry.toml" => {
                matches!(error, Some(ConfigError::PresignExpiryOutOfRange(604_801)))
            }
            "invalid-replay-quota.toml" => matches!(error, Some(ConfigError::ZeroReplayQuota)),
            _ => matches!(error, Some(ConfigError::Parse(_))),
        };
        assert!(ok, "{name}: {error:?}");
        seen += 1;
    }
    assert_eq!(seen, 13);
    Ok(())
}

#[test]
fn verifier_new_validates() {
    let registry = std::sync::Arc::new(hwsign_verifier::MemoryRegistry::new());
    let replay = std::sync::Arc::new(hwsign_verifier::MemoryReplayCache::new(10));
    let bad = VerifierConfig::new("Not An Audience", ["api.example.com"]);
    assert!(hwsign_verifier::Verifier::new(bad, registry.clone(), replay.clone()).is_err());
    let no_hosts = VerifierConfig::new("api", Vec::<String>::new());
    assert!(matches!(
        hwsign_verifier::Verifier::new(no_hosts, registry, replay),
        Err(ConfigError::NoHosts)
    ));
}

/// Serving no named host is never a silent default: a config without `hosts` does not parse,
/// an empty list is refused, and only the explicit `["*"]` (or `VerifierConfig::any_host`)
/// accepts any host.
#[test]
fn hardening_hosts_must_be_named_explicitly() -> Result<()> {
    assert!(matches!(
        VerifierConfig::from_toml_str("audience = \"api\""),
        Err(ConfigError::Parse(_))
    ));
    assert!(matches!(
        VerifierConfig::from_toml_str("audience = \"api\"\nhosts = []"),
        Err(ConfigError::NoHosts)
    ));
    let any = VerifierConfig::from_toml_str("audience = \"api\"\nhosts = [\"*\"]")?;
    assert_eq!(any, VerifierConfig::any_host("api"));
    for bad in [
        "*.com",
        "a b",
        "host:99999",
        "*.*.example.com",
        "https://api.example.com",
    ] {
        let text = format!("audience = \"api\"\nhosts = [{bad:?}]");
        assert!(
            matches!(
                VerifierConfig::from_toml_str(&text),
                Err(ConfigError::InvalidHost(_))
            ),
            "{bad}"
        );
    }
    Ok(())
}
