//! Canonical JSON: the exact bytes a record's hash and a checkpoint's signature cover.
//!
//! A subset of RFC 8785 (JCS) that JCS, Python's
//! `json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` and this module
//! serialize identically: no whitespace; object members sorted by key (JCS orders by UTF-16 code
//! units; every key hwsign writes is ASCII, where that is byte order); strings as UTF-8 with only
//! `"`, `\` and the control characters U+0000–U+001F escaped (`\b \t \n \f \r`, the others as
//! `\u00xx` with lower-case hex); numbers only integers within ±(2^53 − 1), written in decimal;
//! `true`, `false`, `null`. Floats are refused, so no number formatting rule is needed.

use serde_json::Value;

/// The largest integer magnitude a canonical record may hold (exact in an IEEE double).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// A value that has no canonical form here.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CanonicalError {
    /// A number that is not an integer within ±(2^53 − 1).
    #[error("a number is not an integer within ±(2^53 - 1)")]
    Number,
}

/// The canonical serialization of `value`.
pub fn canonical_json(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write_value(value, &mut out)?;
    Ok(out)
}

fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => {
            if let Some(n) = number.as_u64() {
                if n > MAX_SAFE_INTEGER {
                    return Err(CanonicalError::Number);
                }
                out.extend_from_slice(n.to_string().as_bytes());
            } else if let Some(n) = number.as_i64() {
                if n.unsigned_abs() > MAX_SAFE_INTEGER {
                    return Err(CanonicalError::Number);
                }
                out.extend_from_slice(n.to_string().as_bytes());
            } else {
                return Err(CanonicalError::Number);
            }
        }
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(members) => {
            let mut keys: Vec<&String> = members.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                if let Some(member) = members.get(key) {
                    write_value(member, out)?;
                }
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for ch in text.chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\r' => out.extend_from_slice(b"\\r"),
            c if u32::from(c) < 0x20 => {
                let code = u32::from(c) as usize;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[code >> 4]);
                out.push(HEX[code & 0xf]);
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn members_are_sorted_and_strings_escaped_like_jcs() -> Result<(), CanonicalError> {
        let value = json!({"b": 1, "a": [true, null, -3], "c": "q\"\\\n\u{1}é"});
        let text = canonical_json(&value)?;
        assert_eq!(
            String::from_utf8_lossy(&text),
            "{\"a\":[true,null,-3],\"b\":1,\"c\":\"q\\\"\\\\\\n\\u0001é\"}"
        );
        Ok(())
    }

    #[test]
    fn floats_and_unsafe_integers_are_refused() {
        assert_eq!(canonical_json(&json!(1.5)), Err(CanonicalError::Number));
        assert_eq!(
            canonical_json(&json!(MAX_SAFE_INTEGER + 1)),
            Err(CanonicalError::Number)
        );
        assert!(canonical_json(&json!(MAX_SAFE_INTEGER)).is_ok());
    }
}
