//! Packs TPM outputs into the versioned evidence format (`hwsign_proto::attestation`): every TPM
//! structure as standard base64 of its marshalled bytes, so the verifier parses exactly what
//! the TPM signed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hwsign_proto::attestation::TpmEvidence;
use tss_esapi::structures::Public;
use tss_esapi::traits::Marshall;

use super::error::TpmError;
use super::ops::{AttestOutput, marshall_public};

fn marshalled<T: Marshall>(what: &str, value: &T) -> Result<String, TpmError> {
    value
        .marshall()
        .map(|bytes| STANDARD.encode(bytes))
        .map_err(|e| TpmError::Unexpected(format!("marshalling {what}: {e}")))
}

/// Builds the evidence for one key.
pub(crate) fn tpm_evidence(
    output: &AttestOutput,
    ak_public: &Public,
    key_public: &Public,
) -> Result<TpmEvidence, TpmError> {
    // A TPM without an EK certificate in NV (0x01c00002, 0x01c0000a, 0x01c00016) sends none: the
    // verifier then accepts its EK only if an administrator registered it
    // (`hwsign-verifier ek add`), and refuses it with `evidence_invalid:ek_unregistered` otherwise.
    let ek_certificate = output
        .ek
        .certificate
        .as_ref()
        .map(|certificate| STANDARD.encode(certificate))
        .unwrap_or_default();
    Ok(TpmEvidence {
        ek_certificate,
        ek_certificate_nv_index: output.ek.nv_index,
        ek_chain: Vec::new(),
        ek_public: STANDARD.encode(marshall_public(&output.ek_public)?),
        ak_public: STANDARD.encode(marshall_public(ak_public)?),
        key_public: STANDARD.encode(marshall_public(key_public)?),
        certify_info: marshalled("certify TPMS_ATTEST", &output.certify.0)?,
        certify_signature: marshalled("certify TPMT_SIGNATURE", &output.certify.1)?,
        quote_info: marshalled("quote TPMS_ATTEST", &output.quote.0)?,
        quote_signature: marshalled("quote TPMT_SIGNATURE", &output.quote.1)?,
        pcrs_sha256: output.pcrs.iter().map(hex::encode).collect(),
    })
}
