//! The TPM command sequences behind each backend operation. Each loads what it needs and flushes
//! it before returning; at most three transient objects are loaded at once (SRK + two).

use sha2::{Digest as _, Sha256};
use tss_esapi::Context;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, DefaultKey, ak};
use tss_esapi::constants::SessionType;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::{AuthHandle, KeyHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Attest, AttestInfo, Data, Digest, EncryptedSecret, HashcheckTicket, IdObject, PcrSelectionList,
    PcrSelectionListBuilder, PcrSlot, Private, Public, Signature, SignatureScheme,
    SymmetricDefinition,
};
use tss_esapi::traits::Marshall;
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;

use super::conn::{Live, with_flushed};
use super::ek::{self, EkInfo};
use super::error::{TpmError, tpm};

/// How often a quote is retaken when a PCR changed between reading and quoting.
const QUOTE_ATTEMPTS: usize = 3;
/// PCRs 0–7: firmware, option ROMs, boot loader, Secure Boot policy.
const QUOTED_PCRS: [PcrSlot; 8] = [
    PcrSlot::Slot0,
    PcrSlot::Slot1,
    PcrSlot::Slot2,
    PcrSlot::Slot3,
    PcrSlot::Slot4,
    PcrSlot::Slot5,
    PcrSlot::Slot6,
    PcrSlot::Slot7,
];

/// A key's public and (TPM-encrypted) private blob.
#[derive(Clone)]
pub(crate) struct Blobs {
    pub public: Public,
    pub private: Private,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private blob is wrapped by the TPM, but key material stays out of logs regardless.
        f.debug_struct("Blobs")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// An attestation key and the EK certificate index whose EK is its parent.
#[derive(Debug, Clone)]
pub(crate) struct AkBlobs {
    pub blobs: Blobs,
    pub ek_nv_index: u32,
}

/// A TPMS_ATTEST and the AK's signature over it.
pub(crate) type Signed = (Attest, Signature);

/// What TPM2_Certify and TPM2_Quote produced, with the public areas involved.
#[derive(Debug)]
pub(crate) struct AttestOutput {
    pub ek: EkInfo,
    pub ek_public: Public,
    pub certify: Signed,
    pub quote: Signed,
    pub pcrs: Vec<Vec<u8>>,
}

/// TPM2_Create of a signing key under the SRK.
pub(crate) fn create_signing_key(live: &mut Live, template: &Public) -> Result<Blobs, TpmError> {
    let srk = live.srk;
    let created = tpm("Create", || {
        live.ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.create(srk, template.clone(), None, None, None, None)
            })
    })
    .map_err(TpmError::stale_if_handle_missing)?;
    Ok(Blobs {
        public: created.out_public,
        private: created.out_private,
    })
}

/// Load, TPM2_Sign (NULL hashcheck ticket: the key is unrestricted), flush. Returns DER.
pub(crate) fn sign(live: &mut Live, key: &Blobs, digest: &[u8; 32]) -> Result<Vec<u8>, TpmError> {
    let digest = Digest::try_from(digest.to_vec())
        .map_err(|e| TpmError::Unexpected(format!("digest: {e}")))?;
    let ticket = null_ticket()?;
    let handle = live.load_under_srk(&key.private, &key.public)?;
    let signature = with_flushed(&mut live.ctx, handle, |ctx| {
        tpm("Sign", || {
            ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.sign(
                    handle,
                    digest.clone(),
                    SignatureScheme::Null,
                    ticket.clone(),
                )
            })
        })
    })?;
    ecdsa_der(&signature)
}

fn null_ticket() -> Result<HashcheckTicket, TpmError> {
    HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
        tag: TPM2_ST_HASHCHECK,
        hierarchy: TPM2_RH_NULL,
        digest: Default::default(),
    })
    .map_err(|e| TpmError::Unexpected(format!("NULL ticket: {e}")))
}

/// TPMS_SIGNATURE_ECDSA r, s → DER (r and s may be shorter than 32 bytes).
fn ecdsa_der(signature: &Signature) -> Result<Vec<u8>, TpmError> {
    let Signature::EcDsa(ecc) = signature else {
        return Err(TpmError::Unexpected(format!(
            "expected an ECDSA signature, got {:?}",
            signature.algorithm()
        )));
    };
    hwsign_proto::keys::raw_signature_to_der(ecc.signature_r().value(), ecc.signature_s().value())
        .map_err(|e| TpmError::Unexpected(format!("TPM signature: {e}")))
}

