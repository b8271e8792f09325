//! A tpm2-pkcs11 token on a private swtpm.
//!
//! swtpm has three transient object slots and serves one client at a time; tpm2-tools commands
//! and the module itself leave objects loaded (the module keeps every key it used loaded). Real
//! systems put the kernel resource manager (`/dev/tpmrm0`) in between; here `tpm2-abrmd
//! --flush-all` on a private D-Bus session bus in the temp dir plays that part, for provisioning
//! (`tpm2_ptool init` / `addtoken`) and for the module (`TPM2_PKCS11_TCTI=tabrmd:bus_type=session`).
//!
//! Like SoftHSM, the module reads its environment ([`Tpm2Pkcs11::env`]) when the process
//! initializes it.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::dbus::PrivateBus;
use crate::softhsm::write_private;
use crate::swtpm::Swtpm;

/// Debian's tpm2-pkcs11 module (package libtpm2-pkcs11-1).
pub const TPM2_PKCS11_MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so";

/// User PIN of the fixture token.
pub const USER_PIN: &str = "246810";
/// Security officer PIN of the fixture token.
pub const SO_PIN: &str = "13579135";

/// How long tpm2-abrmd may take to claim its bus name.
const ABRMD_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Poll interval while waiting for it.
const READY_POLL: Duration = Duration::from_millis(20);
/// tpm2-abrmd's well-known bus name.
const ABRMD_BUS_NAME: &str = "com.intel.tss2.Tabrmd";

/// A provisioned tpm2-pkcs11 token (store in a scratch dir of the swtpm), the resource manager
/// and bus in front of the swtpm, and the swtpm. Fields drop in order: abrmd, bus, swtpm.
#[derive(Debug)]
pub struct Tpm2Pkcs11 {
    // Held for its Drop: stops the resource manager before the bus and the TPM go.
    _abrmd: Abrmd,
    bus: PrivateBus,
    swtpm: Swtpm,
    label: String,
    store: PathBuf,
    pin_file: PathBuf,
}

impl Tpm2Pkcs11 {
    /// Provisions a token labelled `label` with [`USER_PIN`] / [`SO_PIN`] on `swtpm`.
    pub fn new(swtpm: Swtpm, label: &str) -> Result<Self> {
        if !Path::new(TPM2_PKCS11_MODULE).is_file() {
            bail!(
                "{TPM2_PKCS11_MODULE} missing: install libtpm2-pkcs11-1 and libtpm2-pkcs11-tools"
            );
        }
        let base = swtpm.scratch().join("tpm2-pkcs11");
        let store = base.join("store");
        fs::create_dir_all(&store)?;
        let pin_file = base.join("user.pin");
        write_private(&pin_file, format!("{USER_PIN}\n").as_bytes())?;
        let bus = PrivateBus::start(&base)?;
        let abrmd = Abrmd::start(&bus, &swtpm.tcti(), &base)?;
        {
            let ptool = |args: &[&str]| -> Result<()> {
                let output = Command::new("tpm2_ptool")
                    .args(args)
                    .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
                    .env("TPM2TOOLS_TCTI", "tabrmd:bus_type=session")
                    .env("TPM2_PKCS11_TCTI", "tabrmd:bus_type=session")
                    .env("TPM2_PKCS11_STORE", &store)
                    .env("TSS2_LOG", "all+none")
                    .stdin(Stdio::null())
                    .output()
                    .context("running tpm2_ptool (Debian package libtpm2-pkcs11-tools)")?;
                if !output.status.success() {
                    bail!(
                        "tpm2_ptool {args:?} failed: {}{}",
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
                Ok(())
            };
            let store_arg = store.to_string_lossy().into_owned();
            ptool(&["init", "--path", &store_arg])?;
            ptool(&[
                "addtoken",
                "--pid",
                "1",
                "--label",
                label,
                "--sopin",
                SO_PIN,
                "--userpin",
                USER_PIN,
                "--path",
                &store_arg,
            ])?;
        }
        Ok(Self {
            _abrmd: abrmd,
            bus,
            swtpm,
            label: label.to_owned(),
            store,
            pin_file,
        })
    }

    /// The module to load.
    pub fn module_path(&self) -> &Path {
        Path::new(TPM2_PKCS11_MODULE)
    }

    /// The token label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// A 0600 file holding the user PIN and a newline.
    pub fn pin_file(&self) -> &Path {
        &self.pin_file
    }

    /// The tpm2-pkcs11 store (its SQLite database).
    pub fn store(&self) -> &Path {
        &self.store
    }

    /// The swtpm under the token.
    pub fn swtpm(&self) -> &Swtpm {
        &self.swtpm
    }

    /// Environment a process needs to use this token through the module.
    pub fn env(&self) -> Vec<(OsString, OsString)> {
        vec![
            (
                "TPM2_PKCS11_STORE".into(),
                self.store.clone().into_os_string(),
            ),
            ("TPM2_PKCS11_TCTI".into(), "tabrmd:bus_type=session".into()),
            (
                "DBUS_SESSION_BUS_ADDRESS".into(),
                self.bus.address.clone().into(),
            ),
            // The module logs expected failures (a wrong PIN) at error level otherwise.
            ("TPM2_PKCS11_LOG_LEVEL".into(), "0".into()),
            ("TSS2_LOG".into(), "all+none".into()),
        ]
    }
}

/// `tpm2-abrmd` on the private bus, in front of the swtpm.
#[derive(Debug)]
struct Abrmd {
    child: Option<Child>,
}

impl Abrmd {
    fn start(bus: &PrivateBus, tcti: &str, dir: &Path) -> Result<Self> {
        let log = fs::File::create(dir.join("abrmd.log"))?;
        let child = Command::new("tpm2-abrmd")
            .args(["--session", "--allow-root", "--flush-all"])
            .arg(format!("--tcti={tcti}"))
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("running tpm2-abrmd (Debian package tpm2-abrmd)")?;
        let mut abrmd = Self { child: Some(child) };
        // Ready once it owns its bus name. abrmd has no other readiness signal, so ask the bus.
        let deadline = Instant::now() + ABRMD_READY_TIMEOUT;
        loop {
            if bus.has_owner(ABRMD_BUS_NAME)? {
                break;
            }
            let exited = match abrmd.child.as_mut() {
                Some(child) => child.try_wait()?.is_some(),
                None => true,
            };
            if exited || Instant::now() > deadline {
                drop(abrmd);
                bail!(
                    "tpm2-abrmd did not claim {ABRMD_BUS_NAME} (see {})",
                    dir.join("abrmd.log").display()
                );
            }
            std::thread::sleep(READY_POLL);
        }
        Ok(abrmd)
    }

    fn stop_inner(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait().context("waiting for tpm2-abrmd")?;
        }
        Ok(())
    }
}

impl Drop for Abrmd {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}
