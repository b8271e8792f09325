//! The real `hwsign-agent` release binary as a child process: its configuration, readiness (it
//! answers `GET /v1/status`), resident memory, and a clean stop (SIGTERM).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use hwsign_client::AgentClient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long the agent may take to start (a TPM backend connects and creates its SRK).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to drain and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Poll interval while waiting for the socket to answer or the process to exit.
const POLL: Duration = Duration::from_millis(10);

/// A running agent.
#[derive(Debug)]
pub(crate) struct AgentProcess {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

impl AgentProcess {
    /// Starts `binary` with its state, socket and log under `dir`, `backends` being the TOML of
    /// its `[backends.*]` sections, and waits until it answers.
    pub(crate) async fn start(binary: &Path, dir: &Path, backends: &str) -> Result<Self> {
        let socket = dir.join("run").join("agent.sock");
        let state = dir.join("state");
        let log = dir.join("agent.log");
        let config = dir.join("agent.toml");
        let uid = nix::unistd::geteuid().as_raw();
        std::fs::write(
            &config,
            format!(
                "socket_path = {socket:?}\nstate_dir = {state:?}\naudit_log = {audit:?}\n\
                 allowed_uids = [{uid}]\nmax_connections = 128\n{backends}\n",
                audit = state.join("audit.jsonl"),
            ),
        )?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            .env("TSS2_LOG", "all+none")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut agent = Self {
            child: Some(child),
            socket,
            log,
        };
        agent.wait_ready().await?;
        Ok(agent)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let client = AgentClient::new(&self.socket);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("the agent exited ({status}): {}", self.log_tail());
            }
            if self.socket.exists() && client.status().await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the agent did not answer in time: {}", self.log_tail());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Its socket.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// Resident memory (VmRSS), KiB.
    pub(crate) fn rss_kib(&self) -> Result<u64> {
        let pid = self.child.as_ref().context("agent not running")?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .context("no VmRSS in /proc/PID/status")
    }

    /// CPU time (user + system) the agent has used so far.
    pub(crate) fn cpu_seconds(&self) -> Result<f64> {
        let pid = self.child.as_ref().context("agent not running")?.id();
        process_cpu_seconds(&pid.to_string())
    }

    /// The last lines of its log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// SIGTERM, then waits for the exit (the TPM connection is released only then).
    pub(crate) fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        kill(pid, Signal::SIGTERM)?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                bail!("the agent did not stop on SIGTERM");
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// User + system CPU seconds of process `pid` (`self` for this process), from /proc.
pub(crate) fn process_cpu_seconds(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').context("malformed /proc/PID/stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11)
        .zip(fields.get(12))
        .and_then(|(u, s)| Some(u.parse::<u64>().ok()? + s.parse::<u64>().ok()?))
        .context("no utime/stime in /proc/PID/stat")?;
    let per_second =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.context("CLK_TCK unknown")?;
    Ok(ticks as f64 / per_second as f64)
}
