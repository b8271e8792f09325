//! P-256 key objects on a token: generation, discovery, signing and the token's claims about a
//! key. Everything here runs inside one logged-in session.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hwsign_proto::PublicKey;
use hwsign_proto::keys::{KEY_ID_PREFIX, raw_signature_to_der};

use super::error::Pkcs11Error;

/// DER of the OID prime256v1 (1.2.840.10045.3.1.7), the value of `CKA_EC_PARAMS` for P-256.
pub const P256_EC_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Length of `CKA_ID`: the 16 bytes the key id shows in hex.
const KEY_ID_BYTES: usize = 16;

/// Most private keys inspected on one token; far beyond any real token, bounds a hostile module.
const MAX_KEYS: usize = 1024;

/// A P-256 signing key found on the token.
#[derive(Debug, Clone)]
pub(super) struct TokenKey {
    /// The private key object.
    pub private: ObjectHandle,
    /// Public key (from the public key object, or `CKA_EC_POINT` of the private key).
    pub public_key: PublicKey,
    /// `CKA_LABEL` of the private key.
    pub token_label: String,
}

/// The token's claims about a private key (`None`: the token does not say).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct KeyClaims {
    /// `CKA_LOCAL`.
    pub local: Option<bool>,
    /// `CKA_NEVER_EXTRACTABLE`.
    pub never_extractable: Option<bool>,
    /// `CKA_ALWAYS_SENSITIVE`.
    pub always_sensitive: Option<bool>,
}

/// `CKA_ID` for a key id (`hk1_<32 hex>` → its 16 bytes).
pub(super) fn key_id_bytes(key_id: &str) -> Option<Vec<u8>> {
    let hex_part = key_id.strip_prefix(KEY_ID_PREFIX)?;
    let bytes = hex::decode(hex_part).ok()?;
    (bytes.len() == KEY_ID_BYTES).then_some(bytes)
}

/// Generates a P-256 key pair on the token and sets `CKA_ID` on both halves to the key id.
///
/// The key id is derived from the public key, which exists only after generation, so the pair is
/// generated with a random temporary `CKA_ID` and then updated. Tokens that refuse to change
/// `CKA_ID` keep the temporary one; such keys are still found by scanning (see [`find_key`]).
pub(super) fn generate(session: &Session, token_label: &str) -> Result<TokenKey, Pkcs11Error> {
    let mut temporary_id = vec![0u8; KEY_ID_BYTES];
    session
        .generate_random_slice(&mut temporary_id)
        .or_else(|_| getrandom::fill(&mut temporary_id))
        .map_err(|e| Pkcs11Error::Malformed(format!("no randomness for a key id: {e}")))?;
    let label = token_label.as_bytes().to_vec();
    let public_template = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(P256_EC_PARAMS.to_vec()),
        Attribute::Label(label.clone()),
        Attribute::Id(temporary_id.clone()),
    ];
    let private_template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Label(label),
        Attribute::Id(temporary_id),
    ];
    let (public, private) = session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &public_template,
            &private_template,
        )
        .map_err(|e| Pkcs11Error::call("C_GenerateKeyPair", e))?;
    let point = read_ec_point(session, public)?
        .ok_or_else(|| Pkcs11Error::Malformed("generated public key has no CKA_EC_POINT".into()))?;
    let public_key = PublicKey::from_sec1(&point)
        .map_err(|_| Pkcs11Error::Malformed("generated public key is not a P-256 point".into()))?;
    let id = key_id_bytes(&public_key.key_id())
        .ok_or_else(|| Pkcs11Error::Malformed("key id is not 16 bytes".into()))?;
    for object in [public, private] {
        if let Err(e) = session.update_attributes(object, &[Attribute::Id(id.clone())]) {
            tracing::warn!(
                error = %e,
                key_id = %public_key.key_id(),
                "token refused to set CKA_ID; the key keeps its temporary id and is found by scan"
            );
        }
    }
    Ok(TokenKey {
        private,
        public_key,
        token_label: token_label.to_owned(),
    })
}

