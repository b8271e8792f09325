//! Delegation statements: round trip, signature binding, and every refusal.

use anyhow::Result;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hwsign_proto::delegation::DelegationStatement;
use hwsign_proto::{ProtoError, PublicKey, SigningTime};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use sha2::{Digest, Sha256};

fn key(seed: &[u8]) -> Result<SigningKey> {
    Ok(SigningKey::from_slice(&Sha256::digest(seed))?)
}

fn statement(
    device: &SigningKey,
    session: &SigningKey,
    lifetime: i64,
) -> Result<DelegationStatement> {
    let device_public = PublicKey::from_verifying_key(*device.verifying_key())?;
    Ok(DelegationStatement {
        device_key_id: device_public.key_id(),
        session_key: PublicKey::from_verifying_key(*session.verifying_key())?,
        audience: "payments".into(),
        not_before: SigningTime::from_unix(1_790_000_000),
        not_after: SigningTime::from_unix(1_790_000_000 + lifetime),
    })
}

#[test]
fn round_trips_and_signature_binds_the_statement() -> Result<()> {
    let (device, session) = (key(b"device")?, key(b"session")?);
    let stmt = statement(&device, &session, 900)?;
    let signature: Signature = device.sign_prehash(&stmt.digest())?;
    let header = stmt.to_header_value(signature.to_der().as_bytes());
    let (parsed, parsed_sig) = DelegationStatement::parse_header_value(&header)?;
    assert_eq!(parsed, stmt);
    let device_public = PublicKey::from_verifying_key(*device.verifying_key())?;
    assert!(device_public.verify_digest(&parsed.digest(), &parsed_sig));
    let other = PublicKey::from_verifying_key(*session.verifying_key())?;
    assert!(!other.verify_digest(&parsed.digest(), &parsed_sig));
    Ok(())
}

#[test]
fn refuses_long_lifetime_and_tampering() -> Result<()> {
    let (device, session) = (key(b"device")?, key(b"session")?);
    let too_long = statement(&device, &session, 901)?;
    assert!(matches!(
        too_long.check(),
        Err(ProtoError::MalformedDelegation(_))
    ));
    let header = too_long.to_header_value(&[0x30, 0x00]);
    assert!(DelegationStatement::parse_header_value(&header).is_err());

    let good = statement(&device, &session, 600)?;
    let text = good.to_text();
    let swapped = text.replace("payments", "admin");
    let forged = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(swapped),
        URL_SAFE_NO_PAD.encode([0x30, 0x00])
    );
    // Still well-formed: the audience change is caught by the device signature, checked by the verifier.
    let (parsed, _) = DelegationStatement::parse_header_value(&forged)?;
    assert_ne!(parsed.digest(), good.digest());

    let wrong_id = text.replacen(
        &good.session_key.key_id(),
        "hk1_00000000000000000000000000000000",
        1,
    );
    let header = format!("{}.AA", URL_SAFE_NO_PAD.encode(wrong_id));
    assert!(DelegationStatement::parse_header_value(&header).is_err());
    for bad in ["", ".", "abc", "a.b.c", &"A".repeat(2000)] {
        assert!(
            DelegationStatement::parse_header_value(bad).is_err(),
            "{bad}"
        );
    }
    Ok(())
}
