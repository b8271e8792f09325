//! The `hwsign proxy` process for the `proxy_*` tests: the real binary, started with its
//! command line against a real agent, stopped (SIGTERM) on drop; and curl, run as a caller.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

/// A running `hwsign proxy`.
#[derive(Debug)]
pub struct ProxyProcess {
    child: Option<Child>,
    dir: TempDir,
    /// Where it listens: `127.0.0.1:<port>` or `unix:<path>`.
    pub listen: String,
}

impl ProxyProcess {
    /// Starts `hwsign --socket <agent> proxy --listen <listen> <args>` and waits until it
    /// accepts connections.
    pub fn start(agent_socket: &Path, listen: &str, args: &[String]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("hwsign-proxy-").tempdir()?;
        let log = std::fs::File::create(dir.path().join("proxy.log"))?;
        let child = Command::new(hwsign_test_support::binaries::bin_path("hwsign")?)
            .arg("--socket")
            .arg(agent_socket)
            .args(["proxy", "--listen", listen])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning hwsign proxy")?;
        let mut proxy = Self {
            child: Some(child),
            dir,
            listen: listen.to_owned(),
        };
        proxy.wait_ready()?;
        Ok(proxy)
    }

    /// A loopback TCP address that was free a moment ago.
    pub fn free_listen() -> Result<String> {
        Ok(format!(
            "127.0.0.1:{}",
            hwsign_test_support::ports::free_tcp_port()?
        ))
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("hwsign proxy exited with {status}; log:\n{}", self.log());
                }
            }
            let ready = match self.listen.strip_prefix("unix:") {
                Some(path) => Path::new(path).exists(),
                None => std::net::TcpStream::connect(&self.listen).is_ok(),
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "hwsign proxy did not listen within 30 s; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://<listen><path>` (TCP only).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// A temp dir beside the proxy, for files a test writes.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// SIGTERM, and whether it exited successfully within 15 s.
    pub fn stop(&mut self) -> Result<bool> {
        match self.child.take() {
            Some(child) => crate::terminate(child),
            None => Ok(true),
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// What curl printed: the status (`-w '%{http_code}'` on the last line) and the body.
#[derive(Debug)]
pub struct CurlOutput {
    /// HTTP status (0 when no answer).
    pub status: u16,
    /// The body.
    pub body: String,
    /// curl's stderr.
    pub stderr: String,
}

impl CurlOutput {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("curl body is not JSON ({}): {}", self.status, self.body))
    }
}

/// Runs `curl -sS <args>` and returns the status and body.
pub fn curl(args: &[&str]) -> Result<CurlOutput> {
    let output: Output = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-w", "\n%{http_code}"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running curl (apt-get install curl)")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", stdout.as_str()));
    Ok(CurlOutput {
        status: status.trim().parse().unwrap_or(0),
        body: body.to_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}
