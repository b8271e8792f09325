//! HWS1 step-by-step vectors (`vectors/hws1/<case>/`) and the worked examples of docs/PROTOCOL.md.
//!
//! Each case is defined below (request and signing context); the files of its folder —
//! `request.txt`, `context.json`, `canonical-request.txt`, `string-to-sign.txt`, and
//! `added-headers.txt` (header mode, `authorization` last), `presigned-query.txt` (presigned URL)
//! or `error.txt` (a request HWS1 refuses) — are produced by the reference code. The check reads
//! every folder with the one vector loader (`tests/it/support/vectors.rs`), recomputes every step,
//! verifies the signatures, and fails on any difference. PROTOCOL.md §11 shows the files: every
//! `<!-- vectors/hws1/<case>/<file> -->` block must equal the file.
//!
//! After a deliberate protocol change: `HWSIGN_REGENERATE=1 cargo test -p hwsign-proto --test it
//! protocol_doc`, review the diff of `vectors/hws1`, and paste the changed blocks into the doc.

use crate::support::vectors;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use hwsign_proto::delegation::DelegationStatement;
use hwsign_proto::host::signed_host;
use hwsign_proto::keys::{PublicKey, sha256_hex};
use hwsign_proto::profile::HWS1_DELEGATION_HEADER;
use hwsign_proto::sign::{
    HeaderSelection, SigningParams, UNSIGNED_PAYLOAD, prepare_headers, prepare_presigned,
};
use hwsign_proto::verify_input::{parse_header_signed, parse_presigned};
use hwsign_proto::{HWS1, Nonce, RequestParts, SigningTime};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The example key: a fixed, published scalar. Never use it for anything real.
fn example_key() -> Result<SigningKey> {
    let scalar = Sha256::digest(b"hwsign protocol example key -- public, never use");
    Ok(SigningKey::from_slice(&scalar)?)
}

/// The session key of the delegated example: also published, never use it.
fn example_session_key() -> Result<SigningKey> {
    let scalar = Sha256::digest(b"hwsign protocol example session key -- public, never use");
    Ok(SigningKey::from_slice(&scalar)?)
}

fn sign(key: &SigningKey, digest: &[u8; 32]) -> Result<Vec<u8>> {
    let signature: Signature = key.sign_prehash(digest)?;
    Ok(signature.to_der().as_bytes().to_vec())
}

fn public(key: &SigningKey) -> Result<PublicKey> {
    Ok(PublicKey::from_verifying_key(*key.verifying_key())?)
}

/// One HWS1 vector, as defined in code.
struct Case {
    name: &'static str,
    request: &'static str,
    /// Extra header names to sign.
    sign_headers: &'static [&'static str],
    presign_expires_secs: Option<u64>,
    delegated: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "post-json",
        request: "POST /v1/transfers/caf%C3%A9?currency=EUR&amount=100 HTTP/1.1\nHost:api.example.com\nContent-Type:application/json\n\n{\"to\":\"acct-42\",\"amount\":100}",
        sign_headers: &[],
        presign_expires_secs: None,
        delegated: false,
    },
    Case {
        name: "get-query-form-encoding",
        request: "GET /v1/search?q=caf%C3%A9+au+lait&tag=a%2Bb&flag&note=x%20y HTTP/1.1\nHost:api.example.com\n\n",
        sign_headers: &[],
        presign_expires_secs: None,
        delegated: false,
    },
    Case {
        name: "get-repeated-query-name",
        request: "GET /v1/items?id=1&%69d=2 HTTP/1.1\nHost:api.example.com\n\n",
        sign_headers: &[],
        presign_expires_secs: None,
        delegated: false,
    },
    Case {
        name: "get-header-inner-spaces",
        request: "GET /v1/items HTTP/1.1\nHost:api.example.com\nX-Note:   keep   these   spaces   \n\n",
        sign_headers: &["x-note"],
        presign_expires_secs: None,
        delegated: false,
    },
    Case {
        name: "get-host-default-port",
        request: "GET https://API.Example.com:443/v1/items HTTP/1.1\n\n",
        sign_headers: &[],
        presign_expires_secs: None,
        delegated: false,
    },
    Case {
        name: "get-presigned",
        request: "GET /v1/reports/2026-11.pdf HTTP/1.1\nHost:api.example.com\n\n",
        sign_headers: &[],
        presign_expires_secs: Some(3600),
        delegated: false,
    },
    Case {
        name: "get-delegated",
        request: "GET /v1/balance HTTP/1.1\nHost:api.example.com\n\n",
        sign_headers: &[],
        presign_expires_secs: None,
        delegated: true,
    },
];

