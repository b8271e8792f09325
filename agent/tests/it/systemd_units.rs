//! The unit files in `systemd/` pass `systemd-analyze verify` without a single warning (user and
//! system pairs), the system unit stays hardened, and the shipped system configuration is valid.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, ensure};

const INSTALLED_BINARY: &str = "/usr/local/bin/hwsign-agent";

fn units_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../systemd")
        .join(kind)
}

/// Copies the unit pair into a temp dir with ExecStart pointing at the freshly built binary
/// (verify insists that the command exists), and runs `systemd-analyze [--user] verify`.
fn verify(kind: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    for name in ["hwsign-agent.socket", "hwsign-agent.service"] {
        let text = std::fs::read_to_string(units_dir(kind).join(name))?;
        ensure!(kind != "system" || name.ends_with(".socket") || text.contains(INSTALLED_BINARY));
        let text = text.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_hwsign-agent"));
        std::fs::write(dir.path().join(name), text)?;
    }
    let mut command = Command::new("systemd-analyze");
    if kind == "user" {
        // A user manager needs a runtime directory to resolve %t.
        command.arg("--user").env("XDG_RUNTIME_DIR", dir.path());
    }
    let output = command
        .args([
            "verify",
            "--man=no",
            "./hwsign-agent.socket",
            "./hwsign-agent.service",
        ])
        .current_dir(dir.path())
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.success(), "{kind}: {stderr}");
    ensure!(
        stderr.trim().is_empty(),
        "{kind} units have warnings: {stderr}"
    );
    Ok(())
}

#[test]
fn user_units_verify() -> Result<()> {
    verify("user")
}

#[test]
fn system_units_verify() -> Result<()> {
    verify("system")
}

#[test]
fn unit_settings_that_matter() -> Result<()> {
    let user_socket = std::fs::read_to_string(units_dir("user").join("hwsign-agent.socket"))?;
    for line in [
        "ListenStream=%t/hwsign/agent.sock",
        "SocketMode=0600",
        "DirectoryMode=0700",
    ] {
        ensure!(
            user_socket.lines().any(|l| l == line),
            "user socket lacks {line}"
        );
    }
    let user_service = std::fs::read_to_string(units_dir("user").join("hwsign-agent.service"))?;
    ensure!(user_service.lines().any(|l| l == "Type=notify"));
    let system = std::fs::read_to_string(units_dir("system").join("hwsign-agent.service"))?;
    for line in [
        "Type=notify",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "StateDirectory=hwsign",
        "RuntimeDirectory=hwsign",
        "RuntimeDirectoryPreserve=yes",
        "RestrictAddressFamilies=AF_UNIX",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "DeviceAllow=/dev/tpmrm0 rw",
        "SupplementaryGroups=tss",
    ] {
        ensure!(
            system.lines().any(|l| l == line),
            "system service lacks {line}"
        );
    }
    Ok(())
}

#[test]
#[cfg(feature = "software")]
fn the_system_configuration_is_valid() -> Result<()> {
    let output = Command::new(env!("CARGO_BIN_EXE_hwsign-agent"))
        .arg("--config")
        .arg(units_dir("system").join("agent.toml"))
        .arg("--check-config")
        .output()?;
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
