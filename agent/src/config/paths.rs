//! Default locations (XDG, via the `directories` crate), used when neither `--config` nor the
//! configuration names a path. They match the user units in `systemd/`: the socket is
//! `$XDG_RUNTIME_DIR/hwsign/agent.sock` (`%t/hwsign/agent.sock`).

use std::path::PathBuf;

use directories::ProjectDirs;

/// File name of the agent's socket inside its runtime directory.
pub const SOCKET_FILE_NAME: &str = "agent.sock";
/// File name of the configuration inside the configuration directory.
pub const CONFIG_FILE_NAME: &str = "agent.toml";

fn project() -> Option<ProjectDirs> {
    ProjectDirs::from("dev", "hwsign", "hwsign")
}

/// `~/.config/hwsign/agent.toml`.
pub fn default_config_file() -> Option<PathBuf> {
    project().map(|p| p.config_dir().join(CONFIG_FILE_NAME))
}

/// `~/.local/state/hwsign` (falls back to the data directory on systems without a state dir).
pub fn default_state_dir() -> Option<PathBuf> {
    let project = project()?;
    Some(
        project
            .state_dir()
            .unwrap_or_else(|| project.data_local_dir())
            .to_path_buf(),
    )
}

/// `$XDG_RUNTIME_DIR/hwsign/agent.sock`; without a runtime directory (a root shell, a container)
/// the socket goes beside the keys in the state directory.
pub fn default_socket_path() -> Option<PathBuf> {
    let project = project()?;
    match project.runtime_dir() {
        Some(dir) => Some(dir.join(SOCKET_FILE_NAME)),
        None => default_state_dir().map(|d| d.join(SOCKET_FILE_NAME)),
    }
}