/// Every P-256 signing key on the token whose public key can be read.
pub(super) fn list(session: &Session) -> Result<Vec<TokenKey>, Pkcs11Error> {
    let template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC),
    ];
    let handles = session
        .find_objects(&template)
        .map_err(|e| Pkcs11Error::call("C_FindObjects", e))?;
    let mut keys = Vec::new();
    for private in handles.into_iter().take(MAX_KEYS) {
        if let Some(key) = describe_private(session, private)? {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// Finds the private key whose public key has `key_id`: first by `CKA_ID`, then by scanning (keys
/// made by other tools, or on tokens that refused the `CKA_ID` update).
pub(super) fn find_key(session: &Session, key_id: &str) -> Result<TokenKey, Pkcs11Error> {
    let id = key_id_bytes(key_id).ok_or(Pkcs11Error::UnknownKey)?;
    let template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Id(id),
    ];
    let handles = session
        .find_objects(&template)
        .map_err(|e| Pkcs11Error::call("C_FindObjects", e))?;
    for private in handles.into_iter().take(MAX_KEYS) {
        // CKA_ID is only a hint: the public key decides, so a colliding id cannot redirect.
        if let Some(key) = describe_private(session, private)? {
            if key.public_key.key_id() == key_id {
                return Ok(key);
            }
        }
    }
    list(session)?
        .into_iter()
        .find(|key| key.public_key.key_id() == key_id)
        .ok_or(Pkcs11Error::UnknownKey)
}

/// Whether `handle` (remembered from an earlier session) still is the private key `key_id`.
/// The `CKA_ID` is the key id derived from the public key, so a matching id on a private key
/// object is that key; any error means "look it up again".
pub(super) fn handle_is_key(session: &Session, handle: ObjectHandle, key_id: &str) -> bool {
    let Some(expected) = key_id_bytes(key_id) else {
        return false;
    };
    let Ok(attributes) = session.get_attributes(handle, &[AttributeType::Class, AttributeType::Id])
    else {
        return false;
    };
    let mut is_private = false;
    let mut id_matches = false;
    for attribute in attributes {
        match attribute {
            Attribute::Class(class) => is_private = class == ObjectClass::PRIVATE_KEY,
            Attribute::Id(id) => id_matches = id == expected,
            _ => {}
        }
    }
    is_private && id_matches
}

/// CKM_ECDSA over the 32-byte digest; the token returns `r‖s`, which becomes DER.
pub(super) fn sign(
    session: &Session,
    key: ObjectHandle,
    digest: &[u8; 32],
) -> Result<Vec<u8>, Pkcs11Error> {
    let raw = session
        .sign(&Mechanism::Ecdsa, key, digest)
        .map_err(|e| Pkcs11Error::call("C_Sign", e))?;
    if raw.len() != 64 {
        return Err(Pkcs11Error::Malformed(format!(
            "ECDSA signature of {} bytes, expected 64 (r‖s)",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(32);
    raw_signature_to_der(r, s)
        .map_err(|_| Pkcs11Error::Malformed("ECDSA signature is not a valid (r, s)".into()))
}

/// What the token says about the key's origin and extractability.
pub(super) fn claims(session: &Session, key: ObjectHandle) -> Result<KeyClaims, Pkcs11Error> {
    let attributes = session
        .get_attributes(
            key,
            &[
                AttributeType::Local,
                AttributeType::NeverExtractable,
                AttributeType::AlwaysSensitive,
            ],
        )
        .map_err(|e| Pkcs11Error::call("C_GetAttributeValue", e))?;
    let mut claims = KeyClaims::default();
    for attribute in attributes {
        match attribute {
            Attribute::Local(v) => claims.local = Some(v),
            Attribute::NeverExtractable(v) => claims.never_extractable = Some(v),
            Attribute::AlwaysSensitive(v) => claims.always_sensitive = Some(v),
            _ => {}
        }
    }
    Ok(claims)
}

/// A private key as a [`TokenKey`], or `None` when it is not a usable P-256 signing key.
fn describe_private(
    session: &Session,
    private: ObjectHandle,
) -> Result<Option<TokenKey>, Pkcs11Error> {
    let attributes = session
        .get_attributes(
            private,
            &[
                AttributeType::Id,
                AttributeType::Label,
                AttributeType::EcParams,
                AttributeType::Sign,
            ],
        )
        .map_err(|e| Pkcs11Error::call("C_GetAttributeValue", e))?;
    let mut id = None;
    let mut label = String::new();
    let mut params_ok = false;
    let mut can_sign = false;
    for attribute in attributes {
        match attribute {
            Attribute::Id(v) => id = Some(v),
            Attribute::Label(v) => label = String::from_utf8_lossy(&v).into_owned(),
            Attribute::EcParams(v) => params_ok = v == P256_EC_PARAMS,
            Attribute::Sign(v) => can_sign = v,
            _ => {}
        }
    }
    if !params_ok || !can_sign {
        return Ok(None);
    }
    let point = match public_point_for(session, private, id.as_deref())? {
        Some(point) => point,
        None => return Ok(None),
    };
    let Ok(public_key) = PublicKey::from_sec1(&point) else {
        return Ok(None);
    };
    Ok(Some(TokenKey {
        private,
        public_key,
        token_label: label,
    }))
}

/// The SEC1 point of a private key: from the public key object with the same `CKA_ID`, else from
/// the private key's own `CKA_EC_POINT` (PKCS#11 3.x tokens may carry it).
fn public_point_for(
    session: &Session,
    private: ObjectHandle,
    id: Option<&[u8]>,
) -> Result<Option<Vec<u8>>, Pkcs11Error> {
    if let Some(id) = id.filter(|id| !id.is_empty()) {
        let template = [
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::Id(id.to_vec()),
        ];
        let publics = session
            .find_objects(&template)
            .map_err(|e| Pkcs11Error::call("C_FindObjects", e))?;
        if let Some(public) = publics.first() {
            if let Some(point) = read_ec_point(session, *public)? {
                return Ok(Some(point));
            }
        }
    }
    read_ec_point(session, private)
}

/// `CKA_EC_POINT` as an uncompressed SEC1 point, if the object has one.
fn read_ec_point(session: &Session, object: ObjectHandle) -> Result<Option<Vec<u8>>, Pkcs11Error> {
    let attributes = match session.get_attributes(object, &[AttributeType::EcPoint]) {
        Ok(attributes) => attributes,
        // Private key objects of PKCS#11 2.x tokens have no such attribute.
        Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::AttributeTypeInvalid, _)) => {
            return Ok(None);
        }
        Err(e) => return Err(Pkcs11Error::call("C_GetAttributeValue", e)),
    };
    for attribute in attributes {
        if let Attribute::EcPoint(value) = attribute {
            return unwrap_ec_point(&value).map(Some);
        }
    }
    Ok(None)
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the SEC1 point (`04 41 04‖x‖y`). Some tokens
/// return the bare point; the two are told apart by length.
pub(super) fn unwrap_ec_point(value: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
    match value {
        [0x04, 0x41, point @ ..] if point.len() == 65 && point[0] == 0x04 => Ok(point.to_vec()),
        [0x04, ..] if value.len() == 65 => Ok(value.to_vec()),
        _ => Err(Pkcs11Error::Malformed(format!(
            "CKA_EC_POINT of {} bytes is not an uncompressed P-256 point",
            value.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_point_wrapped_and_bare() -> Result<(), Pkcs11Error> {
        let mut point = vec![0x04];
        point.extend([0x41; 64]);
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend(&point);
        assert_eq!(unwrap_ec_point(&wrapped)?, point);
        assert_eq!(unwrap_ec_point(&point)?, point);
        assert!(unwrap_ec_point(&point[..64]).is_err());
        assert!(unwrap_ec_point(&[0x04, 0x21, 0x02]).is_err());
        Ok(())
    }

    #[test]
    fn key_id_bytes_round_trip() {
        let id = "hk1_00112233445566778899aabbccddeeff";
        assert_eq!(
            key_id_bytes(id).map(hex::encode).as_deref(),
            Some("00112233445566778899aabbccddeeff")
        );
        assert_eq!(key_id_bytes("hk1_00"), None);
        assert_eq!(key_id_bytes("00112233445566778899aabbccddeeff"), None);
    }
}
