//! Wycheproof ECDSA P-256/SHA-256 vectors (`vectors/wycheproof/ecdsa_secp256r1_sha256_test.json`
//! in the repository, plus the same file under `$HWSIGN_VECTORS` when set) through the verifier's own
//! signature path (`VerifyBackend::prepare` → `PreparedKey::verify`, the code the request
//! verifier runs), for every verify backend compiled in.
//!
//! Verdicts: `valid` must verify and `invalid` must not, on every backend. `acceptable` cases
//! (legal but discouraged encodings; the current file has none) must get the same verdict from
//! every backend — a verifier fleet must not disagree — and that verdict is reported.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use hwsign_proto::PublicKey;
use hwsign_verifier::ecdsa_backend::VerifyBackend;
use serde_json::Value;

/// The in-repo file, then `$HWSIGN_VECTORS/wycheproof/...` when the variable is set (it adds
/// cases, never replaces the in-repo ones; a set variable without the file is an error).
fn vectors_files() -> Vec<PathBuf> {
    const FILE: &str = "wycheproof/ecdsa_secp256r1_sha256_test.json";
    let mut files = vec![
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../vectors")
            .join(FILE),
    ];
    if let Some(extra) = std::env::var_os("HWSIGN_VECTORS") {
        files.push(PathBuf::from(extra).join(FILE));
    }
    files
}

#[test]
fn wycheproof_ecdsa_p256_sha256() -> Result<()> {
    for path in vectors_files() {
        run_file(&path)?;
    }
    Ok(())
}

fn run_file(path: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let suite: Value = serde_json::from_str(&text)?;
    let groups = suite["testGroups"].as_array().context("testGroups")?;
    let mut counted = 0usize;
    let mut failures = Vec::new();
    let mut acceptable = Vec::new();
    for group in groups {
        ensure!(group["sha"] == "SHA-256", "unexpected hash in group");
        let point = hex::decode(group["publicKey"]["uncompressed"].as_str().context("key")?)?;
        let key = PublicKey::from_sec1(&point)?;
        let prepared: Vec<_> = VerifyBackend::available()
            .iter()
            .map(|backend| (backend.name(), backend.prepare(&key)))
            .collect();
        for case in group["tests"].as_array().context("tests")? {
            let id = case["tcId"].as_u64().context("tcId")?;
            let message = hex::decode(case["msg"].as_str().context("msg")?)?;
            let signature = hex::decode(case["sig"].as_str().context("sig")?)?;
            let result = case["result"].as_str().context("result")?;
            let verdicts: Vec<(&str, bool)> = prepared
                .iter()
                .map(|(name, key)| (*name, key.verify(&message, &signature)))
                .collect();
            counted += 1;
            match result {
                "valid" | "invalid" => {
                    let expected = result == "valid";
                    for (name, verdict) in &verdicts {
                        if *verdict != expected {
                            failures.push(format!(
                                "tcId {id} ({}) on {name}: expected {result}, got {verdict}",
                                case["comment"]
                            ));
                        }
                    }
                }
                "acceptable" => {
                    let first = verdicts.first().map(|(_, v)| *v);
                    if verdicts.iter().any(|(_, v)| Some(*v) != first) {
                        failures.push(format!("tcId {id}: backends disagree: {verdicts:?}"));
                    }
                    acceptable.push((id, first));
                }
                other => bail!("tcId {id}: unknown result {other:?}"),
            }
        }
    }
    eprintln!(
        "{counted} Wycheproof cases on {} backend(s); acceptable cases and verdicts: {acceptable:?}",
        VerifyBackend::available().len()
    );
    ensure!(counted > 0, "no Wycheproof cases in {}", path.display());
    ensure!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}
