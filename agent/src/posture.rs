//! The device's posture, read over D-Bus (zbus) on demand (`GET /v1/posture`; design brief §8):
//! disk encryption of `/` (UDisks2), the user's session lock (logind `LockedHint`), firmware
//! security (fwupd `HostSecurityId`), OS name and kernel (hostname1), OS version (os-release),
//! and the configured `managed` flag. A source that is missing, refuses or does not answer in
//! time is reported unknown (`None`), never guessed. Every value is a claim by software; the
//! quote that binds the report proves where and when it was made, not that it is true.

use std::collections::HashMap;
use std::time::Duration;

use hwsign_proto::posture::{MAX_POSTURE_STRING, Posture};
use zbus::Connection;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

use crate::config::PostureConfig;

const UDISKS2: &str = "org.freedesktop.UDisks2";
const UDISKS2_PATH: &str = "/org/freedesktop/UDisks2";
const UDISKS2_FILESYSTEM: &str = "org.freedesktop.UDisks2.Filesystem";
const UDISKS2_BLOCK: &str = "org.freedesktop.UDisks2.Block";

#[zbus::proxy(
    interface = "org.freedesktop.login1.User",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1/user/self"
)]
trait Login1User {
    /// The user's graphical session: (id, object path).
    #[zbus(property)]
    fn display(&self) -> zbus::Result<(String, OwnedObjectPath)>;
}

#[zbus::proxy(
    interface = "org.freedesktop.login1.Session",
    default_service = "org.freedesktop.login1"
)]
trait Login1Session {
    #[zbus(property)]
    fn locked_hint(&self) -> zbus::Result<bool>;
}

#[zbus::proxy(
    interface = "org.freedesktop.fwupd",
    default_service = "org.freedesktop.fwupd",
    default_path = "/"
)]
trait Fwupd {
    #[zbus(property)]
    fn host_security_id(&self) -> zbus::Result<String>;
}

#[zbus::proxy(
    interface = "org.freedesktop.hostname1",
    default_service = "org.freedesktop.hostname1",
    default_path = "/org/freedesktop/hostname1"
)]
trait Hostname1 {
    #[zbus(property)]
    fn operating_system_pretty_name(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn kernel_release(&self) -> zbus::Result<String>;
}

/// Collects the posture; never fails (what cannot be read is unknown).
pub(crate) async fn collect(config: &PostureConfig) -> Posture {
    let mut posture = Posture {
        managed: config.managed,
        os_version: os_version(&config.os_release),
        ..Posture::default()
    };
    let timeout = Duration::from_millis(config.timeout_ms);
    let collected = tokio::time::timeout(timeout, async {
        let connection = match connect(config).await {
            Ok(connection) => connection,
            Err(error) => {
                tracing::info!(%error, "posture: no D-Bus connection; bus facts unknown");
                return;
            }
        };
        posture.disk_encrypted = logged("UDisks2", root_encrypted(&connection).await);
        posture.screen_lock = logged("logind", session_locked(&connection).await);
        posture.firmware_hsi = logged("fwupd", host_security_level(&connection).await);
        let hostname = Hostname1Proxy::builder(&connection)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await;
        if let Ok(hostname) = hostname {
            posture.os_name = logged(
                "hostname1",
                hostname.operating_system_pretty_name().await.map(text),
            )
            .flatten();
            posture.kernel =
                logged("hostname1", hostname.kernel_release().await.map(text)).flatten();
        }
    })
    .await;
    if collected.is_err() {
        tracing::warn!(
            ?timeout,
            "posture: D-Bus sources did not answer in time; unknown"
        );
    }
    posture
}

async fn connect(config: &PostureConfig) -> zbus::Result<Connection> {
    match &config.bus {
        Some(address) => {
            zbus::connection::Builder::address(address.as_str())?
                .build()
                .await
        }
        None => Connection::system().await,
    }
}

fn logged<T>(source: &str, result: zbus::Result<T>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::info!(source, %error, "posture: source unavailable; unknown");
            None
        }
    }
}

