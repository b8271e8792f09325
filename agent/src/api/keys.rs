//! `GET /v1/keys`, `POST /v1/keys`, `GET /v1/keys/{id}/attestation`,
//! `POST /v1/keys/{id}/activate-credential`.

use ::http::{Response, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use hwsign_proto::api::{CreateKeyRequest, KeyInfo, KeyList};
use hwsign_proto::attestation::{
    ActivateCredentialRequest, ActivateCredentialResponse, EVIDENCE_VERSION, KeyAttestation,
};
use hwsign_proto::encoding;

use super::ApiError;
use super::http::{self, Body};
use crate::audit::{Operation, Record};
use crate::backends::{BackendKey, check_label};
use crate::context::Context;
use crate::keystore::KeyStore;
use crate::peer::Peer;

/// Shortest attestation nonce accepted: 128 bits, like the request nonce.
pub(super) const MIN_ATTESTATION_NONCE: usize = 16;
/// Longest attestation nonce accepted: what TPM2B_DATA holds for SHA-256 based keys.
pub(super) const MAX_ATTESTATION_NONCE: usize = 64;

pub(super) fn info(backend: &str, key: BackendKey) -> KeyInfo {
    KeyInfo {
        public_key_pem: key.public_key.to_pem(),
        id: key.id,
        label: key.label,
        backend: backend.to_owned(),
        level: key.level,
        created_unix: key.created_unix,
    }
}

/// Every key.
pub(super) async fn list(ctx: &Context) -> Response<Body> {
    let keys = ctx
        .keys
        .list()
        .await
        .into_iter()
        .map(|(backend, key)| info(backend, key))
        .collect();
    http::json(StatusCode::OK, &KeyList { keys })
}

/// Creates a key; `201` with its description.
pub(super) async fn create(
    ctx: &Context,
    peer: Peer,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let request: CreateKeyRequest = http::parse_json(body)?;
    let result = create_key(ctx, &request).await;
    let mut record = Record::new(Operation::CreateKey, &peer);
    record.backend = Some(&request.backend);
    record.label = Some(&request.label);
    if let Ok(key) = &result {
        record.key_id = Some(&key.id);
    }
    // A key that exists but is not in the audit log is reported as a failure: the operator
    // must fix the log before the agent hands out keys it cannot account for.
    ctx.audit.record_outcome(record, &result)?;
    let key = result?;
    tracing::info!(key_id = %key.id, backend = %key.backend, label = %key.label, "key created");
    Ok(http::json(StatusCode::CREATED, &key))
}

async fn create_key(ctx: &Context, request: &CreateKeyRequest) -> Result<KeyInfo, ApiError> {
    let backend = ctx.keys.backend(&request.backend).ok_or_else(|| {
        let open: Vec<&str> = ctx.keys.backends().iter().map(|b| b.name()).collect();
        ApiError::UnknownBackend(request.backend.chars().take(32).collect(), open.join(", "))
    })?;
    check_label(&request.label)?;
    let label = request.label.clone();
    let key = KeyStore::call(backend, move |b| b.create_key(&label)).await?;
    ctx.keys.remember(backend, &key);
    Ok(info(backend.name(), key))
}

/// Parses `nonce=<base64url>` out of a query string (padding tolerated).
fn attestation_nonce(query: &str) -> Result<Vec<u8>, ApiError> {
    let mut found = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "nonce" {
            return Err(ApiError::InvalidRequest(
                "unknown query parameter; only nonce is accepted".into(),
            ));
        }
        if found.replace(value).is_some() {
            return Err(ApiError::InvalidRequest(
                "nonce given more than once".into(),
            ));
        }
    }
    let raw = found.ok_or_else(|| ApiError::InvalidRequest("nonce is required".into()))?;
    let text = String::from_utf8(encoding::decode(raw)?)
        .map_err(|_| ApiError::InvalidRequest("nonce is not base64url".into()))?;
    let nonce = URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| ApiError::InvalidRequest("nonce is not base64url".into()))?;
    if !(MIN_ATTESTATION_NONCE..=MAX_ATTESTATION_NONCE).contains(&nonce.len()) {
        return Err(ApiError::InvalidRequest(format!(
            "nonce must be {MIN_ATTESTATION_NONCE} to {MAX_ATTESTATION_NONCE} bytes"
        )));
    }
    Ok(nonce)
}

