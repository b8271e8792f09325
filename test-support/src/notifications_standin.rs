//! A STAND-IN for the desktop's notification daemon: `org.freedesktop.Notifications` served on a
//! private `dbus-daemon` (a real bus), recording every `Notify` call so a test can see the
//! agent's touch prompt. Only the daemon that would draw the bubble is replaced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context as _, Result};
use zbus::zvariant::OwnedValue;

use crate::dbus::PrivateBus;

/// One notification as the stand-in received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// `app_name`.
    pub app_name: String,
    /// `summary`.
    pub summary: String,
    /// `body`.
    pub body: String,
}

struct Daemon {
    seen: Arc<Mutex<Vec<Notification>>>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Daemon {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        _hints: HashMap<String, OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.push(Notification {
            app_name,
            summary,
            body,
        });
        u32::try_from(seen.len()).unwrap_or(u32::MAX)
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "hwsign-test-standin".into(),
            "hwsign".into(),
            "0".into(),
            "1.2".into(),
        )
    }
}

/// The stand-in on its own private bus; both stop on drop.
#[derive(Debug)]
pub struct NotificationsStandIn {
    _connection: zbus::Connection,
    bus: PrivateBus,
    seen: Arc<Mutex<Vec<Notification>>>,
    _dir: tempfile::TempDir,
}

impl NotificationsStandIn {
    /// Starts a private bus and serves the stand-in on it.
    pub async fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("hwsign-notify-bus-")
            .tempdir()?;
        let bus = PrivateBus::start(dir.path())?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connection = zbus::connection::Builder::address(bus.address.as_str())?
            .name("org.freedesktop.Notifications")?
            .serve_at(
                "/org/freedesktop/Notifications",
                Daemon {
                    seen: Arc::clone(&seen),
                },
            )?
            .build()
            .await
            .context("serving the Notifications stand-in")?;
        Ok(Self {
            _connection: connection,
            bus,
            seen,
            _dir: dir,
        })
    }

    /// The bus address, for the agent's `DBUS_SESSION_BUS_ADDRESS`.
    pub fn address(&self) -> &str {
        &self.bus.address
    }

    /// Notifications received so far.
    pub fn seen(&self) -> Vec<Notification> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
