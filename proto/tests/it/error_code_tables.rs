//! The error codes a client sees, read from docs/PROTOCOL.md's tables: §7 (the verifier's refusals)
//! and §10 (the agent API's errors). For every row, the code parses from its wire spelling, spells
//! itself back the same way (`as_str`, `Display`, JSON) and maps to the documented HTTP status.

use anyhow::{Context, Result, ensure};
use hwsign_proto::{AgentErrorCode, RejectCode};
use serde::de::DeserializeOwned;

/// The `| \`code\` | status | ...` rows of the table under the heading that starts with
/// `heading`, up to the next heading.
fn table(heading: &str) -> Result<Vec<(String, u16)>> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md"))
        .context("reading docs/PROTOCOL.md")?;
    let (_, section) = doc
        .split_once(&format!("\n{heading}"))
        .with_context(|| format!("no heading {heading:?}"))?;
    let section = section.split("\n## ").next().unwrap_or_default();
    let mut rows = Vec::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // ["", "`code`", "status", "meaning", ""]
        let (Some(code), Some(status)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Some(code) = code.strip_prefix('`').and_then(|c| c.strip_suffix('`')) else {
            continue;
        };
        let Ok(status) = status.parse::<u16>() else {
            continue;
        };
        rows.push((code.to_owned(), status));
    }
    Ok(rows)
}

fn parse<T: DeserializeOwned>(code: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(code.to_owned()))
        .with_context(|| format!("{code:?} does not parse"))
}

#[test]
fn every_refusal_code_of_the_protocol_has_its_spelling_and_status() -> Result<()> {
    let rows = table("## 7. Error codes")?;
    ensure!(rows.len() >= 20, "§7 lists {} codes", rows.len());
    for (spelling, status) in rows {
        let code: RejectCode = parse(&spelling)?;
        ensure!(
            code.as_str() == spelling,
            "{code:?} spells itself {}",
            code.as_str()
        );
        ensure!(code.to_string() == spelling, "{code:?} displays as {code}");
        ensure!(
            serde_json::to_value(code)? == serde_json::Value::String(spelling.clone()),
            "{code:?} serializes differently"
        );
        ensure!(
            code.http_status() == status,
            "{spelling}: status {} where §7 says {status}",
            code.http_status()
        );
    }
    Ok(())
}

#[test]
fn every_agent_error_code_of_the_protocol_has_its_spelling_and_status() -> Result<()> {
    let rows = table("## 10. Agent API (v1)")?;
    ensure!(
        rows.len() >= 22,
        "§10 lists {} agent error codes",
        rows.len()
    );
    for (spelling, status) in rows {
        let code: AgentErrorCode = parse(&spelling)?;
        ensure!(
            code.as_str() == spelling,
            "{code:?} spells itself {}",
            code.as_str()
        );
        ensure!(code.to_string() == spelling, "{code:?} displays as {code}");
        ensure!(
            serde_json::to_value(code)? == serde_json::Value::String(spelling.clone()),
            "{code:?} serializes differently"
        );
        ensure!(
            code.http_status() == status,
            "{spelling}: status {} where §10 says {status}",
            code.http_status()
        );
    }
    Ok(())
}
