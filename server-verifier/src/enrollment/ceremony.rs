//! The three steps of TPM enrollment (design brief §5) over [`EnrollmentStore`] and a
//! [`KeyRegistry`]. Synchronous (SQLite, RSA/ECDSA): the HTTP layer runs them on blocking
//! threads. Time is an input so tests can move it.

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hwsign_proto::PublicKey;
use hwsign_proto::api::KeyLevel;
use hwsign_proto::attestation::{EVIDENCE_VERSION, Evidence, KeyAttestation};
use hwsign_proto::enrollment::{
    ActivateRequest, ActivateResponse, EvidenceRequest, EvidenceResponse, StartRequest,
    StartResponse,
};
use hwsign_proto::keys::check_key_id;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::EnrollmentConfig;
use super::error::EnrollmentError;
use super::store::{Challenge, EnrollmentStore};
use super::token;
use crate::attestation::{
    ClockState, TrustAnchors, activation_secret_matches, make_credential, new_activation_secret,
    verify_evidence,
};
use crate::registry::{
    AttestationRecord, BootState, DeviceClock, DeviceRecord, KeyRegistry, MAX_FACT_STRING_LEN,
    RegisteredKey, RegistryError,
};

/// Longest base64 activation secret looked at (the secret is 32 bytes).
const MAX_SECRET_BASE64: usize = 128;
/// Device ids are `tpm-` and this many hex digits of the EK certificate's SHA-256.
const DEVICE_ID_HEX: usize = 32;

/// What activation stores once the secret matches; kept in the challenge row meanwhile.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    device_id: String,
    key_spki_der: String,
    key_label: String,
    ek_cert_sha256: String,
    ak_public: String,
    clock: ClockState,
    firmware_version: u64,
    pcrs_sha256: Vec<String>,
    key_already_registered: bool,
    /// TPM manufacturer and model from the EK certificate (absent in rows from older releases).
    #[serde(default)]
    tpm_manufacturer: Option<String>,
    #[serde(default)]
    tpm_model: Option<String>,
}

/// The enrollment service: one per verifier process, shared by the HTTP handlers.
#[derive(Debug)]
pub struct Enrollment {
    store: EnrollmentStore,
    registry: Arc<dyn KeyRegistry>,
    anchors: TrustAnchors,
    config: EnrollmentConfig,
    directory: Option<Arc<dyn crate::directory::Directory>>,
    audit: Option<Arc<crate::audit::AuditLog>>,
}

use crate::unix_time::seconds_or_zero as unix;

/// An EK certificate attribute kept as a device fact, if it is within the facts' bounds.
fn fact_text(value: Option<&str>) -> Option<String> {
    value
        .filter(|v| v.len() <= MAX_FACT_STRING_LEN && !v.chars().any(char::is_control))
        .map(str::to_owned)
}

/// The device id of the TPM whose EK certificate has this SHA-256 (lower-case hex).
pub fn device_id_for(ek_cert_sha256: &str) -> String {
    let prefix: String = ek_cert_sha256.chars().take(DEVICE_ID_HEX).collect();
    format!("tpm-{prefix}")
}

