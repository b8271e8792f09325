//! Percent-encoding as SigV4 defines it: everything but the RFC 3986 unreserved set
//! (`A-Z a-z 0-9 - . _ ~`) is encoded as `%XY` with upper-case hex.

use crate::error::ProtoError;

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Whether `text` consists only of unreserved characters: then decoding it (`%`-escapes, `+`)
/// changes nothing and encoding it changes nothing, so it is already canonical.
pub fn is_canonical(text: &str) -> bool {
    text.bytes().all(is_unreserved)
}

/// Appends the SigV4 encoding of `bytes` to `out`. `/` is encoded too; callers that keep path
/// separators encode segment by segment.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    for &byte in bytes {
        if is_unreserved(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(byte >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(byte & 0x0f)]));
        }
    }
}

/// The SigV4 encoding of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    encode_into(bytes, &mut out);
    out
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XY` escapes once. A `%` not followed by two hex digits is an error, not a literal:
/// two parties that guess differently about a broken escape would sign different bytes.
pub fn decode(text: &str) -> Result<Vec<u8>, ProtoError> {
    decode_with(text, false)
}

/// Decodes a query name or value as `application/x-www-form-urlencoded` does: `+` is a space,
/// then `%XY` escapes once (so `%2B` is a plus). Broken escapes are refused as in [`decode`].
pub fn decode_form(text: &str) -> Result<Vec<u8>, ProtoError> {
    decode_with(text, true)
}

fn decode_with(text: &str, plus_is_space: bool) -> Result<Vec<u8>, ProtoError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(ProtoError::InvalidPercentEncoding),
            }
            i += 3;
        } else if plus_is_space && bytes[i] == b'+' {
            out.push(b' ');
            i += 1;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Re-encodes already percent-encoded text into its one canonical spelling
/// (`%41` → `A`, `%2f` → `%2F`, raw space → `%20`).
pub fn normalize(text: &str) -> Result<String, ProtoError> {
    Ok(encode(&decode(text)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_reserved_and_keeps_unreserved() {
        assert_eq!(encode(b"a b/c~d"), "a%20b%2Fc~d");
        assert_eq!(encode("é".as_bytes()), "%C3%A9");
    }

    #[test]
    fn normalizes_escapes() -> Result<(), ProtoError> {
        assert_eq!(normalize("%41%2f%7e")?, "A%2F~");
        assert_eq!(normalize("%252F")?, "%252F");
        Ok(())
    }

    #[test]
    fn form_decoding_reads_plus_as_space() -> Result<(), ProtoError> {
        assert_eq!(decode_form("1+2")?, b"1 2");
        assert_eq!(decode_form("1%2B2")?, b"1+2");
        assert_eq!(decode("1+2")?, b"1+2");
        Ok(())
    }

    #[test]
    fn refuses_broken_escapes() {
        for bad in ["%", "%4", "%zz", "a%g0"] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