const AUDIENCE: &str = "payments";
const DATE: &str = "20261123T193000Z";
const NONCE_BYTES: &[u8; 16] = b"hwsign-example-1";

fn context_json(case: &Case) -> String {
    // Keys in sorted order: the file must not depend on whether some crate in the build turns on
    // serde_json's `preserve_order` (cedar-policy does).
    let value = json!({
        "audience": AUDIENCE,
        "date": DATE,
        "delegated": case.delegated,
        "key": "the example key of docs/PROTOCOL.md §11",
        "nonce_bytes": String::from_utf8_lossy(NONCE_BYTES),
        "presign_expires_secs": case.presign_expires_secs,
        "sign_headers": case.sign_headers,
    });
    serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
}

/// The files a case produces, in order, computed from `request.txt` and `context.json` as read
/// by the loader.
fn compute(request_text: &str, context_text: &str) -> Result<Vec<(&'static str, String)>> {
    let request = vectors::parse_request(request_text)?;
    let context: Value = serde_json::from_str(context_text)?;
    let audience = context["audience"].as_str().context("audience")?;
    let time = SigningTime::parse_amz_date(context["date"].as_str().context("date")?)?;
    let nonce_bytes: [u8; 16] = context["nonce_bytes"]
        .as_str()
        .context("nonce_bytes")?
        .as_bytes()
        .try_into()
        .context("nonce_bytes must be 16 bytes")?;
    let nonce = Nonce::from_random(nonce_bytes);
    let sign_headers: Vec<String> = context["sign_headers"]
        .as_array()
        .context("sign_headers")?
        .iter()
        .map(|v| v.as_str().map(str::to_owned).context("sign_headers entry"))
        .collect::<Result<_>>()?;
    let presign = context["presign_expires_secs"].as_u64();
    let delegated = context["delegated"].as_bool().context("delegated")?;

    // The signed host: from the Host header, or derived from an absolute-form target (§2).
    let mut headers = request.header_pairs();
    let derived;
    if let Some((scheme, authority)) = &request.absolute {
        ensure!(
            !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")),
            "absolute-form request with a Host line"
        );
        derived = signed_host(Some(scheme), authority)?;
        headers.insert(0, ("host", derived.as_str()));
    }
    let parts = RequestParts {
        method: &request.method,
        path: &request.path,
        query: &request.query,
        headers: &headers,
    };

    let device = example_key()?;
    let device_public = public(&device)?;
    let session = example_session_key()?;
    let session_public = public(&session)?;
    let (signing_key, signing_public, delegation) = if delegated {
        let statement = DelegationStatement {
            device_key_id: device_public.key_id(),
            session_key: session_public.clone(),
            audience: audience.to_owned(),
            not_before: SigningTime::from_unix(time.unix() - 60),
            not_after: SigningTime::from_unix(time.unix() + 840),
        };
        statement.check()?;
        let header = statement.to_header_value(&sign(&device, &statement.digest())?);
        (&session, session_public.clone(), Some(header))
    } else {
        (&device, device_public.clone(), None)
    };
    let credential = signing_public.key_id();
    let added: Vec<(&str, &str)> = delegation
        .as_deref()
        .map(|value| vec![(HWS1_DELEGATION_HEADER, value)])
        .unwrap_or_default();
    let params = SigningParams {
        profile: &HWS1,
        credential: &credential,
        audience,
        time,
        nonce: Some(&nonce),
        added_headers: &added,
    };
    let selection = HeaderSelection::ProfileWith(&sign_headers);
    let prepared = match presign {
        Some(expires) => prepare_presigned(&params, &parts, UNSIGNED_PAYLOAD, expires, selection),
        None => prepare_headers(&params, &parts, &sha256_hex(&request.body), selection),
    };
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(refusal) => return Ok(vec![("error.txt", format!("{refusal}\n"))]),
    };
    let mut files = vec![
        (
            "canonical-request.txt",
            prepared.canonical_request().as_str().to_owned(),
        ),
        (
            "string-to-sign.txt",
            prepared.string_to_sign().as_str().to_owned(),
        ),
    ];
    let string_to_sign = prepared.string_to_sign().as_str().to_owned();
    let signature = sign(signing_key, &prepared.digest())?;
    let additions = prepared.finish(&HWS1, &signature);

    // The verifier's view of the signed request rebuilds the same string, and it verifies.
    let claimed = if presign.is_some() {
        let mut query = request.query.clone();
        for (name, value) in &additions {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(&format!("{name}={value}"));
        }
        let lines: Vec<String> = additions.iter().map(|(n, v)| format!("{n}={v}")).collect();
        files.push(("presigned-query.txt", lines.join("\n&")));
        parse_presigned(
            &HWS1,
            &RequestParts {
                query: &query,
                ..parts
            },
        )?
    } else {
        let lines: Vec<String> = additions.iter().map(|(n, v)| format!("{n}: {v}")).collect();
        files.push(("added-headers.txt", lines.join("\n")));
        let mut received = headers.clone();
        received.extend(additions.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        parse_header_signed(
            &HWS1,
            &RequestParts {
                headers: &received,
                ..parts
            },
        )?
    };
    ensure!(claimed.string_to_sign.as_str() == string_to_sign);
    ensure!(signing_public.verify_digest(
        &claimed.string_to_sign.digest(),
        &claimed.authorization.signature
    ));
    if let Some(header) = &claimed.delegation {
        let (statement, statement_signature) = DelegationStatement::parse_header_value(header)?;
        ensure!(device_public.verify_digest(&statement.digest(), &statement_signature));
        ensure!(statement.session_key.key_id() == claimed.authorization.credential);
    }
    Ok(files)
}

