//! The `pkcs11_*` end-to-end scenarios (issue #4 §4): the real agent binary with a
//! `[backends.pkcs11]` section beside the software backend, driven through its socket by the client
//! library, its signatures checked by the verifier-protected API. Each scenario gets its own
//! token; `pkcs11_softhsm.rs` runs them on SoftHSM2 and `pkcs11_tpm2.rs` on tpm2-pkcs11 over
//! swtpm, so the backend is shown not to depend on one module.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use hwsign_client::{AgentClient, AgentErrorCode, ClientError, Signer};
use hwsign_proto::api::{KeyLevel, StatusResponse};
use hwsign_proto::attestation::Evidence;
use hwsign_test_support::softhsm::{SoftHsm, write_private};
use hwsign_test_support::swtpm::Swtpm;
use hwsign_test_support::tpm2_pkcs11::Tpm2Pkcs11;
use tempfile::TempDir;

use crate::{AUDIENCE, AgentProcess, ApiServer, agent_raw, create_key, send, signed};

/// A module path that exists nowhere.
const MISSING_MODULE: &str = "/nonexistent/vendor/libvendor-pkcs11.so";
/// A label no fixture token carries.
const ABSENT_LABEL: &str = "no-such-token";
/// A verifier's nonce for the attestation endpoint (base64url).
const NONCE: &str = "bm9uY2UtZnJvbS12ZXJpZmllcg";

/// A token in a temp dir: SoftHSM2, or tpm2-pkcs11 on its own swtpm.
#[derive(Debug)]
pub enum Token {
    /// SoftHSM2.
    SoftHsm(SoftHsm),
    /// tpm2-pkcs11 with tpm2-abrmd on a private bus, on swtpm.
    Tpm2(Box<Tpm2Pkcs11>),
}

impl Token {
    /// A fresh SoftHSM2 token labelled `label`.
    pub fn softhsm(label: &str) -> Result<Self> {
        Ok(Self::SoftHsm(SoftHsm::new(label)?))
    }

    /// A fresh tpm2-pkcs11 token labelled `label` on a fresh swtpm.
    pub fn tpm2(label: &str) -> Result<Self> {
        Ok(Self::Tpm2(Box::new(Tpm2Pkcs11::new(
            Swtpm::start()?,
            label,
        )?)))
    }

    /// The token label.
    pub fn label(&self) -> &str {
        match self {
            Self::SoftHsm(hsm) => hsm.label(),
            Self::Tpm2(token) => token.label(),
        }
    }

    /// The module to configure.
    pub fn module_path(&self) -> &Path {
        match self {
            Self::SoftHsm(hsm) => hsm.module_path(),
            Self::Tpm2(token) => token.module_path(),
        }
    }

    /// A file with the correct user PIN.
    pub fn pin_file(&self) -> &Path {
        match self {
            Self::SoftHsm(hsm) => hsm.pin_file(),
            Self::Tpm2(token) => token.pin_file(),
        }
    }

    /// The environment the agent process needs to see this token.
    pub fn env(&self) -> Vec<(String, String)> {
        let pairs = match self {
            Self::SoftHsm(hsm) => hsm.env(),
            Self::Tpm2(token) => token.env(),
        };
        pairs
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect()
    }

    /// Starts an agent with the software backend and a pkcs11 backend for `module`, `label` and
    /// `pin_file`, in this token's environment.
    pub fn agent(&self, module: &Path, label: &str, pin_file: &Path) -> Result<AgentProcess> {
        self.agent_with_env(module, label, pin_file, &[])
    }

    /// [`Self::agent`] with `extra` added to the environment.
    pub fn agent_with_env(
        &self,
        module: &Path,
        label: &str,
        pin_file: &Path,
        extra: &[(String, String)],
    ) -> Result<AgentProcess> {
        let config = format!(
            "[backends.software]\nenabled = true\n[backends.pkcs11]\nmodule_path = {:?}\n\
             token_label = {:?}\npin_file = {:?}\n",
            module.display().to_string(),
            label,
            pin_file.display().to_string(),
        );
        let mut env = self.env();
        env.extend_from_slice(extra);
        AgentProcess::start_with(&config, &refs(&env))
    }

    /// An agent configured for this token with its correct PIN file.
    pub fn correct_agent(&self) -> Result<AgentProcess> {
        self.agent(self.module_path(), self.label(), self.pin_file())
    }
}

