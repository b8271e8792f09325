//! The signature backends agree: on valid low-S and high-S signatures, and on every malformed or
//! non-canonical DER encoding of a valid signature.

use crate::verify_support;

use anyhow::Result;
use hwsign_verifier::VerifyBackend;
use sha2::{Digest, Sha256};
use verify_support::TestKey;

/// Re-encodes `r` and `s` (big-endian, minimal) as DER, with optional distortions.
fn der(r: &[u8], s: &[u8], pad_r: bool, long_length: bool, trailing: bool) -> Vec<u8> {
    let integer = |v: &[u8], pad: bool| {
        let mut body = v.to_vec();
        if pad {
            body.insert(0, 0);
        }
        let mut out = vec![0x02, body.len() as u8];
        out.extend(body);
        out
    };
    let mut content = integer(r, pad_r);
    content.extend(integer(s, false));
    let mut out = vec![0x30];
    if long_length {
        out.extend([0x81, content.len() as u8]);
    } else {
        out.push(content.len() as u8);
    }
    out.extend(content);
    if trailing {
        out.push(0);
    }
    out
}

/// The minimal big-endian integer body of a DER INTEGER (leading 0x00 when the top bit is set).
fn integer_body(fixed: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = fixed.iter().copied().skip_while(|b| *b == 0).collect();
    if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
        let mut out = vec![0];
        out.extend(trimmed);
        out
    } else {
        trimmed
    }
}

#[test]
fn backends_agree_on_valid_and_distorted_signatures() -> Result<()> {
    let message = b"HWS1-ECDSA-P256-SHA256\n20261123T193000Z\n20261123/payments/hws1_request\nabc";
    let digest: [u8; 32] = Sha256::digest(message).into();
    let mut checked = 0;
    for (seed, high_s) in [("agree-low", false), ("agree-high", true)] {
        let mut key = TestKey::from_seed(seed)?;
        key.high_s = high_s;
        let valid = key.sign_digest(&digest)?;
        let signature = p256::ecdsa::Signature::from_der(&valid)?;
        let bytes = signature.to_bytes();
        let (r, s) = (integer_body(&bytes[..32]), integer_body(&bytes[32..]));
        let mut flipped = valid.clone();
        if let Some(last) = flipped.last_mut() {
            *last ^= 1;
        }
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("valid", valid.clone(), true),
            ("re-encoded minimal", der(&r, &s, false, false, false), true),
            (
                "extra leading zero in r",
                der(&r, &s, true, false, false),
                false,
            ),
            ("long-form length", der(&r, &s, false, true, false), false),
            ("trailing byte", der(&r, &s, false, false, true), false),
            ("bit flipped in s", flipped, false),
            ("raw r||s instead of DER", bytes.to_vec(), false),
            ("empty", Vec::new(), false),
            ("other message", key.sign_digest(&[9u8; 32])?, false),
        ];
        for (name, signature, expected) in cases {
            for backend in VerifyBackend::available() {
                let verdict = backend.prepare(&key.public).verify(message, &signature);
                assert_eq!(verdict, expected, "{seed} {name} with {}", backend.name());
                checked += 1;
            }
        }
    }
    assert!(checked >= 18);
    Ok(())
}
