//! TPMs without an EK certificate: EK public keys an administrator registered.
//!
//! Some firmware TPMs and most cloud vTPMs (Azure Trusted Launch, Amazon NitroTPM) carry no EK
//! certificate in NV, so nothing chains their EK to a manufacturer. Such a device can still enroll
//! when an administrator, who read the EK public key on the machine through a channel they trust
//! (at provisioning, or from the cloud provider's API), registered it beforehand with
//! `hwsign-verifier ek add` — the way Keylime's registrar and the cloud vendors' own attestation
//! services do it. The rest of the ceremony is unchanged: credential activation still proves the
//! AK sits in the TPM that holds that EK's private key.
//!
//! Storage is a directory of PEM public keys, one file per EK named by its
//! [fingerprint](ek_fingerprint), so a lookup is one file read, a registration takes effect on the
//! next enrollment without a restart, and the set can be reviewed and kept in configuration
//! management. Each file is re-parsed and compared with the evidence's key on every lookup: a file
//! renamed to another fingerprint matches nothing.

use std::fs;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use super::certificate::{CertificateError, CertifiedKey, certified_key_of_spki};
use super::crypto::{sec1_uncompressed, strip_leading_zeros};
use super::public::{PublicKeyArea, TpmPublic};

/// Largest registered-EK file read (a PEM RSA-4096 public key is under 1 KiB).
const MAX_FILE: u64 = 16 * 1024;
/// Most registered EKs listed at once.
pub const MAX_LISTED: usize = 100_000;
/// Longest label.
pub const MAX_LABEL: usize = 200;
const PEM_BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
const PEM_END: &str = "-----END PUBLIC KEY-----";
const LABEL_PREFIX: &str = "# label: ";

/// Why a registered EK could not be read, added or removed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RegisteredEkError {
    /// A file or the directory could not be read or written.
    #[error("registered EKs: {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The input is not one PEM `PUBLIC KEY` block.
    #[error(
        "{what} is not a PEM public key (-----BEGIN PUBLIC KEY-----); write one with \
         `tpm2_readpublic -c 0x81010001 -f pem -o ek.pem`"
    )]
    NotPem {
        /// The file or input.
        what: String,
    },
    /// The public key is not an RSA or P-256/P-384 key.
    #[error("{what}: unusable EK public key")]
    Key {
        /// The file or input.
        what: String,
        /// Why.
        source: CertificateError,
    },
    /// The label is empty, too long or has a line break or control character.
    #[error("label must be 1..={MAX_LABEL} printable characters")]
    Label,
    /// That EK is registered already.
    #[error("EK {fingerprint} is registered already")]
    Exists {
        /// Its fingerprint.
        fingerprint: String,
    },
    /// No EK with that fingerprint is registered.
    #[error("no registered EK {fingerprint}")]
    NotFound {
        /// The fingerprint asked for.
        fingerprint: String,
    },
    /// More files than [`MAX_LISTED`].
    #[error("more than {MAX_LISTED} registered EKs")]
    TooMany,
}

/// A [`RegisteredEkError`] met while verifying evidence, shareable so that attestation errors
/// stay `Clone` and comparable (two are equal only when they are the same failure).
#[derive(Debug, Clone)]
pub struct LookupFailed(Arc<RegisteredEkError>);

impl LookupFailed {
    /// The failure.
    pub fn error(&self) -> &RegisteredEkError {
        &self.0
    }
}

impl From<RegisteredEkError> for LookupFailed {
    fn from(error: RegisteredEkError) -> Self {
        Self(Arc::new(error))
    }
}

impl PartialEq for LookupFailed {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for LookupFailed {}

impl std::fmt::Display for LookupFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("registered EK lookup failed")
    }
}

impl std::error::Error for LookupFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// One registered EK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredEk {
    /// [`ek_fingerprint`] of its key: also what the device id is derived from.
    pub fingerprint: String,
    /// What the administrator called it.
    pub label: String,
    /// Its key.
    pub key: CertifiedKey,
}

/// The fingerprint that names an EK without certificate: lower-case hex SHA-256 of
/// `"rsa" ‖ exponent (u32 BE) ‖ modulus` or `"ecc" ‖ SEC1 uncompressed point`, leading zeros of
/// the modulus stripped. Computed the same from a PEM public key and from the TPM's public area.
pub fn ek_fingerprint(key: &CertifiedKey) -> String {
    let mut hash = Sha256::new();
    match key {
        CertifiedKey::Rsa { modulus, exponent } => {
            hash.update(b"rsa");
            hash.update(exponent.to_be_bytes());
            hash.update(strip_leading_zeros(modulus));
        }
        CertifiedKey::Ecc { point, .. } => {
            hash.update(b"ecc");
            hash.update(point);
        }
    }
    hex::encode(hash.finalize())
}

/// The key in a TPM public area, in the form certificates are compared in; `None` for a key whose
/// coordinates do not fit its curve.
pub fn certified_key_of(public: &TpmPublic) -> Option<CertifiedKey> {
    match &public.key {
        PublicKeyArea::Rsa { modulus, .. } => Some(CertifiedKey::Rsa {
            modulus: strip_leading_zeros(modulus).to_vec(),
            exponent: public.rsa_exponent()?,
        }),
        PublicKeyArea::Ecc { curve, x, y, .. } => Some(CertifiedKey::Ecc {
            curve: *curve,
            point: sec1_uncompressed(*curve, x, y).ok()?,
        }),
    }
}

