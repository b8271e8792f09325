//! The wire-format bounds have the values docs/PROTOCOL.md publishes (§9 "Limits", §8 for the
//! delegation statement, §10 for the agent API) or that its code states (the authority). Other implementations size their buffers and
//! refuse requests by these numbers, so they are part of the protocol: the tests below state them
//! as literals (a request at each documented edge passes, one byte more is refused), not through
//! the constants, which every side reads and so could change together unnoticed.

use hwsign_proto::api::MAX_API_BODY;
use hwsign_proto::canonical::RequestParts;
use hwsign_proto::delegation::{MAX_DELEGATION_HEADER_LEN, MAX_DELEGATION_SECS};
use hwsign_proto::host::signed_host;
use hwsign_proto::limits::{
    MAX_AUDIENCE_LEN, MAX_AUTHORITY_LEN, MAX_AUTHORIZATION_LEN, MAX_HEADER_NAME_LEN,
    MAX_HEADER_VALUE_LEN, MAX_HEADERS, MAX_METHOD_LEN, MAX_PATH_LEN, MAX_PRESIGN_EXPIRES_SECS,
    MAX_QUERY_LEN, MAX_QUERY_PARAMS, MAX_SIGNATURE_LEN, MAX_SIGNED_HEADERS,
};
use hwsign_proto::rfc9421::MAX_FIELD_LEN;
use hwsign_proto::webauthn::{MAX_ATTESTATION_OBJECT_LEN, MAX_WEBAUTHN_DELEGATION_HEADER_LEN};
use hwsign_proto::{Authorization, HWS1, ProtoError};

fn bounds(path: &str, query: &str, headers: &[(&str, &str)]) -> Result<(), ProtoError> {
    RequestParts {
        method: "GET",
        path,
        query,
        headers,
    }
    .check_bounds()
}

