//! The whole evidence check of enrollment (design brief §5, steps 2 and 4): EK certificate chain,
//! EK, AK, certified key, quote and clock, from the agent's [`TpmEvidence`].

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hwsign_proto::attestation::TpmEvidence;
use hwsign_proto::keys::PublicKey;

use super::attest::TpmAttest;
use super::certificate::ParsedCertificate;
use super::chain::{TrustAnchors, verify_chain};
use super::checks::{
    QUOTED_PCRS, check_ak_attributes, check_ak_under_ek, check_certify, check_quote,
    check_signing_key,
};
use super::clock::ClockState;
use super::ek_cert::{EkCertificate, TpmManufacturerInfo};
use super::error::{AttestationError, Structure};
use super::public::{PublicKeyArea, TpmPublic};
use super::registered_ek::{certified_key_of, ek_fingerprint};
use super::signature::TpmSignature;

/// Largest base64 evidence field decoded (certificates are the largest, a few KiB).
const MAX_FIELD_BASE64: usize = 16 * 1024;
/// Most intermediates a device may send.
const MAX_DEVICE_INTERMEDIATES: usize = 4;

/// What verified evidence establishes.
#[derive(Debug, Clone)]
pub struct AttestedKey {
    /// The request-signing key, now known to live in the TPM behind the EK certificate.
    pub public_key: PublicKey,
    /// Its key id.
    pub key_id: String,
    /// The AK's public area (to check later quotes).
    pub ak_public: TpmPublic,
    /// The AK's Name (what MakeCredential binds the activation secret to).
    pub ak_name: Vec<u8>,
    /// The EK public area (what MakeCredential encrypts to).
    pub ek_public: TpmPublic,
    /// What identifies the EK, and the device id is derived from: lower-case hex SHA-256 of the
    /// EK certificate DER, or for an EK without certificate, its registered
    /// [fingerprint](super::registered_ek::ek_fingerprint).
    pub ek_certificate_fingerprint_sha256: String,
    /// How the EK is known to be a TPM's.
    pub ek_provenance: EkProvenance,
    /// Manufacturer attributes from the EK certificate (empty for a registered EK).
    pub manufacturer: TpmManufacturerInfo,
    /// The later of the two attestations' clock states, to remember for the device.
    pub clock: ClockState,
    /// TPM firmware version from the quote.
    pub firmware_version: u64,
    /// The quoted sha256 PCR 0–7 values (the device's baseline).
    pub pcrs_sha256: Vec<[u8; 32]>,
}

/// How an EK is known to belong to a real TPM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EkProvenance {
    /// Its certificate chains to a configured manufacturer root.
    Certificate,
    /// It has no certificate; an administrator registered its public key.
    Registered {
        /// The registration's label.
        label: String,
    },
}

