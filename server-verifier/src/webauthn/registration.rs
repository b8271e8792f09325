//! FIDO2 registration (W3C WebAuthn L3 §7.1), bound to an enrollment token like TPM enrollment:
//! an administrator issues a one-time token (`hwsign-verifier tokens create`); the holder asks
//! for creation options (`POST /hws/v1/webauthn/register/options {token}`), the browser or agent
//! calls `navigator.credentials.create` / CTAP2 makeCredential with them, and sends the result
//! (`POST /hws/v1/webauthn/register {challenge_id, client_data_json, attestation_object}`). The
//! token is spent when the attestation is submitted, whatever the outcome; the credential enters
//! the registry under the token's label.
//!
//! Levels: `packed` attestation with an `x5c` chain to a configured root, an allowed AAGUID and
//! no backup flags → `fido2`; anything else that verifies (`none`, self attestation, a chain to
//! no configured root, an AAGUID not allowed, formats this verifier does not check) or a
//! backup-eligible credential (a synced passkey) → `fido2-unattested`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hwsign_proto::PublicKey;
use hwsign_proto::api::KeyLevel;
use hwsign_proto::webauthn::{
    AttestationObject, AttestationStatement, COSE_ALG_ES256, ClientData, TYPE_CREATE,
    WebAuthnError, rp_id_hash,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::attestation::certificate::{CertifiedKey, ParsedCertificate};
use crate::attestation::chain::{TrustAnchors, verify_chain};
use crate::enrollment::token::parse as parse_token;
use crate::enrollment::{EnrollmentError, EnrollmentStore};
use crate::registry::{Fido2Credential, KeyRegistry, RegisteredKey, RegistryError};

use super::WebAuthnSettings;

/// Path of the options step.
pub const REGISTER_OPTIONS_PATH: &str = "/hws/v1/webauthn/register/options";
/// Path of the attestation step.
pub const REGISTER_PATH: &str = "/hws/v1/webauthn/register";
/// Largest options body.
pub const MAX_OPTIONS_BODY: usize = 4 * 1024;
/// Largest registration body (attestation object up to 16 KiB, base64url, and client data).
pub const MAX_REGISTER_BODY: usize = 32 * 1024;
/// How long a registration challenge lives.
const CHALLENGE_TTL_SECS: i64 = 300;
const MAX_PENDING: usize = 1024;
const MAX_PER_TOKEN: usize = 4;
/// Most credentials listed in `excludeCredentials`.
pub const MAX_EXCLUDE: usize = 64;

/// `POST /hws/v1/webauthn/register/options` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionsRequest {
    /// The enrollment token.
    pub token: String,
}

/// The `publicKey` member of `navigator.credentials.create`, with binary fields base64url.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreationOptions {
    /// The registration challenge, base64url.
    pub challenge: String,
    /// `{id, name}`.
    pub rp: serde_json::Value,
    /// `{id (base64url), name, displayName}`.
    pub user: serde_json::Value,
    /// ES256 only.
    #[serde(rename = "pubKeyCredParams")]
    pub pub_key_cred_params: serde_json::Value,
    /// `direct`: the verifier ranks attested authenticators higher.
    pub attestation: String,
    /// Milliseconds.
    pub timeout: u64,
    /// Credentials already registered under the token's label (`{type, id}`, id base64url), at
    /// most [`MAX_EXCLUDE`]: a key holding one refuses to create another.
    #[serde(
        rename = "excludeCredentials",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub exclude_credentials: Vec<serde_json::Value>,
    /// `{userVerification: "required"}` when `[webauthn] require_user_verification`, else
    /// `"discouraged"`.
    #[serde(rename = "authenticatorSelection", default)]
    pub authenticator_selection: serde_json::Value,
}

impl CreationOptions {
    /// Whether the verifier requires user verification at registration.
    pub fn user_verification_required(&self) -> bool {
        self.authenticator_selection["userVerification"] == "required"
    }
}

