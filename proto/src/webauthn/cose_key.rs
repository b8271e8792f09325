//! COSE_Key (RFC 9052 / RFC 9053) for ES256: `{1: 2 (EC2), 3: -7 (ES256), -1: 1 (P-256),
//! -2: x, -3: y}` ↔ a P-256 [`PublicKey`]. CBOR through `ciborium` (serde-based, maintained by the
//! Enarx project, no unsafe code in its decoder; already in the lock file).

use ciborium::Value;

use crate::keys::PublicKey;

use super::error::WebAuthnError;

/// COSE algorithm identifier of ES256 (ECDSA P-256 with SHA-256).
pub const COSE_ALG_ES256: i64 = -7;
const COSE_KTY_EC2: i64 = 2;
const COSE_CRV_P256: i64 = 1;

/// Reads one CBOR item from the front of `input` and advances `input` past it.
pub(crate) fn read_cbor_item(input: &mut &[u8]) -> Result<Value, WebAuthnError> {
    // `&mut &[u8]` reads exactly the bytes the item spans, so what is left is what follows.
    ciborium::de::from_reader(&mut *input).map_err(|_| WebAuthnError::Malformed("invalid CBOR"))
}

/// Parses a whole CBOR buffer holding exactly one item.
pub(crate) fn parse_cbor(bytes: &[u8]) -> Result<Value, WebAuthnError> {
    let mut rest = bytes;
    let value = read_cbor_item(&mut rest)?;
    if !rest.is_empty() {
        return Err(WebAuthnError::Malformed("trailing bytes after CBOR item"));
    }
    Ok(value)
}

/// The entries of a CBOR map, refusing a repeated key (two readers may keep different copies).
pub(crate) fn map_entries(value: &Value) -> Result<&[(Value, Value)], WebAuthnError> {
    let entries = value
        .as_map()
        .ok_or(WebAuthnError::Malformed("expected a CBOR map"))?;
    for (index, (key, _)) in entries.iter().enumerate() {
        if entries[..index].iter().any(|(other, _)| other == key) {
            return Err(WebAuthnError::Malformed("repeated key in a CBOR map"));
        }
    }
    Ok(entries)
}

fn integer(value: &Value) -> Option<i128> {
    value.as_integer().map(i128::from)
}

/// Parses a COSE_Key CBOR value into a P-256 public key (ES256 only).
pub(crate) fn public_key_from_cose_value(value: &Value) -> Result<PublicKey, WebAuthnError> {
    use WebAuthnError::Malformed as Bad;
    let entries = map_entries(value)?;
    let field = |label: i128| {
        entries
            .iter()
            .find(|(key, _)| integer(key) == Some(label))
            .map(|(_, value)| value)
    };
    if field(1).and_then(integer) != Some(COSE_KTY_EC2.into()) {
        return Err(Bad("COSE key type is not EC2"));
    }
    if field(3).and_then(integer) != Some(COSE_ALG_ES256.into()) {
        return Err(Bad("COSE algorithm is not ES256"));
    }
    if field(-1).and_then(integer) != Some(COSE_CRV_P256.into()) {
        return Err(Bad("COSE curve is not P-256"));
    }
    let coordinate = |label| {
        field(label)
            .and_then(Value::as_bytes)
            .filter(|bytes| bytes.len() == 32)
            .ok_or(Bad("COSE coordinate is not 32 bytes"))
    };
    let (x, y) = (coordinate(-2)?, coordinate(-3)?);
    PublicKey::from_affine(x, y).map_err(|_| Bad("COSE key is not a P-256 point"))
}

/// Parses COSE_Key bytes (exactly one CBOR map) into a P-256 public key.
pub fn public_key_from_cose(bytes: &[u8]) -> Result<PublicKey, WebAuthnError> {
    public_key_from_cose_value(&parse_cbor(bytes)?)
}

/// Encodes a P-256 public key as an ES256 COSE_Key, in the CTAP2 canonical key order.
pub fn cose_key_from_public_key(key: &PublicKey) -> Vec<u8> {
    let point = key.sec1_uncompressed();
    let map = Value::Map(vec![
        (Value::from(1), Value::from(COSE_KTY_EC2)),
        (Value::from(3), Value::from(COSE_ALG_ES256)),
        (Value::from(-1), Value::from(COSE_CRV_P256)),
        (Value::from(-2), Value::Bytes(point[1..33].to_vec())),
        (Value::from(-3), Value::Bytes(point[33..65].to_vec())),
    ]);
    encode_cbor(&map)
}

/// Encodes a CBOR value (writing to a `Vec` cannot fail).
pub(crate) fn encode_cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Serializing a `Value` into a Vec has no failure path; an empty buffer would fail parsing.
    let _ = ciborium::ser::into_writer(value, &mut out);
    out
}
