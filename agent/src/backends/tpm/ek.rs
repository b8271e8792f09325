//! The endorsement key: its certificate from NV and the key itself, re-created from the TCG EK
//! Credential Profile template that matches the certificate.

use tss_esapi::Context;
use tss_esapi::abstraction::ek::create_ek_public_from_default_template_2;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, nv};
use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::{KeyHandle, NvIndexTpmHandle, TpmHandle};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::{Hierarchy, NvAuth};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{CapabilityData, Public};

use super::error::{TpmError, tpm};

/// RSA-2048 EK certificate (TCG EK Credential Profile, low range).
pub const NV_EK_CERT_RSA2048: u32 = 0x01c0_0002;
/// ECC P-256 EK certificate.
pub const NV_EK_CERT_ECC_P256: u32 = 0x01c0_000a;
/// ECC P-384 EK certificate (high range).
pub const NV_EK_CERT_ECC_P384: u32 = 0x01c0_0016;

/// Probe order: RSA-2048 is what most TPMs carry and the default EK template; then ECC.
const CANDIDATES: [(u32, AsymmetricAlgorithmSelection); 3] = [
    (
        NV_EK_CERT_RSA2048,
        AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
    ),
    (
        NV_EK_CERT_ECC_P256,
        AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
    ),
    (
        NV_EK_CERT_ECC_P384,
        AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP384),
    ),
];

/// Largest certificate accepted from NV.
const MAX_EK_CERT_LEN: usize = 8 * 1024;

/// Which EK the backend uses and its certificate.
#[derive(Debug, Clone)]
pub(crate) struct EkInfo {
    /// NV index the certificate came from; names the EK template.
    pub nv_index: u32,
    /// DER certificate; `None` when no index holds one (RSA-2048 EK without certificate).
    pub certificate: Option<Vec<u8>>,
    pub algorithm: AsymmetricAlgorithmSelection,
}

impl EkInfo {
    /// Whether the EK's template requires the PolicySecret(endorsement) policy for USER role
    /// (RSA-2048 and P-256 templates have userWithAuth clear).
    pub(crate) fn needs_policy(&self) -> bool {
        matches!(
            self.algorithm,
            AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048)
                | AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256)
        )
    }
}

/// Finds the first EK certificate in NV; without any, the RSA-2048 EK without certificate.
pub(crate) fn find(ctx: &mut Context) -> Result<EkInfo, TpmError> {
    let defined = defined_nv_indices(ctx)?;
    for (nv_index, algorithm) in CANDIDATES {
        if !defined.contains(&nv_index) {
            continue;
        }
        if let Some(certificate) = read_certificate(ctx, nv_index)? {
            return Ok(EkInfo {
                nv_index,
                certificate: Some(certificate),
                algorithm,
            });
        }
    }
    Ok(EkInfo {
        nv_index: NV_EK_CERT_RSA2048,
        certificate: None,
        algorithm: AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
    })
}

/// The defined NV indices in the EK certificate range, listed rather than probed so that absent
/// ones do not make ESYS log errors.
fn defined_nv_indices(ctx: &mut Context) -> Result<Vec<u32>, TpmError> {
    const PAGE: u32 = 32;
    const MAX_PAGES: usize = 8;
    let last = NV_EK_CERT_ECC_P384;
    let mut next = NV_EK_CERT_RSA2048;
    let mut found = Vec::new();
    for _ in 0..MAX_PAGES {
        let (data, more) = tpm("GetCapability(handles-nv-index)", || {
            ctx.get_capability(CapabilityType::Handles, next, PAGE)
        })?;
        let CapabilityData::Handles(list) = data else {
            return Err(TpmError::Unexpected(
                "GetCapability(handles) returned another capability".into(),
            ));
        };
        let handles: Vec<u32> = list.into_inner().into_iter().map(u32::from).collect();
        let Some(&highest) = handles.last() else {
            break;
        };
        found.extend(handles.into_iter().filter(|h| *h <= last));
        if !more || highest >= last {
            break;
        }
        next = highest + 1;
    }
    Ok(found)
}

/// Reads one NV index; `None` if it is not defined.
fn read_certificate(ctx: &mut Context, nv_index: u32) -> Result<Option<Vec<u8>>, TpmError> {
    let index = NvIndexTpmHandle::new(nv_index)
        .map_err(|e| TpmError::Unexpected(format!("NV index {nv_index:#x}: {e}")))?;
    let handle = match tpm("TR_FromTPMPublic(NV)", || {
        ctx.execute_without_session(|ctx| ctx.tr_from_tpm_public(TpmHandle::NvIndex(index)))
    }) {
        Ok(handle) => handle,
        Err(err @ TpmError::Connection { .. }) => return Err(err),
        // TPM_RC_HANDLE: the index is not defined.
        Err(_) => return Ok(None),
    };
    let bytes = tpm("NV_Read", || {
        ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
            nv::read_full(ctx, NvAuth::NvIndex(handle.into()), index)
        })
    });
    // No TR_Close here: read_full looks the index up again and closes the ESYS object itself
    // (closing twice makes ESYS log an error). At worst one ESYS object per connection remains.
    let bytes = bytes?;
    if bytes.is_empty() || bytes.len() > MAX_EK_CERT_LEN {
        return Err(TpmError::Unexpected(format!(
            "EK certificate at {nv_index:#x} has {} bytes",
            bytes.len()
        )));
    }
    // NV indices are often larger than the certificate and padded; keep the DER object only.
    Ok(Some(trim_der(&bytes).to_vec()))
}

/// The leading DER SEQUENCE of `bytes` (the whole slice if its length cannot be read).
fn trim_der(bytes: &[u8]) -> &[u8] {
    let der_len = match bytes {
        [0x30, len @ 0..=0x7f, ..] => Some(2 + usize::from(*len)),
        [0x30, 0x81, len, ..] => Some(3 + usize::from(*len)),
        [0x30, 0x82, hi, lo, ..] => Some(4 + (usize::from(*hi) << 8 | usize::from(*lo))),
        _ => None,
    };
    match der_len {
        Some(len) if len <= bytes.len() => &bytes[..len],
        _ => bytes,
    }
}

/// CreatePrimary(endorsement, EK template): deterministic, so it is the EK the certificate
/// names. The caller flushes the handle.
pub(crate) fn create(ctx: &mut Context, ek: &EkInfo) -> Result<(KeyHandle, Public), TpmError> {
    let template = create_ek_public_from_default_template_2(ek.algorithm, None)
        .map_err(|e| TpmError::Unexpected(format!("EK template: {e}")))?;
    let result = tpm("CreatePrimary(EK)", || {
        ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.create_primary(
                Hierarchy::Endorsement,
                template.clone(),
                None,
                None,
                None,
                None,
            )
        })
    })?;
    Ok((result.key_handle, result.out_public))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_padding_is_trimmed() {
        let mut padded = vec![0x30, 0x82, 0x00, 0x03, 1, 2, 3];
        padded.extend_from_slice(&[0xff; 10]);
        assert_eq!(trim_der(&padded), &[0x30, 0x82, 0x00, 0x03, 1, 2, 3]);
        assert_eq!(trim_der(&[0x30, 0x01, 9, 0]), &[0x30, 0x01, 9]);
        assert_eq!(trim_der(&[0x04, 0x01, 9]), &[0x04, 0x01, 9]);
    }
}
