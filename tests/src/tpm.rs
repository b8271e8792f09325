//! TPM enrollment harness: a verifier-protected API that also mounts the enrollment router, on
//! 127.0.0.1, with its registry and enrollment tables in one real SQLite file; an agent
//! configuration for a swtpm; the ceremony's steps as raw HTTP calls; evidence surgery for the
//! refusal tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result, bail, ensure};
use axum::Router;
use axum::extract::Request;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hwsign_client::AgentClient;
use hwsign_proto::attestation::{Evidence, KeyAttestation, TpmEvidence};
use hwsign_proto::enrollment::{
    ACTIVATE_PATH, EVIDENCE_PATH, EvidenceResponse, START_PATH, StartResponse,
};
use hwsign_test_support::swtpm::Swtpm;
use hwsign_verifier::enrollment::{
    Enrollment, EnrollmentConfig, EnrollmentStore, create_token, router,
};
use hwsign_verifier::reattestation::{Reattestation, ReattestationConfig};
use hwsign_verifier::{
    HwsignLayer, KeyRegistry, MemoryReplayCache, RouteRule, SqliteRegistry, VerifiedDevice,
    Verifier, VerifierConfig,
};
use tempfile::TempDir;

use crate::{AUDIENCE, AgentProcess, RawResponse, send_raw, to_raw};

/// `[backends.software]` and `[backends.tpm]` for `swtpm`.
pub fn agent_config(swtpm: &Swtpm) -> String {
    format!(
        "[backends.software]\nenabled = true\n\n[backends.tpm]\ntcti = \"{}\"\nrequest_timeout_secs = 30\n",
        swtpm.tcti()
    )
}

/// Starts the real `hwsign-agent` (built with `--features tpm`) on `swtpm`.
pub fn start_agent(swtpm: &Swtpm) -> Result<AgentProcess> {
    AgentProcess::start_with(&agent_config(swtpm), &[])
}

