//! The change signal of a PostgreSQL registry: one connection that `LISTEN`s on the registry's
//! channel, on a thread of its own.
//!
//! Every notification moves the version on. The listener also proves itself alive: every
//! [`HEARTBEAT`] it runs `SELECT 1`, and PostgreSQL delivers the notifications committed before
//! that query before answering it. The version is vouched for until [`TRUST_WINDOW`] after the
//! last heartbeat was *sent*, so a change is picked up within that window even if the connection
//! dies silently. When the connection fails the version is not vouched for at all (the cache is
//! bypassed); once it is back, the version moves on (anything may have changed meanwhile).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use postgres::Config;
use postgres::fallible_iterator::FallibleIterator as _;

use super::pool::connect;
use super::schema::CHANNEL;

/// How often the listener proves its connection alive.
pub(super) const HEARTBEAT: Duration = Duration::from_millis(200);
/// How long after a heartbeat was sent the version is vouched for.
pub(super) const TRUST_WINDOW: Duration = Duration::from_millis(750);
/// Pause between reconnection attempts.
const RETRY: Duration = Duration::from_millis(200);

/// What the listener thread tells the registry.
#[derive(Debug)]
pub(super) struct ChangeWatch {
    version: AtomicU64,
    /// Nanoseconds after `base` until which `version` is vouched for (0: not at all).
    trusted_until: AtomicU64,
    base: Instant,
    stop: AtomicBool,
}

impl ChangeWatch {
    pub(super) fn new() -> Self {
        Self {
            version: AtomicU64::new(0),
            trusted_until: AtomicU64::new(0),
            base: Instant::now(),
            stop: AtomicBool::new(false),
        }
    }

    /// The version, while the listener vouches for it.
    pub(super) fn current(&self) -> Option<u64> {
        let version = self.version.load(Ordering::SeqCst);
        let until = self.trusted_until.load(Ordering::SeqCst);
        (self.nanos(Instant::now()) < until).then_some(version)
    }

    /// Whether the listener is vouching for the version now.
    pub(super) fn is_listening(&self) -> bool {
        self.current().is_some()
    }

    /// Asks the listener thread to end.
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.distrust();
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    fn changed(&self) {
        self.version.fetch_add(1, Ordering::SeqCst);
    }

    fn distrust(&self) {
        self.trusted_until.store(0, Ordering::SeqCst);
    }

    fn trust_from(&self, sent: Instant) {
        let until = self.nanos(sent + TRUST_WINDOW);
        self.trusted_until.store(until, Ordering::SeqCst);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Starts the listener thread.
pub(super) fn spawn(mut config: Config, watch: Arc<ChangeWatch>) -> std::io::Result<()> {
    // Named apart from the workers, for operators reading pg_stat_activity.
    config.application_name("hwsign-verifier-listener");
    std::thread::Builder::new()
        .name("hwsign-pg-listen".into())
        .spawn(move || listen(&config, &watch))
        .map(|_| ())
}

fn listen(config: &Config, watch: &ChangeWatch) {
    let mut reported_down = false;
    while !watch.stopped() {
        match listen_once(config, watch) {
            Ok(()) => return,
            Err(error) => {
                watch.distrust();
                watch.changed();
                if !reported_down {
                    tracing::warn!(
                        %error,
                        "registry change notifications are down; key cache bypassed until back"
                    );
                    reported_down = true;
                }
            }
        }
        std::thread::sleep(RETRY);
    }
}

/// One connection's life: returns `Ok` when asked to stop, the error when the connection failed.
fn listen_once(config: &Config, watch: &ChangeWatch) -> Result<(), postgres::Error> {
    let mut client = connect(config)?;
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    // Whatever changed while nobody listened: everything cached before is now suspect.
    watch.changed();
    tracing::info!("listening for registry changes");
    while !watch.stopped() {
        let sent = Instant::now();
        client.simple_query("SELECT 1")?;
        let mut notifications = client.notifications();
        if notifications.iter().count()? > 0 {
            watch.changed();
        }
        watch.trust_from(sent);
        // Wait for a notification until the next heartbeat is due.
        let mut waiting = notifications.timeout_iter(HEARTBEAT);
        if waiting.next()?.is_some() {
            watch.changed();
        }
    }
    watch.distrust();
    Ok(())
}
