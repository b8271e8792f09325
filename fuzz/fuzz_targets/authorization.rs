//! `Authorization` header parsing on arbitrary text, under HWS1 and the AWS profile.
//!
//! Invariants: the parser never panics; whatever it accepts is in the one canonical spelling
//! (formatting the parsed value gives back the input byte for byte), and parse ∘ format is the
//! identity.
#![no_main]

use hwsign_proto::profile::aws_sigv4a;
use hwsign_proto::{Authorization, HWS1};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for profile in [HWS1, aws_sigv4a(false)] {
        let Ok(parsed) = Authorization::parse(text, &profile) else {
            continue;
        };
        let formatted = parsed.to_header_value(&profile);
        assert_eq!(formatted, text, "accepted a non-canonical spelling");
        assert_eq!(Authorization::parse(&formatted, &profile), Ok(parsed));
    }
});
