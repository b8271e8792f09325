//! `hwsign demo` (being written).

use std::process::ExitCode;

pub(crate) async fn run() -> anyhow::Result<ExitCode> {
    anyhow::bail!("the demo is not available in this build yet")
}
