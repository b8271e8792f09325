//! The shipped TPM manufacturer EK CA set (server-verifier/ek-roots/) and certificate loading
//! that never re-encodes: every shipped certificate loads byte for byte, its fingerprint matches
//! the manifest, every signature inside the set verifies, a chain through a PEM-loaded Nuvoton
//! root verifies, and the SHA-1 chain-link setting is honoured both ways.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine as _;
use hwsign_verifier::attestation::certificate::{ParsedCertificate, SignatureAlgorithms};
use hwsign_verifier::attestation::chain::{ChainError, verify_chain};
use hwsign_verifier::attestation::manufacturer_roots::{Role, SHIPPED};
use hwsign_verifier::attestation::{TrustAnchors, manufacturer_roots};
use hwsign_verifier::enrollment::EnrollmentConfig;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use x509_cert::der::{Decode as _, Encode as _};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    certificate: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    file: String,
    vendor: String,
    role: String,
    #[serde(default)]
    issuer_file: Option<String>,
    signature_algorithm: String,
    subject: String,
    not_after: String,
    source: String,
    #[serde(default)]
    published: Option<String>,
    sha256: String,
}

/// Where shipped certificates may come from: public repositories pinned at a commit.
const SOURCES: &[&str] = &[
    "https://github.com/keylime/keylime/blob/",
    "https://github.com/loicsikidi/tpm-ca-certificates/blob/",
    "https://github.com/google/go-tpm-tools/blob/",
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ek-roots")
}

fn manifest() -> Result<Manifest> {
    let text = std::fs::read_to_string(dir().join("MANIFEST.toml"))?;
    Ok(toml::from_str(&text)?)
}

fn load(file: &str) -> Result<ParsedCertificate> {
    let bundle = ParsedCertificate::from_pem_bundle(&std::fs::read(dir().join(file))?)
        .with_context(|| file.to_owned())?;
    ensure!(bundle.len() == 1, "{file}: {} certificates", bundle.len());
    bundle.into_iter().next().context("empty")
}

/// The base64 inside a PEM file, decoded: the bytes the issuer signed.
fn pem_body(file: &str) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(dir().join(file))?;
    let body: String = text
        .lines()
        .skip_while(|line| !line.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .collect();
    Ok(base64::engine::general_purpose::STANDARD.decode(body)?)
}

/// 2026-06-01: inside every shipped certificate's validity that the tests below chain through
/// (the tests do not depend on the day they run).
fn when() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_780_272_000)
}

const SHA1: SignatureAlgorithms = SignatureAlgorithms { sha1_links: true };

#[test]
fn manufacturer_roots_directory_manifest_and_embedded_list_agree() -> Result<()> {
    let manifest = manifest()?;
    let in_dir: BTreeSet<String> = std::fs::read_dir(dir())?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".pem"))
        .collect();
    let in_manifest: BTreeSet<String> = manifest
        .certificate
        .iter()
        .map(|e| e.file.clone())
        .collect();
    let embedded: BTreeSet<String> = SHIPPED.iter().map(|c| c.file.to_owned()).collect();
    ensure!(
        in_dir == in_manifest,
        "directory {in_dir:?} vs manifest {in_manifest:?}"
    );
    ensure!(in_dir == embedded, "directory vs embedded list");
    ensure!(in_dir.len() >= 50, "only {} certificates", in_dir.len());
    for entry in &manifest.certificate {
        let shipped = SHIPPED
            .iter()
            .find(|c| c.file == entry.file)
            .context("not embedded")?;
        let role = match shipped.role {
            Role::Root => "root",
            Role::Anchor => "anchor",
            Role::Intermediate => "intermediate",
        };
        ensure!(
            role == entry.role,
            "{}: role {role} vs {}",
            entry.file,
            entry.role
        );
        ensure!(shipped.vendor == entry.vendor, "{}: vendor", entry.file);
        ensure!(
            shipped.pem == std::fs::read(dir().join(&entry.file))?.as_slice(),
            "{}: embedded bytes differ from the file",
            entry.file
        );
        ensure!(
            SOURCES.iter().any(|s| entry.source.starts_with(s)),
            "{}: source {}",
            entry.file,
            entry.source
        );
        if let Some(published) = &entry.published {
            ensure!(
                published.starts_with("https://"),
                "{}: published",
                entry.file
            );
        }
        ensure!(!entry.subject.is_empty() && !entry.not_after.is_empty());
        ensure!(!entry.signature_algorithm.is_empty());
    }
    Ok(())
}

