//! A private swtpm per test: manufactured by `swtpm_setup` with RSA-2048 and ECC P-384 EK
//! certificates from swtpm's local CA, every file (TPM state, CA keys, logs) in one temp dir,
//! killed on drop. Restart keeps the state, like a rebooted machine; a snapshot of the state can
//! be restored later, like an attacker rolling a TPM back.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tempfile::TempDir;

use crate::ports::free_tcp_port_pair;

/// How long swtpm may take to open its sockets.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Poll interval while waiting for the control socket.
const READY_POLL: Duration = Duration::from_millis(10);
/// How long the shutdown command may wait (a client holding the connection blocks it).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// ESYS logs expected TPM errors to stderr; children of tests stay quiet.
const TSS2_LOG: &str = "all+none";

/// How clients reach the TPM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// `SOCK` and `SOCK.ctrl` in the temp dir (tpm2-tools; `swtpm:path=`).
    Unix,
    /// Loopback TCP, data port P and control port P+1 (tss-esapi 7 only speaks TCP to swtpm).
    Tcp(u16),
}

/// A manufactured swtpm, running unless stopped.
#[derive(Debug)]
pub struct Swtpm {
    dir: TempDir,
    transport: Transport,
    child: Option<Child>,
}

/// A copy of a TPM's persistent state.
#[derive(Debug)]
pub struct StateSnapshot {
    dir: TempDir,
}

