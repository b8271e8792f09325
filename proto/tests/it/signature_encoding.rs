//! Raw `r‖s` signatures from tokens and TPMs: shorter scalars are left-padded, longer ones are
//! refused, whichever half they are in.

use hwsign_proto::ProtoError;
use hwsign_proto::keys::raw_signature_to_der;

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
