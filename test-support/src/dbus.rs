//! A private `dbus-daemon` for tests (tpm2-abrmd's bus, the posture stand-ins' bus).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A `dbus-daemon --session` on a socket in a temp dir, killed on drop.
#[derive(Debug)]
pub struct PrivateBus {
    /// The bus address (`unix:path=…,guid=…`).
    pub address: String,
    pid: Pid,
}

impl PrivateBus {
    /// Starts the daemon with its socket in `dir`.
    pub fn start(dir: &Path) -> Result<Self> {
        let socket = dir.join("bus");
        // --fork returns once the daemon listens, so the printed address is ready to use.
        let output = Command::new("dbus-daemon")
            .arg("--session")
            .arg(format!("--address=unix:path={}", socket.display()))
            .args([
                "--fork",
                "--nopidfile",
                "--print-address=1",
                "--print-pid=1",
            ])
            .stdin(Stdio::null())
            .output()
            .context("running dbus-daemon (Debian package dbus)")?;
        if !output.status.success() {
            bail!(
                "dbus-daemon failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut lines = stdout.lines();
        let address = lines
            .next()
            .context("dbus-daemon printed no address")?
            .to_owned();
        let pid: i32 = lines
            .next()
            .context("dbus-daemon printed no pid")?
            .trim()
            .parse()
            .context("dbus-daemon pid")?;
        Ok(Self {
            address,
            pid: Pid::from_raw(pid),
        })
    }
}

impl PrivateBus {
    /// `NameHasOwner(name)` on this bus, through `dbus-send` (package dbus-bin).
    pub fn has_owner(&self, name: &str) -> Result<bool> {
        let output = Command::new("dbus-send")
            .args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
            ])
            .arg(format!("string:{name}"))
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .stdin(Stdio::null())
            .output()
            .context("running dbus-send")?;
        if !output.status.success() {
            bail!(
                "dbus-send NameHasOwner failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).contains("boolean true"))
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        // The daemon forked away from us, so it cannot be waited for; it exits on SIGTERM.
        let _ = kill(self.pid, Signal::SIGTERM);
    }
}