/// Creates a restricted ECDSA P-256 signing key under the EK (endorsement hierarchy, so its
/// attestations carry real clock and reset counters).
pub(crate) fn create_ak(live: &mut Live, ek: &EkInfo) -> Result<Blobs, TpmError> {
    let (ek_handle, _) = ek::create(&mut live.ctx, ek)?;
    let created = with_flushed(&mut live.ctx, ek_handle, |ctx| {
        tpm("Create(AK)", || {
            ak::create_ak_2(
                ctx,
                ek_handle,
                HashingAlgorithm::Sha256,
                AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
                SignatureSchemeAlgorithm::EcDsa,
                None,
                DefaultKey,
            )
        })
    })?;
    Ok(Blobs {
        public: created.out_public,
        private: created.out_private,
    })
}

/// Re-creates the EK, loads the AK under it (EK policy session inside), flushes the EK.
fn load_ak(live: &mut Live, ak: &AkBlobs, ek: &EkInfo) -> Result<(KeyHandle, Public), TpmError> {
    let (ek_handle, ek_public) = ek::create(&mut live.ctx, ek)?;
    let ak_handle = with_flushed(&mut live.ctx, ek_handle, |ctx| {
        tpm("Load(AK)", || {
            ak::load_ak(
                ctx,
                ek_handle,
                None,
                ak.blobs.private.clone(),
                ak.blobs.public.clone(),
            )
        })
    })?;
    Ok((ak_handle, ek_public))
}

/// TPM2_Certify(key, AK, nonce) and TPM2_Quote(AK, sha256:0–7, nonce).
pub(crate) fn attest(
    live: &mut Live,
    key: &Blobs,
    ak: &AkBlobs,
    ek: EkInfo,
    nonce: &[u8],
) -> Result<AttestOutput, TpmError> {
    let data = Data::try_from(nonce.to_vec())
        .map_err(|_| TpmError::InvalidInput("nonce longer than 64 bytes".into()))?;
    let key_public = marshall_public(&key.public)?;
    let (ak_handle, ek_public) = load_ak(live, ak, &ek)?;
    let srk = live.srk;
    let (certify, quote, pcrs) = with_flushed(&mut live.ctx, ak_handle, |ctx| {
        let key_handle = load_under(ctx, srk, key)?;
        let certify = with_flushed(ctx, key_handle, |ctx| {
            tpm("Certify", || {
                // Two authorisations: the certified object (ADMIN role) and the AK (USER role).
                ctx.execute_with_sessions(
                    (
                        Some(AuthSession::Password),
                        Some(AuthSession::Password),
                        None,
                    ),
                    |ctx| {
                        ctx.certify(
                            key_handle.into(),
                            ak_handle,
                            data.clone(),
                            SignatureScheme::Null,
                        )
                    },
                )
            })
        })?;
        let (quote, pcrs) = quote(ctx, ak_handle, &data)?;
        Ok((certify, quote, pcrs))
    })?;
    check_certified_name(&certify.0, &key_public)?;
    Ok(AttestOutput {
        ek,
        ek_public,
        certify,
        quote,
        pcrs,
    })
}

/// Marshalled TPMT_PUBLIC.
pub(crate) fn marshall_public(public: &Public) -> Result<Vec<u8>, TpmError> {
    public
        .marshall()
        .map_err(|e| TpmError::Unexpected(format!("marshalling TPMT_PUBLIC: {e}")))
}

fn load_under(ctx: &mut Context, srk: KeyHandle, key: &Blobs) -> Result<KeyHandle, TpmError> {
    tpm("Load", || {
        ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.load(srk, key.private.clone(), key.public.clone())
        })
    })
    .map_err(TpmError::stale_if_handle_missing)
}

/// The certify structure must name exactly the public area the evidence presents
/// (nameAlg SHA-256 ‖ SHA-256(TPMT_PUBLIC)); a mismatch would make the evidence useless.
fn check_certified_name(certify: &Attest, key_public: &[u8]) -> Result<(), TpmError> {
    let AttestInfo::Certify { info } = certify.attested() else {
        return Err(TpmError::Unexpected(
            "TPM2_Certify returned another attestation type".into(),
        ));
    };
    let mut expected = vec![0x00, 0x0b];
    expected.extend_from_slice(&Sha256::digest(key_public));
    if info.name().value() != expected.as_slice() {
        return Err(TpmError::Unexpected(
            "certified name differs from the key's public area".into(),
        ));
    }
    Ok(())
}

fn pcr_selection() -> Result<PcrSelectionList, TpmError> {
    PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &QUOTED_PCRS)
        .build()
        .map_err(|e| TpmError::Unexpected(format!("PCR selection: {e}")))
}

