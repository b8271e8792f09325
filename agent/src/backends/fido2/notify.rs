//! The touch prompt: a desktop notification (`org.freedesktop.Notifications.Notify` on the
//! session bus, via zbus) when a session bus exists, and a log line always.

use std::collections::HashMap;
use std::time::Duration;

use zbus::zvariant::Value;

/// How long the notification stays up (the touch timeout bounds it anyway).
const EXPIRE_MS: i32 = 30_000;
/// Longest wait for the bus, so a wedged bus cannot delay the prompt's log line.
const BUS_TIMEOUT: Duration = Duration::from_secs(2);

#[zbus::proxy(
    interface = "org.freedesktop.Notifications",
    default_service = "org.freedesktop.Notifications",
    default_path = "/org/freedesktop/Notifications"
)]
trait Notifications {
    /// Shows a notification; returns its id.
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: &str,
        replaces_id: u32,
        app_icon: &str,
        summary: &str,
        body: &str,
        actions: &[&str],
        hints: HashMap<&str, &Value<'_>>,
        expire_timeout: i32,
    ) -> zbus::Result<u32>;
}

/// Tells the user to touch the key: logs it and, when `desktop` and a runtime are there, sends
/// a notification without waiting for it.
pub(crate) fn touch_prompt(runtime: Option<&tokio::runtime::Handle>, desktop: bool, what: &str) {
    tracing::warn!(operation = what, "touch your security key");
    let Some(runtime) = runtime.filter(|_| desktop) else {
        return;
    };
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none() {
        return;
    }
    let body = format!("hwsign: touch your security key to {what}");
    runtime.spawn(async move {
        let sent = tokio::time::timeout(BUS_TIMEOUT, send(&body)).await;
        match sent {
            Ok(Ok(id)) => tracing::debug!(id, "touch notification shown"),
            Ok(Err(error)) => tracing::info!(%error, "no desktop notification"),
            Err(_) => tracing::info!("no desktop notification: the session bus did not answer"),
        }
    });
}

async fn send(body: &str) -> zbus::Result<u32> {
    let connection = zbus::Connection::session().await?;
    let proxy = NotificationsProxy::new(&connection).await?;
    proxy
        .notify(
            "hwsign-agent",
            0,
            "security-high",
            "Touch your security key",
            body,
            &[],
            HashMap::new(),
            EXPIRE_MS,
        )
        .await
}
