//! ECDSA P-256 verification backends. `ring` is several times faster than the pure-Rust `p256`
//! (see docs/ARCHITECTURE.md and the design brief's measurements), so it is the default when the
//! `ring` feature is on; `p256` is always compiled so that a build without C/assembly still
//! verifies, and so tests can check that both give the same verdicts.
//!
//! Both accept high-S signatures: TPMs do not normalize S, and ECDSA itself does not forbid it.

use hwsign_proto::PublicKey;
use hwsign_proto::keys::parse_der_signature;
use p256::ecdsa::VerifyingKey;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use sha2::{Digest, Sha256};

/// Which implementation checks signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VerifyBackend {
    /// `ring`'s ECDSA_P256_SHA256_ASN1 over the string-to-sign bytes (feature `ring`).
    #[cfg(feature = "ring")]
    Ring,
    /// RustCrypto `p256`: SHA-256 of the string to sign, then a prehash verify.
    RustCrypto,
}

impl Default for VerifyBackend {
    /// `Ring` when compiled in, else `RustCrypto`.
    fn default() -> Self {
        #[cfg(feature = "ring")]
        {
            Self::Ring
        }
        #[cfg(not(feature = "ring"))]
        {
            Self::RustCrypto
        }
    }
}

impl VerifyBackend {
    /// Every backend compiled into this build.
    pub fn available() -> &'static [VerifyBackend] {
        &[
            #[cfg(feature = "ring")]
            Self::Ring,
            Self::RustCrypto,
        ]
    }

    /// A short name for logs and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "ring")]
            Self::Ring => "ring",
            Self::RustCrypto => "p256",
        }
    }

    /// Prepares `key` for repeated verification with this backend.
    pub fn prepare(self, key: &PublicKey) -> PreparedKey {
        let inner = match self {
            #[cfg(feature = "ring")]
            Self::Ring => Prepared::Ring(ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_ASN1,
                key.sec1_uncompressed(),
            )),
            Self::RustCrypto => Prepared::RustCrypto(*key.verifying_key()),
        };
        PreparedKey {
            spki_der: key.spki_der().to_vec(),
            inner,
        }
    }
}

enum Prepared {
    #[cfg(feature = "ring")]
    Ring(ring::signature::UnparsedPublicKey<Vec<u8>>),
    RustCrypto(VerifyingKey),
}

/// A public key in the form its backend verifies with, built once per key and cached.
pub struct PreparedKey {
    spki_der: Vec<u8>,
    inner: Prepared,
}

impl std::fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.inner {
            #[cfg(feature = "ring")]
            Prepared::Ring(_) => VerifyBackend::Ring,
            Prepared::RustCrypto(_) => VerifyBackend::RustCrypto,
        };
        f.debug_struct("PreparedKey")
            .field(
                "key_id",
                &hwsign_proto::keys::key_id_from_spki(&self.spki_der),
            )
            .field("backend", &backend.name())
            .finish()
    }
}

impl PreparedKey {
    /// Whether this was prepared from `key` (the cache checks this before trusting an entry).
    pub fn is_for(&self, key: &PublicKey) -> bool {
        self.spki_der == key.spki_der()
    }

    /// Verifies a DER ECDSA signature over SHA-256(`message`), where `message` is the string to
    /// sign. Malformed DER is a failed verification, not an error.
    pub fn verify(&self, message: &[u8], der_signature: &[u8]) -> bool {
        match &self.inner {
            #[cfg(feature = "ring")]
            Prepared::Ring(key) => key.verify(message, der_signature).is_ok(),
            Prepared::RustCrypto(key) => {
                let Ok(signature) = parse_der_signature(der_signature) else {
                    return false;
                };
                let digest: [u8; 32] = Sha256::digest(message).into();
                key.verify_prehash(&digest, &signature).is_ok()
            }
        }
    }
}