/// Reads PCRs, quotes, and checks the quote's PCR digest against what was read, retaking both
/// if a PCR was extended in between.
fn quote(
    ctx: &mut Context,
    ak_handle: KeyHandle,
    data: &Data,
) -> Result<(Signed, Vec<Vec<u8>>), TpmError> {
    let selection = pcr_selection()?;
    for _ in 0..QUOTE_ATTEMPTS {
        let pcrs = read_pcrs(ctx, &selection)?;
        let (attest, signature) = tpm("Quote", || {
            ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.quote(
                    ak_handle,
                    data.clone(),
                    SignatureScheme::Null,
                    selection.clone(),
                )
            })
        })?;
        let AttestInfo::Quote { info } = attest.attested() else {
            return Err(TpmError::Unexpected(
                "TPM2_Quote returned another attestation type".into(),
            ));
        };
        let mut hasher = Sha256::new();
        for pcr in &pcrs {
            hasher.update(pcr);
        }
        if info.pcr_digest().value() == hasher.finalize().as_slice() {
            return Ok(((attest, signature), pcrs));
        }
        tracing::debug!("a PCR changed while quoting; retaking the quote");
    }
    Err(TpmError::Unexpected(format!(
        "PCRs kept changing during {QUOTE_ATTEMPTS} quotes"
    )))
}

fn read_pcrs(ctx: &mut Context, selection: &PcrSelectionList) -> Result<Vec<Vec<u8>>, TpmError> {
    let (_counter, read, digests) = tpm("PCR_Read", || {
        ctx.execute_without_session(|ctx| ctx.pcr_read(selection.clone()))
    })?;
    if &read != selection || digests.len() != QUOTED_PCRS.len() {
        return Err(TpmError::Unexpected(
            "the TPM did not return SHA-256 PCRs 0-7 (is the sha256 bank active?)".into(),
        ));
    }
    let values: Vec<Vec<u8>> = digests.value().iter().map(|d| d.value().to_vec()).collect();
    if values.iter().any(|v| v.len() != 32) {
        return Err(TpmError::Unexpected("PCR value is not 32 bytes".into()));
    }
    Ok(values)
}

/// TPM2_ActivateCredential(AK, EK): the TPM decrypts the seed with the EK, checks the HMAC over
/// the AK's name, and returns the verifier's secret.
pub(crate) fn activate_credential(
    live: &mut Live,
    ak: &AkBlobs,
    ek: &EkInfo,
    credential_blob: IdObject,
    encrypted_secret: EncryptedSecret,
) -> Result<Vec<u8>, TpmError> {
    // The EK stays loaded for the activation itself: one CreatePrimary instead of two
    // (SRK + EK + AK fill the three slots swtpm has).
    let (ek_handle, _) = ek::create(&mut live.ctx, ek)?;
    let secret = with_flushed(&mut live.ctx, ek_handle, |ctx| {
        let ak_handle = tpm("Load(AK)", || {
            ak::load_ak(
                ctx,
                ek_handle,
                None,
                ak.blobs.private.clone(),
                ak.blobs.public.clone(),
            )
        })?;
        with_flushed(ctx, ak_handle, |ctx| {
            let ek_session = if ek.needs_policy() {
                Some(endorsement_policy_session(ctx)?)
            } else {
                None
            };
            let activate = |ctx: &mut Context| {
                tpm("ActivateCredential", || {
                    ctx.execute_with_sessions(
                        (
                            Some(AuthSession::Password),
                            Some(ek_session.unwrap_or(AuthSession::Password)),
                            None,
                        ),
                        |ctx| {
                            ctx.activate_credential(
                                ak_handle,
                                ek_handle,
                                credential_blob.clone(),
                                encrypted_secret.clone(),
                            )
                        },
                    )
                })
            };
            match ek_session {
                Some(session) => with_flushed(ctx, SessionHandle::from(session), activate),
                None => activate(ctx),
            }
        })
    })
    .map_err(|err| match err {
        TpmError::Command { source, .. } if super::error::is_parameter_error(&source) => {
            TpmError::InvalidInput(
                "the credential does not decrypt with this TPM's EK and AK".into(),
            )
        }
        other => other,
    })?;
    Ok(secret.value().to_vec())
}

/// A policy session satisfying the default EK policy: PolicySecret(TPM_RH_ENDORSEMENT).
fn endorsement_policy_session(ctx: &mut Context) -> Result<AuthSession, TpmError> {
    let session = tpm("StartAuthSession(policy)", || {
        ctx.start_auth_session(
            None,
            None,
            None,
            SessionType::Policy,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
    })?
    .ok_or_else(|| TpmError::Unexpected("no policy session returned".into()))?;
    let secret = (|| {
        let policy = PolicySession::try_from(session)
            .map_err(|e| TpmError::Unexpected(format!("policy session: {e}")))?;
        tpm("PolicySecret", || {
            ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.policy_secret(
                    policy,
                    AuthHandle::Endorsement,
                    Default::default(),
                    Default::default(),
                    Default::default(),
                    None,
                )
            })
        })
    })();
    match secret {
        Ok(_) => Ok(session),
        Err(err) => {
            let _ = ctx.flush_context(SessionHandle::from(session).into());
            Err(err)
        }
    }
}
