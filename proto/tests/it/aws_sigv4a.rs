//! Runs every case folder of the AWS SigV4a test suite (`vectors/aws-sigv4a` in the repository,
//! plus `$HWSIGN_VECTORS/aws-sigv4a` when set) through the canonicalizer with the AWS profile:
//! canonical request and string to sign must be byte-identical to the suite's files, for the
//! header and the query (presigned) variant, and the suite's signatures must verify with its
//! public key. The folders are read by the one vector loader (`tests/it/support/vectors.rs`), which
//! fails on any file it cannot read.

use crate::support::vectors;

use std::path::Path;

use anyhow::{Context, Result, ensure};
use hwsign_proto::keys::{PublicKey, sha256_hex};
use hwsign_proto::profile::aws_sigv4a;
use hwsign_proto::sign::{HeaderSelection, SigningParams, prepare_headers, prepare_presigned};
use hwsign_proto::{RequestParts, SigningTime, StringToSign};
use serde_json::Value;
use vectors::{parse_request, read_optional};

/// Every file an AWS SigV4a case folder may hold.
const AWS_CASE_FILES: &[&str] = &[
    "context.json",
    "request.txt",
    "public-key.json",
    "canonical-request.txt",
    "string-to-sign.txt",
    "header-canonical-request.txt",
    "header-string-to-sign.txt",
    "header-signature.txt",
    "header-signed-request.txt",
    "query-canonical-request.txt",
    "query-string-to-sign.txt",
    "query-signature.txt",
    "query-signed-request.txt",
];

fn public_key(dir: &Path) -> Result<Option<PublicKey>> {
    let Some(text) = read_optional(dir, "public-key.json")? else {
        return Ok(None);
    };
    let json: Value = serde_json::from_str(&text)?;
    let x = hex::decode(json["X"].as_str().context("X")?)?;
    let y = hex::decode(json["Y"].as_str().context("Y")?)?;
    Ok(Some(PublicKey::from_affine(&x, &y)?))
}

fn verify_signature(
    key: &PublicKey,
    string_to_sign: &StringToSign,
    signature_hex: &str,
) -> Result<()> {
    let signature = hex::decode(signature_hex.trim())?;
    ensure!(
        key.verify_digest(&string_to_sign.digest(), &signature),
        "suite signature does not verify"
    );
    Ok(())
}

