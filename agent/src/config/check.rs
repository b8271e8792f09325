//! `hwsign-agent --check-config`: what start-up would refuse or warn about, found without
//! starting (nothing is created, bound or loaded). [`crate::Config::load`] already checked the
//! file itself; this checks the environment it names: directory owners and modes, the PKCS#11
//! module and PIN file, the TPM's TCTI and device.

use std::path::Path;

use super::Config;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Start-up would fail.
    Error,
    /// Start-up would succeed but log a warning, or a backend would be unavailable.
    Warning,
}

/// One thing `--check-config` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong and where.
    pub message: String,
}

impl Finding {
    fn error(message: String) -> Self {
        Self {
            severity: Severity::Error,
            message,
        }
    }

    #[cfg_attr(not(feature = "pkcs11"), allow(dead_code))]
    fn warning(message: String) -> Self {
        Self {
            severity: Severity::Warning,
            message,
        }
    }
}

/// Checks what start-up checks beyond the file's content. An empty list: start-up would find
/// nothing wrong with these.
pub fn check_environment(config: &Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    check_existing_dir(&mut findings, "state_dir", &config.state_dir, None);
    if let Some(parent) = config.audit_log.parent() {
        check_existing_dir(&mut findings, "audit_log directory", parent, None);
    }
    if let Some(parent) = config.socket_path.parent() {
        check_existing_dir(
            &mut findings,
            "socket directory",
            parent,
            config.socket_group,
        );
    }
    #[cfg(feature = "pkcs11")]
    if let Some(pkcs11) = &config.backends.pkcs11 {
        check_pkcs11(&mut findings, pkcs11);
    }
    #[cfg(feature = "tpm")]
    if let Some(tpm) = &config.backends.tpm {
        check_tpm(&mut findings, tpm);
    }
    findings
}

/// A directory start-up would create (0700) if missing, and refuse if it exists with the wrong
/// owner or mode.
fn check_existing_dir(findings: &mut Vec<Finding>, what: &str, dir: &Path, group: Option<u32>) {
    match std::fs::metadata(dir) {
        Ok(meta) => {
            if let Err(e) = crate::fsutil::check_dir(dir, &meta, group) {
                findings.push(Finding::error(format!("{what}: {e}")));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => findings.push(Finding::error(format!(
            "{what} {}: cannot inspect: {e}",
            dir.display()
        ))),
    }
}

/// Start-up opens the PKCS#11 backend "deferred": a missing module, token or PIN leaves it
/// unavailable (a warning in the log) instead of stopping the agent.
#[cfg(feature = "pkcs11")]
fn check_pkcs11(findings: &mut Vec<Finding>, pkcs11: &crate::backends::pkcs11::Pkcs11Config) {
    use std::os::unix::fs::PermissionsExt as _;

    if let Err(e) = crate::backends::pkcs11::check_module(&pkcs11.module_path) {
        findings.push(Finding::warning(format!(
            "[backends.pkcs11] would start unavailable: {}",
            crate::error_chain(&e)
        )));
    }
    if let Err(e) = pkcs11.check_pin_source() {
        findings.push(Finding::warning(format!(
            "[backends.pkcs11] would start unavailable: {}",
            crate::error_chain(&e)
        )));
    } else if let Ok(path) = pkcs11.pin_path() {
        if let Ok(meta) = std::fs::metadata(&path) {
            if crate::fsutil::is_exposed(&meta) {
                findings.push(Finding::warning(format!(
                    "[backends.pkcs11] PIN file {} is readable or writable by group or others \
                     (mode {:o}); use mode 0600",
                    path.display(),
                    meta.permissions().mode() & 0o7777
                )));
            }
        }
    }
}

/// Start-up parses the TCTI and connects to the TPM; either failing stops the agent.
#[cfg(feature = "tpm")]
fn check_tpm(findings: &mut Vec<Finding>, tpm: &crate::backends::tpm::TpmConfig) {
    if let Err(e) = crate::backends::tpm::tcti::parse_tcti(&tpm.tcti) {
        findings.push(Finding::error(format!(
            "[backends.tpm] tcti: {}",
            crate::error_chain(&e)
        )));
        return;
    }
    let device = match tpm.tcti.split_once(':') {
        Some(("device", path)) => Some(path),
        None if tpm.tcti == "device" => Some("/dev/tpmrm0"),
        _ => None,
    };
    if let Some(device) = device {
        if let Err(e) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(device)
        {
            findings.push(Finding::error(format!(
                "[backends.tpm] cannot open {device} for reading and writing: {e} (is the \
                 agent's user in the device's group, usually `tss`?)"
            )));
        }
    }
}
