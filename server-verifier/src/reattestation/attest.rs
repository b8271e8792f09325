//! Checking a re-attestation: a fresh TPM2_Quote (and TPM2_Certify of the key) by the
//! attestation key the device enrolled with, over a nonce this verifier issued; then the
//! device's clock moves forward and its last attestation (time, boot state, quoted PCRs) is
//! recorded among its facts.

use std::sync::Arc;
use std::time::SystemTime;

use hwsign_proto::attestation::{EVIDENCE_VERSION, Evidence};
use hwsign_proto::keys::check_key_id;
use hwsign_proto::posture::{MAX_POSTURE_JSON, Posture, bound_nonce};
use hwsign_proto::reattestation::{
    AttestChallengeRequest, AttestChallengeResponse, AttestRequest, AttestResponse,
};

use super::challenges::{AttestationChallenges, NonceOrigin, PendingNonce};
use super::config::{ReattestationConfig, ReattestationConfigError};
use crate::attestation::{ClockState, TrustAnchors, verify_evidence};
use crate::enrollment::{Enrollment, EnrollmentError, device_id_for};
use crate::registry::{
    AttestationRecord, BootState, DeviceClock, DeviceRecord, Fact, KeyRegistry, PostureReport,
    RegisteredKey,
};
use crate::unix_time::seconds_or_zero as unix;