/// A string fact within bounds and without control characters, else unknown.
fn text(value: String) -> Option<String> {
    (!value.is_empty() && value.len() <= MAX_POSTURE_STRING && !value.chars().any(char::is_control))
        .then_some(value)
}

/// UDisks2: the block device whose filesystem is mounted at `/` has a `CryptoBackingDevice`
/// (it is the cleartext side of a LUKS/dm-crypt container).
async fn root_encrypted(connection: &Connection) -> zbus::Result<bool> {
    let manager = zbus::fdo::ObjectManagerProxy::builder(connection)
        .destination(UDISKS2)?
        .path(UDISKS2_PATH)?
        .build()
        .await?;
    let objects = manager.get_managed_objects().await?;
    for interfaces in objects.values() {
        let by_name: HashMap<&str, &HashMap<String, OwnedValue>> = interfaces
            .iter()
            .map(|(name, props)| (name.as_str(), props))
            .collect();
        let Some(filesystem) = by_name.get(UDISKS2_FILESYSTEM) else {
            continue;
        };
        let Some(mount_points) = filesystem.get("MountPoints") else {
            continue;
        };
        let mount_points = Vec::<Vec<u8>>::try_from(mount_points.try_clone()?)?;
        // Mount points are NUL-terminated byte strings.
        if !mount_points
            .iter()
            .any(|m| m.strip_suffix(&[0]).unwrap_or(m) == b"/")
        {
            continue;
        }
        let backing = by_name
            .get(UDISKS2_BLOCK)
            .and_then(|block| block.get("CryptoBackingDevice"))
            .ok_or_else(|| zbus::Error::Failure("root block device has no Block".into()))?;
        let backing = OwnedObjectPath::try_from(backing.try_clone()?)?;
        return Ok(backing.as_str() != "/");
    }
    Err(zbus::Error::Failure("no filesystem mounted at /".into()))
}

/// logind: the `LockedHint` of the user's graphical session.
async fn session_locked(connection: &Connection) -> zbus::Result<bool> {
    let user = Login1UserProxy::builder(connection)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let (_, session) = user.display().await?;
    if session.as_str() == "/" {
        return Err(zbus::Error::Failure(
            "the user has no graphical session".into(),
        ));
    }
    Login1SessionProxy::builder(connection)
        .path(session)?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?
        .locked_hint()
        .await
}

/// fwupd: `HostSecurityId` is `HSI:<n>` followed by suffixes (`HSI:2! (v1.9.16)`).
async fn host_security_level(connection: &Connection) -> zbus::Result<i64> {
    let id = FwupdProxy::builder(connection)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?
        .host_security_id()
        .await?;
    parse_hsi(&id).ok_or_else(|| zbus::Error::Failure(format!("unexpected HostSecurityId {id:?}")))
}

fn parse_hsi(id: &str) -> Option<i64> {
    let digits: String = id
        .strip_prefix("HSI:")?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `VERSION_ID` from os-release (at most 64 KiB read), unquoted.
fn os_version(path: &std::path::Path) -> Option<String> {
    use std::io::Read as _;
    let mut contents = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(64 * 1024)
        .read_to_string(&mut contents)
        .ok()?;
    contents
        .lines()
        .find_map(|line| line.strip_prefix("VERSION_ID="))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .and_then(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_security_ids_parse_their_level() {
        assert_eq!(parse_hsi("HSI:2! (v1.9.16)"), Some(2));
        assert_eq!(parse_hsi("HSI:0"), Some(0));
        assert_eq!(parse_hsi("HSI:INVALID"), None);
        assert_eq!(parse_hsi("2"), None);
    }

    #[test]
    fn os_release_version_is_read_unquoted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("os-release");
        std::fs::write(&path, "NAME=\"Debian\"\nVERSION_ID=\"12\"\n").unwrap();
        assert_eq!(os_version(&path).as_deref(), Some("12"));
        assert_eq!(os_version(&dir.path().join("missing")), None);
    }
}