/// A PIN file the test can rewrite: the agent reads it when it needs to log in.
#[derive(Debug)]
pub struct PinFile {
    dir: TempDir,
}

impl PinFile {
    /// A 0600 file holding `pin`.
    pub fn new(pin: &str) -> Result<Self> {
        let file = Self {
            dir: tempfile::tempdir()?,
        };
        file.set(pin)?;
        Ok(file)
    }

    /// Replaces the PIN.
    pub fn set(&self, pin: &str) -> Result<()> {
        let path = self.path();
        if path.exists() {
            std::fs::remove_file(&path)?;
        }
        write_private(&path, format!("{pin}\n").as_bytes())
    }

    /// Where it is.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("user.pin")
    }
}

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Restarts the agent (SIGTERM, start) in the token's environment plus `extra`.
fn restart(agent: &mut AgentProcess, token: &Token, extra: &[(String, String)]) -> Result<()> {
    let mut env = token.env();
    env.extend_from_slice(extra);
    tokio::task::block_in_place(|| agent.restart(&refs(&env)))
}

/// OpenSC's logging pass-through module between the agent and the token's module: it records
/// every PKCS#11 call, so a test can count the agent's `C_Login`s.
#[derive(Debug)]
pub struct Spy {
    dir: TempDir,
}

impl Spy {
    /// Where Debian's opensc package puts it.
    pub const MODULE: &'static str = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so";

    /// A spy with an empty log.
    pub fn new() -> Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
        })
    }

    /// The environment that makes the spy load `token`'s module and log to its file.
    pub fn env(&self, token: &Token) -> Vec<(String, String)> {
        vec![
            (
                "PKCS11SPY".into(),
                token.module_path().display().to_string(),
            ),
            ("PKCS11SPY_OUTPUT".into(), self.log().display().to_string()),
        ]
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("spy.log")
    }

    /// `C_Login` calls logged so far, by every process that used the spy.
    pub fn logins(&self) -> Result<usize> {
        let text = match std::fs::read_to_string(self.log()) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(text
            .lines()
            .filter(|line| line.trim_end().ends_with("C_Login"))
            .count())
    }
}

fn backend<'a>(
    status: &'a StatusResponse,
    name: &str,
) -> Result<&'a hwsign_proto::api::BackendStatus> {
    status
        .backends
        .iter()
        .find(|b| b.name == name)
        .with_context(|| format!("no {name} backend in {status:?}"))
}

fn expect_code<T: std::fmt::Debug>(
    result: Result<T, ClientError>,
    code: AgentErrorCode,
    status: u16,
) -> Result<()> {
    match result {
        Err(ClientError::Agent {
            code: got,
            status: got_status,
            ..
        }) if got == code && got_status == status => Ok(()),
        other => bail!("expected {status} {code}, got {other:?}"),
    }
}

