//! A real HWS1 signer for tests: P-256 keys from fixed seeds, requests signed with
//! `hwsign_proto::sign` exactly as the agent signs them.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use hwsign_proto::keys::sha256_hex;
use hwsign_proto::sign::{UNSIGNED_PAYLOAD, prepare_headers, prepare_presigned};
use hwsign_proto::{
    HWS1, HeaderSelection, Nonce, PublicKey, RequestParts, SigningParams, SigningTime,
};
use hwsign_verifier::{KeyLevel, RegisteredKey};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use sha2::{Digest, Sha256};

/// The audience every test verifier is configured with.
pub(crate) const AUDIENCE: &str = "payments";
/// A fixed signing time: 2026-11-23T19:30:00Z.
pub(crate) const T0: i64 = 1_795_462_200;

/// `T0 + offset` as a SystemTime.
pub(crate) fn at(offset: i64) -> SystemTime {
    let secs = u64::try_from(T0 + offset).unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A test key.
#[derive(Debug)]
pub(crate) struct TestKey {
    pub signing: SigningKey,
    pub public: PublicKey,
    pub id: String,
    /// Produce high-S signatures (as TPMs do about half the time).
    pub high_s: bool,
}

impl TestKey {
    pub(crate) fn from_seed(seed: &str) -> Result<Self> {
        let signing = SigningKey::from_slice(&Sha256::digest(seed.as_bytes()))?;
        let public = PublicKey::from_verifying_key(*signing.verifying_key())?;
        let id = public.key_id();
        Ok(Self {
            signing,
            public,
            id,
            high_s: false,
        })
    }

    pub(crate) fn registered(&self, label: &str, level: KeyLevel) -> RegisteredKey {
        RegisteredKey::new(self.public.clone(), label, level, T0)
    }

    /// DER signature over a SHA-256 digest; low-S, or high-S when `self.high_s`.
    pub(crate) fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>> {
        let signature: Signature = self.signing.sign_prehash(digest)?;
        let signature = signature.normalize_s();
        let signature = if self.high_s {
            let (r, s) = signature.split_scalars();
            let negated = -*s;
            Signature::from_scalars(r.to_bytes(), negated.to_bytes())?
        } else {
            signature
        };
        Ok(signature.to_der().as_bytes().to_vec())
    }
}

static NONCE_COUNTER: AtomicU64 = AtomicU64::new(1);

/// A nonce no other test request uses.
pub(crate) fn fresh_nonce() -> Nonce {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&NONCE_COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    bytes[8..].copy_from_slice(&std::process::id().to_be_bytes().repeat(2));
    Nonce::from_random(bytes)
}

/// A request to sign: owned parts so tests can change them after signing.
#[derive(Debug, Clone)]
pub(crate) struct TestRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl TestRequest {
    pub(crate) fn new(method: &str, path: &str, query: &str, host: &str) -> Self {
        Self {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            headers: vec![("host".into(), host.into())],
            body: Vec::new(),
        }
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub(crate) fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }

    pub(crate) fn header_pairs(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    /// Calls `f` with this request's parts.
    pub(crate) fn with_parts<T>(&self, f: impl FnOnce(&RequestParts<'_>) -> T) -> T {
        let headers = self.header_pairs();
        let parts = RequestParts {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers: &headers,
        };
        f(&parts)
    }

    pub(crate) fn body_sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.body).into()
    }

    /// Replaces the value of every header named `name`.
    pub(crate) fn set_header(&mut self, name: &str, value: &str) {
        for (n, v) in &mut self.headers {
            if n.eq_ignore_ascii_case(name) {
                *v = value.into();
            }
        }
    }

    pub(crate) fn get_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
}

/// How to sign.
#[derive(Debug, Clone)]
pub(crate) struct SignOptions {
    pub audience: String,
    pub time: i64,
    pub nonce: Nonce,
    pub extra_signed: Vec<String>,
}

impl Default for SignOptions {
    fn default() -> Self {
        Self {
            audience: AUDIENCE.into(),
            time: T0,
            nonce: fresh_nonce(),
            extra_signed: Vec::new(),
        }
    }
}

/// Signs `request` in header mode and returns it with the HWS1 headers added.
pub(crate) fn sign(
    key: &TestKey,
    request: &TestRequest,
    options: &SignOptions,
) -> Result<TestRequest> {
    let payload_hash = sha256_hex(&request.body);
    let prepared = request.with_parts(|parts| {
        prepare_headers(
            &SigningParams {
                profile: &HWS1,
                credential: &key.id,
                audience: &options.audience,
                time: SigningTime::from_unix(options.time),
                nonce: Some(&options.nonce),
                added_headers: &[],
            },
            parts,
            &payload_hash,
            HeaderSelection::ProfileWith(&options.extra_signed),
        )
    })?;
    let signature = key.sign_digest(&prepared.digest())?;
    let mut signed = request.clone();
    signed.headers.extend(prepared.finish(&HWS1, &signature));
    Ok(signed)
}

/// Signs `request` as a presigned URL valid for `expires_secs`; the signature goes in the query.
pub(crate) fn presign(
    key: &TestKey,
    request: &TestRequest,
    options: &SignOptions,
    expires_secs: u64,
) -> Result<TestRequest> {
    let prepared = request.with_parts(|parts| {
        prepare_presigned(
            &SigningParams {
                profile: &HWS1,
                credential: &key.id,
                audience: &options.audience,
                time: SigningTime::from_unix(options.time),
                nonce: Some(&options.nonce),
                added_headers: &[],
            },
            parts,
            UNSIGNED_PAYLOAD,
            expires_secs,
            HeaderSelection::ProfileWith(&options.extra_signed),
        )
    })?;
    let signature = key.sign_digest(&prepared.digest())?;
    let mut signed = request.clone();
    for (name, value) in prepared.finish(&HWS1, &signature) {
        if !signed.query.is_empty() {
            signed.query.push('&');
        }
        signed.query.push_str(&name);
        signed.query.push('=');
        signed.query.push_str(&value);
    }
    Ok(signed)
}

/// An `X-Hws-Delegation` value: `device` authorizes `session` for [`AUDIENCE`] from `not_before`
/// to `not_after` (seconds since the epoch).
pub(crate) fn delegation_header(
    device: &TestKey,
    session: &TestKey,
    not_before: i64,
    not_after: i64,
) -> Result<String> {
    delegation_header_for(device, session, AUDIENCE, not_before, not_after)
}

/// [`delegation_header`] for another `audience`.
pub(crate) fn delegation_header_for(
    device: &TestKey,
    session: &TestKey,
    audience: &str,
    not_before: i64,
    not_after: i64,
) -> Result<String> {
    let statement = hwsign_proto::delegation::DelegationStatement {
        device_key_id: device.id.clone(),
        session_key: session.public.clone(),
        audience: audience.into(),
        not_before: SigningTime::from_unix(not_before),
        not_after: SigningTime::from_unix(not_after),
    };
    let signature = device.sign_digest(&statement.digest())?;
    Ok(statement.to_header_value(&signature))
}
