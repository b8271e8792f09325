//! The TPM structure parsers on real swtpm output: every truncation and every single-bit flip
//! gives a result or an error, never a panic; marshalled lengths are checked; both ECDSA
//! S values verify (TPMs do not normalize to low S).

use crate::attestation_support;

use anyhow::{Result, ensure};
use attestation_support::{AK, EK_P384, EK_RSA, KEY, TpmRig, nonce};
use hwsign_verifier::attestation::TpmPublic;
use hwsign_verifier::attestation::attest::{Attested, TpmAttest};
use hwsign_verifier::attestation::reader::ParseError;
use hwsign_verifier::attestation::signature::{TpmSignature, verify_tpm_signature};
use p256::elliptic_curve::PrimeField as _;

fn exercise(bytes: &[u8], parse: impl Fn(&[u8]) -> bool) -> Result<()> {
    ensure!(parse(bytes), "the untouched structure must parse");
    for len in 0..bytes.len() {
        ensure!(!parse(&bytes[..len]), "a {len}-byte prefix parsed");
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    ensure!(!parse(&longer), "trailing byte accepted");
    for bit in 0..bytes.len() * 8 {
        let mut flipped = bytes.to_vec();
        flipped[bit / 8] ^= 1 << (bit % 8);
        // Either outcome is fine; reaching the next iteration is the point.
        let _ = parse(&flipped);
    }
    Ok(())
}

#[test]
fn truncated_extended_and_flipped_structures_never_panic() -> Result<()> {
    let rig = TpmRig::new()?;
    let nonce = nonce()?;
    let (certify, certify_signature) = rig.certify(KEY, AK, &nonce)?;
    let (quote, quote_signature) = rig.quote(AK, &nonce)?;

    for handle in [EK_RSA, EK_P384, AK, KEY] {
        exercise(&rig.public_area(handle)?, |b| TpmPublic::parse(b).is_ok())?;
    }
    exercise(&certify, |b| TpmAttest::parse(b).is_ok())?;
    exercise(&quote, |b| TpmAttest::parse(b).is_ok())?;
    exercise(&certify_signature, |b| TpmSignature::parse(b).is_ok())?;
    exercise(&quote_signature, |b| TpmSignature::parse(b).is_ok())?;

    let parsed = TpmAttest::parse(&quote)?;
    assert!(matches!(parsed.attested, Attested::Quote { .. }));
    assert_eq!(parsed.extra_data, nonce);
    assert!(parsed.clock_info.safe);

    // A size prefix beyond the field's bound is refused as such, not read.
    let mut oversized = certify.clone();
    oversized[6] = 0xff; // qualifiedSigner size high byte
    assert!(matches!(
        TpmAttest::parse(&oversized),
        Err(ParseError::SizeTooLarge { .. })
    ));
    Ok(())
}

#[test]
fn high_and_low_s_both_verify() -> Result<()> {
    let rig = TpmRig::new()?;
    let ak = TpmPublic::parse(&rig.public_area(AK)?)?;
    let (certify, signature) = rig.certify(KEY, AK, &nonce()?)?;
    let TpmSignature::Ecdsa { hash, r, s } = TpmSignature::parse(&signature)? else {
        anyhow::bail!("expected an ECDSA signature");
    };
    let original = TpmSignature::Ecdsa {
        hash,
        r: r.clone(),
        s: s.clone(),
    };
    verify_tpm_signature(&ak, &certify, &original)?;

    // n - s is the other valid S for the same signature.
    let mut s_bytes = [0u8; 32];
    s_bytes[32 - s.len()..].copy_from_slice(&s);
    let scalar = Option::<p256::Scalar>::from(p256::Scalar::from_repr(s_bytes.into()))
        .ok_or_else(|| anyhow::anyhow!("s out of range"))?;
    let mirrored = TpmSignature::Ecdsa {
        hash,
        r: r.clone(),
        s: (-scalar).to_repr().to_vec(),
    };
    verify_tpm_signature(&ak, &certify, &mirrored)?;

    // Leading zeros dropped or added do not matter; a different r does.
    let mut padded_r = vec![0u8; 2];
    padded_r.extend_from_slice(&r);
    let padded = TpmSignature::Ecdsa {
        hash,
        r: padded_r,
        s: s.clone(),
    };
    verify_tpm_signature(&ak, &certify, &padded)?;
    let mut other_r = r.clone();
    other_r[0] ^= 1;
    assert!(
        verify_tpm_signature(
            &ak,
            &certify,
            &TpmSignature::Ecdsa {
                hash,
                r: other_r,
                s
            }
        )
        .is_err()
    );
    Ok(())
}
