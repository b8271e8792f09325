//! Runs each test phase in its own process.
//!
//! A PKCS#11 module is initialized once per process and reads its environment (`SOFTHSM2_CONF`,
//! `TPM2_PKCS11_TCTI`, …) at that moment, so tests sharing a process would share one token. The
//! parent (the ordinary `#[test]`) provisions a fresh token, then re-executes this test binary
//! for just this test with the token's environment; the child sees the marker variable and runs
//! the phase instead. A test with two phases gets two processes: a real restart.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};
use hwsign_test_support::softhsm::SoftHsm;
use hwsign_test_support::swtpm::Swtpm;
use hwsign_test_support::tpm2_pkcs11::Tpm2Pkcs11;

/// Set in the child: which test it runs.
const CHILD: &str = "HWSIGN_PKCS11_TEST_CHILD";
/// Set in the child: which phase.
const PHASE: &str = "HWSIGN_PKCS11_TEST_PHASE";
const MODULE: &str = "HWSIGN_PKCS11_TEST_MODULE";
const BACKEND_MODULE: &str = "HWSIGN_PKCS11_TEST_BACKEND_MODULE";
const TOKEN: &str = "HWSIGN_PKCS11_TEST_TOKEN";
const PIN_FILE: &str = "HWSIGN_PKCS11_TEST_PIN_FILE";
const DIR: &str = "HWSIGN_PKCS11_TEST_DIR";
const SPY_LOG: &str = "HWSIGN_PKCS11_TEST_SPY_LOG";

/// OpenSC's logging pass-through module: loads the module named in `$PKCS11SPY` and logs every
/// call to `$PKCS11SPY_OUTPUT`. The tests count `C_Login` calls with it.
pub(crate) const SPY_MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so";

/// Which module the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// SoftHSM2.
    SoftHsm,
    /// tpm2-pkcs11 on swtpm.
    Tpm2,
}

impl Kind {
    /// The test module whose tests use this kind (`<module>::<test>` is a test's full name in the
    /// one integration-test binary).
    fn test_module(self) -> &'static str {
        match self {
            Self::SoftHsm => "pkcs11_softhsm",
            Self::Tpm2 => "pkcs11_tpm2",
        }
    }
}

/// Extra set-up in the parent.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Options {
    /// Put pkcs11-spy between the backend and the module.
    pub spy: bool,
    /// Make the token report its user PIN locked (SoftHSM only).
    pub lock_user_pin: bool,
}

/// What a phase gets to work with.
#[derive(Debug, Clone)]
pub(crate) struct TestEnv {
    /// The real module.
    pub module: PathBuf,
    /// The module the backend should load (the spy, when asked for).
    pub backend_module: PathBuf,
    /// Token label.
    pub token: String,
    /// File with the correct user PIN.
    pub pin_file: PathBuf,
    /// Scratch dir shared by the phases of one test.
    pub dir: PathBuf,
    /// pkcs11-spy's log, when the spy is in use.
    pub spy_log: Option<PathBuf>,
}

/// A phase of a test, run in its own process.
pub(crate) type Phase = fn(&TestEnv) -> Result<()>;

/// A provisioned token the parent keeps alive while the children run.
enum Fixture {
    SoftHsm(SoftHsm),
    Tpm2(Tpm2Pkcs11),
}

impl Fixture {
    fn new(kind: Kind, label: &str) -> Result<Self> {
        Ok(match kind {
            Kind::SoftHsm => Self::SoftHsm(SoftHsm::new(label)?),
            Kind::Tpm2 => Self::Tpm2(Tpm2Pkcs11::new(Swtpm::start()?, label)?),
        })
    }

    fn env(&self) -> Vec<(OsString, OsString)> {
        match self {
            Self::SoftHsm(hsm) => hsm.env(),
            Self::Tpm2(token) => token.env(),
        }
    }

    fn module(&self) -> &Path {
        match self {
            Self::SoftHsm(hsm) => hsm.module_path(),
            Self::Tpm2(token) => token.module_path(),
        }
    }

    fn pin_file(&self) -> &Path {
        match self {
            Self::SoftHsm(hsm) => hsm.pin_file(),
            Self::Tpm2(token) => token.pin_file(),
        }
    }
}

/// Runs `phases` of test `name` (its path in this test binary) each in a fresh child process,
/// against a fresh token of `kind`. In the child, runs the requested phase.
pub(crate) fn isolated(name: &str, kind: Kind, options: Options, phases: &[Phase]) -> Result<()> {
    if let Ok(child) = std::env::var(CHILD) {
        ensure!(child == name, "child for {child} ran {name}");
        let phase: usize = std::env::var(PHASE)?.parse()?;
        let phase = phases.get(phase).context("no such phase")?;
        return phase(&TestEnv::from_process()?);
    }

    let label = format!("hws-{}", name.chars().take(20).collect::<String>());
    let fixture = Fixture::new(kind, &label)?;
    let scratch = tempfile::Builder::new()
        .prefix("hwsign-pkcs11-test-")
        .tempdir()?;
    if options.lock_user_pin {
        match &fixture {
            Fixture::SoftHsm(hsm) => hsm.mark_user_pin_locked()?,
            Fixture::Tpm2(_) => bail!("lock_user_pin needs SoftHSM"),
        }
    }
    let spy_log = scratch.path().join("spy.log");
    let exe = std::env::current_exe()?;
    for index in 0..phases.len() {
        let mut command = Command::new(&exe);
        let full_name = format!("{}::{name}", kind.test_module());
        command
            .args([
                full_name.as_str(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, name)
            .env(PHASE, index.to_string())
            .env(MODULE, fixture.module())
            .env(TOKEN, &label)
            .env(PIN_FILE, fixture.pin_file())
            .env(DIR, scratch.path())
            .envs(fixture.env());
        if options.spy {
            command
                .env(BACKEND_MODULE, SPY_MODULE)
                .env("PKCS11SPY", fixture.module())
                .env("PKCS11SPY_OUTPUT", &spy_log)
                .env(SPY_LOG, &spy_log);
        } else {
            command.env(BACKEND_MODULE, fixture.module());
        }
        let output = command.output().context("re-running the test binary")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Latency numbers and the like, for `--nocapture` runs of the parent.
        for line in stdout.lines() {
            if let Some(at) = line.find("pkcs11:") {
                println!("{}", &line[at..]);
            }
        }
        ensure!(
            output.status.success(),
            "phase {index} of {name} failed:\n{stdout}\n{stderr}"
        );
        // A filter that matched nothing would also exit 0.
        ensure!(
            stdout.contains("1 passed"),
            "phase {index} of {name} did not run:\n{stdout}"
        );
    }
    Ok(())
}

impl TestEnv {
    fn from_process() -> Result<Self> {
        let var = |name: &str| std::env::var_os(name).with_context(|| format!("{name} not set"));
        Ok(Self {
            module: var(MODULE)?.into(),
            backend_module: var(BACKEND_MODULE)?.into(),
            token: var(TOKEN)?.to_string_lossy().into_owned(),
            pin_file: var(PIN_FILE)?.into(),
            dir: var(DIR)?.into(),
            spy_log: std::env::var_os(SPY_LOG).map(PathBuf::from),
        })
    }

    /// How many times the backend called `C_Login` so far (pkcs11-spy's log).
    pub(crate) fn login_calls(&self) -> Result<usize> {
        let log = self.spy_log.as_ref().context("test runs without the spy")?;
        let text = std::fs::read_to_string(log).unwrap_or_default();
        Ok(text
            .lines()
            .filter(|line| line.trim_end().ends_with("C_Login"))
            .count())
    }
}
