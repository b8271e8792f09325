//! The request every figure signs or verifies, and deterministic keys.
//!
//! The request is shaped like a typical JSON API call from an SDK: a POST with a query, a
//! 512-byte JSON body and the headers an HTTP client sends (content type, accept, user agent, a
//! request id), so canonicalization does the work it does in production, not a toy `GET /`.

use hwsign_proto::api::{HeaderField, SignRequest};
use hwsign_proto::keys::sha256_hex;
use p256::ecdsa::SigningKey;
use sha2::{Digest, Sha256};

use crate::BenchError;

/// The fixed signing time of in-process figures (2026-11-23T19:30:00Z).
pub const T0: i64 = 1_795_462_200;
/// The audience every fixture signs for.
pub const AUDIENCE: &str = "payments";

/// A request as an SDK would describe it to a signer.
#[derive(Debug, Clone)]
pub struct BenchRequest {
    /// HTTP method.
    pub method: &'static str,
    /// `host[:port]`.
    pub authority: &'static str,
    /// Path, percent-encoded as sent.
    pub path: &'static str,
    /// Query without `?`.
    pub query: &'static str,
    /// Headers other than `host`.
    pub headers: Vec<(&'static str, &'static str)>,
    /// The body.
    pub body: Vec<u8>,
}

impl BenchRequest {
    /// The realistic request (see the module documentation).
    pub fn realistic() -> Self {
        let mut body = br#"{"amount":{"currency":"EUR","value":"1250.00"},"reference":"invoice-2026-11-0042","#
            .to_vec();
        body.extend_from_slice(br#""description":""#);
        while body.len() < 510 {
            body.push(b'x');
        }
        body.extend_from_slice(br#""}"#);
        Self {
            method: "POST",
            authority: "api.example.com",
            path: "/v1/payments/42/captures",
            query: "expand=customer&idempotency=on",
            headers: vec![
                ("content-type", "application/json"),
                ("accept", "application/json"),
                ("user-agent", "hwsign-sdk/0.1 rust/1.95"),
                ("x-request-id", "3f0c9a52-6d1e-4b7f-9d0a-2c5e8b1f7a64"),
            ],
            body,
        }
    }

    /// Lower-case hex SHA-256 of the body.
    pub fn body_sha256_hex(&self) -> String {
        sha256_hex(&self.body)
    }

    /// SHA-256 of the body.
    pub fn body_sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.body).into()
    }

    /// Every header a server receives before the signature is added: `host` first.
    pub fn headers_with_host(&self) -> Vec<(&'static str, &'static str)> {
        let mut headers = Vec::with_capacity(self.headers.len() + 1);
        headers.push(("host", self.authority));
        headers.extend(self.headers.iter().copied());
        headers
    }

    /// The agent API's description of this request (what `AgentClient::sign` sends).
    pub fn sign_request(&self, key_id: &str) -> SignRequest {
        SignRequest {
            key_id: key_id.to_owned(),
            audience: AUDIENCE.to_owned(),
            method: self.method.to_owned(),
            authority: self.authority.to_owned(),
            path: self.path.to_owned(),
            query: self.query.to_owned(),
            headers: self
                .headers
                .iter()
                .map(|(name, value)| HeaderField {
                    name: (*name).to_owned(),
                    value: (*value).to_owned(),
                })
                .collect(),
            body_sha256: self.body_sha256_hex(),
            signed_headers: Vec::new(),
            presign_expires_secs: None,
            encoding: Default::default(),
        }
    }
}

/// A P-256 key derived from `seed` (benchmarks must not depend on the CSPRNG's luck).
pub fn signing_key(seed: &str) -> Result<SigningKey, BenchError> {
    SigningKey::from_slice(&Sha256::digest(seed.as_bytes()))
        .map_err(|e| BenchError::Crypto(format!("P-256 key from seed: {e}")))
}
