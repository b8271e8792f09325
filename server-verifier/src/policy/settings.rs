//! `[policy]` in the verifier's configuration: where the device policies are and what they cover.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the device policies are and what they cover (`[policy]` in the TOML file).
///
/// The policies come from `dir` (a directory of `.cedar` files) or from `bundle` (a signed tar
/// archive, checked with `public_key` before it is read): exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// Directory of `*.cedar` files, validated against the shipped schema when the verifier
    /// starts; an invalid policy stops it with the file, line and reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// A policy bundle: a tar archive of `.cedar` files signed like `cosign sign-blob --key`
    /// (docs/POLICY.md). Its signature is checked with `public_key` before it is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<PathBuf>,
    /// The bundle's signature (base64 DER ECDSA, as `cosign sign-blob` writes it); default
    /// `<bundle>.sig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<PathBuf>,
    /// The ECDSA P-256 public key (PEM, e.g. `cosign.pub`) bundles must be signed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PathBuf>,
    /// Path prefixes the policies decide (default `["/"]`: every request). Under a covered
    /// prefix Cedar's default deny applies: a request no `permit` matches is refused with
    /// `policy_denied`. A request outside every prefix is decided by the route rules alone.
    /// Matched against every spelling of the path, like the route rules.
    #[serde(default = "default_covers")]
    pub covers: Vec<String>,
    /// Send the ids of the policies that refused a request to the client in the error message
    /// (default false: they are logged only).
    #[serde(default)]
    pub reveal_reasons: bool,
    /// Seconds between checks of the policy files for changes in `hwsign-verifier serve`
    /// (default 1; 0 turns the watch off: reload with SIGHUP only).
    #[serde(default = "default_watch_secs")]
    pub watch_secs: u64,
}

impl PolicySettings {
    /// Policies from `dir` covering every request, reasons not revealed.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: Some(dir.into()),
            bundle: None,
            signature: None,
            public_key: None,
            covers: default_covers(),
            reveal_reasons: false,
            watch_secs: default_watch_secs(),
        }
    }

    /// Policies from the signed `bundle`, checked with the PEM `public_key`; the signature is
    /// `<bundle>.sig`.
    pub fn bundle(bundle: impl Into<PathBuf>, public_key: impl Into<PathBuf>) -> Self {
        Self {
            dir: None,
            bundle: Some(bundle.into()),
            public_key: Some(public_key.into()),
            ..Self::new(PathBuf::new())
        }
    }

    /// The bundle's signature file.
    pub fn signature_path(&self) -> Option<PathBuf> {
        match (&self.signature, &self.bundle) {
            (Some(signature), _) => Some(signature.clone()),
            (None, Some(bundle)) => Some(super::bundle::default_signature_path(bundle)),
            (None, None) => None,
        }
    }

    /// Where the policies come from, for logs.
    pub fn source(&self) -> String {
        match (&self.dir, &self.bundle) {
            (Some(dir), _) => dir.display().to_string(),
            (None, Some(bundle)) => format!("bundle {}", bundle.display()),
            (None, None) => "nowhere".to_owned(),
        }
    }

    /// The single files a reload reads (bundle, signature, public key).
    pub(super) fn watched_files(&self) -> Vec<PathBuf> {
        [
            self.bundle.clone(),
            self.signature_path(),
            self.public_key.clone(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

fn default_covers() -> Vec<String> {
    vec!["/".to_owned()]
}

fn default_watch_secs() -> u64 {
    1
}