const OUTPUT_FILES: &[&str] = &[
    "canonical-request.txt",
    "string-to-sign.txt",
    "added-headers.txt",
    "presigned-query.txt",
    "error.txt",
];

fn hws1_dir() -> PathBuf {
    vectors::repo_vectors().join("hws1")
}

fn regenerate() -> Result<()> {
    let root = hws1_dir();
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    for case in CASES {
        let dir = root.join(case.name);
        std::fs::create_dir_all(&dir)?;
        let context = context_json(case);
        std::fs::write(dir.join("request.txt"), case.request)?;
        std::fs::write(dir.join("context.json"), &context)?;
        for (name, text) in compute(case.request, &context)? {
            std::fs::write(dir.join(name), text)?;
        }
    }
    Ok(())
}

fn check_case(dir: &Path) -> Result<()> {
    let mut known = vec!["request.txt", "context.json"];
    known.extend_from_slice(OUTPUT_FILES);
    vectors::check_known_files(dir, &known)?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("case name")?;
    let request = vectors::read(dir, "request.txt")?;
    let context = vectors::read(dir, "context.json")?;
    if let Some(case) = CASES.iter().find(|c| c.name == name) {
        ensure!(request == case.request, "request.txt differs from the case");
        ensure!(
            context == context_json(case),
            "context.json differs from the case"
        );
    }
    let files = compute(&request, &context)?;
    let produced: BTreeSet<&str> = files.iter().map(|(n, _)| *n).collect();
    for output in OUTPUT_FILES {
        let on_disk = vectors::read_optional(dir, output)?;
        ensure!(
            on_disk.is_some() == produced.contains(output),
            "{output}: present on disk {} but produced {}",
            on_disk.is_some(),
            produced.contains(output)
        );
    }
    for (file, text) in &files {
        let expected = vectors::read(dir, file)?;
        ensure!(
            &expected == text,
            "{file}:\n--- file\n{expected}\n--- code\n{text}"
        );
    }
    Ok(())
}

