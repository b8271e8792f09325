//! STAND-IN D-Bus services for posture tests, on a real private `dbus-daemon`: the real
//! UDisks2, logind, fwupd and hostname1 cannot run here (no udev, no block devices, no seats,
//! no firmware), so these stand-ins implement only the documented properties the agent reads,
//! under the real bus names, object paths and interface names:
//!
//! - `org.freedesktop.UDisks2`: `org.freedesktop.DBus.ObjectManager` at
//!   `/org/freedesktop/UDisks2`; block objects with `org.freedesktop.UDisks2.Filesystem`
//!   (`MountPoints`) and `org.freedesktop.UDisks2.Block` (`CryptoBackingDevice`).
//! - `org.freedesktop.login1`: `/org/freedesktop/login1/user/self`
//!   (`org.freedesktop.login1.User.Display`) and the session it names
//!   (`org.freedesktop.login1.Session.LockedHint`).
//! - `org.freedesktop.fwupd`: `/` (`org.freedesktop.fwupd.HostSecurityId`).
//! - `org.freedesktop.hostname1`: `/org/freedesktop/hostname1`
//!   (`OperatingSystemPrettyName`, `KernelRelease`).

use anyhow::{Context as _, Result};
use zbus::zvariant::OwnedObjectPath;

use crate::dbus::PrivateBus;

/// What the stand-ins report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandInPosture {
    /// Whether `/` is the cleartext side of an encrypted block device.
    pub root_encrypted: bool,
    /// The session's `LockedHint`.
    pub session_locked: bool,
    /// fwupd's `HostSecurityId`.
    pub host_security_id: String,
    /// hostname1's `OperatingSystemPrettyName`.
    pub os_pretty_name: String,
    /// hostname1's `KernelRelease`.
    pub kernel_release: String,
}

impl Default for StandInPosture {
    fn default() -> Self {
        Self {
            root_encrypted: true,
            session_locked: true,
            host_security_id: "HSI:2 (v1.9.16)".to_owned(),
            os_pretty_name: "Debian GNU/Linux 12 (bookworm) [stand-in]".to_owned(),
            kernel_release: "6.1.0-stand-in".to_owned(),
        }
    }
}

struct Filesystem {
    mount_points: Vec<Vec<u8>>,
}

#[zbus::interface(name = "org.freedesktop.UDisks2.Filesystem")]
impl Filesystem {
    #[zbus(property)]
    fn mount_points(&self) -> Vec<Vec<u8>> {
        self.mount_points.clone()
    }
}

struct Block {
    crypto_backing_device: OwnedObjectPath,
}

#[zbus::interface(name = "org.freedesktop.UDisks2.Block")]
impl Block {
    #[zbus(property)]
    fn crypto_backing_device(&self) -> OwnedObjectPath {
        self.crypto_backing_device.clone()
    }
}

struct User {
    session: OwnedObjectPath,
}

#[zbus::interface(name = "org.freedesktop.login1.User")]
impl User {
    #[zbus(property)]
    fn display(&self) -> (String, OwnedObjectPath) {
        ("c1".to_owned(), self.session.clone())
    }
}

struct Session {
    locked: bool,
}

#[zbus::interface(name = "org.freedesktop.login1.Session")]
impl Session {
    #[zbus(property)]
    fn locked_hint(&self) -> bool {
        self.locked
    }
}

struct Fwupd {
    host_security_id: String,
}

#[zbus::interface(name = "org.freedesktop.fwupd")]
impl Fwupd {
    #[zbus(property)]
    fn host_security_id(&self) -> String {
        self.host_security_id.clone()
    }
}

struct Hostname1 {
    pretty_name: String,
    kernel_release: String,
}

#[zbus::interface(name = "org.freedesktop.hostname1")]
impl Hostname1 {
    #[zbus(property)]
    fn operating_system_pretty_name(&self) -> String {
        self.pretty_name.clone()
    }

    #[zbus(property)]
    fn kernel_release(&self) -> String {
        self.kernel_release.clone()
    }
}

fn path(text: &str) -> Result<OwnedObjectPath> {
    OwnedObjectPath::try_from(text).with_context(|| format!("object path {text}"))
}

/// The stand-ins on their own private bus; the bus stops when this is dropped.
#[derive(Debug)]
pub struct PostureStandIns {
    _connection: zbus::Connection,
    bus: PrivateBus,
    _dir: tempfile::TempDir,
}

impl PostureStandIns {
    /// Starts a private `dbus-daemon` and serves the stand-ins reporting `posture` on it.
    pub async fn start(posture: &StandInPosture) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("hwsign-posture-bus-")
            .tempdir()?;
        let bus = PrivateBus::start(dir.path())?;
        let udisks = "/org/freedesktop/UDisks2";
        let root_block = "/org/freedesktop/UDisks2/block_devices/dm_2d0";
        let boot_block = "/org/freedesktop/UDisks2/block_devices/sda1";
        let session = "/org/freedesktop/login1/session/c1";
        let backing = if posture.root_encrypted {
            "/org/freedesktop/UDisks2/block_devices/sda2"
        } else {
            "/"
        };
        let connection = zbus::connection::Builder::address(bus.address.as_str())?
            .name("org.freedesktop.UDisks2")?
            .name("org.freedesktop.login1")?
            .name("org.freedesktop.fwupd")?
            .name("org.freedesktop.hostname1")?
            .serve_at(udisks, zbus::fdo::ObjectManager)?
            // /boot: not encrypted, and not the one that counts.
            .serve_at(
                boot_block,
                Filesystem {
                    mount_points: vec![b"/boot\0".to_vec()],
                },
            )?
            .serve_at(
                boot_block,
                Block {
                    crypto_backing_device: path("/")?,
                },
            )?
            .serve_at(
                root_block,
                Filesystem {
                    mount_points: vec![b"/\0".to_vec()],
                },
            )?
            .serve_at(
                root_block,
                Block {
                    crypto_backing_device: path(backing)?,
                },
            )?
            .serve_at(
                "/org/freedesktop/login1/user/self",
                User {
                    session: path(session)?,
                },
            )?
            .serve_at(
                session,
                Session {
                    locked: posture.session_locked,
                },
            )?
            .serve_at(
                "/",
                Fwupd {
                    host_security_id: posture.host_security_id.clone(),
                },
            )?
            .serve_at(
                "/org/freedesktop/hostname1",
                Hostname1 {
                    pretty_name: posture.os_pretty_name.clone(),
                    kernel_release: posture.kernel_release.clone(),
                },
            )?
            .build()
            .await
            .context("serving the posture stand-ins")?;
        Ok(Self {
            _connection: connection,
            bus,
            _dir: dir,
        })
    }

    /// The bus address, for the agent's `[posture] bus`.
    pub fn address(&self) -> &str {
        &self.bus.address
    }
}
