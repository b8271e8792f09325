//! A private swtpm for each test: manufactured with EK certificates from swtpm's local CA (all
//! in a temp dir), served over loopback TCP (tss-esapi 7 cannot reach a Unix-socket swtpm),
//! killed on drop. Restart keeps the state and the port, like a rebooted TPM.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tempfile::TempDir;

/// How long swtpm may take to open its sockets.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running (or stopped) swtpm.
#[derive(Debug)]
pub struct Swtpm {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl Swtpm {
    /// Manufactures a TPM (EK certificates RSA-2048 and P-384) and starts it.
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        manufacture(dir.path())?;
        let mut tpm = Self {
            dir,
            port: 0,
            child: None,
        };
        // A free port pair can be taken by someone else between probing and binding: retry.
        let mut last_error = None;
        for _ in 0..5 {
            tpm.port = free_port_pair()?;
            match tpm.launch() {
                Ok(()) => return Ok(tpm),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("swtpm did not start")))
    }

    /// TCTI string for this TPM.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The local CA's root certificate (PEM).
    pub fn ca_root_pem(&self) -> PathBuf {
        self.dir.path().join("ca/swtpm-localca-rootca-cert.pem")
    }

    /// The local CA's intermediate certificate (PEM) that signed the EK certificates.
    pub fn ca_intermediate_pem(&self) -> PathBuf {
        self.dir.path().join("ca/issuercert.pem")
    }

    /// A scratch directory that lives as long as the TPM.
    pub fn scratch(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }

    /// Kills swtpm (like pulling the TPM away); its state stays.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Stops and starts again with the same state on the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch()
    }

    fn launch(&mut self) -> Result<()> {
        let state = self.dir.path().join("state");
        let log = std::fs::File::create(self.dir.path().join("swtpm.log"))?;
        let mut child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", self.port))
            .arg("--ctrl")
            .arg(format!(
                "type=tcp,port={},bindaddr=127.0.0.1",
                self.port + 1
            ))
            .arg("--flags")
            .arg("not-need-init,startup-clear")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting swtpm")?;
        // Ready when the control port accepts; the data port is left alone because swtpm
        // serves a single client there.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(self.dir.path().join("swtpm.log"))?;
                bail!("swtpm exited with {status}: {log}");
            }
            if TcpStream::connect(("127.0.0.1", self.port + 1)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("swtpm did not open its sockets");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// swtpm_setup with a local CA whose files all live in `dir`.
fn manufacture(dir: &Path) -> Result<()> {
    let ca = dir.join("ca");
    let state = dir.join("state");
    let certs = dir.join("ek-certs");
    for d in [&ca, &state, &certs, &dir.join("scratch")] {
        std::fs::create_dir_all(d)?;
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

/// A port P with P+1 also free (swtpm's data and control ports).
fn free_port_pair() -> Result<u16> {
    for _ in 0..50 {
        let first = TcpListener::bind(("127.0.0.1", 0))?;
        let port = first.local_addr()?.port();
        if port == u16::MAX {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port pair")
}

/// Transient handles in the TPM, listed by tpm2_getcap over a fresh connection (the backend
/// must have been dropped: swtpm serves one client at a time).
pub fn transient_handles_via_tools(tcti: &str) -> Result<String> {
    let output = Command::new("tpm2_getcap")
        .args(["-T", tcti, "handles-transient"])
        .env("TSS2_LOG", "all+none")
        .output()?;
    if !output.status.success() {
        bail!(
            "tpm2_getcap failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}