impl Swtpm {
    /// Manufactures a TPM and serves it on a Unix socket.
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        manufacture(dir.path())?;
        let mut tpm = Self {
            dir,
            transport: Transport::Unix,
            child: None,
        };
        tpm.launch()?;
        Ok(tpm)
    }

    /// Manufactures a TPM and serves it on loopback TCP.
    pub fn start_tcp() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        manufacture(dir.path())?;
        let mut tpm = Self {
            dir,
            transport: Transport::Tcp(0),
            child: None,
        };
        // A free port pair can be taken between probing and binding: retry with another.
        let mut last_error = None;
        for _ in 0..5 {
            tpm.transport = Transport::Tcp(free_tcp_port_pair()?);
            match tpm.launch() {
                Ok(()) => return Ok(tpm),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("swtpm did not start")))
    }

    /// The TCTI configuration string for this TPM.
    pub fn tcti(&self) -> String {
        match self.transport {
            Transport::Unix => format!("swtpm:path={}", self.socket_path().display()),
            Transport::Tcp(port) => format!("swtpm:host=127.0.0.1,port={port}"),
        }
    }

    /// The local CA's root certificate (PEM): the trust anchor for this TPM's EK certificates.
    pub fn ca_root_pem(&self) -> PathBuf {
        self.dir.path().join("ca/swtpm-localca-rootca-cert.pem")
    }

    /// The local CA's intermediate certificate (PEM) that signed the EK certificates.
    pub fn ca_intermediate_pem(&self) -> PathBuf {
        self.dir.path().join("ca/issuercert.pem")
    }

    /// Where `swtpm_setup` wrote the EK certificates (`ek-rsa2048.crt`, `ek-secp384r1.crt`, DER).
    pub fn ek_cert_dir(&self) -> PathBuf {
        self.dir.path().join("ek-certs")
    }

    /// A scratch directory that lives as long as the TPM.
    pub fn scratch(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }

    /// swtpm's stdout and stderr, for diagnostics.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("swtpm.log")
    }

    /// A tpm2-tools command (`tpm2_quote`, ...) aimed at this TPM, quiet on expected errors.
    pub fn tool(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("TPM2TOOLS_TCTI", self.tcti())
            .env("TSS2_LOG", TSS2_LOG)
            .stdin(Stdio::null());
        command
    }

    /// True while the swtpm process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Shuts the TPM down the way an operating system does (TPM2_Shutdown(CLEAR), so its clock
    /// stays `safe`), then ends swtpm; the state stays. If a client holds swtpm's only
    /// connection, the shutdown command cannot get through and this is a power cut instead.
    pub fn stop(&mut self) -> Result<()> {
        if self.child.is_some() {
            // Best effort by design: see above.
            let _ = self.send_shutdown();
        }
        self.power_off()
    }

    /// Kills swtpm without TPM2_Shutdown, like pulling the power: the state stays, and the
    /// next attestations report the clock as not `safe` until the TPM saves it again.
    pub fn power_off(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // Already exited is fine: the point is that it no longer runs.
            let _ = child.kill();
            child.wait()?;
        }
        Ok(())
    }

    /// Stops and starts again with the same state on the same socket or port (a reboot: the
    /// TPM's resetCount goes up).
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch()
    }

    /// Sends TPM2_Shutdown(TPM_SU_CLEAR) on the data channel and waits for the response.
    fn send_shutdown(&self) -> Result<()> {
        // tag TPM_ST_NO_SESSIONS, size 12, TPM_CC_Shutdown, TPM_SU_CLEAR.
        const SHUTDOWN_CLEAR: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x45, 0, 0];
        let timeout = Some(SHUTDOWN_TIMEOUT);
        let mut response = [0u8; 10];
        match self.transport {
            Transport::Unix => {
                let mut stream = UnixStream::connect(self.socket_path())?;
                stream.set_read_timeout(timeout)?;
                stream.set_write_timeout(timeout)?;
                stream.write_all(&SHUTDOWN_CLEAR)?;
                stream.read_exact(&mut response)?;
            }
            Transport::Tcp(port) => {
                let mut stream = TcpStream::connect(("127.0.0.1", port))?;
                stream.set_read_timeout(timeout)?;
                stream.set_write_timeout(timeout)?;
                stream.write_all(&SHUTDOWN_CLEAR)?;
                stream.read_exact(&mut response)?;
            }
        }
        if response[6..10] != [0, 0, 0, 0] {
            bail!("TPM2_Shutdown failed: {}", hex_bytes(&response[6..10]));
        }
        Ok(())
    }

    /// Copies the persistent state (NV, keys, counters) as it is now.
    pub fn snapshot_state(&self) -> Result<StateSnapshot> {
        let snapshot = tempfile::tempdir()?;
        copy_files(&self.state_dir(), snapshot.path())?;
        Ok(StateSnapshot { dir: snapshot })
    }

    /// Stops the TPM, replaces its state with `snapshot`, and starts it again.
    pub fn restore_state(&mut self, snapshot: &StateSnapshot) -> Result<()> {
        self.stop()?;
        let state = self.state_dir();
        for entry in std::fs::read_dir(&state)? {
            let path = entry?.path();
            if path.is_file() && path.file_name().is_some_and(|n| n != ".lock") {
                std::fs::remove_file(&path)?;
            }
        }
        copy_files(snapshot.dir.path(), &state)?;
        self.launch()
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn socket_path(&self) -> PathBuf {
        self.dir.path().join("tpm.sock")
    }

    fn control_path(&self) -> PathBuf {
        self.dir.path().join("tpm.sock.ctrl")
    }

    fn launch(&mut self) -> Result<()> {
        let (server, control) = match self.transport {
            Transport::Unix => {
                // Stale sockets from a killed run would make the readiness probe lie.
                for path in [self.socket_path(), self.control_path()] {
                    if path.exists() {
                        std::fs::remove_file(&path)?;
                    }
                }
                (
                    format!("type=unixio,path={}", self.socket_path().display()),
                    format!("type=unixio,path={}", self.control_path().display()),
                )
            }
            Transport::Tcp(port) => (
                format!("type=tcp,port={port},bindaddr=127.0.0.1"),
                format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
            ),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", self.state_dir().display()))
            .arg("--server")
            .arg(server)
            .arg("--ctrl")
            .arg(control)
            .arg("--flags")
            .arg("not-need-init,startup-clear")
            .env("TSS2_LOG", TSS2_LOG)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting swtpm")?;
        // Ready when the control socket accepts; the data socket is left alone because swtpm
        // serves one client at a time there.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                bail!("swtpm exited with {status}: {log}");
            }
            if self.control_accepts() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("swtpm did not open its sockets within {READY_TIMEOUT:?}");
            }
            std::thread::sleep(READY_POLL);
        }
        self.child = Some(child);
        Ok(())
    }

    fn control_accepts(&self) -> bool {
        match self.transport {
            Transport::Unix => UnixStream::connect(self.control_path()).is_ok(),
            Transport::Tcp(port) => TcpStream::connect(("127.0.0.1", port + 1)).is_ok(),
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Runs `swtpm_setup` with a local CA whose files all live in `dir`.
fn manufacture(dir: &Path) -> Result<()> {
    let ca = dir.join("ca");
    let state = dir.join("state");
    let certs = dir.join("ek-certs");
    for path in [&ca, &state, &certs, &dir.join("scratch")] {
        std::fs::create_dir_all(path)?;
    }
    let localca_conf = dir.join("swtpm-localca.conf");
    std::fs::write(
        &localca_conf,
        format!(
            "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\n\
             certserial = {ca}/certserial\n",
            ca = ca.display()
        ),
    )?;
    let options = dir.join("swtpm-localca.options");
    std::fs::write(
        &options,
        "--platform-manufacturer hwsign-test\n--platform-version 2.1\n--platform-model swtpm\n",
    )?;
    let setup_conf = dir.join("swtpm_setup.conf");
    std::fs::write(
        &setup_conf,
        format!(
            "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\n\
             create_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
            localca_conf.display(),
            options.display()
        ),
    )?;
    let output = Command::new("swtpm_setup")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(&state)
        .arg("--config")
        .arg(&setup_conf)
        .arg("--create-ek-cert")
        .arg("--create-platform-cert")
        .arg("--pcr-banks")
        .arg("sha256")
        .arg("--write-ek-cert-files")
        .arg(&certs)
        .env("TSS2_LOG", TSS2_LOG)
        // swtpm_setup keeps its scratch files under TMPDIR: keep them in ours.
        .env("TMPDIR", dir)
        .stdin(Stdio::null())
        .output()
        .context("running swtpm_setup")?;
    if !output.status.success() {
        bail!(
            "swtpm_setup failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn hex_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies the regular files of `from` into `to` (TPM state dirs are flat).
fn copy_files(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        let Some(name) = path.file_name() else {
            continue;
        };
        if path.is_file() && name != ".lock" {
            std::fs::copy(&path, to.join(name))
                .with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}
