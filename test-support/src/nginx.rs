//! A private nginx terminating TLS on loopback: its own configuration, pid file, logs and temp
//! directories in a temp dir, a self-signed certificate made with `openssl`, stopped on drop.
//! Nothing of the system's nginx (its configuration, its service) is used.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tempfile::TempDir;

use crate::ports::free_tcp_port;

/// How long nginx may take to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A self-signed certificate and its key, PEM files in a temp dir.
#[derive(Debug)]
pub struct SelfSignedCert {
    dir: TempDir,
}

impl SelfSignedCert {
    /// A P-256 certificate for `dns_name` (and 127.0.0.1), valid for a day, made by `openssl req`.
    pub fn generate(dns_name: &str) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("hwsign-cert-").tempdir()?;
        let output = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
            ])
            .arg(format!("/CN={dns_name}"))
            .arg("-addext")
            .arg(format!("subjectAltName=DNS:{dns_name},IP:127.0.0.1"))
            // A server certificate, not a CA (rustls refuses a CA as the end entity).
            .args([
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-addext",
                "keyUsage=digitalSignature",
                "-addext",
                "extendedKeyUsage=serverAuth",
            ])
            .arg("-keyout")
            .arg(dir.path().join("key.pem"))
            .arg("-out")
            .arg(dir.path().join("cert.pem"))
            .stdin(Stdio::null())
            .output()
            .context("running openssl (install openssl)")?;
        if !output.status.success() {
            bail!(
                "openssl req failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(Self { dir })
    }

    /// The certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// The private key (PEM, PKCS#8).
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
}

/// A running nginx.
#[derive(Debug)]
pub struct Nginx {
    dir: TempDir,
    child: Option<Child>,
    addr: SocketAddr,
}

impl Nginx {
    /// Starts nginx listening with TLS (`cert`) on a free loopback port, passing every request to
    /// `http://{upstream}` with `locations` (extra directives inside `location /`, e.g.
    /// `proxy_set_header` lines) after the defaults: HTTP/1.1 upstream, no buffering either way.
    pub fn start_tls_proxy(
        cert: &SelfSignedCert,
        upstream: SocketAddr,
        location: &str,
    ) -> Result<Self> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .context("nginx not found (install nginx)")?;
        let dir = tempfile::Builder::new().prefix("hwsign-nginx-").tempdir()?;
        let port = free_tcp_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let path = |name: &str| dir.path().join(name).display().to_string();
        for sub in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.path().join(sub))?;
        }
        // As root, nginx's workers switch to an unprivileged user; keep them root here so they
        // can use the temp dir (the test owns everything in it, and nginx listens on loopback).
        let user = if nix::unistd::geteuid().is_root() {
            "user root;\n"
        } else {
            ""
        };
        let config = format!(
            "{user}worker_processes 1;
daemon off;
master_process on;
pid {pid};
error_log {error_log} info;
events {{ worker_connections 256; }}
http {{
    access_log {access_log};
    client_body_temp_path {client_body};
    proxy_temp_path {proxy};
    fastcgi_temp_path {fastcgi};
    uwsgi_temp_path {uwsgi};
    scgi_temp_path {scgi};
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name _;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
            proxy_request_buffering off;
{location}
        }}
    }}
}}
",
            pid = path("nginx.pid"),
            error_log = path("error.log"),
            access_log = path("access.log"),
            client_body = path("client_body"),
            proxy = path("proxy"),
            fastcgi = path("fastcgi"),
            uwsgi = path("uwsgi"),
            scgi = path("scgi"),
            cert = cert.cert().display(),
            key = cert.key().display(),
        );
        let config_path = dir.path().join("nginx.conf");
        std::fs::write(&config_path, config)?;
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&config_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let mut nginx = Self {
            dir,
            child: Some(child),
            addr,
        };
        nginx.wait_ready()?;
        Ok(nginx)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("nginx exited with {status}: {}", self.log());
            }
            if TcpStream::connect(self.addr).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "nginx did not listen within {READY_TIMEOUT:?}: {}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where it listens (TLS).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The error log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT is nginx's graceful stop; SIGKILL after a short wait.
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGQUIT,
                );
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
