//! A verifier set up as a server runs it (SQLite key registry, in-memory replay cache), a batch of
//! requests signed with fresh nonces, and the raw floor: the same backend's bare ECDSA verify of
//! the same strings to sign and signatures.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hwsign_proto::api::KeyLevel;
use hwsign_proto::{PublicKey, RequestParts, SigningTime};
use hwsign_verifier::ecdsa_backend::PreparedKey;
use hwsign_verifier::{
    KeyRegistry, MemoryRegistry, MemoryReplayCache, PolicySettings, RegisteredKey, SqliteRegistry,
    Verifier, VerifierConfig, VerifyBackend,
};
use tempfile::TempDir;

use crate::BenchError;
use crate::fixtures::{AUDIENCE, BenchRequest, T0, signing_key};
use crate::signers::{InProcessSigner, public_key};

/// Where the verifier looks keys up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryKind {
    /// The default: an SQLite file.
    Sqlite,
    /// In memory.
    Memory,
}

/// One signed request as the verifier receives it.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    /// Every header, `host` and `authorization` included.
    pub headers: Vec<(String, String)>,
    /// The string to sign (for the raw floor).
    pub string_to_sign: String,
    /// The DER signature (for the raw floor).
    pub signature: Vec<u8>,
}

impl SignedRequest {
    /// The headers as the verifier takes them.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }
}

/// The verifier under test and what it verifies.
#[derive(Debug)]
pub struct VerifyFixture {
    /// The verifier.
    pub verifier: Verifier,
    /// The raw floor: the same backend's verify of the same key.
    pub raw: PreparedKey,
    /// The request all signed requests are copies of (with distinct nonces).
    pub request: BenchRequest,
    /// SHA-256 of the body.
    pub body_sha256: [u8; 32],
    /// The registered key.
    pub public: PublicKey,
    _dir: TempDir,
}

/// The time the verifier sees: the signing time (the window check passes).
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0.unsigned_abs())
}

impl VerifyFixture {
    /// A verifier with `backend` and `registry`, whose replay cache holds `capacity` nonces.
    pub fn new(
        backend: VerifyBackend,
        registry: RegistryKind,
        capacity: usize,
    ) -> Result<Self, BenchError> {
        Self::with_policies(backend, registry, capacity, None)
    }

    /// [`Self::new`], deciding every request with the Cedar policies in `policies` (a directory
    /// of `.cedar` files, e.g. `bench/policies`) when given.
    pub fn with_policies(
        backend: VerifyBackend,
        registry: RegistryKind,
        capacity: usize,
        policies: Option<&Path>,
    ) -> Result<Self, BenchError> {
        let dir = tempfile::tempdir()?;
        let registry: Arc<dyn KeyRegistry> = match registry {
            RegistryKind::Sqlite => Arc::new(
                SqliteRegistry::open(&dir.path().join("keys.db"))
                    .map_err(|e| BenchError::Verifier(e.to_string()))?,
            ),
            RegistryKind::Memory => Arc::new(MemoryRegistry::new()),
        };
        Self::on_registry_with(backend, registry, capacity, dir, policies)
    }

    /// The same fixture recording every decision in `log` (`audit_overhead`).
    pub fn with_audit_log(self, log: Arc<hwsign_verifier::audit::AuditLog>) -> Self {
        Self {
            verifier: self.verifier.with_audit_log(log),
            ..self
        }
    }

    /// A verifier with `backend` on `registry` (e.g. a cached PostgreSQL registry from
    /// `open_registry`), whose replay cache holds `capacity` nonces; `dir` lives as long.
    pub fn on_registry(
        backend: VerifyBackend,
        registry: Arc<dyn KeyRegistry>,
        capacity: usize,
        dir: TempDir,
    ) -> Result<Self, BenchError> {
        Self::on_registry_with(backend, registry, capacity, dir, None)
    }

    fn on_registry_with(
        backend: VerifyBackend,
        registry: Arc<dyn KeyRegistry>,
        capacity: usize,
        dir: TempDir,
        policies: Option<&Path>,
    ) -> Result<Self, BenchError> {
        let key = signing_key("verify")?;
        let public = public_key(&key)?;
        registry
            .add(RegisteredKey::new(
                public.clone(),
                "bench",
                KeyLevel::Software,
                T0,
            ))
            .map_err(|e| BenchError::Verifier(e.to_string()))?;
        let request = BenchRequest::realistic();
        let mut config = VerifierConfig::new(AUDIENCE, [request.authority]);
        // One key signs every request here: its quota is the whole cache.
        config.replay_quota_per_key = capacity.max(1);
        config.policy = policies.map(PolicySettings::new);
        let verifier = Verifier::new(config, registry, Arc::new(MemoryReplayCache::new(capacity)))
            .map_err(|e| BenchError::Verifier(e.to_string()))?
            .with_backend(backend);
        Ok(Self {
            verifier,
            raw: backend.prepare(&public),
            body_sha256: request.body_sha256(),
            request,
            public,
            _dir: dir,
        })
    }

    /// `count` copies of the request, each with its own nonce, signed by the registered key.
    pub fn signed_requests(&self, count: usize) -> Result<Vec<SignedRequest>, BenchError> {
        let signer = InProcessSigner::new(&signing_key("verify")?, true)?;
        let body_hash = self.request.body_sha256_hex();
        let base: Vec<(String, String)> = self
            .request
            .headers_with_host()
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        (0..count)
            .map(|_| {
                let signed =
                    signer.sign_detailed(&self.request, &body_hash, SigningTime::from_unix(T0))?;
                let mut headers = base.clone();
                headers.extend(signed.additions);
                Ok(SignedRequest {
                    headers,
                    string_to_sign: signed.string_to_sign,
                    signature: signed.signature,
                })
            })
            .collect()
    }

    /// Verifies one request through the whole pipeline (parse, registry, signature, body hash,
    /// replay cache).
    pub fn verify(&self, headers: &[(&str, &str)]) -> Result<(), BenchError> {
        let parts = RequestParts {
            method: self.request.method,
            path: self.request.path,
            query: self.request.query,
            headers,
        };
        self.verifier.verify(&parts, &self.body_sha256, now())?;
        Ok(())
    }

    /// The raw floor for one request: the backend's bare verify.
    pub fn raw_verify(&self, request: &SignedRequest) -> bool {
        self.raw
            .verify(request.string_to_sign.as_bytes(), &request.signature)
    }
}