/// `POST /hws/v1/webauthn/register/options` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct OptionsResponse {
    /// The ceremony id to send back with the attestation.
    pub challenge_id: String,
    /// What to pass to `navigator.credentials.create({publicKey})`.
    pub public_key: CreationOptions,
}

/// `POST /hws/v1/webauthn/register` body (binary fields base64url without padding).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// From the options answer.
    pub challenge_id: String,
    /// `response.clientDataJSON`.
    pub client_data_json: String,
    /// `response.attestationObject`.
    pub attestation_object: String,
}

/// `POST /hws/v1/webauthn/register` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The credential's key id (the `Credential` of its requests).
    pub key_id: String,
    /// `fido2` or `fido2-unattested`.
    pub level: KeyLevel,
    /// The credential id, base64url (for `allowCredentials`).
    pub credential_id: String,
}

/// Attestation roots and the AAGUIDs that may rank `fido2`.
#[derive(Debug, Clone, Default)]
pub struct AttestationTrust {
    /// Roots (and intermediates) of `packed` attestation chains.
    pub anchors: Option<TrustAnchors>,
    /// AAGUIDs allowed to rank `fido2`; empty allows any AAGUID whose chain verifies.
    pub aaguids: Vec<[u8; 16]>,
}

/// A registration that verified.
#[derive(Debug, Clone)]
pub struct VerifiedRegistration {
    /// The credential's public key.
    pub public_key: PublicKey,
    /// What the registry keeps.
    pub credential: Fido2Credential,
    /// The level it earned.
    pub level: KeyLevel,
}

fn malformed(error: WebAuthnError) -> EnrollmentError {
    EnrollmentError::Malformed(error.to_string())
}

/// Verifies a registration: client data (type `webauthn.create`, challenge, origin), the
/// attestation object (RP ID hash, UP, an ES256 P-256 credential), the statement, and decides
/// the level.
pub fn verify_registration(
    settings: &WebAuthnSettings,
    trust: &AttestationTrust,
    challenge: &str,
    client_data_json: &[u8],
    attestation_object: &[u8],
    now: SystemTime,
) -> Result<VerifiedRegistration, EnrollmentError> {
    ClientData::parse(client_data_json)
        .and_then(|client| client.check(TYPE_CREATE, challenge, &settings.origins))
        .map_err(malformed)?;
    let object = AttestationObject::parse(attestation_object).map_err(malformed)?;
    let auth_data = &object.auth_data;
    if auth_data.rp_id_hash != rp_id_hash(&settings.rp_id) {
        return Err(malformed(WebAuthnError::RpIdMismatch));
    }
    if !auth_data.flags.user_present() {
        return Err(malformed(WebAuthnError::UserPresence));
    }
    if settings.require_user_verification && !auth_data.flags.user_verified() {
        return Err(EnrollmentError::EvidenceMismatch("user_verification"));
    }
    let Some(attested) = &auth_data.attested_credential else {
        return Err(EnrollmentError::EvidenceMismatch("no attested credential"));
    };
    let mut signed = object.auth_data_bytes.clone();
    signed.extend_from_slice(&Sha256::digest(client_data_json));
    let digest: [u8; 32] = Sha256::digest(&signed).into();
    let chained = match &object.statement {
        AttestationStatement::None | AttestationStatement::Other(_) => false,
        AttestationStatement::Packed { alg, sig, x5c } => {
            if *alg != COSE_ALG_ES256 {
                return Err(EnrollmentError::EvidenceMismatch(
                    "packed attestation algorithm is not ES256",
                ));
            }
            match x5c.split_first() {
                // Self attestation: signed by the credential key itself.
                None => {
                    if !attested.public_key.verify_digest(&digest, sig) {
                        return Err(EnrollmentError::EvidenceMismatch(
                            "self attestation signature does not verify",
                        ));
                    }
                    false
                }
                Some((leaf_der, rest)) => {
                    let leaf = ParsedCertificate::from_der(leaf_der).map_err(|_| {
                        EnrollmentError::EvidenceMismatch("attestation certificate")
                    })?;
                    let leaf_key = attestation_key(&leaf)?;
                    if !leaf_key.verify_digest(&digest, sig) {
                        return Err(EnrollmentError::EvidenceMismatch(
                            "packed attestation signature does not verify",
                        ));
                    }
                    super::packed::check_attestation_certificate(
                        leaf.certificate(),
                        &attested.aaguid,
                    )?;
                    let intermediates: Vec<ParsedCertificate> = rest
                        .iter()
                        .filter_map(|der| ParsedCertificate::from_der(der).ok())
                        .collect();
                    trust.anchors.as_ref().is_some_and(|anchors| {
                        verify_chain(&leaf, &intermediates, anchors, now).is_ok()
                    })
                }
            }
        }
    };
    let aaguid_allowed = trust.aaguids.is_empty() || trust.aaguids.contains(&attested.aaguid);
    let device_bound = !auth_data.flags.backup_eligible() && !auth_data.flags.backed_up();
    let level = if chained && aaguid_allowed && device_bound {
        KeyLevel::Fido2
    } else {
        KeyLevel::Fido2Unattested
    };
    Ok(VerifiedRegistration {
        credential: Fido2Credential {
            key_id: attested.public_key.key_id(),
            credential_id: attested.credential_id.clone(),
            rp_id: settings.rp_id.clone(),
            aaguid: attested.aaguid,
            sign_count: auth_data.sign_count,
            backup_eligible: auth_data.flags.backup_eligible(),
            backed_up: auth_data.flags.backed_up(),
            possibly_cloned: false,
        },
        public_key: attested.public_key.clone(),
        level,
    })
}

