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
    use std::os::unix::fs::PermissionsExt as _;
    // Installed 0640 root:hwsign; a checkout may be group-writable, which the agent refuses.
    let dir = tempfile::tempdir()?;
    let installed = dir.path().join("agent.toml");
    std::fs::copy(units_dir("system").join("agent.toml"), &installed)?;
    std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o640))?;
    let output = Command::new(env!("CARGO_BIN_EXE_hwsign-agent"))
        .arg("--config")
        .arg(&installed)
        .arg("--check-config")
        .output()?;
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn readme() -> Result<String> {
    Ok(std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )?)
}

/// The README's system install, the units' comments and the units agree: the binary path, the
/// configuration's owner and mode (readable by the service's group), a configuration directory
/// the service user can enter, and a socket directory group members can reach before the
/// agent's first start.
#[test]
fn newuser_system_install_steps_agree_with_the_units() -> Result<()> {
    let readme = readme()?;
    let socket = std::fs::read_to_string(units_dir("system").join("hwsign-agent.socket"))?;
    let service = std::fs::read_to_string(units_dir("system").join("hwsign-agent.service"))?;
    let tmpfiles = std::fs::read_to_string(units_dir("system").join("hwsign.tmpfiles.conf"))?;

    // Every systemd/system file the README installs exists.
    for line in readme.lines().filter(|l| l.starts_with("install ")) {
        for word in line.split_whitespace() {
            if let Some(name) = word.strip_prefix("systemd/system/") {
                ensure!(
                    units_dir("system").join(name).exists(),
                    "README installs missing {word}"
                );
            }
        }
    }
    // The binary the units run is where the README puts it.
    ensure!(service.contains(&format!("ExecStart={INSTALLED_BINARY} ")));
    ensure!(readme.contains(&format!("~/.cargo/bin/hwsign-agent {INSTALLED_BINARY}")));
    // Configuration: root-owned, group hwsign may read; the same line in both places.
    let config_line = "install -m640 -o root -g hwsign";
    ensure!(readme.contains(&format!(
        "{config_line} systemd/system/agent.toml /etc/hwsign/agent.toml"
    )));
    ensure!(socket.contains(&format!("{config_line} agent.toml /etc/hwsign/agent.toml")));
    ensure!(
        service
            .lines()
            .any(|l| l == "ConfigurationDirectoryMode=0755"),
        "the service user could not enter /etc/hwsign"
    );
    ensure!(service.lines().any(|l| l == "User=hwsign"));
    // The socket directory exists from boot with the owner and group the agent accepts.
    ensure!(
        socket
            .lines()
            .any(|l| l == "ListenStream=/run/hwsign/agent.sock")
    );
    ensure!(socket.lines().any(|l| l == "SocketGroup=hwsign"));
    ensure!(
        tmpfiles
            .lines()
            .any(|l| l == "d /run/hwsign 0750 hwsign hwsign -"),
        "{tmpfiles}"
    );
    ensure!(readme.contains("systemd/system/hwsign.tmpfiles.conf /etc/tmpfiles.d/hwsign.conf"));
    // The steps a user needs: allowed_uids, the socket group, the TPM group.
    for step in ["allowed_uids", "usermod -aG hwsign", "usermod -aG tss"] {
        ensure!(readme.contains(step), "README lacks {step}");
    }
    Ok(())
}