#[test]
fn manufacturer_roots_load_unchanged_and_match_their_fingerprints() -> Result<()> {
    for entry in manifest()?.certificate {
        let certificate = load(&entry.file)?;
        // Kept byte for byte: the DER is exactly the PEM's base64, never a re-encoding.
        ensure!(
            certificate.der() == pem_body(&entry.file)?.as_slice(),
            "{}: re-encoded",
            entry.file
        );
        ensure!(
            certificate.fingerprint_sha256() == entry.sha256,
            "{}: fingerprint {} vs manifest {}",
            entry.file,
            certificate.fingerprint_sha256(),
            entry.sha256
        );
        let digest = hex::encode(Sha256::digest(certificate.der()));
        ensure!(digest == entry.sha256);
    }
    Ok(())
}

#[test]
fn manufacturer_roots_every_signature_in_the_set_verifies() -> Result<()> {
    let mut roots = 0;
    let mut links = 0;
    for entry in manifest()?.certificate {
        let certificate = load(&entry.file)?;
        match (entry.role.as_str(), &entry.issuer_file) {
            ("root", None) => {
                ensure!(
                    certificate.verifies(&certificate, SHA1)?,
                    "{}: self-signature does not verify",
                    entry.file
                );
                roots += 1;
            }
            ("intermediate", Some(issuer)) => {
                ensure!(
                    load(issuer)?.verifies(&certificate, SHA1)?,
                    "{}: not signed by {issuer}",
                    entry.file
                );
                links += 1;
            }
            ("anchor", None) => {}
            (role, issuer) => bail!("{}: role {role} with issuer {issuer:?}", entry.file),
        }
    }
    ensure!(roots >= 10 && links >= 30, "{roots} roots, {links} links");
    Ok(())
}

#[test]
fn manufacturer_roots_nuvoton_root_loaded_from_pem_verifies_where_a_reencoding_would_not()
-> Result<()> {
    for file in [
        "NUVO_0100.pem",
        "NUVO_1110.pem",
        "NUVO_1111.pem",
        "NUVO_2110.pem",
        "NUVO_2111.pem",
    ] {
        let pem = std::fs::read(dir().join(file))?;
        let anchors = TrustAnchors::from_pem(&pem, b"")?;
        let root = load(file)?;
        // A chain through the root: the root's link to itself is the one a re-encoding breaks.
        verify_chain(&root, &[], &anchors, when()).with_context(|| file.to_owned())?;
        // What the loader used to do: decode, re-encode. The bytes change (the multi-valued
        // name is re-sorted), and the signature no longer verifies over them.
        let reencoded = x509_cert::Certificate::from_der(root.der())?.to_der()?;
        if reencoded != root.der() {
            let altered = ParsedCertificate::from_der(&reencoded)?;
            ensure!(
                !root.verifies(&altered, SHA1)?,
                "{file}: the re-encoded copy still verifies"
            );
        }
    }
    // At least one Nuvoton root is one that a re-encoding alters (the bug this guards against).
    let altered = ["NUVO_1110.pem", "NUVO_2110.pem"]
        .iter()
        .filter_map(|file| load(file).ok())
        .filter(|root| {
            x509_cert::Certificate::from_der(root.der())
                .ok()
                .and_then(|c| c.to_der().ok())
                .is_some_and(|der| der != root.der())
        })
        .count();
    ensure!(altered >= 1, "no Nuvoton root is altered by re-encoding");
    Ok(())
}

#[test]
fn manufacturer_roots_sha1_links_are_refused_by_default_and_accepted_when_set() -> Result<()> {
    let (anchors, intermediates) = manufacturer_roots()?;
    let mut trust = TrustAnchors::default();
    trust.extend(anchors, intermediates);
    // Infineon's RSA intermediate 03I is signed with SHA-1 by Infineon's RSA root.
    let leaf = load("IFX_RSA_03I.pem")?;
    match verify_chain(&leaf, &[], &trust, when()) {
        Err(ChainError::Sha1Link { subject }) => ensure!(subject.contains("Infineon"), "{subject}"),
        other => bail!("SHA-1 link not refused by default: {other:?}"),
    }
    let trust = trust.with_sha1_links(true);
    verify_chain(&leaf, &[], &trust, when())?;
    // A SHA-256 chain is unaffected by the setting: STMicroelectronics 04I → STM root → GlobalSign.
    let trust = trust.with_sha1_links(false);
    verify_chain(&load("STM_RSA_04I.pem")?, &[], &trust, when())?;
    Ok(())
}