/// An API on 127.0.0.1: `/enroll/*` (enrollment router) and `/hws/v1/attest*` (re-attestation
/// router), both unauthenticated, and every other path behind the HWS1 verifier (which asks for
/// re-attestation when the device policy needs it), answering with the verified principal as
/// JSON.
#[derive(Debug)]
pub struct EnrollServer {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// The registry (SQLite, shared with the enrollment tables).
    pub registry: Arc<SqliteRegistry>,
    /// The enrollment service.
    pub enrollment: Arc<Enrollment>,
    /// The re-attestation service.
    pub reattestation: Arc<Reattestation>,
    db: PathBuf,
    _dir: TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl EnrollServer {
    /// Trusts `swtpm`'s local CA; `route_rules` as given.
    pub async fn start(swtpm: &Swtpm, route_rules: Vec<RouteRule>) -> Result<Self> {
        Self::start_trusting(
            vec![swtpm.ca_root_pem()],
            vec![swtpm.ca_intermediate_pem()],
            route_rules,
        )
        .await
    }

    /// Trusts `swtpm`'s local CA; `configure` adjusts the verifier's configuration (device
    /// policies, route rules).
    pub async fn start_configured(
        swtpm: &Swtpm,
        configure: impl FnOnce(&mut VerifierConfig),
    ) -> Result<Self> {
        Self::start_inner(
            vec![swtpm.ca_root_pem()],
            vec![swtpm.ca_intermediate_pem()],
            configure,
        )
        .await
    }

    /// Trusts the local CAs of every swtpm in `swtpms` (several devices on one verifier);
    /// `configure` adjusts the verifier's configuration.
    pub async fn start_for(
        swtpms: &[&Swtpm],
        configure: impl FnOnce(&mut VerifierConfig),
    ) -> Result<Self> {
        Self::start_inner(
            swtpms.iter().map(|s| s.ca_root_pem()).collect(),
            swtpms.iter().map(|s| s.ca_intermediate_pem()).collect(),
            configure,
        )
        .await
    }

    /// Trusts the given EK roots and intermediates.
    pub async fn start_trusting(
        roots: Vec<PathBuf>,
        intermediates: Vec<PathBuf>,
        route_rules: Vec<RouteRule>,
    ) -> Result<Self> {
        Self::start_inner(roots, intermediates, |config| {
            config.route_rules = route_rules;
        })
        .await
    }

    /// Trusts `swtpm`'s local CA and also EKs registered in `registered_eks` (TPMs without an EK
    /// certificate); `route_rules` as given.
    pub async fn start_with_registered_eks(
        swtpm: &Swtpm,
        registered_eks: PathBuf,
        route_rules: Vec<RouteRule>,
    ) -> Result<Self> {
        Self::start_enrolling(
            vec![swtpm.ca_root_pem()],
            vec![swtpm.ca_intermediate_pem()],
            |enrollment| enrollment.registered_eks = Some(registered_eks),
            |config| config.route_rules = route_rules,
        )
        .await
    }

    async fn start_inner(
        roots: Vec<PathBuf>,
        intermediates: Vec<PathBuf>,
        configure: impl FnOnce(&mut VerifierConfig),
    ) -> Result<Self> {
        Self::start_enrolling(roots, intermediates, |_| {}, configure).await
    }

    async fn start_enrolling(
        roots: Vec<PathBuf>,
        intermediates: Vec<PathBuf>,
        configure_enrollment: impl FnOnce(&mut EnrollmentConfig),
        configure: impl FnOnce(&mut VerifierConfig),
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("hwsign-enroll-")
            .tempdir()?;
        let db = dir.path().join("verifier.db");
        let registry = Arc::new(SqliteRegistry::open(&db)?);
        let mut config = EnrollmentConfig::new(roots, intermediates);
        configure_enrollment(&mut config);
        let enrollment = Arc::new(Enrollment::new(
            EnrollmentStore::open(&db)?,
            Arc::clone(&registry) as Arc<dyn KeyRegistry>,
            config.trust_anchors()?,
            config,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut verifier_config = VerifierConfig::new(AUDIENCE, [addr.to_string()]);
        configure(&mut verifier_config);
        let reattestation = Arc::new(Reattestation::new(
            &enrollment,
            &ReattestationConfig::default(),
        )?);
        let verifier = Arc::new(
            Verifier::new(
                verifier_config,
                Arc::clone(&registry) as Arc<dyn KeyRegistry>,
                Arc::new(MemoryReplayCache::new(100_000)),
            )?
            .with_reattestation(Arc::clone(reattestation.challenges())),
        );
        let app = Router::new()
            .fallback(principal)
            .layer(HwsignLayer::new(verifier))
            .merge(router(Arc::clone(&enrollment)))
            .merge(hwsign_verifier::reattestation::router(Arc::clone(
                &reattestation,
            )));
        let shutdown = crate::serve_until_shutdown(listener, app);
        Ok(Self {
            addr,
            registry,
            enrollment,
            reattestation,
            db,
            _dir: dir,
            shutdown: Some(shutdown),
        })
    }

    /// The device `key_id` was enrolled into.
    pub fn device_of(&self, key_id: &str) -> Result<String> {
        self.registry
            .lookup(key_id)?
            .and_then(|k| k.device_id)
            .context("the key belongs to no device")
    }

    /// The SQLite file (for `hwsign-verifier --db`).
    pub fn db(&self) -> &Path {
        &self.db
    }

    /// `http://127.0.0.1:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A token issued in-process (the CLI path is `hwsign-verifier tokens create`).
    pub fn token(&self) -> Result<String> {
        let (_, token) = create_token(
            self.enrollment.store(),
            "e2e device",
            600,
            SystemTime::now(),
        )?;
        Ok(token.to_string())
    }

    /// POSTs JSON to `path`; returns the status and the JSON answer.
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(u16, serde_json::Value)> {
        let request = http::Request::post(self.url(path))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body)?)?;
        let response: RawResponse = send_raw(self.addr, &to_raw(&request)?).await?;
        Ok((response.status, response.json()?))
    }

    /// Step 1; fails unless accepted.
    pub async fn start_ceremony(&self, token: &str, key_id: &str) -> Result<StartResponse> {
        let (status, body) = self
            .post(
                START_PATH,
                &serde_json::json!({"token": token, "key_id": key_id}),
            )
            .await?;
        ensure!(status == 200, "start refused: {status} {body}");
        Ok(serde_json::from_value(body)?)
    }

    /// Step 2 as sent; the answer's status and JSON.
    pub async fn send_evidence(
        &self,
        challenge_id: &str,
        evidence: &KeyAttestation,
    ) -> Result<(u16, serde_json::Value)> {
        self.post(
            EVIDENCE_PATH,
            &serde_json::json!({"challenge_id": challenge_id, "evidence": evidence}),
        )
        .await
    }

    /// Step 3 as sent.
    pub async fn send_secret(
        &self,
        challenge_id: &str,
        secret: &str,
    ) -> Result<(u16, serde_json::Value)> {
        self.post(
            ACTIVATE_PATH,
            &serde_json::json!({"challenge_id": challenge_id, "secret": secret}),
        )
        .await
    }

    /// The whole ceremony through `agent` by hand (no CLI); returns the activate answer.
    pub async fn enroll_by_hand(
        &self,
        agent: &AgentClient,
        key_id: &str,
    ) -> Result<(u16, serde_json::Value)> {
        let started = self.start_ceremony(&self.token()?, key_id).await?;
        let evidence = agent.attestation(key_id, &started.nonce).await?;
        let (status, body) = self.send_evidence(&started.challenge_id, &evidence).await?;
        ensure!(status == 200, "evidence refused: {status} {body}");
        let credential: EvidenceResponse = serde_json::from_value(body)?;
        let released = agent
            .activate_credential(key_id, &credential.to_activate_request())
            .await?;
        self.send_secret(&started.challenge_id, &released.secret)
            .await
    }
}

impl Drop for EnrollServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

async fn principal(device: VerifiedDevice, _request: Request) -> axum::Json<serde_json::Value> {
    let principal = device.0;
    axum::Json(serde_json::json!({
        "key_id": principal.key_id,
        "level": principal.level.as_str(),
        "device_id": principal.device_id,
    }))
}

/// The `error.code` of a refusal body.
pub fn code(body: &serde_json::Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// Runs the real `hwsign` CLI against `agent`.
pub fn hwsign(agent: &AgentProcess, args: &[&str]) -> Result<std::process::Output> {
    let binary = hwsign_test_support::binaries::bin_path("hwsign")?;
    Ok(Command::new(binary)
        .arg("--socket")
        .arg(agent.socket())
        .args(args)
        .output()?)
}

/// Runs the real `hwsign-verifier` binary.
pub fn hwsign_verifier(args: &[&str]) -> Result<std::process::Output> {
    let binary = hwsign_test_support::binaries::bin_path("hwsign-verifier")?;
    Ok(Command::new(binary).args(args).output()?)
}

/// `hwsign-verifier tokens create --db <server db>`: the token it prints.
pub fn token_from_cli(server: &EnrollServer) -> Result<String> {
    let db = server.db().display().to_string();
    let output = hwsign_verifier(&["tokens", "create", "--db", &db, "--label", "cli laptop"])?;
    ensure!(output.status.success(), "tokens create: {output:?}");
    let token = String::from_utf8(output.stdout)?.trim().to_owned();
    ensure!(
        token.starts_with("hwt1_"),
        "unexpected token output {token:?}"
    );
    Ok(token)
}

/// `hwsign enroll --server … --token … --create --label …`: the enrolled key id.
pub fn enroll_with_cli(agent: &AgentProcess, server: &EnrollServer, token: &str) -> Result<String> {
    enroll_with_cli_at(agent, &server.base_url(), &[], token)
}

/// `hwsign enroll --server <base> <extra> --token … --create --label …` (e.g. an https:// base
/// with `--cacert`): the enrolled key id.
pub fn enroll_with_cli_at(
    agent: &AgentProcess,
    base: &str,
    extra: &[&str],
    token: &str,
) -> Result<String> {
    let mut args = vec!["enroll", "--server", base];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--token", token, "--create", "--label", "laptop"]);
    let output = hwsign(agent, &args)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "hwsign enroll failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let key_id = stdout
        .split_whitespace()
        .skip_while(|word| *word != "enrolled")
        .nth(1)
        .context("no key id in hwsign enroll output")?;
    ensure!(stdout.contains("level=tpm"), "{stdout}");
    Ok(key_id.to_owned())
}

/// The TPM evidence inside an attestation.
pub fn tpm_evidence(attestation: &mut KeyAttestation) -> Result<&mut TpmEvidence> {
    match &mut attestation.evidence {
        Evidence::Tpm(tpm) => Ok(tpm),
        other => bail!("expected TPM evidence, got {other:?}"),
    }
}

/// TPMA_OBJECT bits (TPM 2.0 Part 2, 8.3).
pub mod attributes {
    /// fixedTPM.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// restricted.
    pub const RESTRICTED: u32 = 1 << 16;
}

/// Clears `bits` in the objectAttributes of a base64 TPMT_PUBLIC (type u16, nameAlg u16, then
/// the attributes as a big-endian u32).
pub fn clear_attributes(public_b64: &mut String, bits: u32) -> Result<()> {
    let mut public = STANDARD.decode(&*public_b64)?;
    ensure!(public.len() > 8, "TPMT_PUBLIC too short");
    let mut attributes = u32::from_be_bytes([public[4], public[5], public[6], public[7]]);
    ensure!(attributes & bits == bits, "bits already clear");
    attributes &= !bits;
    public[4..8].copy_from_slice(&attributes.to_be_bytes());
    *public_b64 = STANDARD.encode(public);
    Ok(())
}

/// Transient object handles in the TPM (`tpm2_getcap handles-transient`); nobody else may hold
/// swtpm's connection.
pub fn transient_handles(swtpm: &Swtpm) -> Result<Vec<String>> {
    let output = swtpm
        .tool("tpm2_getcap")
        .arg("handles-transient")
        .output()?;
    ensure!(output.status.success(), "tpm2_getcap: {output:?}");
    Ok(String::from_utf8(output.stdout)?
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- "))
        .map(str::to_owned)
        .collect())
}
