//! Shared by the `delegation_*` tests: an agent whose key is in delegated mode, reading what a
//! signed request carries, and an independent delegated signer (test-owned P-256 keys, the
//! protocol's own statement and signing code) for statements the agent would never produce.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, ensure};
use hwsign_e2e::{AgentProcess, ApiServer, RawResponse, refusal_code};
use hwsign_proto::delegation::DelegationStatement;
use hwsign_proto::keys::EMPTY_SHA256;
use hwsign_proto::profile::HWS1_DELEGATION_HEADER;
use hwsign_proto::sign::prepare_headers;
use hwsign_proto::{
    Authorization, HWS1, HeaderSelection, Nonce, PublicKey, RequestParts, SigningParams,
    SigningTime,
};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use sha2::{Digest, Sha256};

/// Appends a delegated-mode rule for `key_id` to the agent's configuration and restarts it (the
/// key itself stays in the agent's state directory).
pub(crate) fn make_delegated(
    agent: &mut AgentProcess,
    key_id: &str,
    lifetime_secs: Option<u64>,
) -> Result<()> {
    let path = agent.dir().join("agent.toml");
    let mut config = std::fs::read_to_string(&path)?;
    config.push_str(&format!(
        "\n[[key_rules]]\nkey_id = \"{key_id}\"\nmode = \"delegated\"\n"
    ));
    if let Some(lifetime) = lifetime_secs {
        config.push_str(&format!("session_lifetime_secs = {lifetime}\n"));
    }
    std::fs::write(&path, config)?;
    agent.restart(&[])
}

/// A header of a request (first value).
pub(crate) fn header<'a>(request: &'a http::Request<Vec<u8>>, name: &str) -> Result<&'a str> {
    request
        .headers()
        .get(name)
        .with_context(|| format!("no {name} header"))?
        .to_str()
        .context("header is not text")
}

/// The Credential of a signed request.
pub(crate) fn credential(request: &http::Request<Vec<u8>>) -> Result<String> {
    let authorization = Authorization::parse(header(request, "authorization")?, &HWS1)?;
    Ok(authorization.credential)
}

/// The delegation statement a request carries.
pub(crate) fn statement(request: &http::Request<Vec<u8>>) -> Result<DelegationStatement> {
    Ok(DelegationStatement::parse_header_value(header(request, HWS1_DELEGATION_HEADER)?)?.0)
}

/// Fails unless `response` is a refusal with `status` and `code`.
pub(crate) fn expect_refusal(response: &RawResponse, status: u16, code: &str) -> Result<()> {
    ensure!(
        response.status == status && refusal_code(response).as_deref() == Some(code),
        "expected {status} {code}, got {} {:?}: {}",
        response.status,
        response.header("www-authenticate"),
        String::from_utf8_lossy(&response.body)
    );
    Ok(())
}

/// Fails unless `response` is 200; returns its JSON.
pub(crate) fn expect_ok(response: &RawResponse) -> Result<serde_json::Value> {
    ensure!(
        response.status == 200,
        "refused: {} {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

/// A test-owned P-256 key.
pub(crate) struct TestKey {
    signing: SigningKey,
    /// Its public key.
    pub public: PublicKey,
}

impl TestKey {
    /// A key derived from `seed`.
    pub(crate) fn from_seed(seed: &str) -> Result<Self> {
        let signing = SigningKey::from_slice(&Sha256::digest(seed.as_bytes()))?;
        let public = PublicKey::from_verifying_key(*signing.verifying_key())?;
        Ok(Self { signing, public })
    }

    /// DER ECDSA over a SHA-256 digest.
    pub(crate) fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>> {
        let signature: Signature = self.signing.sign_prehash(digest)?;
        Ok(signature.to_der().as_bytes().to_vec())
    }
}

/// What a hand-made delegated request is made of.
pub(crate) struct Forgery<'a> {
    /// The key the statement names as its device key.
    pub device: &'a TestKey,
    /// The key that actually signs the statement (normally `device`).
    pub statement_signer: &'a TestKey,
    /// The session key.
    pub session: &'a TestKey,
    /// The statement's audience.
    pub statement_audience: &'a str,
    /// The request's scope audience.
    pub scope_audience: &'a str,
    /// Statement window, seconds since the epoch.
    pub not_before: i64,
    /// Statement window end.
    pub not_after: i64,
    /// The request's date.
    pub date: i64,
}

static NONCES: AtomicU64 = AtomicU64::new(1);

fn fresh_nonce() -> Nonce {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&NONCES.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    bytes[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    bytes[12..].copy_from_slice(&nanos.to_be_bytes());
    Nonce::from_random(bytes)
}

impl Forgery<'_> {
    /// `GET path` to `server`, signed by the session key with a statement signed as described:
    /// every signature genuine, only the described fields decide the verdict.
    pub(crate) fn request(&self, server: &ApiServer, path: &str) -> Result<http::Request<Vec<u8>>> {
        let statement = DelegationStatement {
            device_key_id: self.device.public.key_id(),
            session_key: self.session.public.clone(),
            audience: self.statement_audience.to_owned(),
            not_before: SigningTime::from_unix(self.not_before),
            not_after: SigningTime::from_unix(self.not_after),
        };
        let statement_signature = self.statement_signer.sign_digest(&statement.digest())?;
        let delegation = statement.to_header_value(&statement_signature);
        let authority = server.authority();
        let headers = [("host", authority.as_str())];
        let parts = RequestParts {
            method: "GET",
            path,
            query: "",
            headers: &headers,
        };
        let credential = self.session.public.key_id();
        let nonce = fresh_nonce();
        let prepared = prepare_headers(
            &SigningParams {
                profile: &HWS1,
                credential: &credential,
                audience: self.scope_audience,
                time: SigningTime::from_unix(self.date),
                nonce: Some(&nonce),
                added_headers: &[(HWS1_DELEGATION_HEADER, delegation.as_str())],
            },
            &parts,
            EMPTY_SHA256,
            HeaderSelection::ProfileWith(&[]),
        )?;
        let signature = self.session.sign_digest(&prepared.digest())?;
        let mut builder = http::Request::get(server.url(path));
        for (name, value) in prepared.finish(&HWS1, &signature) {
            builder = builder.header(name, value);
        }
        Ok(builder.body(Vec::new())?)
    }
}

/// Seconds since the epoch.
pub(crate) fn now_unix() -> Result<i64> {
    Ok(i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    )?)
}
