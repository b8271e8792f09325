//! The signing use case behind `POST /v1/sign`: check the key's rule, draw a nonce, build the
//! canonical request, sign it with the key's backend (or, for a key in delegated mode, with its
//! current session key), put the decision on the audit record, and only then release the
//! signature. The HTTP handler (`api::sign`) parses and answers; nothing here knows HTTP.
//!
//! A key in delegated mode (`mode = "delegated"` in its key rule) signs header-mode requests with
//! its current session key ([`crate::session`]): the Credential is the session key's id and the
//! statement travels in `X-Hws-Delegation`, a signed header. Presigned URLs outlive any statement
//! and are always signed by the key itself.

use std::sync::Arc;
use std::time::SystemTime;

use hwsign_proto::api::{HeaderField, SignEncoding, SignRequest, SignResponse};
use hwsign_proto::keys::check_payload_hash;
use hwsign_proto::profile::HWS1_DELEGATION_HEADER;
use hwsign_proto::rfc9421::{content_digest_sha256, signature_member};
use hwsign_proto::rfc9421_request::{
    LABEL, Rfc9421RequestError, components_for, request_signature_base, signing_params,
};
use hwsign_proto::scope::check_audience;
use hwsign_proto::sign::{UNSIGNED_PAYLOAD, prepare_headers, prepare_presigned};
use hwsign_proto::webauthn::{
    self, HWS1_WEBAUTHN, TYPE_GET, WEBAUTHN_HEADER, WebAuthnDelegation, client_data_json,
};
use hwsign_proto::{
    HWS1, HeaderSelection, Nonce, PreparedSignature, Profile, ProtoError, RequestParts,
    SigningParams, SigningTime,
};

use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::audit::{AuditError, Operation, Record};
use crate::backends::{BackendError, KeyBackend, WebauthnAssertion, WebauthnClient};
use crate::config::{KeyMode, KeyRule, RuleRefusal};
use crate::context::Context;
use crate::keystore::{CallError, KeyStore};
use crate::peer::Peer;
use crate::session::{
    DEFAULT_SESSION_LIFETIME_SECS, PendingSession, Session, SessionError, SessionTiming,
};
use crate::unix_time;

