//! Delegation statement header parsing on arbitrary text.
//!
//! Invariants: the parser never panics; an accepted header is the canonical encoding of what it
//! parsed to (one statement, one spelling), and re-encoding with the same signature parses back
//! to the identical statement and signature.
#![no_main]

use hwsign_proto::delegation::DelegationStatement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok((statement, signature)) = DelegationStatement::parse_header_value(text) else {
        return;
    };
    let encoded = statement.to_header_value(&signature);
    assert_eq!(encoded, text, "accepted a non-canonical encoding");
    let reparsed = DelegationStatement::parse_header_value(&encoded);
    assert_eq!(reparsed, Ok((statement, signature)));
});
