//! Percent-encoding as signers and verifiers must agree on it (docs/PROTOCOL.md §2): every byte
//! value encoded and decoded, checked against the RFC 3986 rule written out plainly.

use hwsign_proto::ProtoError;
use hwsign_proto::encoding::{decode, decode_form, encode, normalize};

/// RFC 3986 unreserved: `A-Z a-z 0-9 - . _ ~`, kept as is; every other byte is `%XY`.
fn expected(byte: u8) -> String {
    let unreserved = byte.is_ascii_uppercase()
        || byte.is_ascii_lowercase()
        || byte.is_ascii_digit()
        || b"-._~".contains(&byte);
    if unreserved {
        char::from(byte).to_string()
    } else {
        format!("%{byte:02X}")
    }
}

#[test]
fn every_byte_encodes_and_decodes_as_rfc_3986_says() -> Result<(), ProtoError> {
    let mut all = String::new();
    for byte in 0..=255u8 {
        let encoded = encode(&[byte]);
        assert_eq!(encoded, expected(byte), "byte {byte:#04x}");
        all.push_str(&encoded);
        // Both spellings of an escape decode to the byte, in paths and in forms alike.
        let upper = format!("%{byte:02X}");
        let lower = format!("%{byte:02x}");
        for escape in [&upper, &lower] {
            assert_eq!(decode(escape)?, [byte], "{escape}");
            assert_eq!(decode_form(escape)?, [byte], "{escape}");
            assert_eq!(normalize(escape)?, expected(byte), "{escape}");
        }
    }
    let bytes: Vec<u8> = (0..=255u8).collect();
    assert_eq!(encode(&bytes), all);
    assert_eq!(decode(&all)?, bytes);
    Ok(())
}

#[test]
fn a_percent_not_followed_by_two_hex_digits_is_refused() {
    for bad in [
        "%", "%4", "a%", "a%4", "%G1", "%1G", "%g1", "%1g", "%/1", "%:1", "%@1", "%`1", "%1/",
        "%1:", "%1@", "%1`", "% 1", "%%41",
    ] {
        assert_eq!(
            decode(bad),
            Err(ProtoError::InvalidPercentEncoding),
            "{bad}"
        );
        assert_eq!(
            decode_form(bad),
            Err(ProtoError::InvalidPercentEncoding),
            "{bad}"
        );
    }
}

#[test]
fn plus_is_a_space_only_in_forms() -> Result<(), ProtoError> {
    assert_eq!(decode_form("a+b+%2B")?, b"a b +");
    assert_eq!(decode("a+b+%2B")?, b"a+b++");
    assert_eq!(normalize("a+b")?, "a%2Bb");
    Ok(())
}
