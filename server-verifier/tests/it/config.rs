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
                step_up: None,
                users: Vec::new(),
                groups: Vec::new(),
            },
            RouteRule {
                path_prefix: "/v1/payments/".into(),
                min_level: KeyLevel::HardwareUnattested,
                strict: false,
                presigned: PresignPolicy::GetHeadOnly,
                step_up: None,
                users: Vec::new(),
                groups: Vec::new(),
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

/// A policy that does not validate against the shipped schema is refused when the verifier is
/// built: the error names the file, the line and the reason, for a type error (an attribute the
/// schema does not have, a missing `has` guard on an optional fact) and for a syntax error.
#[test]
fn policy_schema_invalid_policy_is_refused_at_load_with_line_and_reason() -> Result<()> {
    use hwsign_verifier::policy::{PolicyEngine, PolicyError};
    use hwsign_verifier::{MemoryRegistry, MemoryReplayCache, PolicySettings, Verifier};
    use std::sync::Arc;

    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("good.cedar"),
        "@id(\"baseline\")\npermit(principal, action, resource);\n",
    )?;
    std::fs::write(
        dir.path().join("typo.cedar"),
        "// Only TPM devices.\n@id(\"tpm-only\")\nforbid(principal, action, resource)\nunless { context.levle == \"tpm\" };\n",
    )?;
    let mut config = VerifierConfig::any_host("payments");
    config.policy = Some(PolicySettings::new(dir.path()));
    let error = Verifier::new(
        config.clone(),
        Arc::new(MemoryRegistry::new()),
        Arc::new(MemoryReplayCache::new(10)),
    )
    .err()
    .ok_or_else(|| anyhow::anyhow!("an invalid policy was accepted"))?;
    let ConfigError::Policy(PolicyError::Invalid(issues)) = &error else {
        anyhow::bail!("unexpected error {error}");
    };
    assert_eq!(issues.len(), 1, "{error}");
    assert_eq!(issues[0].file, "typo.cedar");
    assert_eq!(issues[0].line, Some(4), "{error}");
    assert!(issues[0].reason.contains("levle"), "{error}");
    // The cause is the error's source, printed once by the chain (not repeated in the message).
    let chain = hwsign_verifier::ErrorChain(&error).to_string();
    assert!(chain.contains("typo.cedar:4:"), "{chain}");

    // An optional fact read without `has` is a type error too (unknown must not pass).
    std::fs::write(
        dir.path().join("typo.cedar"),
        "@id(\"fresh\")\nforbid(principal, action, resource)\n  unless { context.attestation_age_secs < 3600 };\n",
    )?;
    let Err(PolicyError::Invalid(issues)) = PolicyEngine::load_dir(dir.path()) else {
        anyhow::bail!("a policy reading an optional attribute without `has` was accepted");
    };
    assert_eq!(
        (issues[0].file.as_str(), issues[0].line),
        ("typo.cedar", Some(3))
    );
    assert!(
        issues[0].reason.contains("attestation_age_secs"),
        "{:?}",
        issues[0]
    );

    // A syntax error: file, line, reason.
    std::fs::write(
        dir.path().join("typo.cedar"),
        "\n\npermit(principal, action, resource) when { context.level == };\n",
    )?;
    let Err(PolicyError::Invalid(issues)) = PolicyEngine::load_dir(dir.path()) else {
        anyhow::bail!("a policy with a syntax error was accepted");
    };
    assert_eq!(
        (issues[0].file.as_str(), issues[0].line),
        ("typo.cedar", Some(3))
    );
    assert!(!issues[0].reason.is_empty());

    // Fixed, it loads; an empty directory does not (it would refuse everything).
    std::fs::write(
        dir.path().join("typo.cedar"),
        "@id(\"fresh\")\nforbid(principal, action, resource)\n  unless { context has attestation_age_secs && context.attestation_age_secs < 3600 };\n",
    )?;
    let engine = PolicyEngine::load_dir(dir.path())?;
    assert_eq!(engine.policy_ids(), ["baseline", "fresh"]);
    let empty = tempfile::tempdir()?;
    assert!(matches!(
        PolicyEngine::load_dir(empty.path()),
        Err(PolicyError::NoPolicies(_))
    ));
    Ok(())
}

/// Every `cedar` block in docs/POLICY.md validates against the shipped schema (the document's
/// worked policies are real policies).
#[test]
fn policy_worked_examples_in_the_docs_validate() -> Result<()> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/POLICY.md"))?;
    let blocks: Vec<(String, String)> = doc
        .split("```cedar\n")
        .skip(1)
        .enumerate()
        .map(|(i, rest)| {
            let block = rest.split("```").next().unwrap_or_default();
            (format!("POLICY.md block {}", i + 1), block.to_owned())
        })
        .collect();
    assert!(blocks.len() >= 6, "found {} cedar blocks", blocks.len());
    let engine = hwsign_verifier::PolicyEngine::from_sources(&blocks)?;
    assert_eq!(engine.policy_ids().len(), blocks.len());
    Ok(())
}