fn check_challenge_id(id: &str) -> Result<(), EnrollmentError> {
    let ok = id.strip_prefix("ch_").is_some_and(|hex| {
        hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if ok {
        Ok(())
    } else {
        Err(EnrollmentError::ChallengeUnknown)
    }
}

impl Enrollment {
    /// An enrollment service; `anchors` usually come from [`EnrollmentConfig::trust_anchors`].
    pub fn new(
        store: EnrollmentStore,
        registry: Arc<dyn KeyRegistry>,
        anchors: TrustAnchors,
        config: EnrollmentConfig,
    ) -> Self {
        Self {
            store,
            registry,
            anchors,
            config,
            directory: None,
            audit: None,
        }
    }

    /// The same service recording every step (started, evidence, activated or refused with its
    /// code; recovery grants spent or refused) in the audit log (docs/AUDIT.md).
    pub fn with_audit_log(mut self, log: Arc<crate::audit::AuditLog>) -> Self {
        self.audit = Some(log);
        self
    }

    /// Records `event`, best effort: a record the log cannot take is logged as an error (the
    /// step's outcome stands; the decision log itself fails closed on the request path).
    fn record(&self, event: crate::audit::AuditEvent) {
        if let Some(log) = &self.audit
            && log.record(event).is_err()
        {
            tracing::error!("the audit log cannot take an enrollment record");
        }
    }

    /// Records one enrollment step and its outcome (`ok` or the refusal's code).
    fn record_step<T>(
        &self,
        step: &str,
        key: &str,
        device: Option<&str>,
        result: &Result<T, EnrollmentError>,
    ) {
        let outcome = match result {
            Ok(_) => "ok".to_owned(),
            Err(error) => error.code(),
        };
        self.record(
            crate::audit::AuditEvent::enrollment(device, Some(key), &outcome)
                .with("step", Some(step)),
        );
    }

    /// The same service honouring recovery tokens (docs/ADMIN.md "Recovery"): a token with a
    /// recovery grant in `directory` enrolls its device only for the grant's user (refused if the
    /// device belongs to another user, the user is inactive, or the grant was used), then assigns
    /// the device to that user.
    pub fn with_directory(mut self, directory: Arc<dyn crate::directory::Directory>) -> Self {
        self.directory = Some(directory);
        self
    }

    /// Checks and spends the recovery grant of `token_id`, if it has one; returns its user.
    /// Records the grant spent or refused.
    fn claim_recovery(
        &self,
        token_id: &str,
        device_id: &str,
        now: i64,
    ) -> Result<Option<String>, EnrollmentError> {
        let Some(directory) = &self.directory else {
            return Ok(None);
        };
        let store = |e: crate::directory::DirectoryError| EnrollmentError::Store(e.to_string());
        let Some(grant) = directory.recovery(token_id).map_err(store)? else {
            return Ok(None);
        };
        let result = Self::spend_grant(directory.as_ref(), &grant, token_id, device_id, now);
        let (step, outcome) = match &result {
            Ok(_) => ("grant_spent", "ok".to_owned()),
            Err(error) => ("grant_refused", error.code()),
        };
        self.record(
            crate::audit::AuditEvent::recovery(&grant.user_id, step, None, &outcome)
                .with("token", Some(token_id))
                .with("device", Some(device_id)),
        );
        result
    }

    fn spend_grant(
        directory: &dyn crate::directory::Directory,
        grant: &crate::directory::RecoveryGrant,
        token_id: &str,
        device_id: &str,
        now: i64,
    ) -> Result<Option<String>, EnrollmentError> {
        let store = |e: crate::directory::DirectoryError| EnrollmentError::Store(e.to_string());
        if grant.used_by_device.is_some() {
            return Err(EnrollmentError::RecoveryRefused("used"));
        }
        if now > grant.expires_unix {
            return Err(EnrollmentError::RecoveryRefused("expired"));
        }
        match directory.user(&grant.user_id).map_err(store)? {
            Some(user) if user.active => {}
            _ => return Err(EnrollmentError::RecoveryRefused("user_inactive")),
        }
        if let Some(owner) = directory.device_owner(device_id).map_err(store)?
            && owner != grant.user_id
        {
            return Err(EnrollmentError::RecoveryRefused("device_of_another_user"));
        }
        if !directory.use_recovery(token_id, device_id).map_err(store)? {
            return Err(EnrollmentError::RecoveryRefused("used"));
        }
        Ok(Some(grant.user_id.clone()))
    }

    /// The store (tokens are issued through it).
    pub fn store(&self) -> &EnrollmentStore {
        &self.store
    }

    /// The registry enrolled keys go into.
    pub fn registry(&self) -> &Arc<dyn KeyRegistry> {
        &self.registry
    }

    /// The EK roots and intermediates evidence must chain to.
    pub fn trust_anchors(&self) -> &TrustAnchors {
        &self.anchors
    }

    /// The configuration.
    pub fn config(&self) -> &EnrollmentConfig {
        &self.config
    }

    /// Step 1: a valid, unused, unexpired token buys a challenge for `key_id`.
    pub fn start(
        &self,
        request: &StartRequest,
        now: SystemTime,
    ) -> Result<StartResponse, EnrollmentError> {
        let result = self.start_inner(request, now);
        self.record_step("started", &request.key_id, None, &result);
        result
    }

    fn start_inner(
        &self,
        request: &StartRequest,
        now: SystemTime,
    ) -> Result<StartResponse, EnrollmentError> {
        check_key_id(&request.key_id)
            .map_err(|_| EnrollmentError::Malformed("key_id is not a key id (hk1_...)".into()))?;
        let token = token::parse(&request.token)?;
        let ttl = i64::try_from(self.config.challenge_ttl_secs).unwrap_or(i64::MAX);
        let challenge = self.store.create_challenge(
            &token,
            &request.key_id,
            unix(now),
            ttl,
            self.config.max_pending_challenges,
            self.config.max_pending_per_token,
        )?;
        tracing::info!(
            challenge = %challenge.id,
            token = %token.id,
            key_id = %request.key_id,
            "enrollment started"
        );
        Ok(StartResponse {
            challenge_id: challenge.id,
            nonce: URL_SAFE_NO_PAD.encode(&challenge.nonce),
            expires_unix: challenge.expires_unix,
        })
    }

    /// Step 2: spends the token, checks the evidence against the challenge's nonce, and answers
    /// with a credential for the AK. Refused evidence ends the ceremony.
    pub fn submit_evidence(
        &self,
        request: &EvidenceRequest,
        now: SystemTime,
    ) -> Result<EvidenceResponse, EnrollmentError> {
        check_challenge_id(&request.challenge_id)?;
        let challenge = self
            .store
            .begin_evidence(&request.challenge_id, unix(now))?;
        let result = self.check_evidence(&challenge, &request.evidence, now);
        self.record_step("evidence", &challenge.key_id, None, &result);
        match result {
            Ok(response) => Ok(response),
            Err(error) => {
                tracing::warn!(
                    challenge = %challenge.id,
                    key_id = %challenge.key_id,
                    code = %error.code(),
                    error = %crate::ErrorChain(&error),
                    "enrollment evidence refused"
                );
                if let Err(cleanup) = self.store.delete_challenge(&challenge.id) {
                    tracing::error!(%cleanup, "cannot delete a refused challenge");
                }
                Err(error)
            }
        }
    }

    fn check_evidence(
        &self,
        challenge: &Challenge,
        attestation: &KeyAttestation,
        now: SystemTime,
    ) -> Result<EvidenceResponse, EnrollmentError> {
        if attestation.version != EVIDENCE_VERSION {
            return Err(EnrollmentError::EvidenceMismatch("version"));
        }
        if attestation.key_id != challenge.key_id {
            return Err(EnrollmentError::EvidenceMismatch("key_mismatch"));
        }
        let Evidence::Tpm(evidence) = &attestation.evidence else {
            return Err(EnrollmentError::EvidenceMismatch("not_tpm"));
        };
        // The clock is compared with the device's record only after activation: until then the
        // AK is not proven to be in that TPM, and a forged low clock must not revoke a device.
        let attested = verify_evidence(evidence, &challenge.nonce, &self.anchors, now, None)?;
        if attested.key_id != challenge.key_id {
            return Err(EnrollmentError::EvidenceMismatch("key_mismatch"));
        }
        let device_id = device_id_for(&attested.ek_certificate_fingerprint_sha256);
        if self
            .registry
            .device(&device_id)?
            .is_some_and(|device| device.revoked)
        {
            return Err(EnrollmentError::DeviceRevoked);
        }
        let key_already_registered = match self.registry.lookup(&attested.key_id)? {
            None => false,
            Some(key) if key.revoked => return Err(EnrollmentError::DeviceRevoked),
            Some(key) if key.device_id.as_deref() == Some(device_id.as_str()) => true,
            Some(_) => return Err(EnrollmentError::KeyExists(attested.key_id)),
        };
        let pending = Pending {
            device_id,
            key_spki_der: STANDARD.encode(attested.public_key.spki_der()),
            key_label: self.store.token_label(&challenge.token_id)?,
            ek_cert_sha256: attested.ek_certificate_fingerprint_sha256.clone(),
            ak_public: STANDARD.encode(attested.ak_public.as_bytes()),
            clock: attested.clock,
            firmware_version: attested.firmware_version,
            pcrs_sha256: attested.pcrs_sha256.iter().map(hex::encode).collect(),
            key_already_registered,
            tpm_manufacturer: fact_text(attested.manufacturer.manufacturer.as_deref()),
            tpm_model: fact_text(attested.manufacturer.model.as_deref()),
        };
        let pending = serde_json::to_string(&pending)
            .map_err(|e| EnrollmentError::Store(format!("encoding pending enrollment: {e}")))?;
        let secret = new_activation_secret()?;
        let made = make_credential(&attested.ek_public, &attested.ak_name, secret.as_ref())?;
        let secret_sha256: [u8; 32] = Sha256::digest(secret.as_ref()).into();
        self.store
            .credential_issued(&challenge.id, &secret_sha256, &attested.ak_name, &pending)?;
        tracing::info!(challenge = %challenge.id, "enrollment evidence accepted; credential issued");
        Ok(EvidenceResponse {
            credential_blob: STANDARD.encode(&made.credential_blob),
            encrypted_secret: STANDARD.encode(&made.encrypted_secret),
        })
    }

    /// Step 3: the secret proves the AK lives beside the certified EK; the device and the key
    /// (level `tpm`) are stored. One try per challenge.
    pub fn activate(
        &self,
        request: &ActivateRequest,
        now: SystemTime,
    ) -> Result<ActivateResponse, EnrollmentError> {
        check_challenge_id(&request.challenge_id)?;
        let challenge = self
            .store
            .take_for_activation(&request.challenge_id, unix(now))?;
        let result = self.finish(&challenge, &request.secret, now);
        self.record_step(
            "activated",
            &challenge.key_id,
            result.as_ref().ok().map(|done| done.device_id.as_str()),
            &result,
        );
        match &result {
            Ok(done) => tracing::info!(
                challenge = %challenge.id,
                device_id = %done.device_id,
                key_id = %done.key_id,
                "device enrolled"
            ),
            Err(error) => tracing::warn!(
                challenge = %challenge.id,
                key_id = %challenge.key_id,
                code = %error.code(),
                error = %crate::ErrorChain(error),
                "enrollment activation refused"
            ),
        }
        result
    }

    fn finish(
        &self,
        challenge: &Challenge,
        secret: &str,
        now: SystemTime,
    ) -> Result<ActivateResponse, EnrollmentError> {
        let expected = challenge
            .secret_sha256
            .as_deref()
            .ok_or_else(|| EnrollmentError::Store("challenge has no secret hash".into()))?;
        if secret.len() > MAX_SECRET_BASE64 {
            return Err(EnrollmentError::ActivationFailed);
        }
        let returned = zeroize::Zeroizing::new(
            STANDARD
                .decode(secret)
                .map_err(|_| EnrollmentError::ActivationFailed)?,
        );
        let returned_sha256 = Sha256::digest(returned.as_slice());
        if !activation_secret_matches(expected, &returned_sha256) {
            return Err(EnrollmentError::ActivationFailed);
        }
        let pending: Pending = challenge
            .pending
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| EnrollmentError::Store(format!("pending enrollment: {e}")))?
            .ok_or_else(|| EnrollmentError::Store("challenge has no pending enrollment".into()))?;
        let recovered_for =
            self.claim_recovery(&challenge.token_id, &pending.device_id, unix(now))?;
        self.record_device(&pending, now)?;
        if !pending.key_already_registered {
            self.register_key(&pending, now)?;
        }
        if let (Some(user), Some(directory)) = (recovered_for, &self.directory) {
            directory
                .assign_device(&pending.device_id, &user)
                .map_err(|e| EnrollmentError::Store(e.to_string()))?;
            tracing::info!(device_id = %pending.device_id, user = %user, "device recovered for user");
        }
        Ok(ActivateResponse {
            device_id: pending.device_id,
            key_id: challenge.key_id.clone(),
            level: KeyLevel::Tpm,
        })
    }

    /// Stores a new device, or moves an enrolled one's clock forward. A clock that went backwards
    /// is now proven to come from the device's own TPM: refuse, and revoke if so configured.
    fn record_device(&self, pending: &Pending, now: SystemTime) -> Result<(), EnrollmentError> {
        let quoted = pending
            .pcrs_sha256
            .iter()
            .map(|text| {
                let mut pcr = [0u8; 32];
                hex::decode_to_slice(text, &mut pcr)
                    .map_err(|_| EnrollmentError::Store("pending PCR value".into()))?;
                Ok(pcr)
            })
            .collect::<Result<Vec<_>, EnrollmentError>>()?;
        let clock = DeviceClock {
            reset_count: pending.clock.reset_count,
            restart_count: pending.clock.restart_count,
            clock: pending.clock.clock,
        };
        if let Some(device) = self.registry.device(&pending.device_id)? {
            if device.revoked {
                return Err(EnrollmentError::DeviceRevoked);
            }
            let previous = ClockState {
                reset_count: device.clock.reset_count,
                restart_count: device.clock.restart_count,
                clock: device.clock.clock,
            };
            if let Err(rollback) = pending.clock.check_after(&previous) {
                if self.config.revoke_on_rollback {
                    self.registry.revoke_device(&pending.device_id)?;
                    tracing::warn!(
                        device_id = %pending.device_id,
                        %rollback,
                        "device revoked: its TPM state was rolled back"
                    );
                }
                return Err(EnrollmentError::ClockRollback(rollback.to_string()));
            }
            self.registry
                .update_device_clock(&pending.device_id, clock)?;
            let boot_state = BootState::compare(&device.pcr_baseline, &quoted);
            return self.record_attestation(pending, boot_state, quoted, now);
        }
        let pcr_baseline = quoted.clone();
        let ak_public = STANDARD
            .decode(&pending.ak_public)
            .map_err(|_| EnrollmentError::Store("pending AK public area".into()))?;
        self.registry.add_device(DeviceRecord {
            id: pending.device_id.clone(),
            ek_cert_sha256: pending.ek_cert_sha256.clone(),
            ak_public,
            clock,
            firmware_version: pending.firmware_version,
            pcr_baseline,
            enrolled_unix: unix(now),
            revoked: false,
        })?;
        self.record_attestation(pending, BootState::Unchanged, quoted, now)
    }

    /// Records the attestation just checked (its time and the quoted PCRs against the
    /// baseline) and the TPM's identity among the device's facts, keeping its posture report.
    fn record_attestation(
        &self,
        pending: &Pending,
        boot_state: BootState,
        quoted_pcrs: Vec<[u8; 32]>,
        now: SystemTime,
    ) -> Result<(), EnrollmentError> {
        let mut facts = self
            .registry
            .device_facts(&pending.device_id)?
            .unwrap_or_default();
        facts.tpm_manufacturer = pending.tpm_manufacturer.clone();
        facts.tpm_model = pending.tpm_model.clone();
        facts.last_attestation = Some(AttestationRecord {
            at_unix: unix(now),
            boot_state,
            quoted_pcrs,
        });
        match self.registry.put_device_facts(&pending.device_id, &facts) {
            Ok(()) => Ok(()),
            Err(RegistryError::Unsupported(what)) => {
                tracing::warn!(device_id = %pending.device_id, "registry keeps no {what}");
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    fn register_key(&self, pending: &Pending, now: SystemTime) -> Result<(), EnrollmentError> {
        let spki = STANDARD
            .decode(&pending.key_spki_der)
            .map_err(|_| EnrollmentError::Store("pending key".into()))?;
        let public_key = PublicKey::from_spki_der(&spki)
            .map_err(|_| EnrollmentError::Store("pending key does not parse".into()))?;
        let mut key = RegisteredKey::new(public_key, &pending.key_label, KeyLevel::Tpm, unix(now));
        key.device_id = Some(pending.device_id.clone());
        let key_id = key.key_id.clone();
        match self.registry.add(key) {
            Ok(()) => Ok(()),
            // A parallel ceremony for the same key and device finished first.
            Err(RegistryError::KeyExists(_))
                if self.registry.lookup(&key_id)?.is_some_and(|k| {
                    k.device_id.as_deref() == Some(pending.device_id.as_str())
                }) =>
            {
                Ok(())
            }
            Err(RegistryError::KeyExists(id)) => Err(EnrollmentError::KeyExists(id)),
            Err(other) => Err(other.into()),
        }
    }
}
