//! The TPM's key derivation functions (TPM 2.0 Part 1, "Key Derivation Functions"):
//! KDFa (SP 800-108 counter mode with HMAC) and KDFe (SP 800-56A concatenation KDF).

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

use super::alg::HashAlg;

/// KDFa(hashAlg, key, label, contextU, contextV, bits): HMAC over
/// `[i]₃₂ ‖ label ‖ 0x00 ‖ contextU ‖ contextV ‖ [bits]₃₂` for i = 1, 2, …, truncated to `bits`
/// (a multiple of 8 here; every TPM use is).
pub fn kdf_a(
    hash: HashAlg,
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Zeroizing<Vec<u8>> {
    let wanted = (bits / 8) as usize;
    let mut out = Zeroizing::new(Vec::with_capacity(wanted + hash.size()));
    let mut counter: u32 = 1;
    while out.len() < wanted {
        let parts: [&[u8]; 6] = [
            &counter.to_be_bytes(),
            label,
            &[0u8],
            context_u,
            context_v,
            &bits.to_be_bytes(),
        ];
        out.extend_from_slice(&hmac(hash, key, &parts));
        counter = counter.wrapping_add(1);
    }
    out.truncate(wanted);
    out
}

/// KDFe(hashAlg, Z, label, partyUInfo, partyVInfo, bits): hash over
/// `[i]₃₂ ‖ Z ‖ label ‖ 0x00 ‖ partyUInfo ‖ partyVInfo` for i = 1, 2, …, truncated to `bits`.
pub fn kdf_e(
    hash: HashAlg,
    z: &[u8],
    label: &[u8],
    party_u: &[u8],
    party_v: &[u8],
    bits: u32,
) -> Zeroizing<Vec<u8>> {
    let wanted = (bits / 8) as usize;
    let mut out = Zeroizing::new(Vec::with_capacity(wanted + hash.size()));
    let mut counter: u32 = 1;
    while out.len() < wanted {
        let block = Zeroizing::new(hash.digest(&[
            &counter.to_be_bytes(),
            z,
            label,
            &[0u8],
            party_u,
            party_v,
        ]));
        out.extend_from_slice(&block);
        counter = counter.wrapping_add(1);
    }
    out.truncate(wanted);
    out
}

/// HMAC of the concatenation of `parts`.
pub fn hmac(hash: HashAlg, key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        // HMAC takes keys of any length, so new_from_slice cannot fail; an empty MAC would only
        // make the later comparison fail, never pass.
        let Ok(mut mac) = <M as KeyInit>::new_from_slice(key) else {
            return Zeroizing::new(Vec::new());
        };
        for part in parts {
            mac.update(part);
        }
        Zeroizing::new(mac.finalize().into_bytes().to_vec())
    }
    match hash {
        HashAlg::Sha256 => run::<Hmac<Sha256>>(key, parts),
        HashAlg::Sha384 => run::<Hmac<Sha384>>(key, parts),
        HashAlg::Sha512 => run::<Hmac<Sha512>>(key, parts),
    }
}