/// Why a request was not signed. The wire code of each variant is decided in one place,
/// `api::error`.
#[derive(Debug, Error)]
#[non_exhaustive]
pub(crate) enum SignError {
    /// The described request cannot be canonicalized or signed as described.
    #[error("invalid request")]
    Proto(#[from] ProtoError),
    /// `authority` is not `host[:port]`.
    #[error("authority must be host[:port] of at most 261 printable characters")]
    Authority(#[source] ProtoError),
    /// `headers` names `host`, which is taken from `authority`.
    #[error("headers must not contain host: it is taken from authority")]
    HostHeader,
    /// The key's rule refuses the caller, audience or host.
    #[error("{0}")]
    NotPermitted(RuleRefusal),
    /// The key's backend refused or failed.
    #[error(transparent)]
    Backend(#[from] CallError),
    /// A delegated session key could not be made or used.
    #[error("delegated session")]
    Session(#[from] SessionError),
    /// Sessions kept ending before the request could be dated inside one (a bug or a clock jump).
    #[error("no delegated session covers the signing time")]
    NoSessionCovers,
    /// The operating system's random number generator failed.
    #[error("CSPRNG")]
    Random(#[source] getrandom::Error),
    /// The system clock reads before 1970.
    #[error("system clock before 1970")]
    Clock,
    /// The decision could not be recorded, so nothing is released.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The RFC 9421 encoding was asked for where it is not available.
    #[error("RFC 9421 encoding: {0}")]
    EncodingUnsupported(&'static str),
}

/// What was signed: the response and, for the log, who signed it.
#[derive(Debug)]
pub(crate) struct Signed {
    /// Headers or query parameters to add, the Credential and the date.
    pub(crate) response: SignResponse,
    /// The backend holding the key.
    pub(crate) backend: &'static str,
    /// Delegated mode: the session key that signed.
    pub(crate) session_key_id: Option<String>,
}

/// Signs `request` for `peer`, recording the decision (granted or refused) in the audit log
/// before the signature is released. `step_up` (`Some(user_verification)`): a strict FIDO2
/// assertion with a touch, never a session key (`POST /v1/sign/step-up`).
pub(crate) async fn sign(
    ctx: &Arc<Context>,
    peer: Peer,
    request: &SignRequest,
    step_up: Option<bool>,
) -> Result<Signed, SignError> {
    let result = sign_unrecorded(ctx, peer, request, step_up).await;
    let mut record = Record::new(Operation::Sign, &peer);
    record.key_id = Some(&request.key_id);
    record.audience = Some(&request.audience);
    record.method = Some(&request.method);
    record.host = Some(&request.authority);
    record.path = Some(&request.path);
    record.presign_expires_secs = request.presign_expires_secs;
    if let Ok(signed) = &result {
        record.backend = Some(signed.backend);
        record.session_key_id = signed.session_key_id.as_deref();
    }
    ctx.audit.record_outcome(record, &result)?;
    result
}

fn unix_now() -> Result<i64, SignError> {
    unix_time::seconds(SystemTime::now()).ok_or(SignError::Clock)
}

async fn sign_unrecorded(
    ctx: &Arc<Context>,
    peer: Peer,
    request: &SignRequest,
    step_up: Option<bool>,
) -> Result<Signed, SignError> {
    let backend = ctx.keys.backend_for(&request.key_id).await?;
    let rule = ctx.config.rule_for(&request.key_id);
    if let Some(rule) = rule {
        // The rule sees the host that will be signed, so `h:443` cannot slip past a rule for `h`.
        rule.check(&request.audience, &derived_host(request)?, peer.uid)
            .map_err(SignError::NotPermitted)?;
    }
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(SignError::Random)?;
    let nonce = Nonce::from_random(random);
    let webauthn = backend.webauthn_client();
    if request.encoding == SignEncoding::Rfc9421 {
        if request.presign_expires_secs.is_some() {
            return Err(SignError::EncodingUnsupported("not for presigned URLs"));
        }
        if webauthn.is_some() || step_up.is_some() {
            return Err(SignError::EncodingUnsupported(
                "FIDO2 keys sign with HWS1-WEBAUTHN-ES256",
            ));
        }
        if let Some(rule) = rule.filter(|r| r.mode == KeyMode::Delegated) {
            return sign_delegated(ctx, peer, request, rule, &backend, &nonce).await;
        }
        let created = unix_now()?;
        return sign_rfc9421(
            request,
            &backend,
            Rfc9421Signer::Device(&request.key_id),
            created,
            &nonce,
        )
        .await;
    }
    let rule_uv = rule.is_some_and(|r| r.user_verification);
    if webauthn.is_none() && step_up.is_some() {
        // Only a FIDO2 assertion proves a person's presence; a TPM or token signature cannot.
        return Err(CallError::Backend(BackendError::Unsupported(backend.name())).into());
    }
    if let Some(rule) = rule.filter(|r| r.mode == KeyMode::Delegated)
        && request.presign_expires_secs.is_none()
        && step_up.is_none()
    {
        return sign_delegated(ctx, peer, request, rule, &backend, &nonce).await;
    }
    if let Some(client) = webauthn {
        let user_verification = rule_uv || step_up.unwrap_or(false);
        return sign_webauthn(request, &backend, &client, &nonce, user_verification).await;
    }
    let time = SigningTime::from_unix(unix_now()?);
    let prepared = prepare(request, time, &nonce)?;
    let digest = prepared.digest();
    let signature = KeyStore::sign_digest(&backend, &request.key_id, &digest).await?;
    Ok(Signed {
        backend: backend.name(),
        response: response(request, prepared, &signature, time, request.key_id.clone()),
        session_key_id: None,
    })
}

/// Who signs an RFC 9421 request: the hardware key itself (by id), or a delegated session key,
/// whose statement then travels in `x-hws-delegation`, a covered component.
enum Rfc9421Signer<'a> {
    Device(&'a str),
    Session(&'a Session),
}

/// The RFC 9421 encoding (docs/PROTOCOL.md §13): the agent adds `Content-Digest` from the
/// described body hash (and, for a session key, `x-hws-delegation`), builds the signature base
/// with the proto helpers, has the signer sign its SHA-256, and answers those fields with
/// `Signature-Input` and `Signature` (raw r‖s). `keyid` names the signer: the hardware key, or
/// the session key that the statement binds to it (as HWS1's Credential does).
async fn sign_rfc9421(
    request: &SignRequest,
    backend: &Arc<dyn KeyBackend>,
    signer: Rfc9421Signer<'_>,
    created: i64,
    nonce: &Nonce,
) -> Result<Signed, SignError> {
    let host = derived_host(request)?;
    check_payload_hash(&request.body_sha256)?;
    if request.headers.iter().any(|field| {
        [
            "content-digest",
            "signature",
            "signature-input",
            HWS1_DELEGATION_HEADER,
        ]
        .iter()
        .any(|name| field.name.eq_ignore_ascii_case(name))
    }) {
        return Err(SignError::EncodingUnsupported(
            "headers must not already carry Content-Digest, Signature, Signature-Input or X-HWS-Delegation",
        ));
    }
    let mut body = [0u8; 32];
    hex::decode_to_slice(&request.body_sha256, &mut body)
        .map_err(|_| SignError::Proto(ProtoError::MalformedSignature))?;
    let content_digest = content_digest_sha256(&body);
    let mut headers = request_headers(request, &host)?;
    headers.push(("content-digest", content_digest.as_str()));
    let (key_id, delegation) = match signer {
        Rfc9421Signer::Device(key_id) => (key_id, None),
        Rfc9421Signer::Session(session) => (session.key_id(), Some(session.header_value())),
    };
    if let Some(statement) = delegation {
        headers.push((HWS1_DELEGATION_HEADER, statement));
    }
    let parts = RequestParts {
        method: &request.method,
        path: &request.path,
        query: &request.query,
        headers: &headers,
    };
    parts.check_bounds()?;
    let extra: Vec<&str> = request.signed_headers.iter().map(String::as_str).collect();
    for name in &extra {
        if parts.header_values(name).next().is_none() {
            return Err(SignError::Proto(ProtoError::MissingHeader(
                (*name).to_owned(),
            )));
        }
    }
    let params = signing_params(
        components_for(&parts, &extra),
        created,
        nonce,
        key_id,
        &request.audience,
    );
    let base = request_signature_base(&parts, &params)
        .map_err(|e| SignError::Proto(ProtoError::from(Rfc9421RequestError::from(e))))?;
    let der = match signer {
        Rfc9421Signer::Device(key_id) => {
            let digest: [u8; 32] = Sha256::digest(base.as_bytes()).into();
            KeyStore::sign_digest(backend, key_id, &digest).await?
        }
        Rfc9421Signer::Session(session) => session.sign(base.as_bytes())?,
    };
    let raw = p256::ecdsa::Signature::from_der(&der)
        .map_err(|_| SignError::Proto(ProtoError::MalformedSignature))?
        .to_bytes();
    let mut additions = vec![("content-digest".to_owned(), content_digest)];
    if let Some(statement) = delegation {
        additions.push((HWS1_DELEGATION_HEADER.to_owned(), statement.to_owned()));
    }
    additions.extend([
        (
            "signature-input".to_owned(),
            format!("{LABEL}={}", params.serialize()),
        ),
        ("signature".to_owned(), signature_member(LABEL, &raw)),
    ]);
    Ok(Signed {
        backend: backend.name(),
        response: response_from(
            request,
            additions,
            SigningTime::from_unix(created),
            key_id.to_owned(),
        ),
        session_key_id: delegation.map(|_| key_id.to_owned()),
    })
}

/// Asks a FIDO2 key for a WebAuthn assertion over `challenge` with the agent's clientDataJSON
/// (`webauthn.get`, the backend's origin), as the HWS1-WEBAUTHN-ES256 profile builds it.
async fn assert_webauthn(
    backend: &Arc<dyn KeyBackend>,
    client: &WebauthnClient,
    key_id: &str,
    challenge: &str,
    user_verification: bool,
) -> Result<(WebauthnAssertion, webauthn::Assertion), SignError> {
    let client_data = client_data_json(TYPE_GET, challenge, &client.origin);
    let hash: [u8; 32] = Sha256::digest(client_data.as_bytes()).into();
    let key_id = key_id.to_owned();
    let made = KeyStore::call(backend, move |b| {
        b.webauthn_assert(&key_id, &hash, user_verification)
    })
    .await?;
    let assertion = webauthn::Assertion {
        authenticator_data: made.authenticator_data.clone(),
        client_data_json: client_data.into_bytes(),
    };
    Ok((made, assertion))
}

/// HWS1-WEBAUTHN-ES256: the key's assertion over the string to sign; authenticator data and
/// client data travel in `X-Hws-WebAuthn` (not a signed header: it is part of the signature).
async fn sign_webauthn(
    request: &SignRequest,
    backend: &Arc<dyn KeyBackend>,
    client: &WebauthnClient,
    nonce: &Nonce,
    user_verification: bool,
) -> Result<Signed, SignError> {
    if request.presign_expires_secs.is_some() {
        // A presigned URL has nowhere to carry the assertion's authenticator and client data.
        return Err(CallError::Backend(BackendError::Unsupported(backend.name())).into());
    }
    let time = SigningTime::from_unix(unix_now()?);
    let prepared = prepare_as(request, time, nonce, &request.key_id, &[], &HWS1_WEBAUTHN)?;
    let challenge = webauthn::request_challenge(prepared.string_to_sign());
    let (made, assertion) = assert_webauthn(
        backend,
        client,
        &request.key_id,
        &challenge,
        user_verification,
    )
    .await?;
    let mut additions = prepared.finish(&HWS1_WEBAUTHN, &made.signature);
    // `authorization` stays last.
    let at = additions.len().saturating_sub(1);
    additions.insert(
        at,
        (WEBAUTHN_HEADER.to_owned(), assertion.to_header_value()),
    );
    Ok(Signed {
        backend: backend.name(),
        response: response_from(request, additions, time, request.key_id.clone()),
        session_key_id: None,
    })
}

/// Signs with the key's current session key, issuing one first if needed, in the request's
/// encoding: HWS1, or RFC 9421 with the statement in the covered `x-hws-delegation` field.
async fn sign_delegated(
    ctx: &Arc<Context>,
    peer: Peer,
    request: &SignRequest,
    rule: &KeyRule,
    backend: &Arc<dyn KeyBackend>,
    nonce: &Nonce,
) -> Result<Signed, SignError> {
    // The audience keys the session table: only a valid one gets a slot.
    check_audience(&request.audience)?;
    let timing = SessionTiming::for_lifetime(
        rule.session_lifetime_secs
            .unwrap_or(DEFAULT_SESSION_LIFETIME_SECS),
    );
    // A session handed out at the very end of its window may be over by the time the request
    // is dated; then the next call finds (or waits for) its successor.
    for _ in 0..3 {
        let issue = {
            let ctx = Arc::clone(ctx);
            let backend = Arc::clone(backend);
            let key_id = request.key_id.clone();
            let audience = request.audience.clone();
            let user_verification = rule.user_verification;
            move || async move {
                issue_session(
                    &ctx,
                    &backend,
                    &key_id,
                    &audience,
                    timing,
                    peer,
                    user_verification,
                )
                .await
            }
        };
        let session = ctx
            .sessions
            .session(
                &request.key_id,
                &request.audience,
                || unix_now().unwrap_or(0),
                issue,
            )
            .await?;
        let time = SigningTime::from_unix(unix_now()?);
        if !session.covers(time.unix()) {
            continue;
        }
        if request.encoding == SignEncoding::Rfc9421 {
            let signer = Rfc9421Signer::Session(&session);
            return sign_rfc9421(request, backend, signer, time.unix(), nonce).await;
        }
        let prepared = prepare_as(
            request,
            time,
            nonce,
            session.key_id(),
            &[(HWS1_DELEGATION_HEADER, session.header_value())],
            &HWS1,
        )?;
        let signature = session.sign(prepared.string_to_sign().as_str().as_bytes())?;
        let session_key_id = session.key_id().to_owned();
        return Ok(Signed {
            backend: backend.name(),
            response: response(request, prepared, &signature, time, session_key_id.clone()),
            session_key_id: Some(session_key_id),
        });
    }
    Err(SignError::NoSessionCovers)
}

/// Has the hardware key sign a statement for a new session key, and records that it did: a
/// statement that is not on record is not used. A FIDO2 key signs it with one assertion (one
/// touch for the whole session).
async fn issue_session(
    ctx: &Context,
    backend: &Arc<dyn KeyBackend>,
    key_id: &str,
    audience: &str,
    timing: SessionTiming,
    peer: Peer,
    user_verification: bool,
) -> Result<Arc<Session>, SignError> {
    let pending = PendingSession::new(key_id, audience, unix_now()?, timing)?;
    let result = match backend.webauthn_client() {
        Some(client) => {
            let challenge = WebAuthnDelegation::challenge_for(pending.statement());
            assert_webauthn(backend, &client, key_id, &challenge, user_verification)
                .await
                .map(|(made, assertion)| {
                    WebAuthnDelegation {
                        statement: pending.statement().clone(),
                        signature: made.signature,
                        assertion,
                    }
                    .to_header_value()
                })
        }
        None => {
            let digest = pending.statement().digest();
            KeyStore::sign_digest(backend, key_id, &digest)
                .await
                .map(|signature| pending.statement().to_header_value(&signature))
                .map_err(SignError::from)
        }
    };
    let session_key_id = pending.statement().session_key.key_id();
    let not_after = pending.statement().not_after.unix();
    let mut record = Record::new(Operation::IssueDelegation, &peer);
    record.key_id = Some(key_id);
    record.audience = Some(audience);
    record.backend = Some(backend.name());
    record.session_key_id = Some(&session_key_id);
    record.not_after = Some(not_after);
    ctx.audit.record_outcome(record, &result)?;
    let header_value = result?;
    tracing::info!(
        key_id,
        audience,
        session_key_id = %session_key_id,
        not_after,
        "delegation statement issued"
    );
    Ok(Arc::new(pending.finish_with_header(header_value, timing)))
}

fn response(
    request: &SignRequest,
    prepared: PreparedSignature,
    signature: &[u8],
    time: SigningTime,
    key_id: String,
) -> SignResponse {
    response_from(request, prepared.finish(&HWS1, signature), time, key_id)
}

fn response_from(
    request: &SignRequest,
    additions: Vec<(String, String)>,
    time: SigningTime,
    key_id: String,
) -> SignResponse {
    let fields = additions
        .into_iter()
        .map(|(name, value)| HeaderField { name, value })
        .collect();
    let (headers, query_params) = if request.presign_expires_secs.is_some() {
        (Vec::new(), fields)
    } else {
        (fields, Vec::new())
    };
    SignResponse {
        headers,
        query_params,
        key_id,
        date: time.to_amz_date(),
    }
}

/// The signed host for `request.authority` (docs/PROTOCOL.md §2 "Signed host"): `host[:port]`
/// lower-cased, `:443` dropped (the agent API describes https requests; an http caller gives the
/// authority without `:80`, as the client library does). Anything that could smuggle a path,
/// user info or a second header is refused.
fn derived_host(request: &SignRequest) -> Result<String, SignError> {
    hwsign_proto::host::signed_host(None, &request.authority).map_err(SignError::Authority)
}

/// The request's header fields as signed: `host` (from `authority`) first, then the described
/// ones; a described `host` is refused, since it is taken from `authority`.
fn request_headers<'a>(
    request: &'a SignRequest,
    host: &'a str,
) -> Result<Vec<(&'a str, &'a str)>, SignError> {
    if request
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("host"))
    {
        return Err(SignError::HostHeader);
    }
    let mut headers = Vec::with_capacity(request.headers.len() + 2);
    headers.push(("host", host));
    headers.extend(
        request
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str())),
    );
    Ok(headers)
}

/// Builds the canonical request and string to sign (no I/O; time and nonce are inputs).
pub(crate) fn prepare(
    request: &SignRequest,
    time: SigningTime,
    nonce: &Nonce,
) -> Result<PreparedSignature, SignError> {
    prepare_as(request, time, nonce, &request.key_id, &[], &HWS1)
}

/// [`prepare`] with another Credential (a session key) and headers the signer adds and signs
/// (`x-hws-delegation`).
fn prepare_as(
    request: &SignRequest,
    time: SigningTime,
    nonce: &Nonce,
    credential: &str,
    added_headers: &[(&str, &str)],
    profile: &Profile,
) -> Result<PreparedSignature, SignError> {
    let host = derived_host(request)?;
    check_payload_hash(&request.body_sha256)?;
    let headers = request_headers(request, &host)?;
    let parts = RequestParts {
        method: &request.method,
        path: &request.path,
        query: &request.query,
        headers: &headers,
    };
    parts.check_bounds()?;
    let params = SigningParams {
        profile,
        credential,
        audience: &request.audience,
        time,
        nonce: Some(nonce),
        added_headers,
    };
    let selection = HeaderSelection::ProfileWith(&request.signed_headers);
    let prepared = match request.presign_expires_secs {
        Some(expires) => prepare_presigned(&params, &parts, UNSIGNED_PAYLOAD, expires, selection)?,
        None => prepare_headers(&params, &parts, &request.body_sha256, selection)?,
    };
    Ok(prepared)
}