/// Signs a request with `key_id` through the client library and has the API verify it; returns
/// what the API established.
async fn verified(
    client: &AgentClient,
    server: &ApiServer,
    key_id: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<serde_json::Value> {
    let signer = Signer::new(client.clone(), key_id, AUDIENCE);
    let request = http::Request::builder()
        .method(method)
        .uri(server.url(path))
        .header("content-type", "application/json")
        .body(body.to_vec())?;
    let request = signed(&signer, request).await?;
    let response = send(server, &request).await?;
    ensure!(
        response.status == 200,
        "{method} {path} refused: {} {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    let json = response.json()?;
    ensure!(json["key_id"] == key_id, "wrong principal: {json}");
    Ok(json)
}

/// The software backend of the same agent creates a key whose signatures the API accepts.
async fn software_still_serves(agent: &AgentProcess, server: &ApiServer) -> Result<()> {
    let client = agent.client();
    let (key_id, public) = create_key(&client, "software", "bystander").await?;
    server.register(&public, KeyLevel::Software)?;
    let json = verified(&client, server, &key_id, "GET", "/bystander", b"").await?;
    ensure!(json["level"] == "software");
    ensure!(backend(&client.status().await?, "software")?.available);
    Ok(())
}

/// Create a key on the token through the agent API, sign GET and POST requests with it, have
/// the verifier accept them at level `hardware-unattested`, read the token's claims from the
/// attestation endpoint, and find and use the key again after an agent restart.
pub async fn signs_end_to_end(token: &Token) -> Result<()> {
    let mut agent = token.correct_agent()?;
    let server = ApiServer::start().await?;
    let client = agent.client();
    let pkcs11 = backend(&client.status().await?, "pkcs11")?.clone();
    ensure!(pkcs11.available, "{pkcs11:?}\n{}", agent.log());

    let key = client.create_key("pkcs11", "e2e").await?;
    ensure!(key.backend == "pkcs11" && key.level == KeyLevel::HardwareUnattested);
    let (key_id, public) = (
        key.id.clone(),
        hwsign_proto::PublicKey::from_spki_pem(&key.public_key_pem)?,
    );
    ensure!(public.key_id() == key_id);
    server.register(&public, KeyLevel::HardwareUnattested)?;

    let json = verified(&client, &server, &key_id, "GET", "/v1/things?a=1", b"").await?;
    ensure!(json["level"] == "hardware-unattested", "{json}");
    let body = br#"{"hello":"token"}"#;
    let json = verified(&client, &server, &key_id, "POST", "/v1/things", body).await?;
    ensure!(json["level"] == "hardware-unattested" && json["body_len"] == body.len());

    // The same signed request twice: the second is a replay, whoever made the signature.
    let signer = Signer::new(client.clone(), key_id.clone(), AUDIENCE);
    let once = signed(
        &signer,
        http::Request::get(server.url("/once")).body(Vec::new())?,
    )
    .await?;
    ensure!(send(&server, &once).await?.status == 200);
    let replay = send(&server, &once).await?;
    ensure!(
        replay.status == 401 && crate::refusal_code(&replay).as_deref() == Some("replayed_nonce")
    );

    // A request changed after the token signed it does not verify.
    let mut moved = signed(
        &signer,
        http::Request::get(server.url("/here")).body(Vec::new())?,
    )
    .await?;
    *moved.uri_mut() = server.url("/there").parse()?;
    let refused = send(&server, &moved).await?;
    ensure!(
        refused.status == 401
            && crate::refusal_code(&refused).as_deref() == Some("signature_invalid"),
        "tampered request: {} {:?}",
        refused.status,
        crate::refusal_code(&refused)
    );

    let attestation = client.attestation(&key_id, NONCE).await?;
    ensure!(attestation.key_id == key_id);
    ensure!(attestation.level == KeyLevel::HardwareUnattested);
    let Evidence::Pkcs11Claims(claims) = &attestation.evidence else {
        bail!("expected token claims, got {:?}", attestation.evidence);
    };
    ensure!(claims.claims_not_proof);
    ensure!(claims.local == Some(true), "{claims:?}");
    ensure!(claims.never_extractable == Some(true), "{claims:?}");
    ensure!(claims.always_sensitive == Some(true), "{claims:?}");
    ensure!(claims.token_label == token.label(), "{claims:?}");
    ensure!(!claims.manufacturer.is_empty() && !claims.model.is_empty());
    // On the wire, the marker is there for readers that do not use these types.
    let raw = agent_raw::get(
        agent.socket(),
        &format!("/v1/keys/{key_id}/attestation?nonce={NONCE}"),
    )
    .await?;
    ensure!(raw.status == 200);
    let evidence = &raw.json()?["evidence"];
    ensure!(evidence["kind"] == "pkcs11-claims" && evidence["claims_not_proof"] == true);

    software_still_serves(&agent, &server).await?;

    restart(&mut agent, token, &[])?;
    let client = agent.client();
    let listed = client.list_keys().await?;
    ensure!(
        listed
            .iter()
            .any(|k| k.id == key_id && k.backend == "pkcs11"),
        "pkcs11 key not listed after restart: {listed:?}"
    );
    let json = verified(&client, &server, &key_id, "GET", "/after-restart", b"").await?;
    ensure!(json["level"] == "hardware-unattested");
    Ok(())
}

/// A wrong PIN file: key creation and signing with a token key answer `pin_incorrect` (403),
/// and the token sees that PIN once however often it is asked (pkcs11-spy counts `C_Login`), so
/// the agent never burns the token's retry counter; status reports the backend unavailable
/// because of the PIN, the software backend keeps serving, and once the file holds the right PIN
/// the same agent signs with the token key again.
pub async fn wrong_pin(token: &Token, correct_pin: &str) -> Result<()> {
    let pin = PinFile::new(correct_pin)?;
    let spy = Spy::new()?;
    let spy_env = spy.env(token);
    let module = Path::new(Spy::MODULE);
    let mut agent = token.agent_with_env(module, token.label(), &pin.path(), &spy_env)?;
    let server = ApiServer::start().await?;
    let (key_id, public) = create_key(&agent.client(), "pkcs11", "before").await?;
    server.register(&public, KeyLevel::HardwareUnattested)?;

    let correct_logins = spy.logins()?;
    ensure!(correct_logins >= 1, "pkcs11-spy logged no C_Login");
    pin.set("999999")?;
    // The agent logged in with the right PIN before; a new process presents the file's PIN.
    restart(&mut agent, token, &spy_env)?;
    let client = agent.client();
    for _ in 0..3 {
        expect_code(
            client.create_key("pkcs11", "refused").await,
            AgentErrorCode::PinIncorrect,
            403,
        )?;
        let signer = Signer::new(client.clone(), key_id.clone(), AUDIENCE);
        let mut request = http::Request::get(server.url("/pin")).body(Vec::new())?;
        expect_code(
            signer.sign_request(&mut request).await,
            AgentErrorCode::PinIncorrect,
            403,
        )?;
    }
    let pkcs11 = backend(&client.status().await?, "pkcs11")?.clone();
    ensure!(!pkcs11.available, "{pkcs11:?}");
    ensure!(
        pkcs11.detail.as_deref().unwrap_or_default().contains("PIN"),
        "{pkcs11:?}"
    );
    software_still_serves(&agent, &server).await?;
    let wrong_logins = spy.logins()? - correct_logins;
    ensure!(
        wrong_logins == 1,
        "the wrong PIN was presented {wrong_logins} times"
    );

    pin.set(correct_pin)?;
    let json = verified(&client, &server, &key_id, "GET", "/pin-fixed", b"").await?;
    ensure!(json["level"] == "hardware-unattested");
    ensure!(backend(&client.status().await?, "pkcs11")?.available);
    ensure!(
        spy.logins()? == correct_logins + 2,
        "the corrected PIN was not presented once"
    );
    Ok(())
}

/// A token that reports its user PIN locked: `pin_locked` (403), reported in status; the
/// software backend keeps serving.
pub async fn locked_pin(token: &Token) -> Result<()> {
    let agent = token.correct_agent()?;
    let server = ApiServer::start().await?;
    let client = agent.client();
    expect_code(
        client.create_key("pkcs11", "locked").await,
        AgentErrorCode::PinLocked,
        403,
    )?;
    let pkcs11 = backend(&client.status().await?, "pkcs11")?.clone();
    ensure!(!pkcs11.available, "{pkcs11:?}");
    ensure!(
        pkcs11
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("locked"),
        "{pkcs11:?}"
    );
    software_still_serves(&agent, &server).await
}

/// A configured token label that no slot carries: `backend_unavailable` (503) naming the label
/// in status; the software backend keeps serving.
pub async fn absent_token(token: &Token) -> Result<()> {
    let agent = token.agent(token.module_path(), ABSENT_LABEL, token.pin_file())?;
    let server = ApiServer::start().await?;
    let client = agent.client();
    expect_code(
        client.create_key("pkcs11", "nowhere").await,
        AgentErrorCode::BackendUnavailable,
        503,
    )?;
    let pkcs11 = backend(&client.status().await?, "pkcs11")?.clone();
    ensure!(!pkcs11.available, "{pkcs11:?}");
    ensure!(
        pkcs11
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains(ABSENT_LABEL),
        "{pkcs11:?}"
    );
    software_still_serves(&agent, &server).await
}

/// A module path where no module is: the agent starts anyway, reports pkcs11 unavailable in
/// status, answers `backend_unavailable` (503) for it, and serves software keys.
pub async fn missing_module(token: &Token) -> Result<()> {
    let agent = token.agent(Path::new(MISSING_MODULE), token.label(), token.pin_file())?;
    let server = ApiServer::start().await?;
    let client = agent.client();
    let pkcs11 = backend(&client.status().await?, "pkcs11")?.clone();
    ensure!(!pkcs11.available, "{pkcs11:?}");
    ensure!(
        pkcs11
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("libvendor-pkcs11.so"),
        "{pkcs11:?}"
    );
    expect_code(
        client.create_key("pkcs11", "no-module").await,
        AgentErrorCode::BackendUnavailable,
        503,
    )?;
    software_still_serves(&agent, &server).await?;
    ensure!(
        client
            .list_keys()
            .await?
            .iter()
            .all(|k| k.backend == "software"),
        "keys listed from a missing module"
    );
    Ok(())
}
