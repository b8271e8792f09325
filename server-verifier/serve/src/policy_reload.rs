//! Device policy reloads in `serve` (docs/POLICY.md "Reloading"): the library's file watch and a
//! SIGHUP handler, both calling `PolicyGate::reload`, which keeps the policies in force when the
//! new ones are refused.

use hwsign_verifier::Verifier;
use hwsign_verifier::policy::{PolicyGate, PolicyWatch};
use tokio::task::JoinHandle;

/// Stops the watch and the SIGHUP handler when dropped.
#[derive(Debug)]
pub(crate) struct PolicyReloads {
    _watch: Option<PolicyWatch>,
    hangup: Option<JoinHandle<()>>,
}

impl Drop for PolicyReloads {
    fn drop(&mut self) {
        if let Some(task) = self.hangup.take() {
            task.abort();
        }
    }
}

/// Starts the watch `[policy] watch_secs` asks for and the SIGHUP handler, when the verifier
/// has policies.
pub(crate) fn start(verifier: &Verifier) -> PolicyReloads {
    let Some(gate) = verifier.policy().cloned() else {
        return PolicyReloads {
            _watch: None,
            hangup: None,
        };
    };
    let watch = match gate.watch_configured() {
        Ok(watch) => watch,
        Err(error) => {
            tracing::error!(%error, "cannot start the device policy file watch; SIGHUP still reloads");
            None
        }
    };
    PolicyReloads {
        _watch: watch,
        hangup: Some(tokio::spawn(reload_on_hangup(gate))),
    }
}

async fn reload_on_hangup(gate: PolicyGate) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            tracing::error!(%error, "cannot install the SIGHUP handler; policies reload on file changes only");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the device policies");
        let gate = gate.clone();
        // The outcome is logged and kept in the gate's reload status.
        let _ = tokio::task::spawn_blocking(move || gate.reload()).await;
    }
}
