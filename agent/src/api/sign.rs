//! `POST /v1/sign`: the agent rebuilds the canonical request from the described parts, checks
//! the key's rules, signs the digest with the key's backend and returns what to add to the
//! request. It logs and audits what it signs (key, audience, method, host, path), never header
//! values or bodies.

use std::time::{SystemTime, UNIX_EPOCH};

use ::http::{Response, StatusCode};

use hwsign_proto::api::{HeaderField, SignRequest, SignResponse};
use hwsign_proto::keys::{check_key_id, check_payload_hash};
use hwsign_proto::limits::MAX_AUTHORITY_LEN;
use hwsign_proto::sign::{UNSIGNED_PAYLOAD, prepare_headers, prepare_presigned};
use hwsign_proto::{
    HWS1, HeaderSelection, Nonce, PreparedSignature, RequestParts, SigningParams, SigningTime,
};

use super::http::{self, Body};
use super::{ApiError, Context};
use crate::audit::{Operation, Record};
use crate::keystore::KeyStore;
use crate::peer::Peer;

/// Signs the described request.
pub async fn sign(ctx: &Context, peer: Peer, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let request: SignRequest = http::parse_json(body)?;
    check_key_id(&request.key_id)?;
    tracing::info!(
        key_id = %request.key_id,
        audience = %request.audience,
        method = %request.method,
        host = %request.authority,
        path = %request.path,
        presigned = request.presign_expires_secs.is_some(),
        "sign request"
    );
    let result = sign_checked(ctx, peer, &request).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code().as_str(),
    };
    let mut record = Record::new(Operation::Sign, &peer, outcome);
    record.key_id = Some(&request.key_id);
    record.audience = Some(&request.audience);
    record.method = Some(&request.method);
    record.host = Some(&request.authority);
    record.path = Some(&request.path);
    record.presign_expires_secs = request.presign_expires_secs;
    if let Ok((backend, _)) = &result {
        record.backend = Some(backend);
    }
    // The signature is released only once it is on record.
    ctx.audit
        .append(&record)
        .map_err(|e| ApiError::Internal(format!("audit log: {e}")))?;
    let (_, response) = result?;
    Ok(http::json(StatusCode::OK, &response))
}

async fn sign_checked(
    ctx: &Context,
    peer: Peer,
    request: &SignRequest,
) -> Result<(&'static str, SignResponse), ApiError> {
    let backend = ctx.keys.backend_for(&request.key_id).await?;
    if let Some(rule) = ctx.config.rule_for(&request.key_id) {
        rule.check(&request.audience, &request.authority, peer.uid)
            .map_err(ApiError::KeyNotPermitted)?;
    }
    let time = SigningTime::from_unix(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .map_err(|_| ApiError::Internal("system clock before 1970".into()))?,
    );
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|e| ApiError::Internal(format!("CSPRNG: {e}")))?;
    let nonce = Nonce::from_random(random);
    let prepared = prepare(request, time, &nonce)?;
    let digest = prepared.digest();
    let key_id = request.key_id.clone();
    let signature = KeyStore::call(&backend, move |b| b.sign_digest(&key_id, &digest)).await?;
    let additions = prepared.finish(&HWS1, &signature);
    let fields = additions
        .into_iter()
        .map(|(name, value)| HeaderField { name, value })
        .collect();
    let (headers, query_params) = if request.presign_expires_secs.is_some() {
        (Vec::new(), fields)
    } else {
        (fields, Vec::new())
    };
    Ok((
        backend.name(),
        SignResponse {
            headers,
            query_params,
            key_id: request.key_id.clone(),
            date: time.to_amz_date(),
        },
    ))
}

/// Checks `host[:port]`: what can appear in a Host header, nothing that could smuggle a path,
/// user info or a second header.
fn check_authority(authority: &str) -> Result<(), ApiError> {
    if authority.is_empty()
        || authority.len() > MAX_AUTHORITY_LEN
        || !authority
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#' | b'@' | b'\\'))
    {
        return Err(ApiError::InvalidRequest(
            "authority must be host[:port] of at most 261 printable characters".into(),
        ));
    }
    Ok(())
}

/// Builds the canonical request and string to sign (no I/O; time and nonce are inputs).
pub fn prepare(
    request: &SignRequest,
    time: SigningTime,
    nonce: &Nonce,
) -> Result<PreparedSignature, ApiError> {
    check_authority(&request.authority)?;
    check_payload_hash(&request.body_sha256)?;
    if request
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("host"))
    {
        return Err(ApiError::InvalidRequest(
            "headers must not contain host: it is taken from authority".into(),
        ));
    }
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(request.headers.len() + 1);
    headers.push(("host", request.authority.as_str()));
    headers.extend(
        request
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str())),
    );
    let parts = RequestParts {
        method: &request.method,
        path: &request.path,
        query: &request.query,
        headers: &headers,
    };
    parts.check_bounds()?;
    let params = SigningParams {
        profile: &HWS1,
        credential: &request.key_id,
        audience: &request.audience,
        time,
        nonce: Some(nonce),
        added_headers: &[],
    };
    let selection = HeaderSelection::ProfileWith(&request.signed_headers);
    let prepared = match request.presign_expires_secs {
        Some(expires) => prepare_presigned(&params, &parts, UNSIGNED_PAYLOAD, expires, selection)?,
        None => prepare_headers(&params, &parts, &request.body_sha256, selection)?,
    };
    Ok(prepared)
}
