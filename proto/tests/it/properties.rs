//! Properties over arbitrary input: canonicalization never panics; Authorization format ∘ parse
//! is the identity; percent-encoding normalization is idempotent.

use hwsign_proto::canonical::{CanonicalRequest, RequestParts, SignedHeaders};
use hwsign_proto::encoding;
use hwsign_proto::keys::EMPTY_SHA256;
use hwsign_proto::scope::Scope;
use hwsign_proto::{Authorization, HWS1};
use proptest::prelude::*;

proptest! {
    #[test]
    fn canonicalization_never_panics(
        method in "\\PC{0,12}",
        path in "\\PC{0,40}",
        query in "\\PC{0,40}",
        headers in proptest::collection::vec(("\\PC{0,10}", "\\PC{0,20}"), 0..6),
    ) {
        let mut all: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        all.push(("host", "example.com"));
        let parts = RequestParts { method: &method, path: &path, query: &query, headers: &all };
        if let Ok(signed) = SignedHeaders::all_of(&parts) {
            let _ = CanonicalRequest::new(&HWS1, &parts, &signed, EMPTY_SHA256);
        }
        let _ = Authorization::parse(&path, &HWS1);
        let _ = hwsign_proto::verify_input::parse_header_signed(&HWS1, &parts);
        let _ = hwsign_proto::verify_input::parse_presigned(&HWS1, &parts);
    }

    #[test]
    fn authorization_round_trips(
        key in "hk1_[0-9a-f]{32}",
        date in "[0-9]{8}",
        audience in "[a-z0-9._-]{1,64}",
        names in proptest::collection::btree_set("[a-z0-9-]{1,20}", 1..10),
        signature in proptest::collection::vec(any::<u8>(), 1..80),
    ) {
        let header_list = names.into_iter().collect::<Vec<_>>().join(";");
        let authorization = Authorization {
            credential: key,
            scope: Scope { date, audience, terminator: "hws1_request".into() },
            signed_headers: SignedHeaders::parse(&header_list).map_err(|e| TestCaseError::fail(e.to_string()))?,
            signature,
        };
        let text = authorization.to_header_value(&HWS1);
        let parsed = Authorization::parse(&text, &HWS1).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed, authorization);
    }

    #[test]
    fn percent_normalization_is_idempotent(text in "\\PC{0,40}") {
        if let Ok(once) = encoding::normalize(&text) {
            prop_assert_eq!(encoding::normalize(&once).ok(), Some(once.clone()));
        }
    }
}
