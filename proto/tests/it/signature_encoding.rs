//! Raw `r‖s` signatures from tokens and TPMs: shorter scalars are left-padded, longer ones are
//! refused, whichever half they are in; the same for the affine coordinates of a public key.

use hwsign_proto::keys::raw_signature_to_der;
use hwsign_proto::{ProtoError, PublicKey};

#[test]
fn short_scalars_are_padded_and_long_ones_refused() -> Result<(), ProtoError> {
    let r = [0x11u8; 32];
    let s = [0x22u8; 32];
    let full = raw_signature_to_der(&r, &s)?;
    // A TPM drops leading zero bytes: the padded form is the same signature.
    let mut s_with_zero = [0x22u8; 32];
    s_with_zero[0] = 0;
    let r_with_zero = {
        let mut r = [0x11u8; 32];
        r[0] = 0;
        r
    };
    assert_eq!(
        raw_signature_to_der(&r, &s_with_zero[1..])?,
        raw_signature_to_der(&r, &s_with_zero)?
    );
    assert_eq!(
        raw_signature_to_der(&r_with_zero[1..], &s)?,
        raw_signature_to_der(&r_with_zero, &s)?
    );
    assert_ne!(raw_signature_to_der(&r, &s_with_zero)?, full);
    for (r, s) in [(&[0x11u8; 33][..], &s[..]), (&r[..], &[0x22u8; 33][..])] {
        assert_eq!(
            raw_signature_to_der(r, s),
            Err(ProtoError::MalformedSignature),
            "r {} bytes, s {} bytes",
            r.len(),
            s.len()
        );
    }
    Ok(())
}

/// A P-256 key whose affine coordinate (0: x, 1: y) starts with a zero byte, as a TPM or a
/// PKCS#11 token may hand it over without that byte.
fn key_with_leading_zero(coordinate: usize) -> Result<(Vec<u8>, Vec<u8>), ProtoError> {
    use p256::ecdsa::SigningKey;
    use sha2::{Digest, Sha256};
    for seed in 0u32.. {
        let scalar = Sha256::digest(seed.to_be_bytes());
        let Ok(key) = SigningKey::from_slice(&scalar) else {
            continue;
        };
        let point = PublicKey::from_verifying_key(*key.verifying_key())?.sec1_uncompressed();
        assert_eq!(
            (point.len(), point[0]),
            (65, 4),
            "uncompressed SEC1: 04 x y"
        );
        let (x, y) = (&point[1..33], &point[33..]);
        if [x, y][coordinate][0] == 0 {
            return Ok((x.to_vec(), y.to_vec()));
        }
    }
    Err(ProtoError::MalformedPublicKey)
}

#[test]
fn short_affine_coordinates_are_padded_and_long_ones_refused() -> Result<(), ProtoError> {
    for coordinate in [0, 1] {
        let (x, y) = key_with_leading_zero(coordinate)?;
        let full = PublicKey::from_affine(&x, &y)?;
        let (short_x, short_y) = if coordinate == 0 {
            (&x[1..], &y[..])
        } else {
            (&x[..], &y[1..])
        };
        assert_eq!(
            PublicKey::from_affine(short_x, short_y)?.key_id(),
            full.key_id()
        );
        // 33 bytes, even with a zero in front, is not a P-256 coordinate.
        let mut long = vec![0u8];
        long.extend_from_slice(if coordinate == 0 { &x } else { &y });
        let (long_x, long_y) = if coordinate == 0 {
            (&long[..], &y[..])
        } else {
            (&x[..], &long[..])
        };
        assert_eq!(
            PublicKey::from_affine(long_x, long_y).map(|k| k.key_id()),
            Err(ProtoError::MalformedPublicKey)
        );
        let longer = [0u8; 34];
        assert!(PublicKey::from_affine(&longer, &y).is_err());
        assert!(PublicKey::from_affine(&x, &longer).is_err());
    }
    Ok(())
}
