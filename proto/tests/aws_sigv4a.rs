//! Runs every case folder of the AWS SigV4a test suite (`$HWSIGN_VECTORS/aws-sigv4a`, default
//! `../shared/vectors`) through the canonicalizer with the AWS profile: canonical request and string
//! to sign must be byte-identical to the suite's files, for the header and the query (presigned)
//! variant, and the suite's signatures must verify with its public key.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use hwsign_proto::keys::{PublicKey, sha256_hex};
use hwsign_proto::profile::aws_sigv4a;
use hwsign_proto::sign::{HeaderSelection, SigningParams, prepare_headers, prepare_presigned};
use hwsign_proto::{RequestParts, SigningTime, StringToSign};
use serde_json::Value;

fn vectors_dir() -> PathBuf {
    let base = std::env::var_os("HWSIGN_VECTORS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"),
        PathBuf::from,
    );
    base.join("aws-sigv4a")
}

struct ParsedRequest {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Parses the suite's `request.txt`: request line, `Name:value` lines, blank line, body.
fn parse_request(text: &str) -> Result<ParsedRequest> {
    let (head, body) = match text.split_once("\n\n") {
        Some((h, b)) => (h, b.as_bytes().to_vec()),
        None => (text.trim_end_matches('\n'), Vec::new()),
    };
    let mut lines = head.lines();
    let request_line = lines.next().context("empty request.txt")?;
    let (method, rest) = request_line.split_once(' ').context("no method")?;
    let target = rest.strip_suffix(" HTTP/1.1").context("no HTTP/1.1")?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').context("header without colon")?;
        headers.push((name.to_owned(), value.to_owned()));
    }
    Ok(ParsedRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body,
    })
}

fn read_optional(dir: &Path, name: &str) -> Result<Option<String>> {
    let path = dir.join(name);
    if path.exists() {
        Ok(Some(
            fs::read_to_string(&path).with_context(|| path.display().to_string())?,
        ))
    } else {
        Ok(None)
    }
}

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
    let context: Value = serde_json::from_str(&fs::read_to_string(dir.join("context.json"))?)?;
    let request = parse_request(&fs::read_to_string(dir.join("request.txt"))?)?;
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
    let header_borrowed: Vec<(&str, &str)> = request
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
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
    let dir = vectors_dir();
    let mut cases: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("reading {} (set HWSIGN_VECTORS)", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join("context.json").is_file())
        .collect();
    cases.sort();
    if cases.is_empty() {
        bail!("no SigV4a case folders under {}", dir.display());
    }
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
