//! The fleet harness: real `hwsign-verifier serve` processes in front of a real Python upstream
//! (tests/fleet/upstream.py), sharing one key registry, with the replay cache a parameter
//! (`memory` today: one cache per replica; a shared `redis://` URL once the fleet stores land).
//! Every process lives in a temp dir on loopback and is stopped on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use hwsign_proto::PublicKey;
use hwsign_proto::api::KeyLevel;
use hwsign_test_support::binaries::bin_path;
use hwsign_test_support::ports::free_tcp_port;
use hwsign_verifier::{KeyRegistry, RegisteredKey, SqliteRegistry};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::http_raw::{RawResponse, exchange, send_raw};

/// The authority every replica serves: clients sign `http(s)://api.fleet.test/...` and connect
/// to a replica's (or nginx's) address, as behind a load balancer. Each replica also serves its
/// own listen address as a host, for clients that request `http://127.0.0.1:PORT/...` directly.
pub const FLEET_HOST: &str = "api.fleet.test";

/// How long a process may take to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The Python upstream.
#[derive(Debug)]
pub struct PythonUpstream {
    child: Option<Child>,
    port: u16,
}

impl PythonUpstream {
    /// Starts it on a free port.
    pub fn start() -> Result<Self> {
        Self::start_on(0)
    }

    /// Starts it on `port` (0: any free one).
    pub fn start_on(port: u16) -> Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fleet/upstream.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting python3 (install python3)")?;
        let stdout = child.stdout.take().context("upstream stdout")?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        let Some(port) = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
        else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("upstream did not start (said {line:?})");
        };
        Ok(Self {
            child: Some(child),
            port,
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it (the port is then refused: nothing listens).
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Opens the SSE gate `name` (directly, not through the proxy).
    pub async fn release(&self, name: &str) -> Result<()> {
        let response = http_get(self.addr(), &format!("/release?gate={name}")).await?;
        ensure!(
            response.status == 200,
            "release failed: {}",
            response.status
        );
        Ok(())
    }
}

impl Drop for PythonUpstream {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// TLS files for a replica's own HTTPS listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Key (PEM).
    pub key: PathBuf,
}

/// What a replica is started with.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// `sqlite:PATH` (shared by the replicas) or `memory`.
    pub registry: String,
    /// `memory`, or the shared cache's URL.
    pub replay_cache: String,
    /// The upstream, `http://127.0.0.1:PORT`.
    pub upstream: String,
    /// CIDR blocks whose `X-Forwarded-*` are believed.
    pub trusted_proxies: Vec<String>,
    /// Serve HTTPS itself.
    pub tls: Option<TlsFiles>,
    /// TOML appended to the top-level fields (before any section).
    pub top_extra: String,
    /// TOML appended inside `[verifier]` (route rules as `[[verifier.route_rules]]` go in
    /// `extra_sections`).
    pub verifier_extra: String,
    /// TOML sections appended at the end.
    pub extra_sections: String,
}

impl ServeSettings {
    /// A replica in front of `upstream` with the registry and replay cache given.
    pub fn new(registry: &str, replay_cache: &str, upstream: SocketAddr) -> Self {
        Self {
            registry: registry.to_owned(),
            replay_cache: replay_cache.to_owned(),
            upstream: format!("http://{upstream}"),
            trusted_proxies: vec!["127.0.0.1/32".to_owned()],
            tls: None,
            top_extra: String::new(),
            verifier_extra: String::new(),
            extra_sections: String::new(),
        }
    }

