//! User verification with the key's PIN: CTAP2 `authenticatorClientPIN` with PIN protocol one
//! (CTAP 2.0 §5.5.8, supported by every CTAP2 key). The PIN comes from the configured askpass
//! program — never from an API request — and lives only in zeroized memory until it is hashed.
//!
//! Protocol one: the platform makes an ephemeral P-256 key, ECDH with the key's agreement key,
//! shared secret = SHA-256(x); it sends AES-256-CBC(secret, IV 0, LEFT(SHA-256(PIN), 16)) and
//! gets the encrypted pinToken back; each command then carries
//! pinAuth = LEFT(HMAC-SHA-256(pinToken, clientDataHash), 16).

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use aws_lc_rs::agreement::{self, ECDH_P256, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::cipher::{
    AES_256, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::{digest, hmac};
use ciborium::value::Value;
use zeroize::Zeroizing;

use super::ctaphid::CtapHid;
use super::error::Fido2Error;

/// `authenticatorClientPIN`.
const CLIENT_PIN: u8 = 0x06;
/// PIN/UV auth protocol one.
pub(crate) const PROTOCOL_ONE: u8 = 1;
const GET_RETRIES: u8 = 0x01;
const GET_KEY_AGREEMENT: u8 = 0x02;
const GET_PIN_TOKEN: u8 = 0x05;
/// COSE algorithm of the agreement key (ECDH-ES + HKDF-256, as CTAP names it).
const COSE_ECDH_ES_HKDF_256: i64 = -25;
/// CTAP: a PIN is 4 to 63 bytes of UTF-8.
const MIN_PIN_LEN: usize = 4;
const MAX_PIN_LEN: usize = 63;
/// Longest askpass output read.
const MAX_ASKPASS_OUTPUT: u64 = 256;

/// A pinToken, zeroized on drop.
pub(crate) struct PinToken(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for PinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinToken(..)")
    }
}

impl PinToken {
    /// `pinAuth` for a command over `client_data_hash`.
    pub(crate) fn auth(&self, client_data_hash: &[u8; 32]) -> Vec<u8> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let tag = hmac::sign(&key, client_data_hash);
        tag.as_ref().iter().take(16).copied().collect()
    }
}

/// Runs the askpass program (no shell, no arguments but a prompt) and returns the PIN it
/// printed, without the trailing newline.
pub(crate) fn read_pin(askpass: &Path) -> Result<Zeroizing<Vec<u8>>, Fido2Error> {
    let bad = |what: &str| Fido2Error::Askpass(std::io::Error::other(what.to_owned()));
    let mut child = Command::new(askpass)
        .arg("PIN of your security key (hwsign):")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(Fido2Error::Askpass)?;
    let mut out = Zeroizing::new(Vec::new());
    if let Some(stdout) = child.stdout.take() {
        stdout
            .take(MAX_ASKPASS_OUTPUT)
            .read_to_end(&mut out)
            .map_err(Fido2Error::Askpass)?;
    }
    let exit = child.wait().map_err(Fido2Error::Askpass)?;
    if !exit.success() {
        return Err(bad("the askpass program failed (cancelled?)"));
    }
    while out.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        out.pop();
    }
    if out.len() < MIN_PIN_LEN || out.len() > MAX_PIN_LEN {
        return Err(bad("the askpass program printed no PIN of 4 to 63 bytes"));
    }
    Ok(out)
}

fn int(n: i64) -> Value {
    Value::Integer(n.into())
}

fn client_pin(
    device: &mut CtapHid,
    fields: Vec<(Value, Value)>,
    timeout: Duration,
) -> Result<Vec<(Value, Value)>, Fido2Error> {
    let mut body = Vec::new();
    ciborium::ser::into_writer(&Value::Map(fields), &mut body)
        .map_err(|e| Fido2Error::Cbor(Box::new(e)))?;
    let answer = device.cbor(CLIENT_PIN, &body, timeout)?;
    if answer.is_empty() {
        return Ok(Vec::new());
    }
    match ciborium::de::from_reader::<Value, _>(answer.as_slice()) {
        Ok(Value::Map(entries)) => Ok(entries),
        Ok(_) => Err(Fido2Error::Protocol("clientPIN answer is not a map")),
        Err(e) => Err(Fido2Error::Cbor(Box::new(e))),
    }
}

fn field(entries: &[(Value, Value)], key: i64) -> Option<&Value> {
    entries.iter().find_map(|(k, v)| match k {
        Value::Integer(i) if i128::from(*i) == i128::from(key) => Some(v),
        _ => None,
    })
}