fn attestation_key(leaf: &ParsedCertificate) -> Result<PublicKey, EnrollmentError> {
    let bad = || EnrollmentError::EvidenceMismatch("attestation certificate key is not P-256");
    match leaf.certified_key().map_err(|_| bad())? {
        CertifiedKey::Ecc { point, .. } => PublicKey::from_sec1(&point).map_err(|_| bad()),
        CertifiedKey::Rsa { .. } => Err(bad()),
    }
}

/// The registration service behind [`router`].
#[derive(Debug)]
pub struct Fido2Enrollment {
    store: EnrollmentStore,
    registry: Arc<dyn KeyRegistry>,
    settings: WebAuthnSettings,
    trust: AttestationTrust,
}

fn decode(text: &str, what: &str) -> Result<Vec<u8>, EnrollmentError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| EnrollmentError::Malformed(format!("{what} is not base64url")))
}

fn unix(now: SystemTime) -> i64 {
    crate::unix_time::seconds_or_zero(now)
}

impl Fido2Enrollment {
    /// A service registering credentials for `settings`' RP into `registry`, with tokens and
    /// ceremonies in `store` (the TPM enrollment store: the same tokens).
    pub fn new(
        store: EnrollmentStore,
        registry: Arc<dyn KeyRegistry>,
        settings: WebAuthnSettings,
        trust: AttestationTrust,
    ) -> Self {
        Self {
            store,
            registry,
            settings,
            trust,
        }
    }

    /// Step 1: checks the token and answers creation options with a fresh challenge.
    pub fn options(
        &self,
        request: &OptionsRequest,
        now: SystemTime,
    ) -> Result<OptionsResponse, EnrollmentError> {
        let token = parse_token(&request.token)?;
        let challenge = self.store.create_challenge(
            &token,
            "fido2",
            unix(now),
            CHALLENGE_TTL_SECS,
            MAX_PENDING,
            MAX_PER_TOKEN,
        )?;
        let label = self.store.token_label(&token.id)?;
        let exclude_credentials = self
            .registered_credentials(&label)?
            .into_iter()
            .map(|id| serde_json::json!({ "type": "public-key", "id": URL_SAFE_NO_PAD.encode(id) }))
            .collect();
        let user_verification = if self.settings.require_user_verification {
            "required"
        } else {
            "discouraged"
        };
        Ok(OptionsResponse {
            challenge_id: challenge.id,
            public_key: CreationOptions {
                challenge: URL_SAFE_NO_PAD.encode(&challenge.nonce),
                rp: serde_json::json!({ "id": self.settings.rp_id, "name": self.settings.rp_id }),
                user: serde_json::json!({
                    "id": URL_SAFE_NO_PAD.encode(token.id.as_bytes()),
                    "name": label,
                    "displayName": label,
                }),
                pub_key_cred_params: serde_json::json!([
                    { "type": "public-key", "alg": COSE_ALG_ES256 }
                ]),
                attestation: "direct".into(),
                timeout: 120_000,
                exclude_credentials,
                authenticator_selection: serde_json::json!({
                    "userVerification": user_verification,
                }),
            },
        })
    }