/// A posture report as sent: bounded, strict JSON, strings within bounds.
fn parse_posture(text: &str) -> Result<Posture, EnrollmentError> {
    if text.len() > MAX_POSTURE_JSON {
        return Err(EnrollmentError::Malformed(format!(
            "the posture report exceeds {MAX_POSTURE_JSON} bytes"
        )));
    }
    let posture: Posture = serde_json::from_str(text).map_err(|e| {
        EnrollmentError::Malformed(format!(
            "posture report: invalid JSON ({:?}) at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    claimed_report(posture.clone(), 0)
        .validate()
        .map_err(|_| EnrollmentError::Malformed("posture report strings out of bounds".into()))?;
    Ok(posture)
}

/// The agent's report as device facts: every value is software's claim (the quote binds the
/// report to the device and the time, it does not make a fact true).
fn claimed_report(posture: Posture, received_unix: i64) -> PostureReport {
    PostureReport {
        received_unix,
        disk_encrypted: posture.disk_encrypted.map(Fact::claimed),
        screen_lock: posture.screen_lock.map(Fact::claimed),
        firmware_hsi: posture.firmware_hsi.map(Fact::claimed),
        managed: posture.managed.map(Fact::claimed),
        os_name: posture.os_name.map(Fact::claimed),
        os_version: posture.os_version.map(Fact::claimed),
        kernel: posture.kernel.map(Fact::claimed),
    }
}

/// The re-attestation service: one per verifier process, shared by the attest endpoint and
/// (through [`Reattestation::challenges`]) the verifier that asks for fresh evidence.
#[derive(Debug)]
pub struct Reattestation {
    registry: Arc<dyn KeyRegistry>,
    anchors: TrustAnchors,
    challenges: Arc<AttestationChallenges>,
    golden: Vec<Vec<[u8; 32]>>,
    revoke_on_rollback: bool,
}

impl Reattestation {
    /// A service over the registry and trust anchors of `enrollment`.
    pub fn new(
        enrollment: &Enrollment,
        config: &ReattestationConfig,
    ) -> Result<Self, ReattestationConfigError> {
        Self::with_parts(
            Arc::clone(enrollment.registry()),
            enrollment.trust_anchors().clone(),
            config,
        )
    }

    /// A service over `registry`, trusting EK certificates that chain to `anchors`.
    pub fn with_parts(
        registry: Arc<dyn KeyRegistry>,
        anchors: TrustAnchors,
        config: &ReattestationConfig,
    ) -> Result<Self, ReattestationConfigError> {
        let golden = config.golden()?;
        Ok(Self {
            registry,
            anchors,
            challenges: Arc::new(AttestationChallenges::new(
                config.nonce_ttl_secs,
                config.max_pending,
                config.max_pending_per_device,
            )),
            golden,
            revoke_on_rollback: config.revoke_on_rollback,
        })
    }

    /// The issued nonces; give them to [`Verifier::with_reattestation`](crate::Verifier::with_reattestation)
    /// so its `attestation_required` refusals carry nonces this service redeems.
    pub fn challenges(&self) -> &Arc<AttestationChallenges> {
        &self.challenges
    }

    /// `POST /hws/v1/attest/challenge`: a nonce for an enrolled, unrevoked key.
    pub fn challenge(
        &self,
        request: &AttestChallengeRequest,
        now: SystemTime,
    ) -> Result<AttestChallengeResponse, EnrollmentError> {
        let (key, device) = self.enrolled(&request.key_id)?;
        let issued =
            self.challenges
                .issue(&key.key_id, &device.id, NonceOrigin::Challenge, unix(now))?;
        Ok(AttestChallengeResponse {
            nonce: issued.nonce,
            expires_unix: issued.expires_unix,
        })
    }

    /// `POST /hws/v1/attest`: redeems the nonce (single use, whatever the outcome), checks the
    /// evidence and records the attestation.
    pub fn attest(
        &self,
        request: &AttestRequest,
        now: SystemTime,
    ) -> Result<AttestResponse, EnrollmentError> {
        let pending = self.challenges.take(&request.nonce, unix(now))?;
        let result = self.check(&pending, request, now);
        match &result {
            Ok(done) => tracing::info!(
                device_id = %done.device_id,
                key_id = %pending.key_id,
                boot_state = %done.boot_state,
                "device attested again"
            ),
            Err(error) => tracing::warn!(
                device_id = %pending.device_id,
                key_id = %pending.key_id,
                code = %error.code(),
                error = %crate::ErrorChain(error),
                "re-attestation refused"
            ),
        }
        result
    }

    /// The key and its device, both registered and unrevoked.
    fn enrolled(&self, key_id: &str) -> Result<(RegisteredKey, DeviceRecord), EnrollmentError> {
        check_key_id(key_id)
            .map_err(|_| EnrollmentError::Malformed("key_id is not a key id (hk1_...)".into()))?;
        let key = self
            .registry
            .lookup(key_id)?
            .ok_or(EnrollmentError::EvidenceMismatch("not_enrolled"))?;
        if key.revoked {
            return Err(EnrollmentError::DeviceRevoked);
        }
        let device_id = key
            .device_id
            .as_deref()
            .ok_or(EnrollmentError::EvidenceMismatch("not_enrolled"))?;
        let device = self
            .registry
            .device(device_id)?
            .ok_or(EnrollmentError::EvidenceMismatch("not_enrolled"))?;
        if device.revoked {
            return Err(EnrollmentError::DeviceRevoked);
        }
        Ok((key, device))
    }

    fn check(
        &self,
        pending: &PendingNonce,
        request: &AttestRequest,
        now: SystemTime,
    ) -> Result<AttestResponse, EnrollmentError> {
        let attestation = &request.evidence;
        if attestation.version != EVIDENCE_VERSION {
            return Err(EnrollmentError::EvidenceMismatch("version"));
        }
        if attestation.key_id != pending.key_id {
            return Err(EnrollmentError::EvidenceMismatch("key_mismatch"));
        }
        let Evidence::Tpm(evidence) = &attestation.evidence else {
            return Err(EnrollmentError::EvidenceMismatch("not_tpm"));
        };
        let (key, device) = self.enrolled(&pending.key_id)?;
        if device.id != pending.device_id {
            return Err(EnrollmentError::EvidenceMismatch("device_mismatch"));
        }
        // A posture report is bound into the quote: SHA-256(nonce ‖ SHA-256(report)).
        let posture = request.posture.as_deref().map(parse_posture).transpose()?;
        let qualifying = match &request.posture {
            Some(text) => bound_nonce(&pending.nonce, text.as_bytes()).to_vec(),
            None => pending.nonce.to_vec(),
        };
        // Every enrollment check but the credential activation, which the AK passed when it
        // enrolled: the AK must be that one, so the clock values it signs are the TPM's own.
        let attested = verify_evidence(evidence, &qualifying, &self.anchors, now, None)?;
        if device_id_for(&attested.ek_certificate_fingerprint_sha256) != device.id {
            return Err(EnrollmentError::EvidenceMismatch("device_mismatch"));
        }
        if attested.ak_public.as_bytes() != device.ak_public.as_slice() {
            return Err(EnrollmentError::EvidenceMismatch("ak_mismatch"));
        }
        if attested.public_key.spki_der() != key.public_key.spki_der() {
            return Err(EnrollmentError::EvidenceMismatch("key_mismatch"));
        }
        let previous = ClockState {
            reset_count: device.clock.reset_count,
            restart_count: device.clock.restart_count,
            clock: device.clock.clock,
        };
        if let Err(rollback) = attested.clock.check_after(&previous) {
            if self.revoke_on_rollback {
                self.registry.revoke_device(&device.id)?;
                tracing::warn!(
                    device_id = %device.id,
                    %rollback,
                    "device revoked: its TPM state was rolled back"
                );
            }
            return Err(EnrollmentError::ClockRollback(rollback.to_string()));
        }
        self.registry.update_device_clock(
            &device.id,
            DeviceClock {
                reset_count: attested.clock.reset_count,
                restart_count: attested.clock.restart_count,
                clock: attested.clock.clock,
            },
        )?;
        let boot_state = self.boot_state(&device.pcr_baseline, &attested.pcrs_sha256);
        let at_unix = unix(now);
        let mut facts = self.registry.device_facts(&device.id)?.unwrap_or_default();
        facts.last_attestation = Some(AttestationRecord {
            at_unix,
            boot_state,
            quoted_pcrs: attested.pcrs_sha256,
        });
        if let Some(posture) = posture {
            facts.posture = Some(claimed_report(posture, at_unix));
        }
        self.registry.put_device_facts(&device.id, &facts)?;
        Ok(AttestResponse {
            device_id: device.id,
            boot_state: boot_state.as_str().to_owned(),
            attested_unix: at_unix,
        })
    }

    /// `unchanged` when the quote equals the device's baseline or one of the golden sets.
    fn boot_state(&self, baseline: &[[u8; 32]], quoted: &[[u8; 32]]) -> BootState {
        let golden = self
            .golden
            .iter()
            .any(|set| BootState::compare(set, quoted) == BootState::Unchanged);
        if golden {
            BootState::Unchanged
        } else {
            BootState::compare(baseline, quoted)
        }
    }
}
