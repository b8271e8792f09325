//! A real PostgreSQL server per test: `initdb` into a temp dir, `pg_ctl start` on a loopback port
//! (its Unix socket in the same dir), trust authentication for the `hwsign` role, stopped on
//! drop. It can be stopped and started again on the same port and data (a restart).
//!
//! `initdb` refuses to run as root. Run as root (CI), the server runs as the `postgres` system
//! user that Debian's `postgresql` package creates (or `nobody`): the temp dir is handed to that
//! user and the server's commands run with its uid and gid.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};
use nix::unistd::{Gid, Uid, User, chown};
use tempfile::TempDir;

use crate::ports::free_tcp_port;

/// The role tests connect as (superuser, trust authentication on loopback).
pub const ROLE: &str = "hwsign";

/// A PostgreSQL server in a temp dir.
#[derive(Debug)]
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    /// The user the server runs as, when the tests run as root.
    run_as: Option<(Uid, Gid)>,
    running: bool,
}

/// The directory of `initdb` and `pg_ctl`: the newest `/usr/lib/postgresql/*/bin` (Debian), or
/// wherever `PATH` finds `pg_ctl`.
fn bin_dir() -> Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|dir| dir.join("pg_ctl").is_file())
        .context("PostgreSQL server binaries not found (install postgresql)")
}

/// The user to run the server as when running as root.
fn server_user() -> Result<Option<(Uid, Gid)>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Some(user) = User::from_name(name)? {
            return Ok(Some((user.uid, user.gid)));
        }
    }
    bail!("running as root and neither a postgres nor a nobody user exists")
}

impl Postgres {
    /// Creates a cluster and starts it.
    pub fn start() -> Result<Self> {
        let run_as = server_user()?;
        // The server's user must reach the dir: under root's own TMPDIR it might not, so /tmp.
        let dir = match run_as {
            Some(_) if Path::new("/tmp").is_dir() => tempfile::tempdir_in("/tmp")?,
            _ => tempfile::tempdir()?,
        };
        if let Some((uid, gid)) = run_as {
            chown(dir.path(), Some(uid), Some(gid))?;
        }
        let mut server = Self {
            bin: bin_dir()?,
            dir,
            port: 0,
            run_as,
            running: false,
        };
        let output = server
            .command("initdb")
            .arg("-D")
            .arg(server.data())
            .args([
                "-A",
                "trust",
                "-U",
                ROLE,
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output()
            .context("running initdb")?;
        if !output.status.success() {
            bail!("initdb: {}", String::from_utf8_lossy(&output.stderr));
        }
        let mut last_error = None;
        for _ in 0..5 {
            server.port = free_tcp_port()?;
            match server.start_again() {
                Ok(()) => return Ok(server),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("PostgreSQL did not start")))
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.stdin(Stdio::null()).current_dir(self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            command.gid(gid.as_raw()).uid(uid.as_raw());
        }
        command
    }

    /// The server's directory (data, log, socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://hwsign@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/postgres", self.port)
    }

    /// `postgres://hwsign@127.0.0.1:PORT/<database>` after creating `database`.
    pub fn database(&self, database: &str) -> Result<String> {
        let output = self
            .command("createdb")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", ROLE])
            .arg(database)
            .output()
            .context("running createdb")?;
        if !output.status.success() {
            bail!("createdb: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(format!(
            "postgres://{ROLE}@127.0.0.1:{}/{database}",
            self.port
        ))
    }

    /// Starts the server (again) on its port and data, waiting until it accepts connections.
    pub fn start_again(&mut self) -> Result<()> {
        if self.running {
            return Ok(());
        }
        let options = format!(
            "-p {} -h 127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let output = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-o", &options, "-w", "-t", "30", "start"])
            .output()
            .context("running pg_ctl start")?;
        if !output.status.success() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            bail!(
                "pg_ctl start: {}{log}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        self.running = true;
        Ok(())
    }

    /// Stops the server (`fast`: clients are disconnected at once).
    pub fn stop(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        let output = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "30", "stop"])
            .output()
            .context("running pg_ctl stop")?;
        if !output.status.success() {
            bail!("pg_ctl stop: {}", String::from_utf8_lossy(&output.stderr));
        }
        self.running = false;
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
