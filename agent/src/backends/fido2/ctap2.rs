//! The two CTAP2 commands the agent sends — `authenticatorMakeCredential` and
//! `authenticatorGetAssertion` — built from passkey-types' request types, and the parts of their
//! answers the agent keeps. Answers are read from the raw CBOR so that the authenticator data
//! stays byte for byte what the key signed.

use std::time::Duration;

use ciborium::value::Value;
use coset::iana;
use hwsign_proto::PublicKey;
use passkey_types::ctap2::{get_assertion, make_credential};
use passkey_types::webauthn::{
    PublicKeyCredentialDescriptor, PublicKeyCredentialParameters, PublicKeyCredentialType,
    PublicKeyCredentialUserEntity,
};

use super::ctaphid::CtapHid;
use super::error::Fido2Error;

/// `authenticatorMakeCredential`.
const MAKE_CREDENTIAL: u8 = 0x01;
/// `authenticatorGetAssertion`.
const GET_ASSERTION: u8 = 0x02;
/// Longest credential id accepted (CTAP allows up to 1023 bytes).
pub(crate) const MAX_CREDENTIAL_ID_LEN: usize = 1023;

/// A credential the key made.
#[derive(Debug, Clone)]
pub(crate) struct NewCredential {
    /// The credential id (the key's handle, to send back in `allowList`).
    pub(crate) credential_id: Vec<u8>,
    /// The credential's P-256 public key.
    pub(crate) public_key: PublicKey,
    /// The attestation format the key used (`packed`, `none`, ...).
    pub(crate) attestation_format: String,
    /// The WebAuthn attestation object built from the key's answer.
    pub(crate) attestation_object: Vec<u8>,
}

/// An assertion: what the key signed and its signature.
#[derive(Debug, Clone)]
pub(crate) struct Assertion {
    /// The authenticator data, as the key produced it.
    pub(crate) authenticator_data: Vec<u8>,
    /// ES256 signature (DER) over `authenticator_data ‖ client_data_hash`.
    pub(crate) signature: Vec<u8>,
}

fn encode<T: serde::Serialize>(request: &T) -> Result<Vec<u8>, Fido2Error> {
    let mut body = Vec::new();
    ciborium::ser::into_writer(request, &mut body).map_err(|e| Fido2Error::Cbor(Box::new(e)))?;
    Ok(body)
}

/// The entries of the CBOR map an authenticator answered.
fn answer_map(answer: &[u8]) -> Result<Vec<(Value, Value)>, Fido2Error> {
    match ciborium::de::from_reader::<Value, _>(answer) {
        Ok(Value::Map(entries)) => Ok(entries),
        Ok(_) => Err(Fido2Error::Protocol("CTAP2 answer is not a map")),
        Err(e) => Err(Fido2Error::Cbor(Box::new(e))),
    }
}

fn field(entries: &[(Value, Value)], key: u8) -> Option<&Value> {
    entries.iter().find_map(|(k, v)| match k {
        Value::Integer(i) if *i == key.into() => Some(v),
        _ => None,
    })
}

fn bytes_field(entries: &[(Value, Value)], key: u8) -> Result<Vec<u8>, Fido2Error> {
    match field(entries, key) {
        Some(Value::Bytes(b)) => Ok(b.clone()),
        _ => Err(Fido2Error::Protocol(
            "CTAP2 answer lacks a byte-string field",
        )),
    }
}

/// What makeCredential is asked to create.
#[derive(Debug)]
pub(crate) struct Creation<'a> {
    /// The relying party id.
    pub(crate) rp_id: &'a str,
    /// The user handle.
    pub(crate) user_id: &'a [u8],
    /// The user name (and display name).
    pub(crate) user_name: &'a str,
    /// SHA-256 of the clientDataJSON.
    pub(crate) client_data_hash: &'a [u8; 32],
    /// Credential ids the key must not already hold.
    pub(crate) exclude: &'a [Vec<u8>],
    /// How the user is verified (presence always).
    pub(crate) verification: Verification,
}

/// Makes a non-discoverable ES256 credential.
pub(crate) fn make_credential(
    device: &mut CtapHid,
    creation: Creation<'_>,
    touch_timeout: Duration,
) -> Result<NewCredential, Fido2Error> {
    let (uv, pin_auth, pin_protocol) = creation.verification.options();
    let exclude_list = (!creation.exclude.is_empty()).then(|| {
        creation
            .exclude
            .iter()
            .map(|id| PublicKeyCredentialDescriptor {
                ty: PublicKeyCredentialType::PublicKey,
                id: id.clone().into(),
                transports: None,
            })
            .collect()
    });
    let request = make_credential::Request {
        client_data_hash: creation.client_data_hash.to_vec().into(),
        rp: make_credential::PublicKeyCredentialRpEntity {
            id: creation.rp_id.to_owned(),
            name: Some(creation.rp_id.to_owned()),
        },
        user: PublicKeyCredentialUserEntity {
            id: creation.user_id.to_vec().into(),
            display_name: creation.user_name.to_owned(),
            name: creation.user_name.to_owned(),
        },
        pub_key_cred_params: vec![PublicKeyCredentialParameters {
            ty: PublicKeyCredentialType::PublicKey,
            alg: iana::Algorithm::ES256,
        }],
        exclude_list,
        extensions: None,
        options: make_credential::Options {
            rk: false,
            up: true,
            uv,
        },
        pin_auth,
        pin_protocol,
    };
    let answer = device.cbor(MAKE_CREDENTIAL, &encode(&request)?, touch_timeout)?;
    let entries = answer_map(&answer)?;
    let attestation_format = match field(&entries, 1) {
        Some(Value::Text(fmt)) => fmt.clone(),
        _ => return Err(Fido2Error::Protocol("makeCredential answer lacks fmt")),
    };
    let auth_data = bytes_field(&entries, 2)?;
    let statement = match field(&entries, 3) {
        Some(statement @ Value::Map(_)) => statement.clone(),
        _ => return Err(Fido2Error::Protocol("makeCredential answer lacks attStmt")),
    };
    let (credential_id, public_key) = attested_credential(&auth_data)?;
    // The WebAuthn attestation object (§6.5): the same three members under text keys, in
    // CTAP2 canonical order (shorter key first).
    let attestation_object = encode(&Value::Map(vec![
        (
            Value::Text("fmt".into()),
            Value::Text(attestation_format.clone()),
        ),
        (Value::Text("attStmt".into()), statement),
        (Value::Text("authData".into()), Value::Bytes(auth_data)),
    ]))?;
    Ok(NewCredential {
        credential_id,
        public_key,
        attestation_format,
        attestation_object,
    })
}