#[test]
fn hws1_vectors_match_the_code() -> Result<()> {
    if std::env::var_os("HWSIGN_REGENERATE").is_some() {
        regenerate()?;
    }
    let dirs = vectors::case_dirs("hws1")?;
    let in_repo: BTreeSet<String> = dirs
        .iter()
        .filter(|d| d.starts_with(hws1_dir()))
        .filter_map(|d| d.file_name()?.to_str().map(str::to_owned))
        .collect();
    let defined: BTreeSet<String> = CASES.iter().map(|c| c.name.to_owned()).collect();
    ensure!(
        in_repo == defined,
        "vectors/hws1 holds {in_repo:?} but the code defines {defined:?} (HWSIGN_REGENERATE=1)"
    );
    let mut failures = Vec::new();
    for dir in &dirs {
        if let Err(e) = check_case(dir) {
            failures.push(format!("{}: {e:#}", dir.display()));
        }
    }
    ensure!(
        failures.is_empty(),
        "{} HWS1 vectors differ (HWSIGN_REGENERATE=1 after a deliberate change):\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    Ok(())
}

/// Blocks the doc must show: the key, and the vectors that illustrate each rule.
const REQUIRED_DOC_BLOCKS: &[&str] = &[
    "example-public-key",
    "example-key-id",
    "vectors/hws1/post-json/canonical-request.txt",
    "vectors/hws1/post-json/string-to-sign.txt",
    "vectors/hws1/post-json/added-headers.txt",
    "vectors/hws1/get-query-form-encoding/canonical-request.txt",
    "vectors/hws1/get-repeated-query-name/error.txt",
    "vectors/hws1/get-header-inner-spaces/canonical-request.txt",
    "vectors/hws1/get-host-default-port/canonical-request.txt",
    "vectors/hws1/get-presigned/canonical-request.txt",
    "vectors/hws1/get-presigned/presigned-query.txt",
    "vectors/hws1/get-delegated/canonical-request.txt",
    "vectors/hws1/get-delegated/added-headers.txt",
];

/// The fenced block after `<!-- name -->`.
fn doc_block<'a>(doc: &'a str, name: &str) -> Result<&'a str> {
    let marker = format!("<!-- {name} -->\n```\n");
    let start = doc
        .find(&marker)
        .with_context(|| format!("no block {name}"))?
        + marker.len();
    let len = doc[start..]
        .find("\n```")
        .with_context(|| format!("unclosed block {name}"))?;
    Ok(&doc[start..start + len])
}

#[test]
fn protocol_doc_examples_are_the_vector_files() -> Result<()> {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(&doc_path).context("docs/PROTOCOL.md")?;
    let key = public(&example_key()?)?;
    let print = std::env::var_os("HWSIGN_PRINT_EXAMPLE").is_some();
    let mut wrong = Vec::new();
    let mut shown = BTreeSet::new();
    for piece in doc.split("<!-- ").skip(1) {
        let Some((name, _)) = piece.split_once(" -->") else {
            continue;
        };
        let expected = match name {
            "example-public-key" => key.to_pem().trim_end().to_owned(),
            "example-key-id" => key.key_id(),
            other => match other.strip_prefix("vectors/") {
                Some(relative) => {
                    let path = vectors::repo_vectors().join(relative);
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("{}", path.display()))?
                        .trim_end_matches('\n')
                        .to_owned()
                }
                None => continue,
            },
        };
        shown.insert(name.to_owned());
        if print {
            println!("<!-- {name} -->\n```\n{expected}\n```\n");
        }
        if doc_block(&doc, name)? != expected {
            wrong.push(name.to_owned());
        }
    }
    for required in REQUIRED_DOC_BLOCKS {
        if !shown.contains(*required) {
            wrong.push(format!("{required} (missing)"));
        }
    }
    if !wrong.is_empty() {
        bail!("docs/PROTOCOL.md differs from the vectors for: {wrong:?}");
    }
    Ok(())
}
