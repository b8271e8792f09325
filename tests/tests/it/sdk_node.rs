//! The Node SDK (`sdk/node`), tested by its `node --test` suite against the real agent and the
//! OpenAI-shaped API behind the real verifier — with the real `openai` npm package.

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use hwsign_e2e::sdk::{self, SdkSetup};

#[tokio::test(flavor = "multi_thread")]
async fn sdk_node_test_suite_passes_with_the_real_openai_sdk() -> Result<()> {
    let dir = sdk::prepare("node")?;
    let expected = sdk::count_tests(&dir.join("test"), "js", &["test("])?;
    let mut files: Vec<String> = std::fs::read_dir(dir.join("test"))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".test.js"))
        .map(|name| format!("test/{name}"))
        .collect();
    files.sort();
    ensure!(expected >= 15, "only {expected} node tests found");
    let setup = SdkSetup::start().await?;
    let mut command = Command::new("node");
    command
        .args(["--test", "--test-reporter=tap"])
        .args(&files)
        .current_dir(&dir);
    let output = sdk::run(command, &setup.env(), Duration::from_secs(300)).await?;
    ensure!(
        output.success,
        "node --test failed:\n{}\nagent log:\n{}",
        output.text,
        setup.agent.log()
    );
    let summary = format!("# pass {expected}\n");
    ensure!(
        output.text.contains(&summary)
            && output.text.contains("# fail 0\n")
            && output.text.contains("# skipped 0\n"),
        "node --test did not report {} passed and none failed or skipped:\n{}",
        expected,
        output.text
    );
    println!("node --test: {expected} passed in {:?}", output.elapsed);
    Ok(())
}
