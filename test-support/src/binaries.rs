//! Finding the workspace's own binaries from an integration test of another crate.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

/// The path of workspace binary `name` in the same target profile directory as the running test
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`). Cargo builds a package's own
/// binaries before its integration tests, but not other packages' binaries: a test needing one
/// must depend on that package, or the test script must build it first.
pub fn bin_path(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running test")?;
    let deps = exe
        .parent()
        .context("test binary has no parent directory")?;
    let profile_dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().context("deps directory has no parent")?
    } else {
        deps
    };
    let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        bail!(
            "{} not found: build it first (cargo build --bins)",
            path.display()
        );
    }
    Ok(path)
}