/// The key's rule (`key_rules.uids`) governs every use of the key, not only signing: a caller
/// it excludes gets the same refusal as for signing (`key_not_permitted`).
fn check_caller(ctx: &Context, key_id: &str, peer: Peer) -> Result<(), ApiError> {
    match ctx.config.rule_for(key_id) {
        Some(rule) => rule
            .check_caller(peer.uid)
            .map_err(ApiError::KeyNotPermitted),
        None => Ok(()),
    }
}

/// Evidence for a key, bound to the verifier's nonce.
pub(super) async fn attestation(
    ctx: &Context,
    peer: Peer,
    key_id: &str,
    query: &str,
) -> Result<Response<Body>, ApiError> {
    check_caller(ctx, key_id, peer)?;
    let nonce = attestation_nonce(query)?;
    let (backend, key) = ctx.keys.describe(key_id).await?;
    let id = key_id.to_owned();
    let evidence = KeyStore::call(&backend, move |b| b.attest(&id, &nonce)).await?;
    tracing::info!(key_id, backend = backend.name(), "attestation produced");
    Ok(http::json(
        StatusCode::OK,
        &KeyAttestation {
            version: EVIDENCE_VERSION,
            key_id: key_id.to_owned(),
            level: key.level,
            evidence,
        },
    ))
}

/// TPM2_ActivateCredential through the backend holding `key_id`.
pub(super) async fn activate_credential(
    ctx: &Context,
    peer: Peer,
    key_id: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let request: ActivateCredentialRequest = http::parse_json(body)?;
    let decode = |what: &str, text: &str| {
        STANDARD
            .decode(text)
            .map_err(|_| ApiError::InvalidRequest(format!("{what} is not base64")))
    };
    let blob = decode("credential_blob", &request.credential_blob)?;
    let secret = decode("encrypted_secret", &request.encrypted_secret)?;
    let backend = ctx.keys.backend_for(key_id).await?;
    // A refusal by the key's rule is recorded in the audit log like any other outcome.
    let result = match check_caller(ctx, key_id, peer) {
        Ok(()) => KeyStore::call(&backend, move |b| b.activate_credential(&blob, &secret))
            .await
            .map_err(ApiError::from),
        Err(refusal) => Err(refusal),
    };
    let mut record = Record::new(Operation::ActivateCredential, &peer);
    record.key_id = Some(key_id);
    record.backend = Some(backend.name());
    ctx.audit.record_outcome(record, &result)?;
    let recovered = zeroize::Zeroizing::new(result?);
    Ok(http::json(
        StatusCode::OK,
        &ActivateCredentialResponse {
            secret: STANDARD.encode(&*recovered),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::attestation_nonce;

    #[test]
    fn nonce_forms() {
        let sixteen = "AAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(
            attestation_nonce(&format!("nonce={sixteen}")).ok(),
            Some(vec![0u8; 16])
        );
        assert_eq!(
            attestation_nonce(&format!("nonce={sixteen}%3D%3D")).ok(),
            Some(vec![0u8; 16])
        );
        assert!(attestation_nonce("nonce=AAAA").is_err());
        assert!(attestation_nonce("").is_err());
        assert!(attestation_nonce(&format!("nonce={sixteen}&nonce={sixteen}")).is_err());
        assert!(attestation_nonce(&format!("nonce={sixteen}&x=1")).is_err());
        assert!(attestation_nonce(&format!("nonce={}", "A".repeat(90))).is_err());
        assert!(attestation_nonce("nonce=!!!!!!!!!!!!!!!!!!!!!!").is_err());
    }
}