/// How the user is verified for an assertion.
#[derive(Debug)]
pub(crate) enum Verification {
    /// Presence only (a touch).
    None,
    /// The key's built-in verification (`uv` option: biometrics, on-key PIN entry).
    BuiltIn,
    /// The key's PIN (`pinAuth` under PIN protocol one).
    Pin(Vec<u8>),
}

impl Verification {
    /// The request's `uv` option, `pinAuth` and `pinProtocol`.
    fn options(self) -> (bool, Option<passkey_types::Bytes>, Option<u8>) {
        match self {
            Self::None => (false, None, None),
            Self::BuiltIn => (true, None, None),
            Self::Pin(auth) => (false, Some(auth.into()), Some(super::pin::PROTOCOL_ONE)),
        }
    }
}

/// Asks the key to sign `client_data_hash` with `credential_id` (user presence always; user
/// verification as `verification` says).
pub(crate) fn get_assertion(
    device: &mut CtapHid,
    rp_id: &str,
    credential_id: &[u8],
    client_data_hash: &[u8; 32],
    verification: Verification,
    touch_timeout: Duration,
) -> Result<Assertion, Fido2Error> {
    let (uv, pin_auth, pin_protocol) = verification.options();
    let request = get_assertion::Request {
        rp_id: rp_id.to_owned(),
        client_data_hash: client_data_hash.to_vec().into(),
        allow_list: Some(vec![PublicKeyCredentialDescriptor {
            ty: PublicKeyCredentialType::PublicKey,
            id: credential_id.to_vec().into(),
            transports: None,
        }]),
        extensions: None,
        options: get_assertion::Options { up: true, uv },
        pin_auth,
        pin_protocol,
    };
    let answer = device.cbor(GET_ASSERTION, &encode(&request)?, touch_timeout)?;
    let entries = answer_map(&answer)?;
    Ok(Assertion {
        authenticator_data: bytes_field(&entries, 2)?,
        signature: bytes_field(&entries, 3)?,
    })
}

/// The credential id and public key in a makeCredential's authenticator data (WebAuthn §6.5.1:
/// rpIdHash 32, flags 1, counter 4, then AAGUID 16, length 2, id, COSE key).
fn attested_credential(auth_data: &[u8]) -> Result<(Vec<u8>, PublicKey), Fido2Error> {
    const FLAG_AT: u8 = 0x40;
    let flags = *auth_data
        .get(32)
        .ok_or(Fido2Error::Protocol("short authenticator data"))?;
    if flags & FLAG_AT == 0 {
        return Err(Fido2Error::Protocol("no attested credential data"));
    }
    let rest = auth_data
        .get(37 + 16..)
        .ok_or(Fido2Error::Protocol("short authenticator data"))?;
    let (len, rest) = rest
        .split_first_chunk::<2>()
        .ok_or(Fido2Error::Protocol("short authenticator data"))?;
    let len = usize::from(u16::from_be_bytes(*len));
    if len > MAX_CREDENTIAL_ID_LEN || rest.len() < len {
        return Err(Fido2Error::Protocol("bad credential id length"));
    }
    let (id, cose) = rest.split_at(len);
    let key: Value = ciborium::de::from_reader(cose).map_err(|e| Fido2Error::Cbor(Box::new(e)))?;
    let Value::Map(params) = key else {
        return Err(Fido2Error::Protocol("COSE key is not a map"));
    };
    let int = |label: i64| {
        params.iter().find_map(|(k, v)| match k {
            Value::Integer(i) if i128::from(*i) == i128::from(label) => Some(v),
            _ => None,
        })
    };
    // kty EC2 (2), alg ES256 (-7), crv P-256 (1).
    let is = |v: Option<&Value>, want: i64| matches!(v, Some(Value::Integer(i)) if i128::from(*i) == i128::from(want));
    if !is(int(1), 2) || !is(int(-1), 1) {
        return Err(Fido2Error::Protocol("credential key is not EC2 P-256"));
    }
    let (Some(Value::Bytes(x)), Some(Value::Bytes(y))) = (int(-2), int(-3)) else {
        return Err(Fido2Error::Protocol("COSE key lacks x or y"));
    };
    let public_key = PublicKey::from_affine(x, y).map_err(Fido2Error::PublicKey)?;
    Ok((id.to_vec(), public_key))
}
