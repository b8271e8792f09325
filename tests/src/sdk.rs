//! The SDK tests' setup: a real agent with two software keys (one registered with the verifier,
//! one not), the OpenAI-shaped API behind the real verifier ([`crate::openai_api`]), the pinned
//! environment of an SDK (`scripts/sdk-env`), and running the SDK's own test runner in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hwsign_proto::api::KeyLevel;

use crate::openai_api::OpenAiApi;
use crate::{AUDIENCE, AgentProcess, create_key};

/// The agent and the API an SDK's tests talk to.
#[derive(Debug)]
pub struct SdkSetup {
    /// The agent.
    pub agent: AgentProcess,
    /// The API.
    pub api: OpenAiApi,
    /// A key the verifier knows.
    pub key_id: String,
    /// A key of the agent that the verifier does not know.
    pub unregistered_key_id: String,
}

impl SdkSetup {
    /// Starts the agent (software backend) and the API, and registers one of two new keys.
    pub async fn start() -> Result<Self> {
        let agent = AgentProcess::start()?;
        let api = OpenAiApi::start().await?;
        let client = agent.client();
        let (key_id, public) = create_key(&client, "software", "sdk").await?;
        api.register(&public, KeyLevel::Software)?;
        let (unregistered_key_id, _) = create_key(&client, "software", "sdk-unregistered").await?;
        Ok(Self {
            agent,
            api,
            key_id,
            unregistered_key_id,
        })
    }

    /// The environment the SDK tests read.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "HWSIGN_AGENT_SOCK".to_owned(),
                self.agent.socket().display().to_string(),
            ),
            ("HWSIGN_TEST_API".to_owned(), self.api.base_url()),
            ("HWSIGN_TEST_KEY_ID".to_owned(), self.key_id.clone()),
            (
                "HWSIGN_TEST_UNREGISTERED_KEY_ID".to_owned(),
                self.unregistered_key_id.clone(),
            ),
            ("HWSIGN_TEST_AUDIENCE".to_owned(), AUDIENCE.to_owned()),
        ]
    }
}

/// The repository's root directory.
pub fn repo_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("the e2e crate has no parent directory")
}

/// Prepares `sdk`'s pinned environment (`scripts/sdk-env <sdk>`) and returns what it printed:
/// the virtualenv's python, or the Node package directory.
pub fn prepare(sdk: &str) -> Result<PathBuf> {
    let root = repo_root()?;
    let output = Command::new(root.join("scripts/sdk-env"))
        .arg(sdk)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running scripts/sdk-env {sdk}"))?;
    if !output.status.success() {
        bail!(
            "scripts/sdk-env {sdk} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let printed = String::from_utf8(output.stdout)?;
    Ok(PathBuf::from(printed.trim()))
}

/// What a test runner did.
#[derive(Debug)]
pub struct RunOutput {
    /// Whether it exited 0.
    pub success: bool,
    /// Its stdout and stderr.
    pub text: String,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Runs `command` with `env` added, killed after `limit` (a guard far above the run's need).
/// Output goes to files, so a chatty runner cannot block on a full pipe.
pub async fn run(
    mut command: Command,
    env: &[(String, String)],
    limit: Duration,
) -> Result<RunOutput> {
    let dir = tempfile::Builder::new()
        .prefix("hwsign-sdk-run-")
        .tempdir()?;
    let log_path = dir.path().join("output.log");
    let log = std::fs::File::create(&log_path)?;
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let started = Instant::now();
    let mut child = command.spawn().context("spawning the SDK test runner")?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let Some(status) = status else {
        bail!("the SDK test runner did not finish within {limit:?}:\n{text}");
    };
    Ok(RunOutput {
        success: status.success(),
        text,
        elapsed: started.elapsed(),
    })
}

/// The number of test functions (`prefix…`) defined in the files of `dir` with extension `ext`:
/// what a full run must report as passed.
pub fn count_tests(dir: &Path, ext: &str, prefixes: &[&str]) -> Result<usize> {
    let mut count = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == ext) {
            let text = std::fs::read_to_string(&path)?;
            count += text
                .lines()
                .filter(|line| prefixes.iter().any(|p| line.trim_start().starts_with(p)))
                .count();
        }
    }
    Ok(count)
}
