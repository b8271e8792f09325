//! Signed policy bundles: a tar archive of `.cedar` files signed like
//! `cosign sign-blob --key cosign.key policies.tar` (ECDSA P-256 over the SHA-256 of the whole
//! archive, the DER signature base64-encoded in `policies.tar.sig`). The signature is checked
//! offline with the configured public key (PEM) **before** the archive is parsed; only then are
//! its files read, and the policies are validated against the schema like a directory's.

use std::io::Read;
use std::path::{Path, PathBuf};

use sigstore::crypto::{CosignVerificationKey, Signature, SigningScheme};
use sigstore::errors::SigstoreError;
use thiserror::Error;

use super::load::{MAX_POLICY_FILE_BYTES, MAX_POLICY_FILES};

/// Largest bundle read (the archive as signed).
pub const MAX_BUNDLE_BYTES: u64 = 16 * 1024 * 1024;
/// Largest signature file read (a base64 DER P-256 signature is under 100 bytes).
pub const MAX_SIGNATURE_BYTES: u64 = 4096;
/// Largest public key file read.
pub const MAX_PUBLIC_KEY_BYTES: u64 = 64 * 1024;

/// Why a policy bundle is refused. Whatever the reason, the policies in force stay in force.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BundleError {
    /// A file (the bundle, its signature or the public key) cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file is larger than its limit.
    #[error("{path} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: String,
        /// Its limit.
        limit: u64,
    },
    /// The configured public key is not an ECDSA P-256 public key in PEM.
    #[error("the bundle public key {path} is not an ECDSA P-256 public key (PEM)")]
    PublicKey {
        /// The key file.
        path: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The bundle has no signature file: an unsigned bundle is never loaded.
    #[error("the policy bundle is not signed: {signature} does not exist")]
    Unsigned {
        /// Where the signature was looked for.
        signature: String,
    },
    /// The signature file is not a base64-encoded signature.
    #[error("the bundle signature {path} is malformed")]
    MalformedSignature {
        /// The signature file.
        path: String,
        /// Why.
        source: SigstoreError,
    },
    /// The signature does not verify: the bundle was signed with another key, or changed after
    /// it was signed.
    #[error(
        "the bundle signature does not verify with the configured public key (another key signed it, or the bundle was modified)"
    )]
    BadSignature,
    /// The signed archive is not a tar archive this verifier reads.
    #[error("the signed bundle is not a readable tar archive")]
    Archive(#[source] std::io::Error),
    /// An archive entry is not a plain policy file.
    #[error("bundle entry {entry:?}: {reason}")]
    Entry {
        /// The entry's name in the archive.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More than [`MAX_POLICY_FILES`] policy files.
    #[error("the bundle holds more than {MAX_POLICY_FILES} policy files")]
    TooManyFiles,
    /// No `.cedar` file in the bundle.
    #[error("the bundle holds no .cedar policy file")]
    NoPolicies,
}

/// A public key policy bundles must be signed with.
#[derive(Debug, Clone)]
pub struct BundleKey(CosignVerificationKey);

impl BundleKey {
    /// Parses an ECDSA P-256 public key in PEM (`cosign.pub`, or `openssl ec -pubout`).
    pub fn from_pem(pem: &[u8], origin: &Path) -> Result<Self, BundleError> {
        use p256::pkcs8::DecodePublicKey as _;
        let refused = |source: Box<dyn std::error::Error + Send + Sync>| BundleError::PublicKey {
            path: origin.display().to_string(),
            source,
        };
        // sigstore keeps the key's bytes as they are; parse them now, so a bad key is named at
        // load rather than showing up as a signature that does not verify.
        let text = std::str::from_utf8(pem).map_err(|e| refused(e.into()))?;
        p256::PublicKey::from_public_key_pem(text).map_err(|e| refused(e.to_string().into()))?;
        CosignVerificationKey::from_pem(pem, &SigningScheme::ECDSA_P256_SHA256_ASN1)
            .map(Self)
            .map_err(|e| refused(e.into()))
    }

    /// Reads the key from `path`.
    pub fn read(path: &Path) -> Result<Self, BundleError> {
        let pem = read_bounded(path, MAX_PUBLIC_KEY_BYTES)?;
        Self::from_pem(&pem, path)
    }

    /// Checks a cosign-style signature (base64 of a DER ECDSA signature over SHA-256 of
    /// `blob`).
    pub fn verify(
        &self,
        blob: &[u8],
        signature_base64: &[u8],
        origin: &Path,
    ) -> Result<(), BundleError> {
        let signature = trim_ascii(signature_base64);
        match self
            .0
            .verify_signature(Signature::Base64Encoded(signature), blob)
        {
            Ok(()) => Ok(()),
            Err(SigstoreError::PublicKeyVerificationError) => Err(BundleError::BadSignature),
            Err(source) => Err(BundleError::MalformedSignature {
                path: origin.display().to_string(),
                source,
            }),
        }
    }
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Where a bundle's signature is when the configuration does not say: `<bundle>.sig`, as
/// `cosign sign-blob --output-signature` is usually given.
pub fn default_signature_path(bundle: &Path) -> PathBuf {
    let mut name = bundle.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, BundleError> {
    let read_error = |source| BundleError::Read {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > limit {
        return Err(BundleError::TooLarge {
            path: path.display().to_string(),
            limit,
        });
    }
    Ok(bytes)
}

/// Reads the bundle at `bundle`, checks its signature at `signature` with `key`, and only then
/// returns its policy files as `(file name, text)` pairs, sorted by name.
pub fn read_signed(
    bundle: &Path,
    signature: &Path,
    key: &BundleKey,
) -> Result<Vec<(String, String)>, BundleError> {
    let signature_bytes = match read_bounded(signature, MAX_SIGNATURE_BYTES) {
        Err(BundleError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(BundleError::Unsigned {
                signature: signature.display().to_string(),
            });
        }
        other => other?,
    };
    let archive = read_bounded(bundle, MAX_BUNDLE_BYTES)?;
    key.verify(&archive, &signature_bytes, signature)?;
    policy_files(&archive)
}

/// The `.cedar` files of a (verified) tar archive. Only regular files at the top level are
/// read (`name.cedar` or `./name.cedar`); directory entries for `.` are skipped; anything else
/// (links, devices, nested paths) refuses the bundle, and files not ending in `.cedar` are
/// ignored, as in a policy directory.
pub fn policy_files(archive: &[u8]) -> Result<Vec<(String, String)>, BundleError> {
    let mut files: Vec<(String, String)> = Vec::new();
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries().map_err(BundleError::Archive)? {
        let mut entry = entry.map_err(BundleError::Archive)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = raw.strip_prefix("./").unwrap_or(&raw).to_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() && (name.is_empty() || name == ".") {
            continue;
        }
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let refuse = |reason| BundleError::Entry {
            entry: raw.clone(),
            reason,
        };
        if !kind.is_file() {
            return Err(refuse("only regular files may be in a policy bundle"));
        }
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(refuse("policy files must be at the top of the bundle"));
        }
        if !name.ends_with(".cedar") {
            continue;
        }
        if files.len() >= MAX_POLICY_FILES {
            return Err(BundleError::TooManyFiles);
        }
        if entry.size() > MAX_POLICY_FILE_BYTES {
            return Err(refuse("the policy file is too large"));
        }
        if files.iter().any(|(existing, _)| *existing == name) {
            return Err(refuse("the file appears twice in the bundle"));
        }
        let mut text = String::new();
        (&mut entry)
            .take(MAX_POLICY_FILE_BYTES)
            .read_to_string(&mut text)
            .map_err(|_| refuse("the policy file is not UTF-8 text"))?;
        files.push((name, text));
    }
    if files.is_empty() {
        return Err(BundleError::NoPolicies);
    }
    files.sort();
    Ok(files)
}
