//! `hwsign demo`: the whole path in one process, in a temporary directory — an agent with a
//! software key, an API protected by the verifier, a signed request through the client library,
//! and three refusals with their codes. Exits non-zero if anything behaves unexpectedly, so it
//! doubles as a smoke test.

pub(crate) mod env;
mod exchange;

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use hwsign_client::Signer;
use hwsign_proto::{RejectCode, RequestParts};

use super::sign::display_name;
use env::DemoEnv;
use exchange::{Outcome, SignedRequest};

/// The API's name in the demo; a real API picks its own.
const AUDIENCE: &str = "demo-api";
/// How far past the signing time the stale-date check is made.
const STALE_BY: Duration = Duration::from_secs(600);

pub(crate) async fn run() -> anyhow::Result<ExitCode> {
    println!("hwsign demo: an agent, a hardware-style key (software here), and a protected API.");
    println!("Everything runs in this process, in a temporary directory removed at the end.");
    println!();
    let env = DemoEnv::start(AUDIENCE).await?;
    let result = steps(&env).await;
    let cleanup = env.stop().await;
    println!();
    println!("[6/6] Cleaned up: API server stopped, agent stopped, temporary directory removed.");
    result?;
    cleanup?;
    println!();
    println!("Demo finished: 1 request accepted, 3 refused with the expected codes.");
    Ok(ExitCode::SUCCESS)
}

async fn steps(env: &DemoEnv) -> anyhow::Result<()> {
    let key = &env.key;
    let signer = Signer::new(env.agent.clone(), &key.id, AUDIENCE);
    let body = Bytes::from_static(br#"{"amount":100,"to":"alice"}"#);
    let path = "/v1/transfers?currency=EUR";

    println!("[4/6] A signed request, through the hwsign-client library");
    println!("      POST {path}");
    println!("      body {}", String::from_utf8_lossy(&body));
    let accepted = SignedRequest::sign(&signer, &env.url(path), body.clone()).await?;
    println!(
        "      headers the agent added (it signed with key {}):",
        key.id
    );
    for (name, value) in accepted.hws_headers() {
        print_header(&display_name(&name), &value);
    }
    println!("      (Authorization is one header line on the wire, split here to be readable)");
    match accepted.send().await? {
        Outcome::Accepted(answer) => {
            println!("      -> 200 OK. The API's handler saw: {answer}");
        }
        Outcome::Refused { status, code } => {
            bail!("the signed request was refused: HTTP {status}, {code}")
        }
    }
    println!();

    println!("[5/6] Three requests the verifier must refuse");
    println!("  a) The body is changed after signing (\"amount\":100 -> \"amount\":999999)");
    let tampered = SignedRequest::sign(&signer, &env.url(path), body.clone())
        .await?
        .with_body(Bytes::from_static(br#"{"amount":999999,"to":"alice"}"#));
    expect_refusal(tampered.send().await?, RejectCode::BodyHashMismatch)?;

    println!("  b) The request accepted in step 4 is sent again, byte for byte");
    expect_refusal(accepted.send().await?, RejectCode::ReplayedNonce)?;

    println!(
        "  c) A request signed now but checked {} minutes later",
        STALE_BY.as_secs() / 60
    );
    println!("     (A demo cannot wait that long, and the agent always signs with the real time.");
    println!("     The verifier takes the time as an input, so the demo asks the API's own");
    println!(
        "     verifier directly, with its clock set {} s ahead.)",
        STALE_BY.as_secs()
    );
    let late = SignedRequest::sign(&signer, &env.url(path), body).await?;
    let headers = late.header_pairs();
    let fields: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let uri = late.uri();
    let parts = RequestParts {
        method: "POST",
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: &fields,
    };
    let later = SystemTime::now()
        .checked_add(STALE_BY)
        .context("clock overflow")?;
    match env
        .verifier
        .verify(&parts, late.body_digest().as_bytes(), later)
    {
        Err(rejection) if rejection.code() == RejectCode::StaleDate => {
            println!(
                "     -> refused: {} (HTTP {}): {}",
                rejection.code(),
                rejection.code().http_status(),
                rejection.detail()
            );
        }
        Err(rejection) => bail!("expected stale_date, got {}", rejection.code()),
        Ok(_) => bail!("a request checked 10 minutes late was accepted"),
    }
    Ok(())
}

fn expect_refusal(outcome: Outcome, expected: RejectCode) -> anyhow::Result<()> {
    match outcome {
        Outcome::Refused { status, code } if code == expected.as_str() => {
            println!("     -> refused: HTTP {status}, WWW-Authenticate: HWS1 error=\"{code}\"");
            Ok(())
        }
        Outcome::Refused { status, code } => {
            bail!("expected {expected}, got HTTP {status} {code}")
        }
        Outcome::Accepted(answer) => bail!("expected {expected}, but it was accepted: {answer}"),
    }
}

/// Prints a header; `Authorization` one field per line, so its parts can be read.
fn print_header(name: &str, value: &str) {
    // `ALGORITHM Credential=…, SignedHeaders=…, Signature=…`
    let mut fields = value.split([' ', ',']).filter(|f| !f.is_empty());
    let first = fields.next().unwrap_or_default();
    println!("        {name}: {}", shorten(first));
    let indent = " ".repeat(10 + name.len());
    for field in fields {
        println!("{indent}{}", shorten(field));
    }
}

/// Long values (the signature) cut for display.
fn shorten(value: &str) -> String {
    const MAX: usize = 84;
    if value.len() <= MAX {
        return value.to_owned();
    }
    let cut = (0..=MAX)
        .rev()
        .find(|&i| value.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}...", &value[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_demo_accepts_one_request_and_refuses_three() -> anyhow::Result<()> {
        // `run` fails on any unexpected acceptance or refusal code.
        assert_eq!(run().await?, ExitCode::SUCCESS);
        Ok(())
    }
}