/// The directory of registered EKs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredEks {
    dir: PathBuf,
}

impl RegisteredEks {
    /// The EKs registered in `dir` (created by [`Self::add`] if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Registers the PEM public key in `pem` under `label`.
    pub fn add(&self, pem: &[u8], label: &str) -> Result<RegisteredEk, RegisteredEkError> {
        check_label(label)?;
        let key = parse_pem(pem, "the input")?;
        let fingerprint = ek_fingerprint(&key);
        let path = self.file(&fingerprint);
        if path.exists() {
            return Err(RegisteredEkError::Exists { fingerprint });
        }
        fs::create_dir_all(&self.dir).map_err(|source| RegisteredEkError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let der = spki_der(pem).ok_or_else(|| RegisteredEkError::NotPem {
            what: "the input".into(),
        })?;
        let mut text = format!("# hwsign registered EK\n{LABEL_PREFIX}{label}\n{PEM_BEGIN}\n");
        for line in STANDARD.encode(der).as_bytes().chunks(64) {
            text.push_str(&String::from_utf8_lossy(line));
            text.push('\n');
        }
        text.push_str(PEM_END);
        text.push('\n');
        // Written whole, flushed, then renamed: a crash leaves the old state or the new one.
        let temporary = self.dir.join(format!(".{fingerprint}.tmp"));
        let io = |source| RegisteredEkError::Io {
            path: temporary.clone(),
            source,
        };
        let mut file = fs::File::create(&temporary).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&temporary, &path).map_err(|source| RegisteredEkError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(RegisteredEk {
            fingerprint,
            label: label.to_owned(),
            key,
        })
    }

    /// The registered EK whose key is the one in `public`, if any.
    pub fn find(&self, public: &TpmPublic) -> Result<Option<RegisteredEk>, RegisteredEkError> {
        let Some(key) = certified_key_of(public) else {
            return Ok(None);
        };
        let fingerprint = ek_fingerprint(&key);
        let path = self.file(&fingerprint);
        let Some(found) = read_entry(&path)? else {
            return Ok(None);
        };
        // The file's own key must be the evidence's: a file renamed to another name matches nothing.
        Ok((found.key == key && found.fingerprint == fingerprint).then_some(found))
    }

    /// Every registered EK, sorted by fingerprint.
    pub fn list(&self) -> Result<Vec<RegisteredEk>, RegisteredEkError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(RegisteredEkError::Io {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| RegisteredEkError::Io {
                path: self.dir.clone(),
                source,
            })?;
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "pem") {
                continue;
            }
            if found.len() >= MAX_LISTED {
                return Err(RegisteredEkError::TooMany);
            }
            if let Some(registered) = read_entry(&path)? {
                found.push(registered);
            }
        }
        found.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        Ok(found)
    }

    /// Removes the EK with that fingerprint (devices enrolled with it stay enrolled; revoke them
    /// with `hwsign-verifier keys revoke` if that is the intent).
    pub fn remove(&self, fingerprint: &str) -> Result<(), RegisteredEkError> {
        let not_found = || RegisteredEkError::NotFound {
            fingerprint: fingerprint.to_owned(),
        };
        if fingerprint.len() != 64 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_found());
        }
        let path = self.file(&fingerprint.to_ascii_lowercase());
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(not_found()),
            Err(source) => Err(RegisteredEkError::Io { path, source }),
        }
    }

    fn file(&self, fingerprint: &str) -> PathBuf {
        self.dir.join(format!("{fingerprint}.pem"))
    }
}

fn check_label(label: &str) -> Result<(), RegisteredEkError> {
    let length = label.chars().count();
    if length == 0 || length > MAX_LABEL || label.chars().any(char::is_control) {
        return Err(RegisteredEkError::Label);
    }
    Ok(())
}

/// Reads one registered-EK file; `None` if it does not exist.
fn read_entry(path: &Path) -> Result<Option<RegisteredEk>, RegisteredEkError> {
    let io = |source| RegisteredEkError::Io {
        path: path.to_owned(),
        source,
    };
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io(source)),
    };
    let mut text = Vec::new();
    file.take(MAX_FILE + 1).read_to_end(&mut text).map_err(io)?;
    let what = path.display().to_string();
    if text.len() as u64 > MAX_FILE {
        return Err(RegisteredEkError::NotPem { what });
    }
    let key = parse_pem(&text, &what)?;
    let label = String::from_utf8_lossy(&text)
        .lines()
        .find_map(|line| line.strip_prefix(LABEL_PREFIX).map(str::to_owned))
        .unwrap_or_default();
    Ok(Some(RegisteredEk {
        fingerprint: ek_fingerprint(&key),
        label,
        key,
    }))
}

fn parse_pem(pem: &[u8], what: &str) -> Result<CertifiedKey, RegisteredEkError> {
    let der = spki_der(pem).ok_or_else(|| RegisteredEkError::NotPem {
        what: what.to_owned(),
    })?;
    certified_key_of_spki(&der).map_err(|source| RegisteredEkError::Key {
        what: what.to_owned(),
        source,
    })
}

/// The DER inside the one `PUBLIC KEY` block of `pem` (text around it allowed).
fn spki_der(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let start = text.find(PEM_BEGIN)? + PEM_BEGIN.len();
    let end = start + text.get(start..)?.find(PEM_END)?;
    if text.get(end + PEM_END.len()..)?.contains(PEM_BEGIN) {
        return None;
    }
    let body: String = text
        .get(start..end)?
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD.decode(body).ok()
}