#[test]
fn manufacturer_roots_cover_every_vendor_named_and_their_chains_verify() -> Result<()> {
    let vendors: BTreeSet<&str> = SHIPPED.iter().map(|c| c.vendor).collect();
    for vendor in [
        "Infineon",
        "Nuvoton",
        "STMicroelectronics",
        "Intel",
        "AMD",
        "Google Cloud vTPM",
        "Microsoft",
    ] {
        ensure!(vendors.contains(vendor), "no {vendor} certificate shipped");
    }
    let (_, intermediates) = manufacturer_roots()?;
    // Each chain below is SHA-256/384 throughout, so it verifies with the default setting; the
    // only trust anchor given is the one the chain must end at.
    for (leaf, through) in [
        // Google Compute Engine vTPM EK CA → Google's EK root.
        (
            "GOOGLE_tpm_ek_intermediate_3.pem",
            "GOOGLE_tpm_ek_root_1.pem",
        ),
        // Google Cloud's EK/AK CA (Shielded VM) → its root.
        (
            "GOOGLE_gcp_ek_ak_ca_intermediate_v3.pem",
            "GOOGLE_gcp_ek_ak_ca_root.pem",
        ),
        // AMD Pluton EK CA → Microsoft Pluton Policy CA A → Microsoft Pluton Root CA 2021 (P-384).
        (
            "AMD_Pluton_Factory_DEVICE_EK_ICA_DFID0001.pem",
            "MSFT_Microsoft_Pluton_Root_CA_2021.pem",
        ),
        // AMD Pluton per-product EK CA → AMD Pluton Global Factory ICA (an anchor: its RSA root
        // "AMD Root CA R4" is not published beside it).
        (
            "AMD_Pluton_Per_Product_Factory_FIPS_EK_ICA_DFID00B20F00.pem",
            "AMD_Pluton_Global_Factory_ICA.pem",
        ),
        // AMD fTPM EK CA → AMDTPM RSA root.
        ("AMD_PRG_RPL_EK_ICA.pem", "AMDTPM_RSA.pem"),
    ] {
        let mut trust = TrustAnchors::default();
        trust.extend(vec![load(through)?], intermediates.clone());
        verify_chain(&load(leaf)?, &[], &trust, when())
            .with_context(|| format!("{leaf} through {through}"))?;
    }
    Ok(())
}

#[test]
fn manufacturer_roots_are_opt_in_in_the_enrollment_config() -> Result<()> {
    let mut config = EnrollmentConfig::new(Vec::new(), Vec::new());
    ensure!(
        config.trust_anchors().is_err(),
        "no roots at all was accepted"
    );
    config.builtin_ek_roots = true;
    let anchors = config.trust_anchors()?;
    let expected = SHIPPED
        .iter()
        .filter(|c| matches!(c.role, Role::Root | Role::Anchor))
        .count();
    ensure!(anchors.roots().len() == expected);
    ensure!(
        matches!(
            verify_chain(&load("IFX_RSA_03I.pem")?, &[], &anchors, when()),
            Err(ChainError::Sha1Link { .. })
        ),
        "ek_sha1_links defaults to off"
    );
    config.ek_sha1_links = true;
    verify_chain(
        &load("IFX_RSA_03I.pem")?,
        &[],
        &config.trust_anchors()?,
        when(),
    )?;
    let parsed: EnrollmentConfig =
        toml::from_str("builtin_ek_roots = true\nek_sha1_links = true\n")?;
    ensure!(parsed.builtin_ek_roots && parsed.ek_sha1_links && parsed.ek_roots.is_empty());
    Ok(())
}

#[test]
fn manufacturer_roots_files_may_be_der_or_pem_bundles_with_text_between_blocks() -> Result<()> {
    let temp = tempfile::tempdir()?;
    let der_file = temp.path().join("intel-root.der");
    std::fs::write(&der_file, load("INTEL_RT.pem")?.der())?;
    let bundle_file = temp.path().join("bundle.pem");
    let mut bundle =
        b"Intel EK root and intermediate, as `openssl x509 -text` prints them\n".to_vec();
    bundle.extend(std::fs::read(dir().join("INTEL_RT.pem"))?);
    bundle.extend(b"\nsubject=...\n");
    bundle.extend(std::fs::read(dir().join("INTEL_I.pem"))?);
    std::fs::write(&bundle_file, &bundle)?;
    let anchors = TrustAnchors::from_pem_files(&[&der_file], &[&bundle_file])?;
    ensure!(anchors.roots().len() == 1 && anchors.intermediates().len() == 2);
    ensure!(anchors.roots()[0].der() == load("INTEL_RT.pem")?.der());
    verify_chain(&load("INTEL_I.pem")?, &[], &anchors, when())?;

    // A block of another type is named, not skipped.
    let key_file = temp.path().join("key.pem");
    let mut mixed = std::fs::read(dir().join("INTEL_RT.pem"))?;
    mixed.extend(b"\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    std::fs::write(&key_file, &mixed)?;
    let error = TrustAnchors::from_pem_files(&[&key_file], &[] as &[PathBuf])
        .err()
        .context("a private key block was accepted")?;
    let text = hwsign_verifier::ErrorChain(&error).to_string();
    ensure!(
        text.contains("block 2") && text.contains("key.pem"),
        "{text}"
    );
    Ok(())
}