#[test]
fn a_request_at_each_documented_size_passes_and_one_byte_more_is_refused() {
    let host = [("host", "api.example.com")];
    // Path 8 KiB.
    let path = format!("/{}", "p".repeat(8191));
    assert_eq!(bounds(&path, "", &host), Ok(()));
    let longer = format!("{path}p");
    assert!(matches!(
        bounds(&longer, "", &host),
        Err(ProtoError::TooLarge {
            what: "path",
            limit: 8192
        })
    ));
    // Query 8 KiB.
    let query = "q".repeat(8192);
    assert_eq!(bounds("/", &query, &host), Ok(()));
    let longer = format!("{query}q");
    assert!(matches!(
        bounds("/", &longer, &host),
        Err(ProtoError::TooLarge {
            what: "query",
            limit: 8192
        })
    ));
    // Header value 8 KiB.
    let value = "v".repeat(8192);
    assert_eq!(bounds("/", "", &[("x-long", value.as_str())]), Ok(()));
    let longer = format!("{value}v");
    assert!(matches!(
        bounds("/", "", &[("x-long", longer.as_str())]),
        Err(ProtoError::TooLarge {
            what: "header value",
            limit: 8192
        })
    ));
    // 128 header fields.
    let names: Vec<String> = (0..129).map(|i| format!("x-h{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    assert_eq!(bounds("/", "", &headers[..128]), Ok(()));
    assert!(matches!(
        bounds("/", "", &headers),
        Err(ProtoError::TooLarge {
            what: "header count",
            limit: 128
        })
    ));
    // Method 32 bytes.
    let method = "M".repeat(32);
    let parts = |method: &str| {
        RequestParts {
            method,
            path: "/",
            query: "",
            headers: &host,
        }
        .check_bounds()
    };
    assert_eq!(parts(&method), Ok(()));
    assert_eq!(parts(&format!("{method}M")), Err(ProtoError::InvalidMethod));
}

#[test]
fn an_authority_of_261_characters_is_signed_and_262_are_refused() {
    // `host[:port]`: a 255-character host name and a colon with a five-digit port.
    let host = format!("{}.example", "h".repeat(247));
    assert_eq!(host.len(), 255);
    let authority = format!("{host}:65000");
    assert_eq!(authority.len(), 261);
    assert!(signed_host(Some("https"), &authority).is_ok());
    let longer = format!("h{authority}");
    assert!(matches!(
        signed_host(Some("https"), &longer),
        Err(ProtoError::InvalidAuthority(_))
    ));
}

#[test]
fn an_authorization_header_over_4_kib_is_refused_for_its_length() {
    let value = format!("HWS1-ECDSA-P256-SHA256 {}", "x".repeat(4096));
    assert!(matches!(
        Authorization::parse(&value, &HWS1),
        Err(ProtoError::TooLarge { limit: 4096, .. })
    ));
}

/// The bounds that docs/PROTOCOL.md states as numbers, with the value it states.
#[test]
fn every_bound_has_the_value_the_protocol_doc_publishes() {
    let documented: [(&str, usize, usize); 17] = [
        ("method (§9)", MAX_METHOD_LEN, 32),
        ("path (§9)", MAX_PATH_LEN, 8 << 10),
        ("query (§9)", MAX_QUERY_LEN, 8 << 10),
        ("query parameters (§9)", MAX_QUERY_PARAMS, 256),
        ("header fields (§9)", MAX_HEADERS, 128),
        ("header name (§9)", MAX_HEADER_NAME_LEN, 256),
        ("header value (§9)", MAX_HEADER_VALUE_LEN, 8 << 10),
        ("Authorization (§9)", MAX_AUTHORIZATION_LEN, 4 << 10),
        ("signed headers (§9)", MAX_SIGNED_HEADERS, 64),
        ("audience (§9)", MAX_AUDIENCE_LEN, 64),
        ("signature (§9)", MAX_SIGNATURE_LEN, 80),
        ("authority host[:port]", MAX_AUTHORITY_LEN, 261),
        ("RFC 9421 structured field (§13)", MAX_FIELD_LEN, 8 << 10),
        ("delegation header (§8)", MAX_DELEGATION_HEADER_LEN, 1024),
        (
            "WebAuthn delegation header",
            MAX_WEBAUTHN_DELEGATION_HEADER_LEN,
            6 << 10,
        ),
        (
            "WebAuthn attestation object",
            MAX_ATTESTATION_OBJECT_LEN,
            16 << 10,
        ),
        ("agent API body (§10)", MAX_API_BODY, 64 << 10),
    ];
    for (what, bound, value) in documented {
        assert_eq!(bound, value, "{what}");
    }
    assert_eq!(
        MAX_PRESIGN_EXPIRES_SECS, 604_800,
        "presigned expiry: 7 days (§9)"
    );
    assert_eq!(
        MAX_DELEGATION_SECS, 900,
        "delegation lifetime: 15 minutes (§8)"
    );

    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md"))
        .unwrap_or_default();
    let doc = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    for stated in [
        "method 32 bytes; path 8 KiB; query 8 KiB and 256 parameters; 128 header fields; header \
         name 256 bytes; header value 8 KiB; `Authorization` 4 KiB; 64 signed headers; audience \
         64 characters; signature 80 bytes; presigned expiry 7 days.",
        "is 1 s to 900 s (15 minutes)",
        "at most 1024 characters",
        "Bodies are at most 64 KiB",
    ] {
        assert!(
            doc.contains(stated),
            "docs/PROTOCOL.md no longer says: {stated}"
        );
    }
}

/// A presigned URL must fit the 8 KiB query bound with its signature parameter, which the signer
/// appends last: the signer refuses a URL only when the longest signature (80 bytes, 160 hex
/// digits) could push it over, so the longest URL it prepares is exactly 8192 bytes of query with
/// such a signature, and one byte more is refused.
#[test]
fn the_longest_presigned_query_is_8_kib_with_the_longest_signature() {
    use hwsign_proto::sign::{HeaderSelection, SigningParams, UNSIGNED_PAYLOAD, prepare_presigned};
    use hwsign_proto::{Nonce, SigningTime};

    let nonce = Nonce::from_random([7; 16]);
    let params = SigningParams {
        profile: &HWS1,
        credential: "hk1_0123456789abcdef0123456789abcdef",
        audience: "payments",
        time: SigningTime::from_unix(1_795_462_200),
        nonce: Some(&nonce),
        added_headers: &[],
    };
    let headers = [("host", "api.example.com")];
    let presign = |padding: usize| {
        let query = format!("pad={}", "a".repeat(padding));
        let parts = RequestParts {
            method: "GET",
            path: "/reports",
            query: &query,
            headers: &headers,
        };
        prepare_presigned(
            &params,
            &parts,
            UNSIGNED_PAYLOAD,
            3600,
            HeaderSelection::All,
        )
        .map(|prepared| {
            let mut url_query = query.clone();
            for (name, value) in prepared.finish(&HWS1, &[0x30; 80]) {
                url_query.push_str(&format!("&{name}={value}"));
            }
            url_query.len()
        })
    };
    // The largest padding the signer accepts (the refusal is monotonic in the length).
    let (mut fits, mut too_long) = (0usize, 8192usize);
    assert!(presign(fits).is_ok());
    assert!(presign(too_long).is_err());
    while too_long - fits > 1 {
        let mid = usize::midpoint(fits, too_long);
        if presign(mid).is_ok() {
            fits = mid;
        } else {
            too_long = mid;
        }
    }
    assert_eq!(presign(fits), Ok(8192));
    assert!(matches!(
        presign(fits + 1),
        Err(ProtoError::TooLarge {
            what: "query",
            limit: 8192
        })
    ));
}
