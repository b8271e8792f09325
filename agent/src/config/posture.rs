//! `[posture]`: where the agent reads the device's posture (`GET /v1/posture`).

use std::path::PathBuf;

use serde::Deserialize;

/// `[posture]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostureConfig {
    /// D-Bus address of the bus UDisks2, logind, fwupd and hostname1 are on (default: the
    /// system bus, `DBUS_SYSTEM_BUS_ADDRESS` or `/run/dbus/system_bus_socket`).
    pub bus: Option<String>,
    /// Reported as `managed`: set by whoever manages this configuration (an MDM, a
    /// configuration management run). Left out: `managed` is unknown.
    pub managed: Option<bool>,
    /// The os-release file `os_version` (`VERSION_ID`) is read from.
    pub os_release: PathBuf,
    /// Milliseconds the whole collection may take; sources not answered by then are unknown.
    pub timeout_ms: u64,
}

impl Default for PostureConfig {
    fn default() -> Self {
        Self {
            bus: None,
            managed: None,
            os_release: PathBuf::from("/etc/os-release"),
            timeout_ms: 3000,
        }
    }
}
