//! The size bounds every request meets before it is canonicalized, each at its edge, how a
//! repeated signed header is treated by each profile, and the HTTP status of each refusal code.

use hwsign_proto::canonical::{CanonicalRequest, RequestParts, SignedHeaders};
use hwsign_proto::keys::EMPTY_SHA256;
use hwsign_proto::limits::{
    MAX_HEADER_VALUE_LEN, MAX_HEADERS, MAX_METHOD_LEN, MAX_PATH_LEN, MAX_QUERY_LEN,
};
use hwsign_proto::profile::aws_sigv4a;
use hwsign_proto::{HWS1, ProtoError, RejectCode};

fn bounds(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<(), ProtoError> {
    RequestParts {
        method,
        path,
        query,
        headers,
    }
    .check_bounds()
}

fn too_large(what: &'static str, limit: usize) -> Result<(), ProtoError> {
    Err(ProtoError::TooLarge { what, limit })
}

#[test]
fn each_request_bound_admits_its_limit_and_refuses_one_more() {
    let host = [("host", "api.example.com")];
    assert_eq!(bounds("GET", "/", "", &host), Ok(()));

    let longest_method = "M".repeat(MAX_METHOD_LEN);
    assert_eq!(bounds(&longest_method, "/", "", &host), Ok(()));
    for method in ["M".repeat(MAX_METHOD_LEN + 1), String::new(), "GE T".into()] {
        assert_eq!(
            bounds(&method, "/", "", &host),
            Err(ProtoError::InvalidMethod),
            "{method:?}"
        );
    }

    let path = format!("/{}", "p".repeat(MAX_PATH_LEN - 1));
    assert_eq!(bounds("GET", &path, "", &host), Ok(()));
    let path = format!("{path}p");
    assert_eq!(
        bounds("GET", &path, "", &host),
        too_large("path", MAX_PATH_LEN)
    );

    let query = "q".repeat(MAX_QUERY_LEN);
    assert_eq!(bounds("GET", "/", &query, &host), Ok(()));
    let query = format!("{query}q");
    assert_eq!(
        bounds("GET", "/", &query, &host),
        too_large("query", MAX_QUERY_LEN)
    );

    let names: Vec<String> = (0..=MAX_HEADERS).map(|i| format!("x-h{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    assert_eq!(bounds("GET", "/", "", &headers[..MAX_HEADERS]), Ok(()));
    assert_eq!(
        bounds("GET", "/", "", &headers),
        too_large("header count", MAX_HEADERS)
    );

    let value = "v".repeat(MAX_HEADER_VALUE_LEN);
    assert_eq!(bounds("GET", "/", "", &[("x-big", &value)]), Ok(()));
    let value = format!("{value}v");
    assert_eq!(
        bounds("GET", "/", "", &[("x-big", &value)]),
        too_large("header value", MAX_HEADER_VALUE_LEN)
    );
}

/// A signed header sent twice: HWS1 refuses it (two parties could read different values), the
/// AWS profile joins the values with a comma, as SigV4 does.
#[test]
fn a_repeated_signed_header_is_refused_by_hws1_and_joined_by_aws() -> Result<(), ProtoError> {
    let headers = [
        ("host", "api.example.com"),
        ("x-custom", "a"),
        ("x-custom", "b"),
    ];
    let parts = RequestParts {
        method: "GET",
        path: "/",
        query: "",
        headers: &headers,
    };
    let signed = SignedHeaders::parse("host;x-custom")?;
    assert_eq!(
        CanonicalRequest::new(&HWS1, &parts, &signed, EMPTY_SHA256).map(|c| c.to_string()),
        Err(ProtoError::DuplicateHeader("x-custom".into()))
    );
    let aws = CanonicalRequest::new(&aws_sigv4a(false), &parts, &signed, EMPTY_SHA256)?;
    assert!(
        aws.as_str().contains("\nx-custom:a,b\n"),
        "{}",
        aws.as_str()
    );
    Ok(())
}

/// The status of every refusal whose status is not 401 (docs/PROTOCOL.md §7).
#[test]
fn refusal_codes_have_their_documented_status() {
    for (code, status) in [
        (RejectCode::MalformedRequest, 400),
        (RejectCode::UnsignedPayloadNotAllowed, 400),
        (RejectCode::BodyTooLarge, 413),
        (RejectCode::RateLimited, 429),
        (RejectCode::DeviceRevoked, 403),
        (RejectCode::PolicyDenied, 403),
        (RejectCode::VerifierUnavailable, 503),
        (RejectCode::UpstreamUnavailable, 502),
        (RejectCode::StaleDate, 401),
        (RejectCode::SignatureInvalid, 401),
    ] {
        assert_eq!(code.http_status(), status, "{code:?}");
    }
}

/// Obsolete line folding: the AWS profile joins a folded value's lines with a comma, but only
/// lines that continue with a space or tab; a bare line break in a value is refused.
#[test]
fn only_a_folded_continuation_line_is_joined() -> Result<(), ProtoError> {
    let signed = SignedHeaders::parse("host;x-folded")?;
    let canonical = |value: &str| {
        let headers = [("host", "api.example.com"), ("x-folded", value)];
        let parts = RequestParts {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
        };
        CanonicalRequest::new(&aws_sigv4a(false), &parts, &signed, EMPTY_SHA256)
            .map(|c| c.as_str().to_owned())
    };
    let folded = canonical("a\r\n b\n\tc")?;
    assert!(folded.contains("\nx-folded:a,b,c\n"), "{folded}");
    assert_eq!(
        canonical("a\nb"),
        Err(ProtoError::InvalidHeaderValue("x-folded".into()))
    );
    Ok(())
}
