//! Verifier configuration: the annotated sample parses, defaults apply, and every invalid
//! fixture is refused with the right error.

use std::path::Path;

use anyhow::Result;
use hwsign_verifier::config::{ConfigError, DEFAULT_CLOCK_SKEW_SECS, DEFAULT_MAX_BODY_BYTES};
use hwsign_verifier::{KeyLevel, RouteRule, VerifierConfig};

#[test]
fn sample_config_parses() -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("verifier.example.toml");
    let config = VerifierConfig::load(&path)?;
    assert_eq!(config.audience, "payments");
    assert_eq!(config.clock_skew_secs, 300);
    assert_eq!(config.max_body_bytes, 10 * 1024 * 1024);
    assert_eq!(
        config.route_rules,
        vec![
            RouteRule {
                path_prefix: "/admin/".into(),
                min_level: KeyLevel::Tpm,
                strict: false,
            },
            RouteRule {
                path_prefix: "/v1/payments/".into(),
                min_level: KeyLevel::HardwareUnattested,
                strict: false,
            },
        ]
    );
    Ok(())
}

#[test]
fn defaults_apply() -> Result<()> {
    let config = VerifierConfig::from_toml_str("audience = \"api\"")?;
    assert_eq!(config, VerifierConfig::new("api"));
    assert_eq!(config.clock_skew_secs, DEFAULT_CLOCK_SKEW_SECS);
    assert_eq!(config.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
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
            _ => matches!(error, Some(ConfigError::Parse(_))),
        };
        assert!(ok, "{name}: {error:?}");
        seen += 1;
    }
    assert_eq!(seen, 7);
    Ok(())
}

#[test]
fn verifier_new_validates() {
    let registry = std::sync::Arc::new(hwsign_verifier::MemoryRegistry::new());
    let replay = std::sync::Arc::new(hwsign_verifier::MemoryReplayCache::new(10));
    let bad = VerifierConfig::new("Not An Audience");
    assert!(hwsign_verifier::Verifier::new(bad, registry, replay).is_err());
}