    /// The credential ids of unrevoked FIDO2 keys registered under `label` (at most
    /// [`MAX_EXCLUDE`], the newest): the exclude list of a new registration for that user.
    fn registered_credentials(&self, label: &str) -> Result<Vec<Vec<u8>>, EnrollmentError> {
        let mut ids = Vec::new();
        for key in self.registry.list()?.iter().rev() {
            if ids.len() >= MAX_EXCLUDE {
                break;
            }
            if key.revoked
                || key.label != label
                || !matches!(key.level, KeyLevel::Fido2 | KeyLevel::Fido2Unattested)
            {
                continue;
            }
            if let Some(credential) = self.registry.fido2_credential(&key.key_id)? {
                ids.push(credential.credential_id);
            }
        }
        Ok(ids)
    }

    /// Step 2: spends the token, verifies the attestation and stores the credential.
    pub fn register(
        &self,
        request: &RegisterRequest,
        now: SystemTime,
    ) -> Result<RegisterResponse, EnrollmentError> {
        let client_data = decode(&request.client_data_json, "client_data_json")?;
        let object = decode(&request.attestation_object, "attestation_object")?;
        let challenge = self
            .store
            .begin_evidence(&request.challenge_id, unix(now))?;
        let result = verify_registration(
            &self.settings,
            &self.trust,
            &URL_SAFE_NO_PAD.encode(&challenge.nonce),
            &client_data,
            &object,
            now,
        )
        .and_then(|verified| {
            let label = self.store.token_label(&challenge.token_id)?;
            let key = RegisteredKey::new(
                verified.public_key.clone(),
                label,
                verified.level,
                unix(now),
            );
            self.registry
                .add_fido2_credential(key, verified.credential.clone())
                .map_err(|e| match e {
                    RegistryError::KeyExists(id) => EnrollmentError::KeyExists(id),
                    other => EnrollmentError::Registry(other),
                })?;
            Ok(RegisterResponse {
                key_id: verified.credential.key_id,
                level: verified.level,
                credential_id: URL_SAFE_NO_PAD.encode(&verified.credential.credential_id),
            })
        });
        self.store.delete_challenge(&challenge.id)?;
        result
    }
}

/// The two registration routes. Mount them outside the HWS1 verification layer (the credential
/// is not registered yet); the token is what authorizes them.
pub fn router(enrollment: Arc<Fido2Enrollment>) -> Router {
    Router::new()
        .route(REGISTER_OPTIONS_PATH, post(options))
        .route(REGISTER_PATH, post(register))
        .with_state(enrollment)
}

async fn options(State(service): State<Arc<Fido2Enrollment>>, body: Body) -> Response {
    crate::enrollment::http::step(
        service,
        body,
        MAX_OPTIONS_BODY,
        |s: &Fido2Enrollment, r, now| s.options(&r, now),
    )
    .await
}

async fn register(State(service): State<Arc<Fido2Enrollment>>, body: Body) -> Response {
    crate::enrollment::http::step(
        service,
        body,
        MAX_REGISTER_BODY,
        |s: &Fido2Enrollment, r, now| s.register(&r, now),
    )
    .await
}
