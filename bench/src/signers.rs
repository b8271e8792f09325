//! The ECDSA P-256 signers compared, and the hwsign in-process signer: the proto pipeline
//! (canonical request, string to sign) followed by an ECDSA signature by a key in memory, which is
//! what a delegated session key does for every request.

use hwsign_proto::sign::prepare_headers;
use hwsign_proto::{
    HWS1, HeaderSelection, Nonce, PublicKey, RequestParts, SigningParams, SigningTime,
};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use sha2::{Digest, Sha256};

use crate::BenchError;
use crate::fixtures::{AUDIENCE, BenchRequest};

/// `ring`'s ECDSA P-256 SHA-256 signer with DER (ASN.1) output.
pub struct RingSigner {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for RingSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingSigner").finish_non_exhaustive()
    }
}

impl RingSigner {
    /// The same key as `key`, in ring's form.
    pub fn from_p256(key: &SigningKey) -> Result<Self, BenchError> {
        let rng = SystemRandom::new();
        let public = public_key(key)?.sec1_uncompressed();
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            key.to_bytes().as_slice(),
            &public,
            &rng,
        )
        .map_err(|e| BenchError::Crypto(format!("ring key: {e}")))?;
        Ok(Self { pair, rng })
    }

    /// DER signature over SHA-256(`message`) (ring hashes the message itself).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, BenchError> {
        self.pair
            .sign(&self.rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|e| BenchError::Crypto(format!("ring sign: {e}")))
    }
}

/// AWS-LC's ECDSA P-256 SHA-256 signer over a prehashed digest, DER output: what the agent's
/// software backend does per signature, and the fastest sound P-256 signer available here (the
/// floor of every agent figure).
pub struct AwsLcSigner {
    pair: aws_lc_rs::signature::EcdsaKeyPair,
}

impl std::fmt::Debug for AwsLcSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsLcSigner").finish_non_exhaustive()
    }
}

impl AwsLcSigner {
    /// The same key as `key`, in AWS-LC's form.
    pub fn from_p256(key: &SigningKey) -> Result<Self, BenchError> {
        let public = public_key(key)?.sec1_uncompressed();
        let pair = aws_lc_rs::signature::EcdsaKeyPair::from_private_key_and_public_key(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            key.to_bytes().as_slice(),
            &public,
        )
        .map_err(|e| BenchError::Crypto(format!("aws-lc key: {e}")))?;
        Ok(Self { pair })
    }

    /// DER signature over `digest`.
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, BenchError> {
        let digest =
            aws_lc_rs::digest::Digest::import_less_safe(digest, &aws_lc_rs::digest::SHA256)
                .map_err(|e| BenchError::Crypto(format!("aws-lc digest: {e}")))?;
        self.pair
            .sign_digest(&digest)
            .map(|s| s.as_ref().to_vec())
            .map_err(|e| BenchError::Crypto(format!("aws-lc sign: {e}")))
    }
}

/// RustCrypto `p256`, as the agent's software backend signed before it moved to AWS-LC: a prehashed digest, DER output.
#[derive(Debug, Clone)]
pub struct P256Signer {
    key: SigningKey,
}

impl P256Signer {
    /// Signs with `key`.
    pub fn new(key: SigningKey) -> Self {
        Self { key }
    }

    /// DER signature over `digest`.
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, BenchError> {
        let signature: Signature = self
            .key
            .sign_prehash(digest)
            .map_err(|e| BenchError::Crypto(format!("p256 sign: {e}")))?;
        Ok(signature.to_der().as_bytes().to_vec())
    }

    /// DER signature over SHA-256(`message`).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, BenchError> {
        self.sign_digest(&Sha256::digest(message).into())
    }
}

/// The hwsign public key of `key`.
pub fn public_key(key: &SigningKey) -> Result<PublicKey, BenchError> {
    Ok(PublicKey::from_verifying_key(*key.verifying_key())?)
}

/// Which ECDSA implementation the in-process signer uses.
#[derive(Debug)]
pub enum Ecdsa {
    /// `ring` (signs the string to sign; hashes it itself).
    Ring(RingSigner),
    /// RustCrypto `p256` (signs the digest).
    P256(P256Signer),
}

impl Ecdsa {
    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ring(_) => "ring",
            Self::P256(_) => "p256",
        }
    }
}

/// A request signed in process, with what a verifier's raw floor needs.
#[derive(Debug, Clone)]
pub struct Signed {
    /// Headers to add (`authorization` last).
    pub additions: Vec<(String, String)>,
    /// The string to sign.
    pub string_to_sign: String,
    /// The DER signature.
    pub signature: Vec<u8>,
}

/// The hwsign signing pipeline with a key in memory.
#[derive(Debug)]
pub struct InProcessSigner {
    ecdsa: Ecdsa,
    key_id: String,
}

impl InProcessSigner {
    /// Signs as `key` with the implementation chosen by `ring`.
    pub fn new(key: &SigningKey, ring: bool) -> Result<Self, BenchError> {
        let key_id = public_key(key)?.key_id();
        let ecdsa = if ring {
            Ecdsa::Ring(RingSigner::from_p256(key)?)
        } else {
            Ecdsa::P256(P256Signer::new(key.clone()))
        };
        Ok(Self { ecdsa, key_id })
    }

    /// The ECDSA implementation.
    pub fn ecdsa(&self) -> &Ecdsa {
        &self.ecdsa
    }

    /// The key id used as credential.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs `request` at `time` with a fresh random nonce: the headers to add.
    pub fn sign(
        &self,
        request: &BenchRequest,
        body_sha256_hex: &str,
        time: SigningTime,
    ) -> Result<Vec<(String, String)>, BenchError> {
        self.sign_inner(request, body_sha256_hex, time, false)
            .map(|s| s.additions)
    }

    /// Like [`Self::sign`], keeping the string to sign and the signature.
    pub fn sign_detailed(
        &self,
        request: &BenchRequest,
        body_sha256_hex: &str,
        time: SigningTime,
    ) -> Result<Signed, BenchError> {
        self.sign_inner(request, body_sha256_hex, time, true)
    }

    fn sign_inner(
        &self,
        request: &BenchRequest,
        body_sha256_hex: &str,
        time: SigningTime,
        keep: bool,
    ) -> Result<Signed, BenchError> {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|e| BenchError::Crypto(format!("CSPRNG: {e}")))?;
        let nonce = Nonce::from_random(random);
        let headers = request.headers_with_host();
        let parts = RequestParts {
            method: request.method,
            path: request.path,
            query: request.query,
            headers: &headers,
        };
        let params = SigningParams {
            profile: &HWS1,
            credential: &self.key_id,
            audience: AUDIENCE,
            time,
            nonce: Some(&nonce),
            added_headers: &[],
        };
        let prepared = prepare_headers(
            &params,
            &parts,
            body_sha256_hex,
            HeaderSelection::ProfileWith(&[]),
        )?;
        let signature = match &self.ecdsa {
            Ecdsa::Ring(ring) => ring.sign(prepared.string_to_sign().as_str().as_bytes())?,
            Ecdsa::P256(p256) => p256.sign_digest(&prepared.digest())?,
        };
        let string_to_sign = if keep {
            prepared.string_to_sign().as_str().to_owned()
        } else {
            String::new()
        };
        let additions = prepared.finish(&HWS1, &signature);
        Ok(Signed {
            additions,
            string_to_sign,
            signature: if keep { signature } else { Vec::new() },
        })
    }
}
