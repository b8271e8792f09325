//! A SoftHSM2 token in a temp dir.
//!
//! SoftHSM reads `SOFTHSM2_CONF` from the process environment at `C_Initialize`, and a PKCS#11
//! module is initialized once per process. So a test that loads the module in-process must run in
//! a process whose environment names this token's configuration before anything initializes the
//! module: spawn the process under test (the agent binary, or the test binary re-executing one
//! test) with [`SoftHsm::env`].

use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use tempfile::TempDir;

/// Debian's SoftHSM2 module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// User PIN of every fixture token.
pub const USER_PIN: &str = "246810";
/// Security officer PIN of every fixture token.
pub const SO_PIN: &str = "13579135";

/// `CKA_OS_TOKENFLAGS` (SoftHSM vendor attribute 0x8000534b): where the file object store
/// keeps a token's `CK_TOKEN_INFO.flags`.
const TOKEN_FLAGS_ATTRIBUTE: u64 = 0x8000_534b;
/// Attribute kind "unsigned long" in SoftHSM's object files.
const KIND_ULONG: u64 = 2;
/// `CKF_USER_PIN_LOCKED`.
const CKF_USER_PIN_LOCKED: u64 = 0x0004_0000;

/// An initialized SoftHSM2 token with its own configuration and token directory. Everything is
/// removed on drop.
#[derive(Debug)]
pub struct SoftHsm {
    dir: TempDir,
    label: String,
    conf: PathBuf,
    pin_file: PathBuf,
}

impl SoftHsm {
    /// Creates a configuration in a fresh temp dir and initializes a token labelled `label` with
    /// [`USER_PIN`] and [`SO_PIN`]; the user PIN is also written to a 0600 file.
    pub fn new(label: &str) -> Result<Self> {
        if !Path::new(SOFTHSM_MODULE).is_file() {
            bail!("{SOFTHSM_MODULE} missing: install Debian package softhsm2");
        }
        let dir = tempfile::Builder::new()
            .prefix("hwsign-softhsm-")
            .tempdir()?;
        let tokens = dir.path().join("tokens");
        fs::create_dir(&tokens)?;
        fs::set_permissions(&tokens, fs::Permissions::from_mode(0o700))?;
        let conf = dir.path().join("softhsm2.conf");
        fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
                 slots.removable = false\n",
                tokens.display()
            ),
        )?;
        let pin_file = dir.path().join("user.pin");
        write_private(&pin_file, format!("{USER_PIN}\n").as_bytes())?;
        let hsm = Self {
            dir,
            label: label.to_owned(),
            conf,
            pin_file,
        };
        hsm.init_token(label)?;
        Ok(hsm)
    }

    /// Initializes one more token in this configuration (same PINs). Tokens created after a
    /// process initialized the module are not seen by that process.
    pub fn init_token(&self, label: &str) -> Result<()> {
        self.util(&[
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            SO_PIN,
            "--pin",
            USER_PIN,
        ])
        .with_context(|| format!("initializing SoftHSM token {label:?}"))?;
        Ok(())
    }

    /// Runs `softhsm2-util` against this configuration; returns its stdout.
    pub fn util(&self, args: &[&str]) -> Result<String> {
        let output = Command::new("softhsm2-util")
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .context("running softhsm2-util (Debian package softhsm2)")?;
        if !output.status.success() {
            bail!(
                "softhsm2-util {args:?} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The module to load.
    pub fn module_path(&self) -> &Path {
        Path::new(SOFTHSM_MODULE)
    }

    /// The `softhsm2.conf` of this token.
    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    /// A 0600 file holding the user PIN and a newline.
    pub fn pin_file(&self) -> &Path {
        &self.pin_file
    }

    /// The token label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The temp dir (scratch space for the test too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Environment a process needs to see this token.
    pub fn env(&self) -> Vec<(OsString, OsString)> {
        vec![("SOFTHSM2_CONF".into(), self.conf.clone().into_os_string())]
    }

    /// Sets `CKF_USER_PIN_LOCKED` in every token's stored flags, as a token reports after too many
    /// wrong PINs. SoftHSM itself never locks the user PIN (it only sets `CKF_USER_PIN_COUNT_LOW`),
    /// so this is the only way to present a locked token with it. Call it while no process has
    /// the module initialized.
    pub fn mark_user_pin_locked(&self) -> Result<()> {
        let mut patched = 0;
        for entry in fs::read_dir(self.dir.path().join("tokens"))? {
            let object = entry?.path().join("token.object");
            if !object.is_file() {
                continue;
            }
            let mut bytes = fs::read(&object)?;
            set_ulong_flag(&mut bytes, TOKEN_FLAGS_ATTRIBUTE, CKF_USER_PIN_LOCKED)
                .with_context(|| format!("patching {}", object.display()))?;
            fs::write(&object, bytes)?;
            patched += 1;
        }
        if patched == 0 {
            bail!("no token.object under {}", self.dir.path().display());
        }
        Ok(())
    }
}

/// ORs `flag` into the unsigned-long attribute `attribute` of a SoftHSM object file: a sequence of
/// big-endian (type u64, kind u64, value) records, where an unsigned long value is one u64.
fn set_ulong_flag(bytes: &mut [u8], attribute: u64, flag: u64) -> Result<()> {
    let mut header = attribute.to_be_bytes().to_vec();
    header.extend(KIND_ULONG.to_be_bytes());
    let at = bytes
        .windows(header.len())
        .position(|w| w == header.as_slice())
        .context("token flags attribute not found (SoftHSM file format changed?)")?;
    let value_at = at + header.len();
    let value = bytes
        .get_mut(value_at..value_at + 8)
        .context("token flags attribute truncated")?;
    let mut current = [0u8; 8];
    current.copy_from_slice(value);
    value.copy_from_slice(&(u64::from_be_bytes(current) | flag).to_be_bytes());
    Ok(())
}

/// Writes `contents` to a new file with mode 0600.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)?;
    Ok(())
}
