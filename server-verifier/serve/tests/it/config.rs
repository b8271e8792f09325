//! The sample configuration is valid; every invalid fixture is refused with its own error.

use std::path::{Path, PathBuf};

use hwsign_verifier::config::ConfigError;
use hwsign_verifier_serve::{ServeConfig, ServeConfigError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

#[test]
fn the_sample_configuration_is_valid() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("serve.example.toml");
    let config = ServeConfig::load(&sample).unwrap();
    assert_eq!(config.upstream, "http://127.0.0.1:8080");
    assert_eq!(config.verifier.audience, "payments");
    assert_eq!(config.verifier.route_rules.len(), 1);
    assert!(config.admin.is_some());
    assert_eq!(config.trusted_proxies, ["127.0.0.1/32", "::1/128"]);
}

#[test]
fn a_minimal_configuration_takes_the_defaults() {
    let config = ServeConfig::load(&fixture("valid-minimal.toml")).unwrap();
    assert_eq!(config.replay_cache, "memory");
    assert!(config.trusted_proxies.is_empty());
    assert!(config.tls.is_none() && config.admin.is_none() && config.enrollment.is_none());
    assert_eq!(config.limits.max_connections, 1024);
    assert_eq!(config.limits.shutdown_grace_secs, 30);
}

/// Whether an error is the one a fixture should produce.
type Expected = fn(&ServeConfigError) -> bool;

#[test]
fn invalid_configurations_are_refused_precisely() {
    let cases: [(&str, Expected); 10] = [
        (
            "invalid-unknown-field.toml",
            |e| matches!(e, ServeConfigError::Parse(cause) if cause.to_string().contains("upstreams")),
        ),
        (
            "invalid-upstream-path.toml",
            |e| matches!(e, ServeConfigError::Upstream(u) if u.ends_with("/api")),
        ),
        (
            "invalid-upstream-scheme.toml",
            |e| matches!(e, ServeConfigError::Upstream(u) if u.starts_with("https:")),
        ),
        (
            "invalid-trusted-proxy.toml",
            |e| matches!(e, ServeConfigError::TrustedProxy(entry) if entry == "10.0.0.0/40"),
        ),
        ("invalid-replay-capacity.toml", |e| {
            matches!(e, ServeConfigError::ReplayCapacity)
        }),
        ("invalid-limit.toml", |e| {
            matches!(e, ServeConfigError::Limit("max_connections"))
        }),
        ("invalid-verifier-hosts.toml", |e| {
            matches!(e, ServeConfigError::Verifier(ConfigError::NoHosts))
        }),
        ("invalid-enrollment.toml", |e| {
            matches!(e, ServeConfigError::Enrollment(_))
        }),
        ("invalid-admin-on-main.toml", |e| {
            matches!(e, ServeConfigError::AdminOnMain)
        }),
        ("invalid-reattestation-without-enrollment.toml", |e| {
            matches!(e, ServeConfigError::ReattestationWithoutEnrollment)
        }),
    ];
    for (name, expected) in cases {
        match ServeConfig::load(&fixture(name)) {
            Ok(_) => panic!("{name} was accepted"),
            Err(error) => assert!(expected(&error), "{name}: unexpected {error:?}"),
        }
    }
    let fixtures = std::fs::read_dir(fixture(""))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("invalid-"))
        })
        .count();
    assert_eq!(fixtures, cases.len(), "every invalid fixture has a case");
}

#[test]
fn a_missing_or_oversized_file_is_a_file_error() {
    let missing = ServeConfig::load(Path::new("/nonexistent/serve.toml")).unwrap_err();
    assert!(matches!(
        missing,
        ServeConfigError::File(ConfigError::Read { .. })
    ));
    let dir = std::env::temp_dir().join(format!("hwsign-serve-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.toml");
    std::fs::write(&big, vec![b'#'; 2 * 1024 * 1024]).unwrap();
    let too_large = ServeConfig::load(&big).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(
        too_large,
        ServeConfigError::File(ConfigError::TooLarge(_))
    ));
}