/// Verifies TPM evidence made over `nonce`. `previous` is the clock state recorded for this device
/// by an earlier attestation, if any; evidence from before it is refused.
///
/// This does not prove the AK is in the same TPM as the EK: that is what the credential
/// activation round ([`super::make_credential`] over [`AttestedKey::ak_name`]) adds.
pub fn verify_evidence(
    evidence: &TpmEvidence,
    nonce: &[u8],
    anchors: &TrustAnchors,
    now: SystemTime,
    previous: Option<ClockState>,
) -> Result<AttestedKey, AttestationError> {
    // The EK: certificate, chain, and the public area it certifies — or, for a TPM without an EK
    // certificate, a public key an administrator registered.
    let (ek_public, ek_identity, ek_provenance, manufacturer) =
        if evidence.ek_certificate.is_empty() {
            let ek_public = TpmPublic::parse(&decode(&evidence.ek_public, "ek_public")?)
                .map_err(AttestationError::parse(Structure::EkPublic))?;
            let fingerprint = certified_key_of(&ek_public)
                .map(|key| ek_fingerprint(&key))
                .ok_or(AttestationError::Encoding { field: "ek_public" })?;
            let registered = match anchors.registered_eks() {
                Some(registered) => registered
                    .find(&ek_public)
                    .map_err(|e| AttestationError::RegisteredEks(e.into()))?,
                None => None,
            };
            let Some(registered) = registered else {
                return Err(AttestationError::EkNotRegistered { fingerprint });
            };
            (
                ek_public,
                registered.fingerprint,
                EkProvenance::Registered {
                    label: registered.label,
                },
                TpmManufacturerInfo::default(),
            )
        } else {
            let ek_certificate =
                EkCertificate::from_der(&decode(&evidence.ek_certificate, "ek_certificate")?)?;
            if evidence.ek_chain.len() > MAX_DEVICE_INTERMEDIATES {
                return Err(AttestationError::Encoding { field: "ek_chain" });
            }
            let device_intermediates = evidence
                .ek_chain
                .iter()
                .map(|der| {
                    let der = decode(der, "ek_chain")?;
                    ParsedCertificate::from_der(&der).map_err(|e| {
                        AttestationError::Chain(super::chain::ChainError::Certificate(e))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            verify_chain(
                ek_certificate.certificate(),
                &device_intermediates,
                anchors,
                now,
            )?;
            let ek_public = TpmPublic::parse(&decode(&evidence.ek_public, "ek_public")?)
                .map_err(AttestationError::parse(Structure::EkPublic))?;
            ek_certificate.check_certifies(&ek_public)?;
            (
                ek_public,
                ek_certificate.certificate().fingerprint_sha256(),
                EkProvenance::Certificate,
                ek_certificate.manufacturer_info().clone(),
            )
        };

    // The AK and the key.
    let ak_public = TpmPublic::parse(&decode(&evidence.ak_public, "ak_public")?)
        .map_err(AttestationError::parse(Structure::AkPublic))?;
    check_ak_attributes(&ak_public)?;
    let key_public = TpmPublic::parse(&decode(&evidence.key_public, "key_public")?)
        .map_err(AttestationError::parse(Structure::KeyPublic))?;
    check_signing_key(&key_public)?;

    // TPM2_Certify.
    let certify_bytes = decode(&evidence.certify_info, "certify_info")?;
    let certify =
        TpmAttest::parse(&certify_bytes).map_err(AttestationError::parse(Structure::Certify))?;
    let certify_signature =
        TpmSignature::parse(&decode(&evidence.certify_signature, "certify_signature")?)
            .map_err(AttestationError::parse(Structure::CertifySignature))?;
    check_certify(
        &certify_bytes,
        &certify,
        &certify_signature,
        &ak_public,
        &key_public,
        nonce,
    )?;

    // TPM2_Quote.
    let pcrs = decode_pcrs(&evidence.pcrs_sha256)?;
    let quote_bytes = decode(&evidence.quote_info, "quote_info")?;
    let quote =
        TpmAttest::parse(&quote_bytes).map_err(AttestationError::parse(Structure::Quote))?;
    let quote_signature =
        TpmSignature::parse(&decode(&evidence.quote_signature, "quote_signature")?)
            .map_err(AttestationError::parse(Structure::QuoteSignature))?;
    check_quote(
        &quote_bytes,
        &quote,
        &quote_signature,
        &ak_public,
        &pcrs,
        nonce,
    )?;

    // Both signed by an AK that is the certified EK's child, so the clock values are real.
    check_ak_under_ek(&certify, &ak_public, &ek_public)?;
    check_ak_under_ek(&quote, &ak_public, &ek_public)?;

    // Clock: neither attestation may predate what was recorded, and both must be safe.
    let certify_clock = ClockState::from(&certify.clock_info);
    let quote_clock = ClockState::from(&quote.clock_info);
    if let Some(previous) = previous {
        certify_clock.check_after(&previous)?;
        quote_clock.check_after(&previous)?;
    }
    if !certify.clock_info.safe || !quote.clock_info.safe {
        return Err(AttestationError::ClockNotSafe);
    }

    let PublicKeyArea::Ecc { x, y, .. } = &key_public.key else {
        return Err(AttestationError::KeyAlgorithm);
    };
    let public_key = PublicKey::from_affine(x, y).map_err(|_| AttestationError::KeyAlgorithm)?;
    Ok(AttestedKey {
        key_id: public_key.key_id(),
        public_key,
        ak_name: ak_public.name(),
        ak_public,
        ek_public,
        ek_certificate_fingerprint_sha256: ek_identity,
        ek_provenance,
        manufacturer,
        clock: certify_clock.max(quote_clock),
        firmware_version: quote.firmware_version,
        pcrs_sha256: pcrs,
    })
}

fn decode(text: &str, field: &'static str) -> Result<Vec<u8>, AttestationError> {
    if text.len() > MAX_FIELD_BASE64 {
        return Err(AttestationError::Encoding { field });
    }
    STANDARD
        .decode(text)
        .map_err(|_| AttestationError::Encoding { field })
}

fn decode_pcrs(values: &[String]) -> Result<Vec<[u8; 32]>, AttestationError> {
    let field = "pcrs_sha256";
    if values.len() != QUOTED_PCRS {
        return Err(AttestationError::Encoding { field });
    }
    values
        .iter()
        .map(|value| {
            let mut pcr = [0u8; 32];
            hex::decode_to_slice(value, &mut pcr)
                .map_err(|_| AttestationError::Encoding { field })?;
            Ok(pcr)
        })
        .collect()
}
