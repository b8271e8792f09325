//! End-to-end harness: the real `hwsign-agent` binary (spawned with its own config, state dir and
//! socket in a temp dir), and a real axum API protected by the real verifier on 127.0.0.1.
//! Requests are written to the server as raw HTTP/1.1 bytes, so tests control every header —
//! including the duplicate and malformed ones a client library would refuse to produce.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod agent_raw;
pub mod browser;
pub mod fleet;
pub mod http_raw;
pub mod openai_api;
pub mod pkcs11_e2e;
pub mod proxy;
pub mod resources;
pub mod sdk;
pub mod tls_front;
pub mod tpm;
pub mod wait;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use hwsign_client::{AgentClient, Signer};
use hwsign_proto::PublicKey;
use hwsign_proto::api::KeyLevel;
use hwsign_verifier::{
    HwsignLayer, KeyRegistry, MemoryRegistry, MemoryReplayCache, RegisteredKey, VerifiedDevice,
    Verifier, VerifierConfig,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub use http_raw::{RawResponse, send_raw, to_raw};

/// The audience the test API answers to.
pub const AUDIENCE: &str = "e2e-api";

/// A running `hwsign-agent` process, stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct AgentProcess {
    dir: TempDir,
    child: Option<Child>,
    socket: PathBuf,
    config_path: PathBuf,
}

impl AgentProcess {
    /// An agent with the software backend.
    pub fn start() -> Result<Self> {
        Self::start_with("[backends.software]\nenabled = true\n", &[])
    }

    /// An agent whose config has `extra_toml` appended (backend sections, limits, rules) and
    /// whose environment has `env` added.
    pub fn start_with(extra_toml: &str, env: &[(&str, &str)]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("hwsign-e2e-").tempdir()?;
        let socket = dir.path().join("run/agent.sock");
        let state = dir.path().join("state");
        let config_path = dir.path().join("agent.toml");
        let config = format!(
            "socket_path = {:?}\nstate_dir = {:?}\n{extra_toml}",
            socket.display().to_string(),
            state.display().to_string()
        );
        std::fs::write(&config_path, config)?;
        let mut agent = Self {
            dir,
            child: None,
            socket,
            config_path,
        };
        agent.spawn(env)?;
        Ok(agent)
    }