/// The signature embedded in a signed-request file (header or query form).
fn embedded_signature(signed_request: &str) -> Option<String> {
    let start = signed_request.find("Signature=")? + "Signature=".len();
    let hex: String = signed_request[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    (!hex.is_empty()).then_some(hex)
}

/// Returns how many byte-for-byte comparisons and signature checks the case made.
fn run_case(dir: &Path) -> Result<usize> {
    vectors::check_known_files(dir, AWS_CASE_FILES)?;
    let context: Value = serde_json::from_str(&vectors::read(dir, "context.json")?)?;
    let request = parse_request(&vectors::read(dir, "request.txt")?)?;
    ensure!(
        request.absolute.is_none(),
        "the AWS suite writes origin-form targets"
    );
    let normalize = context["normalize"].as_bool().context("normalize")?;
    let profile = aws_sigv4a(normalize);
    let time = SigningTime::parse_rfc3339_utc(context["timestamp"].as_str().context("timestamp")?)?;
    let access_key = context["credentials"]["access_key_id"]
        .as_str()
        .context("access key")?;
    let service = context["service"].as_str().context("service")?;
    let region = context["region"].as_str().context("region")?;
    let token = context["credentials"]["token"].as_str();
    let omit_token = context["omit_session_token"].as_bool().unwrap_or(false);
    let sign_body = context["sign_body"].as_bool().unwrap_or(false);
    let expires = context["expiration_in_seconds"]
        .as_u64()
        .context("expiration")?;
    let body_hash = sha256_hex(&request.body);

    let mut added: Vec<(&str, &str)> = vec![("x-amz-region-set", region)];
    if let (Some(token), false) = (token, omit_token) {
        added.push(("x-amz-security-token", token));
    }
    let header_borrowed = request.header_pairs();
    let parts = RequestParts {
        method: &request.method,
        path: &request.path,
        query: &request.query,
        headers: &header_borrowed,
    };
    let key = public_key(dir)?;
    let mut checks = 0;

    // Header variant.
    let mut header_added = added.clone();
    if sign_body {
        header_added.push(("x-amz-content-sha256", &body_hash));
    }
    let params = SigningParams {
        profile: &profile,
        credential: access_key,
        audience: service,
        time,
        nonce: None,
        added_headers: &header_added,
    };
    let prepared = prepare_headers(&params, &parts, &body_hash, HeaderSelection::All)?;
    for expected_name in ["header-canonical-request.txt", "canonical-request.txt"] {
        if let Some(expected) = read_optional(dir, expected_name)? {
            ensure!(
                prepared.canonical_request().as_str() == expected,
                "{expected_name}:\n--- expected\n{expected}\n--- got\n{}",
                prepared.canonical_request()
            );
            checks += 1;
        }
    }
    for expected_name in ["header-string-to-sign.txt", "string-to-sign.txt"] {
        if let Some(expected) = read_optional(dir, expected_name)? {
            ensure!(
                prepared.string_to_sign().as_str() == expected,
                "{expected_name}:\n--- expected\n{expected}\n--- got\n{}",
                prepared.string_to_sign()
            );
            checks += 1;
        }
    }
    if let (Some(key), Some(signature)) = (&key, read_optional(dir, "header-signature.txt")?) {
        verify_signature(key, prepared.string_to_sign(), &signature)?;
        checks += 1;
    }
    if let (Some(key), Some(signed)) = (&key, read_optional(dir, "header-signed-request.txt")?) {
        let signature =
            embedded_signature(&signed).context("no signature in header-signed-request")?;
        verify_signature(key, prepared.string_to_sign(), &signature)?;
        checks += 1;
    }

    // Query (presigned) variant: the suite signs the original headers and hashes the body.
    let params = SigningParams {
        added_headers: &added,
        ..params
    };
    let presigned = prepare_presigned(&params, &parts, &body_hash, expires, HeaderSelection::All)?;
    if let Some(expected) = read_optional(dir, "query-canonical-request.txt")? {
        ensure!(
            presigned.canonical_request().as_str() == expected,
            "query canonical:\n--- expected\n{expected}\n--- got\n{}",
            presigned.canonical_request()
        );
        checks += 1;
    }
    if let Some(expected) = read_optional(dir, "query-string-to-sign.txt")? {
        ensure!(
            presigned.string_to_sign().as_str() == expected,
            "query string to sign:\n--- expected\n{expected}\n--- got\n{}",
            presigned.string_to_sign()
        );
        checks += 1;
    }
    if let (Some(key), Some(signature)) = (&key, read_optional(dir, "query-signature.txt")?) {
        verify_signature(key, presigned.string_to_sign(), &signature)?;
        checks += 1;
    }
    if let (Some(key), Some(signed)) = (&key, read_optional(dir, "query-signed-request.txt")?) {
        let signature =
            embedded_signature(&signed).context("no signature in query-signed-request")?;
        verify_signature(key, presigned.string_to_sign(), &signature)?;
        checks += 1;
    }

    // Properties that hold for every case, with or without expected files: the canonical query is
    // sorted, and canonicalization is deterministic.
    let canonical = prepared.canonical_request().as_str();
    let query_line = canonical.lines().nth(2).context("no query line")?;
    let params_sorted: Vec<&str> = query_line.split('&').filter(|p| !p.is_empty()).collect();
    let mut resorted = params_sorted.clone();
    resorted.sort_by(|a, b| {
        let (ak, av) = a.split_once('=').unwrap_or((a, ""));
        let (bk, bv) = b.split_once('=').unwrap_or((b, ""));
        (ak, av).cmp(&(bk, bv))
    });
    ensure!(
        params_sorted == resorted,
        "canonical query not sorted: {query_line}"
    );
    let again = prepare_headers(
        &SigningParams {
            added_headers: &header_added,
            ..params
        },
        &parts,
        &body_hash,
        HeaderSelection::All,
    )?;
    ensure!(again.canonical_request() == prepared.canonical_request());
    Ok(checks)
}

#[test]
fn aws_sigv4a_suite() -> Result<()> {
    let cases = vectors::case_dirs("aws-sigv4a")?;
    let mut failures = Vec::new();
    let mut total_checks = 0;
    for case in &cases {
        match run_case(case) {
            Ok(n) => total_checks += n,
            Err(e) => failures.push(format!("{}: {e:#}", case.display())),
        }
    }
    eprintln!(
        "{} cases, {total_checks} byte/signature checks",
        cases.len()
    );
    ensure!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    ensure!(total_checks > 0, "no case had anything to compare");
    Ok(())
}

/// The suite's `get-header-value-multiline` request: a value continued on two more lines. AWS
/// signs the trimmed lines joined with `,`; HWS1 refuses folding on the wire.
const FOLDED_REQUEST: &str = "GET / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:value1\n  value2\n     value3\nX-Amz-Date:20150830T123600Z\n\n";

#[test]
fn loader_reads_folded_values_and_the_aws_profile_joins_them() -> Result<()> {
    let request = parse_request(FOLDED_REQUEST)?;
    assert_eq!(
        request.headers[1],
        (
            "My-Header1".to_owned(),
            "value1\n  value2\n     value3".to_owned()
        )
    );
    let headers = request.header_pairs();
    let parts = RequestParts {
        method: &request.method,
        path: &request.path,
        query: &request.query,
        headers: &headers,
    };
    let profile = aws_sigv4a(true);
    let signed = hwsign_proto::SignedHeaders::all_of(&parts)?;
    let canonical =
        hwsign_proto::CanonicalRequest::new(&profile, &parts, &signed, &sha256_hex(b""))?;
    assert!(
        canonical
            .as_str()
            .contains("\nmy-header1:value1,value2,value3\n"),
        "{canonical}"
    );
    let hws1 =
        hwsign_proto::CanonicalRequest::new(&hwsign_proto::HWS1, &parts, &signed, &sha256_hex(b""));
    assert_eq!(
        hws1.err(),
        Some(hwsign_proto::ProtoError::InvalidHeaderValue(
            "my-header1".into()
        ))
    );
    Ok(())
}

#[test]
fn loader_fails_on_what_it_cannot_read() -> Result<()> {
    for bad in [
        "",
        "GET / HTTP/1.0\n",
        "GET /\n",
        "GET / HTTP/1.1\n  folded-first\n",
        "GET / HTTP/1.1\nno colon here\n",
        "GET / HTTP/1.1\r\nHost:h\r\n",
        "GET relative HTTP/1.1\n",
    ] {
        assert!(parse_request(bad).is_err(), "{bad:?} was read");
    }
    // A case folder holding a file the loader does not know is an error, not a skipped check.
    let dir = std::env::temp_dir().join(format!("hwsign-vectors-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("request.txt"), "GET / HTTP/1.1\nHost:h\n")?;
    std::fs::write(dir.join("signature.txt"), "00")?;
    let refused = vectors::check_known_files(&dir, AWS_CASE_FILES).is_err();
    std::fs::remove_dir_all(&dir)?;
    ensure!(refused, "an unknown file was accepted");
    Ok(())
}
