//! Waiting for a condition that other tasks or processes bring about, with an upper bound so a
//! broken component fails the test instead of hanging it. The bound is a guard, not a timing
//! assertion: it is far above what the condition needs.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Upper bound on any wait in the fault tests.
pub const PATIENCE: Duration = Duration::from_secs(90);
/// How often the condition is checked.
const POLL: Duration = Duration::from_millis(10);

/// Returns once `condition()` holds; fails after [`PATIENCE`] naming `what` and `status()`.
pub async fn until(
    what: &str,
    mut condition: impl FnMut() -> bool,
    status: impl Fn() -> String,
) -> Result<()> {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        if Instant::now() > deadline {
            bail!(
                "gave up waiting for {what} after {PATIENCE:?}: {}",
                status()
            );
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}