    fn spawn(&mut self, env: &[(&str, &str)]) -> Result<()> {
        let binary = hwsign_test_support::binaries::bin_path("hwsign-agent")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))?;
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .env("TSS2_LOG", "all+none")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().context("spawning hwsign-agent")?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("hwsign-agent exited with {status}; log:\n{}", self.log());
                }
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "hwsign-agent did not listen within 30 s; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The temp dir everything lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client for this agent.
    pub fn client(&self) -> AgentClient {
        AgentClient::new(&self.socket)
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, wait for exit (SIGKILL after 15 s); returns whether it exited successfully.
    pub fn stop(&mut self) -> Result<bool> {
        match self.child.take() {
            Some(mut child) => stop_child(&mut child, Duration::from_secs(15)),
            None => Ok(true),
        }
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the agent again with the same config and state.
    pub fn restart(&mut self, env: &[(&str, &str)]) -> Result<()> {
        self.stop()?;
        self.spawn(env)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Stops a child: SIGTERM, then SIGKILL after `grace`; whether it exited successfully.
pub(crate) fn stop_child(child: &mut Child, grace: Duration) -> Result<bool> {
    let pid = Pid::from_raw(i32::try_from(child.id())?);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM to `child`, wait for its exit (SIGKILL after 15 s); whether it exited successfully.
pub fn terminate(mut child: Child) -> Result<bool> {
    stop_child(&mut child, Duration::from_secs(15))
}

/// Creates a key on the agent and returns it with its public key.
pub async fn create_key(
    agent: &AgentClient,
    backend: &str,
    label: &str,
) -> Result<(String, PublicKey)> {
    let key = agent.create_key(backend, label).await?;
    let public = PublicKey::from_spki_pem(&key.public_key_pem)?;
    anyhow::ensure!(
        public.key_id() == key.id,
        "agent's key id does not match its public key"
    );
    Ok((key.id, public))
}

/// A verifier-protected API on 127.0.0.1. Every route answers with what the verifier established
/// and what the handler received, as JSON.
#[derive(Debug)]
pub struct ApiServer {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Its key registry.
    pub registry: Arc<MemoryRegistry>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ApiServer {
    /// Starts the API with the default verifier config for [`AUDIENCE`].
    pub async fn start() -> Result<Self> {
        Self::start_with(VerifierConfig::any_host(AUDIENCE)).await
    }

    /// Starts the API with `config`, whose `hosts` is replaced by the server's own address (the
    /// port is only known once bound): the API serves exactly `127.0.0.1:<port>`.
    pub async fn start_with(mut config: VerifierConfig) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        config.hosts = vec![addr.to_string()];
        let (registry, verifier) = memory_verifier(config)?;
        let app = Router::new()
            .fallback(echo)
            .layer(HwsignLayer::new(verifier));
        let shutdown = serve_until_shutdown(listener, app);
        Ok(Self {
            addr,
            registry,
            shutdown: Some(shutdown),
        })
    }

    /// Registers a public key at `level`.
    pub fn register(&self, public: &PublicKey, level: KeyLevel) -> Result<()> {
        self.registry
            .add(RegisteredKey::new(public.clone(), "e2e key", level, 0))?;
        Ok(())
    }

    /// `host:port` for the Host header.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// `http://host:port{path_and_query}`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A verifier with `config`, an empty in-memory registry (returned, to register keys in) and an
/// in-memory replay cache.
pub fn memory_verifier(config: VerifierConfig) -> Result<(Arc<MemoryRegistry>, Arc<Verifier>)> {
    let registry = Arc::new(MemoryRegistry::new());
    let verifier = Arc::new(Verifier::new(
        config,
        Arc::clone(&registry) as Arc<dyn KeyRegistry>,
        Arc::new(MemoryReplayCache::new(100_000)),
    )?);
    Ok((registry, verifier))
}

/// Serves `app` on `listener` in a task, until the returned sender is used or dropped.
pub fn serve_until_shutdown(
    listener: tokio::net::TcpListener,
    app: Router,
) -> tokio::sync::oneshot::Sender<()> {
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    shutdown
}

async fn echo(device: VerifiedDevice, request: Request) -> axum::Json<serde_json::Value> {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let principal = device.0;
    axum::Json(serde_json::json!({
        "key_id": principal.key_id,
        "level": principal.level.as_str(),
        "device_id": principal.device_id,
        "delegated": principal.delegated,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "body_sha256": hex::encode(Sha256::digest(&body)),
        "body_len": body.len(),
    }))
}

/// Signs `request` (absolute URL) with the agent and returns it ready to send.
pub async fn signed(
    signer: &Signer,
    mut request: http::Request<Vec<u8>>,
) -> Result<http::Request<Vec<u8>>> {
    signer.sign_request(&mut request).await?;
    Ok(request)
}

/// Sends a request to `server` as raw HTTP/1.1 and parses the answer.
pub async fn send(server: &ApiServer, request: &http::Request<Vec<u8>>) -> Result<RawResponse> {
    send_raw(server.addr, &to_raw(request)?).await
}

/// Checks that `response` is a refusal with `status` and wire `code` (header and body agree).
pub fn expect_refusal(response: &RawResponse, status: u16, code: &str) -> Result<()> {
    anyhow::ensure!(
        response.status == status && refusal_code(response).as_deref() == Some(code),
        "expected {status} {code}, got {} {:?}: {}",
        response.status,
        response.header("www-authenticate"),
        String::from_utf8_lossy(&response.body)
    );
    Ok(())
}

/// The `error` code of a refusal, from `WWW-Authenticate: HWS1 error="…"`; checks the JSON body
/// names the same code.
pub fn refusal_code(response: &RawResponse) -> Option<String> {
    let header = response.header("www-authenticate")?;
    // `HWS1 error="<code>"`, possibly followed by parameters (`, nonce="…"`).
    let (code, _) = header.strip_prefix("HWS1 error=\"")?.split_once('"')?;
    let code = code.to_owned();
    let body: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
    (body["error"]["code"] == code.as_str()).then_some(code)
}
