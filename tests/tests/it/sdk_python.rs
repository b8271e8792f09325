//! The Python SDK (`sdk/python`), tested by its pytest suite in its pinned virtualenv against the
//! real agent and the OpenAI-shaped API behind the real verifier — with the real `openai`,
//! `httpx` and `requests` packages.

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use hwsign_e2e::sdk::{self, SdkSetup};

#[tokio::test(flavor = "multi_thread")]
async fn sdk_python_pytest_suite_passes_with_the_real_openai_sdk() -> Result<()> {
    let python = sdk::prepare("python")?;
    let dir = sdk::repo_root()?.join("sdk/python");
    let expected = sdk::count_tests(&dir.join("tests"), "py", &["def test_"])?;
    ensure!(expected >= 20, "only {expected} pytest tests found");
    let setup = SdkSetup::start().await?;
    let mut command = Command::new(python);
    command
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rfEs",
            "tests",
        ])
        .current_dir(&dir)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let output = sdk::run(command, &setup.env(), Duration::from_secs(300)).await?;
    ensure!(
        output.success,
        "pytest failed:\n{}\nagent log:\n{}",
        output.text,
        setup.agent.log()
    );
    let summary = format!("{expected} passed");
    ensure!(
        output.text.contains(&summary) && !output.text.contains("skipped"),
        "pytest did not report {summary} and nothing skipped:\n{}",
        output.text
    );
    println!("pytest: {summary} in {:?}", output.elapsed);
    Ok(())
}
