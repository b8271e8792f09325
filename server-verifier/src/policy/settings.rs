//! `[policy]` in the verifier's configuration: where the device policies are and what they cover.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the device policies are and what they cover (`[policy]` in the TOML file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// Directory of `*.cedar` files, validated against the shipped schema when the verifier
    /// starts; an invalid policy stops it with the file, line and reason.
    pub dir: PathBuf,
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
}

impl PolicySettings {
    /// Policies from `dir` covering every request, reasons not revealed.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            covers: default_covers(),
            reveal_reasons: false,
        }
    }
}

fn default_covers() -> Vec<String> {
    vec!["/".to_owned()]
}