    fn toml(&self, listen: SocketAddr, admin: SocketAddr) -> String {
        let tls = self.tls.as_ref().map_or_else(String::new, |tls| {
            format!(
                "[tls]\ncert = {:?}\nkey = {:?}\n",
                tls.cert.display().to_string(),
                tls.key.display().to_string()
            )
        });
        format!(
            "listen = \"{listen}\"
upstream = {upstream:?}
registry = {registry:?}
replay_cache = {replay:?}
trusted_proxies = {trusted:?}
{top_extra}

[limits]
shutdown_grace_secs = 5
upstream_connect_timeout_secs = 2
upstream_timeout_secs = 20

[admin]
listen = \"{admin}\"

{tls}
[verifier]
audience = {audience:?}
hosts = [{host:?}, \"{listen}\"]
max_body_bytes = 65536
{verifier_extra}
{extra}
",
            upstream = self.upstream,
            registry = self.registry,
            replay = self.replay_cache,
            trusted = self.trusted_proxies,
            top_extra = self.top_extra,
            audience = crate::AUDIENCE,
            host = FLEET_HOST,
            verifier_extra = self.verifier_extra,
            extra = self.extra_sections,
        )
    }
}

/// A running `hwsign-verifier serve`.
#[derive(Debug)]
pub struct ServeProcess {
    dir: TempDir,
    child: Option<Child>,
    /// The main listener.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
}

impl ServeProcess {
    /// Writes the configuration for `settings` and starts the binary; returns once `/healthz`
    /// answers.
    pub async fn start(settings: &ServeSettings) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("hwsign-serve-").tempdir()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?));
        let config = dir.path().join("serve.toml");
        std::fs::write(&config, settings.toml(addr, admin))?;
        let log = std::fs::File::create(dir.path().join("serve.log"))?;
        let child = Command::new(bin_path("hwsign-verifier")?)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting hwsign-verifier serve")?;
        let mut serve = Self {
            dir,
            child: Some(child),
            addr,
            admin,
        };
        serve.wait_healthy().await?;
        Ok(serve)
    }

    async fn wait_healthy(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("serve exited with {status}; log:\n{}", self.log());
            }
            if let Ok(response) = http_get(self.admin, "/healthz").await
                && response.status == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "serve not healthy within {READY_TIMEOUT:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// `GET path` on the admin listener.
    pub async fn admin_get(&self, path: &str) -> Result<RawResponse> {
        http_get(self.admin, path).await
    }

    /// The value of one metrics series (`name{labels}` exactly as exposed), 0 when absent.
    pub async fn metric(&self, series: &str) -> Result<f64> {
        let response = self.admin_get("/metrics").await?;
        ensure!(response.status == 200, "metrics: {}", response.status);
        let text = String::from_utf8(response.body)?;
        Ok(text
            .lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0))
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&self) -> Result<()> {
        if let Some(child) = &self.child {
            kill(Pid::from_raw(i32::try_from(child.id())?), Signal::SIGTERM)?;
        }
        Ok(())
    }

    /// Whether the process has exited, and how: `None` while it runs.
    pub fn exit_status(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => Ok(None),
        }
    }

    /// SIGTERM and wait (SIGKILL after 15 s); whether it exited successfully.
    pub fn stop(&mut self) -> Result<bool> {
        match self.child.take() {
            Some(mut child) => crate::stop_child(&mut child, Duration::from_secs(15)),
            None => Ok(true),
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Replicas of `serve` sharing one registry file, each with the replay cache URL given.
#[derive(Debug)]
pub struct Fleet {
    dir: TempDir,
    /// The replicas.
    pub replicas: Vec<ServeProcess>,
}

impl Fleet {
    /// `count` replicas in front of `upstream`, sharing `sqlite:DIR/keys.db`, with
    /// `replay_cache` (`memory`: one per replica), each adjusted by `adjust`.
    pub async fn start(
        count: usize,
        replay_cache: &str,
        upstream: SocketAddr,
        adjust: impl Fn(&mut ServeSettings),
    ) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("hwsign-fleet-").tempdir()?;
        let registry = format!("sqlite:{}", dir.path().join("keys.db").display());
        Self::start_in(dir, count, &registry, replay_cache, upstream, adjust).await
    }

    /// `count` replicas in front of `upstream` sharing the registry at `registry` (e.g. a
    /// `postgres://` URL), with `replay_cache`, each adjusted by `adjust`.
    pub async fn start_on(
        count: usize,
        registry: &str,
        replay_cache: &str,
        upstream: SocketAddr,
        adjust: impl Fn(&mut ServeSettings),
    ) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("hwsign-fleet-").tempdir()?;
        Self::start_in(dir, count, registry, replay_cache, upstream, adjust).await
    }

    async fn start_in(
        dir: TempDir,
        count: usize,
        registry: &str,
        replay_cache: &str,
        upstream: SocketAddr,
        adjust: impl Fn(&mut ServeSettings),
    ) -> Result<Self> {
        let mut settings = ServeSettings::new(registry, replay_cache, upstream);
        adjust(&mut settings);
        let mut replicas = Vec::with_capacity(count);
        for _ in 0..count {
            replicas.push(ServeProcess::start(&settings).await?);
        }
        Ok(Self { dir, replicas })
    }

    /// The shared registry file.
    pub fn registry_path(&self) -> PathBuf {
        self.dir.path().join("keys.db")
    }

    /// Registers `public` at `level` in the shared registry.
    pub fn register(&self, public: &PublicKey, level: KeyLevel) -> Result<()> {
        let registry: Arc<dyn KeyRegistry> = Arc::new(SqliteRegistry::open(&self.registry_path())?);
        registry.add(RegisteredKey::new(public.clone(), "fleet key", level, 0))?;
        Ok(())
    }
}

/// `GET path` over plain HTTP/1.1 with `Host: 127.0.0.1`.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<RawResponse> {
    send_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

/// Writes `bytes` to `addr` over TLS (trusting only `ca`, checking the name `server_name`) and
/// reads the whole response.
pub async fn send_raw_tls(
    addr: SocketAddr,
    server_name: &str,
    ca: &Path,
    bytes: &[u8],
) -> Result<RawResponse> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from(server_name.to_owned())?;
    tokio::time::timeout(Duration::from_secs(30), async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        exchange(connector.connect(name, tcp).await?, bytes).await
    })
    .await
    .context("TLS response timed out")?
}
