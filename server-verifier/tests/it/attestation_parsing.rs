//! The TPM structure parsers on real swtpm output: every truncation and every single-bit flip
//! gives a result or an error, never a panic; marshalled lengths are checked; both ECDSA
//! S values verify (TPMs do not normalize to low S).

use crate::attestation_support;

use anyhow::{Context as _, Result, ensure};
use attestation_support::{AK, EK_P384, EK_RSA, KEY, TpmRig, nonce};
use hwsign_verifier::attestation::TpmPublic;
use hwsign_verifier::attestation::attest::{Attested, TpmAttest};
use hwsign_verifier::attestation::certificate::ParsedCertificate;
use hwsign_verifier::attestation::reader::{ParseError, ParseFailure};
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
        Err(ParseFailure {
            error: ParseError::SizeTooLarge { .. },
            ..
        })
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

#[test]
fn parse_errors_name_the_field_and_its_byte_offset() -> Result<()> {
    let rig = TpmRig::new()?;
    let (certify, _) = rig.certify(KEY, AK, &nonce()?)?;

    // TPMS_ATTEST: magic (4) type (2) then qualifiedSigner's size prefix at byte 6.
    let mut oversized = certify.clone();
    oversized[6] = 0xff;
    let failure = TpmAttest::parse(&oversized)
        .err()
        .context("oversized accepted")?;
    ensure!(failure.offset == 6, "{failure:?}");
    ensure!(
        matches!(
            failure.error,
            ParseError::SizeTooLarge {
                what: "TPMS_ATTEST.qualifiedSigner",
                ..
            }
        ),
        "{failure:?}"
    );
    // Cut inside the clock info: the field that could not be read, where it starts.
    let qualified_signer = usize::from(u16::from_be_bytes([certify[6], certify[7]]));
    let extra_at = 8 + qualified_signer;
    let extra = usize::from(u16::from_be_bytes([
        certify[extra_at],
        certify[extra_at + 1],
    ]));
    let clock_at = extra_at + 2 + extra;
    let failure = TpmAttest::parse(&certify[..clock_at + 3])
        .err()
        .context("truncated accepted")?;
    ensure!(
        failure.offset == clock_at,
        "{failure:?} (clock at {clock_at})"
    );
    ensure!(
        matches!(
            failure.error,
            ParseError::Truncated {
                what: "TPMS_CLOCK_INFO.clock",
                needed: 8,
                available: 3
            }
        ),
        "{failure:?}"
    );
    // Trailing bytes: the offset of the first one.
    let mut longer = certify.clone();
    longer.extend_from_slice(&[0, 0]);
    let failure = TpmAttest::parse(&longer)
        .err()
        .context("trailing accepted")?;
    ensure!(failure.offset == certify.len(), "{failure:?}");

    // TPMT_PUBLIC: type (2) then nameAlg at byte 2; SHA-1 refused there, by name and offset.
    let public = rig.public_area(AK)?;
    let mut sha1 = public.clone();
    sha1[2..4].copy_from_slice(&0x0004u16.to_be_bytes());
    let failure = TpmPublic::parse(&sha1)
        .err()
        .context("SHA-1 nameAlg accepted")?;
    ensure!(failure.offset == 2, "{failure:?}");
    ensure!(
        matches!(failure.error, ParseError::Sha1 { .. }),
        "{failure:?}"
    );
    // The same inside a TPM2B_PUBLIC counts from its size prefix.
    let mut tpm2b = u16::try_from(sha1.len())?.to_be_bytes().to_vec();
    tpm2b.extend_from_slice(&sha1);
    let failure = TpmPublic::parse_tpm2b(&tpm2b).err().context("accepted")?;
    ensure!(failure.offset == 4, "{failure:?}");
    // What an operator reads: the structure, the offset, the field.
    let message = hwsign_verifier::ErrorChain(&failure).to_string();
    ensure!(
        message.contains("at byte 4") && message.contains("nameAlg"),
        "{message}"
    );

    // Certificates: the DER decoder's own position is kept in the message.
    let der = rig.ek_certificate(attestation_support::EK_RSA_CERT_NV)?;
    let error = ParsedCertificate::from_der(&der[..der.len() / 2])
        .err()
        .context("half a certificate parsed")?;
    ensure!(error.to_string().contains("at DER byte"), "{error}");
    Ok(())
}