/// PIN retries left, as the key says.
pub(crate) fn retries(device: &mut CtapHid, timeout: Duration) -> Option<u8> {
    let answer = client_pin(
        device,
        vec![
            (int(1), int(PROTOCOL_ONE.into())),
            (int(2), int(GET_RETRIES.into())),
        ],
        timeout,
    )
    .ok()?;
    match field(&answer, 3) {
        Some(Value::Integer(n)) => u8::try_from(i128::from(*n)).ok(),
        _ => None,
    }
}

fn aes_cbc(secret: &[u8; 32], data: &mut [u8], encrypt: bool) -> Result<(), Fido2Error> {
    let fail = |_| Fido2Error::Protocol("AES-CBC with the PIN secret failed");
    let key = UnboundCipherKey::new(&AES_256, secret).map_err(fail)?;
    if encrypt {
        EncryptingKey::cbc(key)
            .map_err(fail)?
            .less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from([0u8; 16])))
            .map_err(fail)?;
    } else {
        DecryptingKey::cbc(key)
            .map_err(fail)?
            .decrypt(data, DecryptionContext::Iv128(FixedLength::from([0u8; 16])))
            .map_err(fail)?;
    }
    Ok(())
}

/// Gets a pinToken for `pin`. A wrong PIN fails with [`Fido2Error::PinIncorrect`] carrying the
/// retries the key says are left; a blocked PIN with [`Fido2Error::PinBlocked`].
pub(crate) fn pin_token(
    device: &mut CtapHid,
    pin: &[u8],
    timeout: Duration,
) -> Result<PinToken, Fido2Error> {
    let agreement_answer = client_pin(
        device,
        vec![
            (int(1), int(PROTOCOL_ONE.into())),
            (int(2), int(GET_KEY_AGREEMENT.into())),
        ],
        timeout,
    )?;
    let Some(Value::Map(cose)) = field(&agreement_answer, 1) else {
        return Err(Fido2Error::Protocol("getKeyAgreement answer lacks the key"));
    };
    let (Some(Value::Bytes(x)), Some(Value::Bytes(y))) = (field(cose, -2), field(cose, -3)) else {
        return Err(Fido2Error::Protocol("agreement key lacks x or y"));
    };
    let mut peer = vec![0x04];
    peer.extend_from_slice(x);
    peer.extend_from_slice(y);
    let ours = PrivateKey::generate(&ECDH_P256)
        .map_err(|_| Fido2Error::Protocol("ECDH key generation"))?;
    let public = ours
        .compute_public_key()
        .map_err(|_| Fido2Error::Protocol("ECDH public key"))?;
    let point = public.as_ref();
    let (Some(our_x), Some(our_y)) = (point.get(1..33), point.get(33..65)) else {
        return Err(Fido2Error::Protocol(
            "ECDH public key is not uncompressed P-256",
        ));
    };
    let secret: Zeroizing<[u8; 32]> = agreement::agree(
        &ours,
        UnparsedPublicKey::new(&ECDH_P256, peer),
        Fido2Error::Protocol("ECDH with the key's agreement key failed"),
        |z| {
            let mut out = [0u8; 32];
            out.copy_from_slice(digest::digest(&digest::SHA256, z).as_ref());
            Ok(Zeroizing::new(out))
        },
    )?;
    let mut pin_hash = Zeroizing::new([0u8; 16]);
    pin_hash.copy_from_slice(
        digest::digest(&digest::SHA256, pin)
            .as_ref()
            .get(..16)
            .unwrap_or(&[0u8; 16]),
    );
    aes_cbc(&secret, pin_hash.as_mut_slice(), true)?;
    let platform_key = Value::Map(vec![
        (int(1), int(2)),
        (int(3), int(COSE_ECDH_ES_HKDF_256)),
        (int(-1), int(1)),
        (int(-2), Value::Bytes(our_x.to_vec())),
        (int(-3), Value::Bytes(our_y.to_vec())),
    ]);
    let answer = client_pin(
        device,
        vec![
            (int(1), int(PROTOCOL_ONE.into())),
            (int(2), int(GET_PIN_TOKEN.into())),
            (int(3), platform_key),
            (int(6), Value::Bytes(pin_hash.to_vec())),
        ],
        timeout,
    );
    let answer = match answer {
        Err(Fido2Error::PinIncorrect { .. }) => {
            return Err(Fido2Error::PinIncorrect {
                retries: retries(device, timeout),
            });
        }
        other => other?,
    };
    let Some(Value::Bytes(encrypted)) = field(&answer, 2) else {
        return Err(Fido2Error::Protocol("getPinToken answer lacks the token"));
    };
    if encrypted.is_empty() || encrypted.len() % 16 != 0 || encrypted.len() > 64 {
        return Err(Fido2Error::Protocol("pinToken has a bad length"));
    }
    let mut token = Zeroizing::new(encrypted.clone());
    aes_cbc(&secret, token.as_mut_slice(), false)?;
    Ok(PinToken(token))
}
