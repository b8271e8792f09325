//! Which route rule applies to the root, doubled-slash, trailing-slash and dot-segment spellings
//! of a path, seen as the key level the verifier demands there (docs/PROTOCOL.md §5: every
//! spelling is matched and the strictest applies).

use crate::verify_support;

use std::sync::Arc;

use anyhow::{Result, bail};
use hwsign_verifier::{
    KeyLevel, KeyRegistry, MemoryRegistry, MemoryReplayCache, RejectCode, RouteRule, Verifier,
    VerifierConfig,
};
use verify_support::{SignOptions, TestKey, TestRequest, at, sign};

const HOST: &str = "api.example.com";

/// A verifier with `rules` and one registered key per level.
struct Routes {
    verifier: Verifier,
    keys: Vec<(KeyLevel, TestKey)>,
}

impl Routes {
    fn new(rules: &[(&str, KeyLevel)]) -> Result<Self> {
        let registry = Arc::new(MemoryRegistry::new());
        let mut keys = Vec::new();
        for level in [
            KeyLevel::Software,
            KeyLevel::HardwareUnattested,
            KeyLevel::Tpm,
        ] {
            let key = TestKey::from_seed(&format!("route-spellings-{}", level.as_str()))?;
            registry.add(key.registered(level.as_str(), level))?;
            keys.push((level, key));
        }
        let mut config = VerifierConfig::new(verify_support::AUDIENCE, [HOST]);
        config.route_rules = rules
            .iter()
            .map(|(prefix, level)| RouteRule::new(*prefix, *level))
            .collect();
        let verifier = Verifier::new(config, registry, Arc::new(MemoryReplayCache::new(1_000)))?;
        Ok(Self { verifier, keys })
    }

    /// The lowest key level the verifier accepts for `GET path`: every weaker key must be
    /// refused with `policy_denied`, nothing else.
    fn demanded(&self, path: &str) -> Result<KeyLevel> {
        for (level, key) in &self.keys {
            let request = sign(
                key,
                &TestRequest::new("GET", path, "", HOST),
                &SignOptions::default(),
            )?;
            let verdict = request.with_parts(|parts| {
                self.verifier
                    .verify(parts, &request.body_sha256(), at(0))
                    .map(|principal| principal.key_id)
                    .map_err(|rejection| rejection.code())
            });
            match verdict {
                Ok(id) if id == key.id => return Ok(*level),
                Err(RejectCode::PolicyDenied) => {}
                other => bail!("{path} with a {} key: {other:?}", level.as_str()),
            }
        }
        bail!("{path}: no key level is accepted")
    }
}

/// A path that resolves to the root gets the root rule, even when its spelling as sent falls
/// under a weaker, longer prefix.
#[test]
fn paths_resolving_to_the_root_get_the_root_rule() -> Result<()> {
    let routes = Routes::new(&[("/", KeyLevel::Tpm), ("/public", KeyLevel::Software)])?;
    assert_eq!(routes.demanded("/public/x")?, KeyLevel::Software);
    for path in ["/", "//", "/public/..", "/public/../", "/public/./.."] {
        assert_eq!(routes.demanded(path)?, KeyLevel::Tpm, "{path}");
    }
    Ok(())
}

/// `//` is the root, not a path of its own: a rule written for `//` does not make the root weaker.
#[test]
fn a_doubled_slash_is_the_root() -> Result<()> {
    let routes = Routes::new(&[("/", KeyLevel::Tpm), ("//", KeyLevel::Software)])?;
    assert_eq!(routes.demanded("//")?, KeyLevel::Tpm);
    assert_eq!(routes.demanded("//x")?, KeyLevel::Tpm);
    Ok(())
}

/// A directory rule (`/a/`, trailing slash) covers every spelling that resolves to the directory
/// itself, including its doubled-slash and dot-segment spellings.
#[test]
fn a_directory_rule_covers_every_spelling_of_the_directory() -> Result<()> {
    let routes = Routes::new(&[("/", KeyLevel::Software), ("/a/", KeyLevel::Tpm)])?;
    for path in ["/a/", "//a/", "/a//", "/x/../a/", "/./a/", "/a/b/../"] {
        assert_eq!(routes.demanded(path)?, KeyLevel::Tpm, "{path}");
    }
    // `/a/..` is sent under the directory's prefix: the strictest spelling wins.
    assert_eq!(routes.demanded("/a/..")?, KeyLevel::Tpm);
    Ok(())
}

/// A path without a trailing slash is the file `/a`, not the directory `/a/`: the directory's rule
/// does not apply to it, whichever way it is spelled.
#[test]
fn a_directory_rule_does_not_cover_the_name_without_its_slash() -> Result<()> {
    let routes = Routes::new(&[
        ("/", KeyLevel::Software),
        ("/a/", KeyLevel::Tpm),
        ("/b", KeyLevel::HardwareUnattested),
    ])?;
    for path in ["/a", "//a", "/x/../a", "/./a", "/x/y/../../a"] {
        assert_eq!(routes.demanded(path)?, KeyLevel::Software, "{path}");
    }
    // The file rule `/b` (no slash) applies to its own spellings.
    for path in ["/b", "//b", "/x/../b"] {
        assert_eq!(
            routes.demanded(path)?,
            KeyLevel::HardwareUnattested,
            "{path}"
        );
    }
    Ok(())
}
