//! HWS1's stricter rules, each with the exact error it must produce.

use anyhow::Result;
use hwsign_proto::Nonce;
use hwsign_proto::canonical::{CanonicalRequest, RequestParts, SignedHeaders};
use hwsign_proto::keys::EMPTY_SHA256;
use hwsign_proto::sign::{HeaderSelection, SigningParams, UNSIGNED_PAYLOAD, prepare_headers};
use hwsign_proto::verify_input::parse_header_signed;
use hwsign_proto::{Authorization, HWS1, ProtoError, SigningTime};

const KEY_ID: &str = "hk1_00112233445566778899aabbccddeeff";

fn signed_headers(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<Vec<(String, String)>, ProtoError> {
    let nonce = Nonce::from_random([7; 16]);
    let params = SigningParams {
        profile: &HWS1,
        credential: KEY_ID,
        audience: "api",
        time: SigningTime::from_unix(1_790_000_000),
        nonce: Some(&nonce),
        added_headers: &[],
    };
    let parts = RequestParts {
        method,
        path,
        query,
        headers,
    };
    let prepared = prepare_headers(
        &params,
        &parts,
        EMPTY_SHA256,
        HeaderSelection::ProfileWith(&[]),
    )?;
    Ok(prepared.finish(&HWS1, &[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01]))
}

fn canonical_path(path: &str) -> Result<String, ProtoError> {
    let headers = [("host", "h")];
    let parts = RequestParts {
        method: "GET",
        path,
        query: "",
        headers: &headers,
    };
    let signed = SignedHeaders::parse("host")?;
    let canonical = CanonicalRequest::new(&HWS1, &parts, &signed, EMPTY_SHA256)?;
    Ok(canonical
        .as_str()
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_owned())
}

#[test]
fn encoded_slash_stays_distinct_from_separator() -> Result<()> {
    assert_eq!(canonical_path("/a%2Fb")?, "/a%2Fb");
    assert_eq!(canonical_path("/a/b")?, "/a/b");
    assert_eq!(canonical_path("/a%2fb")?, "/a%2Fb");
    assert_eq!(canonical_path("/a%252Fb")?, "/a%252Fb");
    Ok(())
}

#[test]
fn dot_segments_and_double_slashes_are_signed_as_sent() -> Result<()> {
    assert_eq!(canonical_path("//admin")?, "//admin");
    assert_eq!(canonical_path("/a/../admin")?, "/a/../admin");
    assert_ne!(canonical_path("/a/../admin")?, canonical_path("/admin")?);
    Ok(())
}

#[test]
fn broken_escapes_and_control_bytes_are_refused() {
    assert_eq!(
        canonical_path("/a%zz"),
        Err(ProtoError::InvalidPercentEncoding)
    );
    assert_eq!(canonical_path("/a\r\nb"), Err(ProtoError::InvalidPath));
    assert_eq!(canonical_path("relative"), Err(ProtoError::InvalidPath));
}

#[test]
fn repeated_signed_header_is_refused_not_joined() {
    let headers = [
        ("host", "h"),
        ("content-type", "a/b"),
        ("content-type", "c/d"),
    ];
    assert_eq!(
        signed_headers("GET", "/", "", &headers).err(),
        Some(ProtoError::DuplicateHeader("content-type".into()))
    );
    let two_hosts = [("host", "a"), ("host", "b")];
    assert_eq!(
        signed_headers("GET", "/", "", &two_hosts).err(),
        Some(ProtoError::DuplicateHeader("host".into()))
    );
}

#[test]
fn folded_header_values_are_refused() {
    let headers = [("host", "h"), ("content-type", "a\r\n b")];
    assert_eq!(
        signed_headers("GET", "/", "", &headers).err(),
        Some(ProtoError::InvalidHeaderValue("content-type".into()))
    );
}

#[test]
fn signer_refuses_caller_supplied_protocol_headers() {
    let headers = [("host", "h"), ("X-Hws-Date", "20200101T000000Z")];
    assert_eq!(
        signed_headers("GET", "/", "", &headers).err(),
        Some(ProtoError::DuplicateHeader("x-hws-date".into()))
    );
}

#[test]
fn unsigned_payload_is_refused_in_header_mode() {
    let nonce = Nonce::from_random([1; 16]);
    let params = SigningParams {
        profile: &HWS1,
        credential: KEY_ID,
        audience: "api",
        time: SigningTime::from_unix(0),
        nonce: Some(&nonce),
        added_headers: &[],
    };
    let headers = [("host", "h")];
    let parts = RequestParts {
        method: "GET",
        path: "/",
        query: "",
        headers: &headers,
    };
    assert_eq!(
        prepare_headers(
            &params,
            &parts,
            UNSIGNED_PAYLOAD,
            HeaderSelection::ProfileWith(&[])
        )
        .err(),
        Some(ProtoError::UnsignedPayloadNotAllowed)
    );
}

#[test]
fn verifier_requires_content_type_to_be_signed_when_present() -> Result<()> {
    let added = signed_headers("POST", "/", "", &[("host", "h")])?;
    let mut received: Vec<(&str, &str)> = vec![("host", "h"), ("content-type", "text/plain")];
    received.extend(added.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let parts = RequestParts {
        method: "POST",
        path: "/",
        query: "",
        headers: &received,
    };
    assert!(matches!(
        parse_header_signed(&HWS1, &parts),
        Err(ProtoError::InvalidSignedHeaders(_))
    ));
    Ok(())
}

#[test]
fn authorization_parser_is_strict() {
    let good = format!(
        "HWS1-ECDSA-P256-SHA256 Credential={KEY_ID}/20261123/api/hws1_request, SignedHeaders=host;x-hws-content-sha256;x-hws-date;x-hws-nonce, Signature=3006020101020101"
    );
    assert!(Authorization::parse(&good, &HWS1).is_ok());
    let variants = [
        good.replace("HWS1-ECDSA-P256-SHA256 ", "HWS1-ECDSA-P256-SHA256  "),
        good.replace("HWS1-ECDSA", "hws1-ecdsa"),
        good.replace(", SignedHeaders", ",SignedHeaders"),
        good.replace("Credential=", "credential="),
        good.replace("hws1_request", "aws4_request"),
        good.replace("/20261123/", "/2026112/"),
        good.replace("/api/", "/API/"),
        good.replace("host;x-hws", "x-hws-date;host;x-hws"),
        good.replace("host;", "host;host;"),
        good.replace("Signature=3006", "Signature=3O06"),
        good.replace("Signature=3006020101020101", "Signature=3006020101020101AB"),
        good.replace("Signature=3006020101020101", "Signature="),
        format!("{good}, Extra=1"),
        good.replace(&format!("Credential={KEY_ID}/"), "Credential="),
        good.replace(
            &format!(" Credential={KEY_ID}/20261123/api/hws1_request,"),
            "",
        ),
        String::new(),
        format!("{good}{}", " ".repeat(5000)),
    ];
    for (i, variant) in variants.iter().enumerate() {
        assert!(
            Authorization::parse(variant, &HWS1).is_err(),
            "variant {i} accepted: {variant}"
        );
    }
}

// --- Hardening (issue 9): what is signed is what the application reads. ---

fn canonical_query_line(
    profile: &hwsign_proto::Profile,
    query: &str,
) -> Result<String, ProtoError> {
    let headers = [("host", "h")];
    let parts = RequestParts {
        method: "GET",
        path: "/",
        query,
        headers: &headers,
    };
    let signed = SignedHeaders::parse("host")?;
    let canonical = CanonicalRequest::new(profile, &parts, &signed, EMPTY_SHA256)?;
    Ok(canonical
        .as_str()
        .lines()
        .nth(2)
        .unwrap_or_default()
        .to_owned())
}

fn canonical_header_line(name: &str, value: &str) -> Result<String, ProtoError> {
    let headers = [("host", "h"), (name, value)];
    let parts = RequestParts {
        method: "GET",
        path: "/",
        query: "",
        headers: &headers,
    };
    let mut names = ["host".to_owned(), name.to_ascii_lowercase()];
    names.sort();
    let signed = SignedHeaders::parse(&names.join(";"))?;
    let canonical = CanonicalRequest::new(&HWS1, &parts, &signed, EMPTY_SHA256)?;
    Ok(canonical
        .as_str()
        .lines()
        .find(|l| l.starts_with(&format!("{}:", name.to_ascii_lowercase())))
        .unwrap_or_default()
        .to_owned())
}

#[test]
fn hardening_plus_is_a_space_and_distinct_from_encoded_plus() -> Result<()> {
    let plus = canonical_query_line(&HWS1, "a=1+2")?;
    assert_eq!(plus, "a=1%202");
    assert_eq!(canonical_query_line(&HWS1, "a=1%202")?, plus);
    assert_eq!(canonical_query_line(&HWS1, "a=1%2B2")?, "a=1%2B2");
    assert_ne!(canonical_query_line(&HWS1, "a=1%2b2")?, plus);
    // In names too.
    assert_eq!(canonical_query_line(&HWS1, "a+b=1")?, "a%20b=1");
    // The AWS profile keeps SigV4's literal plus (its suite depends on it).
    let aws = hwsign_proto::profile::aws_sigv4a(false);
    assert_eq!(canonical_query_line(&aws, "a=1+2")?, "a=1%2B2");
    Ok(())
}

#[test]
fn hardening_repeated_query_names_are_refused_not_sorted() -> Result<()> {
    for query in [
        "id=1&id=2",
        "id=1&%69d=2",
        "id&id=",
        "a=1&id=2&b=3&id=2",
        "a+b=1&a%20b=2",
    ] {
        assert!(
            matches!(
                canonical_query_line(&HWS1, query),
                Err(ProtoError::RepeatedQueryParameter(_))
            ),
            "{query}"
        );
    }
    assert_eq!(
        signed_headers("GET", "/", "id=1&id=2", &[("host", "h")]).err(),
        Some(ProtoError::RepeatedQueryParameter("id".into()))
    );
    // A verifier receiving a repeated name refuses it even when the rest would verify.
    let added = signed_headers("GET", "/", "id=1", &[("host", "h")])?;
    let mut received: Vec<(&str, &str)> = vec![("host", "h")];
    received.extend(added.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let parts = RequestParts {
        method: "GET",
        path: "/",
        query: "id=1&id=2",
        headers: &received,
    };
    assert_eq!(
        parse_header_signed(&HWS1, &parts).err(),
        Some(ProtoError::RepeatedQueryParameter("id".into()))
    );
    // SigV4 sorts the copies; the AWS profile still does.
    let aws = hwsign_proto::profile::aws_sigv4a(false);
    assert_eq!(canonical_query_line(&aws, "id=2&id=1")?, "id=1&id=2");
    Ok(())
}

#[test]
fn hardening_presigned_urls_refuse_repeated_names_too() -> Result<()> {
    let nonce = Nonce::from_random([3; 16]);
    let params = SigningParams {
        profile: &HWS1,
        credential: KEY_ID,
        audience: "api",
        time: SigningTime::from_unix(1_790_000_000),
        nonce: Some(&nonce),
        added_headers: &[],
    };
    let headers = [("host", "h")];
    let parts = RequestParts {
        method: "GET",
        path: "/f",
        query: "id=1&id=2",
        headers: &headers,
    };
    assert_eq!(
        hwsign_proto::sign::prepare_presigned(
            &params,
            &parts,
            UNSIGNED_PAYLOAD,
            60,
            HeaderSelection::ProfileWith(&[])
        )
        .err(),
        Some(ProtoError::RepeatedQueryParameter("id".into()))
    );
    Ok(())
}

#[test]
fn hardening_header_values_are_signed_as_sent_inside() -> Result<()> {
    assert_eq!(
        canonical_header_line("x-note", "  a   b  ")?,
        "x-note:a   b"
    );
    assert_ne!(
        canonical_header_line("x-note", "a  b")?,
        canonical_header_line("x-note", "a b")?
    );
    assert_eq!(canonical_header_line("x-note", "a\tb")?, "x-note:a\tb");
    assert_ne!(
        canonical_header_line("x-note", "a\tb")?,
        canonical_header_line("x-note", "a b")?
    );
    // A signature over "a  b" does not verify for "a b": the strings to sign differ.
    let sign_with = |value: &'static str| -> Result<String> {
        let headers = [("host", "h"), ("x-note", value)];
        let nonce = Nonce::from_random([9; 16]);
        let params = SigningParams {
            profile: &HWS1,
            credential: KEY_ID,
            audience: "api",
            time: SigningTime::from_unix(1_790_000_000),
            nonce: Some(&nonce),
            added_headers: &[],
        };
        let parts = RequestParts {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
        };
        let prepared = prepare_headers(
            &params,
            &parts,
            EMPTY_SHA256,
            HeaderSelection::ProfileWith(&["x-note".to_owned()]),
        )?;
        Ok(prepared.string_to_sign().as_str().to_owned())
    };
    assert_ne!(sign_with("a  b")?, sign_with("a b")?);
    assert_eq!(sign_with("a  b")?, sign_with(" a  b\t")?);
    Ok(())
}

#[test]
fn hardening_signed_host_is_lower_case_without_default_port() -> Result<()> {
    use hwsign_proto::host::signed_host;
    for authority in ["h.example", "h.example:443", "H.Example:443", "H.EXAMPLE"] {
        assert_eq!(signed_host(Some("https"), authority)?, "h.example");
        assert_eq!(signed_host(None, authority)?, "h.example");
    }
    assert_eq!(signed_host(Some("http"), "h.example:80")?, "h.example");
    assert_eq!(signed_host(Some("http"), "h.example:443")?, "h.example:443");
    assert_eq!(signed_host(Some("https"), "h.example:80")?, "h.example:80");
    assert!(matches!(
        signed_host(None, "user@h.example"),
        Err(ProtoError::InvalidAuthority(_))
    ));
    // The verifier's canonical host line is lower case too, so a client writing the URL's
    // spelling (`Host: H.Example`) verifies against the derived `h.example`.
    let headers = [("host", "H.Example")];
    let parts = RequestParts {
        method: "GET",
        path: "/",
        query: "",
        headers: &headers,
    };
    let canonical =
        CanonicalRequest::new(&HWS1, &parts, &SignedHeaders::parse("host")?, EMPTY_SHA256)?;
    assert!(canonical.as_str().contains("\nhost:h.example\n"));
    Ok(())
}
