//! The `tpm_structures` fuzz target's invariants as properties in the normal test run: the TPM
//! structure and EK certificate parsers never panic on truncated, extended, mutated or spliced
//! real structures, and the untouched ones parse, verify and certify as a TPM made them.
//!
//! The structures are the committed seed corpus (fuzz/corpus/tpm_structures/, written from a
//! real swtpm by fuzz/seeds/tpm-seeds.sh), so these properties need no TPM at run time.

use std::time::{Duration, SystemTime};

use anyhow::{Result, ensure};
use hwsign_verifier::attestation::TpmPublic;
use hwsign_verifier::attestation::attest::{Attested, TpmAttest};
use hwsign_verifier::attestation::certificate::ParsedCertificate;
use hwsign_verifier::attestation::ek_cert::EkCertificate;
use hwsign_verifier::attestation::make_credential;
use hwsign_verifier::attestation::public::PublicKeyArea;
use hwsign_verifier::attestation::signature::{TpmSignature, verify_tpm_signature};
use proptest::prelude::*;

macro_rules! seed {
    ($name:literal) => {
        include_bytes!(concat!("../../../fuzz/corpus/tpm_structures/", $name)).as_slice()
    };
}

const PUBLICS: [&[u8]; 5] = [
    seed!("ek-rsa2048.tpmt-public"),
    seed!("ek-p384.tpmt-public"),
    seed!("ak-ecdsa.tpmt-public"),
    seed!("ak-rsassa.tpmt-public"),
    seed!("signing-key.tpmt-public"),
];
const ATTESTS: [&[u8]; 4] = [
    seed!("quote-ecdsa.tpms-attest"),
    seed!("certify-ecdsa.tpms-attest"),
    seed!("quote-rsassa.tpms-attest"),
    seed!("certify-rsassa.tpms-attest"),
];
const SIGNATURES: [&[u8]; 4] = [
    seed!("quote-ecdsa.tpmt-signature"),
    seed!("certify-ecdsa.tpmt-signature"),
    seed!("quote-rsassa.tpmt-signature"),
    seed!("certify-rsassa.tpmt-signature"),
];
/// The AK (index into [`PUBLICS`]) that signed each of [`ATTESTS`].
const SIGNERS: [usize; 4] = [2, 2, 3, 3];
const CERTIFICATES: [&[u8]; 2] = [seed!("ek-rsa2048.der"), seed!("ek-p384.der")];
/// The EK public area (index into [`PUBLICS`]) each of [`CERTIFICATES`] certifies.
const CERTIFIED: [usize; 2] = [0, 1];

/// 2026-01-01T00:00:00Z.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

/// Every parser on `bytes`, as the fuzz target runs them. Returns how many accepted it.
fn parse_everything(bytes: &[u8]) -> usize {
    let mut accepted = 0;
    accepted += usize::from(TpmAttest::parse(bytes).is_ok());
    accepted += usize::from(TpmSignature::parse(bytes).is_ok());
    if let Ok(public) = TpmPublic::parse(bytes) {
        accepted += 1;
        assert_eq!(public.as_bytes(), bytes);
        let name = public.name();
        assert_eq!(name.len(), 2 + public.name_alg.size());
        let _ = make_credential(&public, &name, &[0x5a; 16]);
    }
    accepted += usize::from(TpmPublic::parse_tpm2b(bytes).is_ok());
    if let Ok(certificate) = ParsedCertificate::from_der(bytes) {
        accepted += 1;
        let _ = certificate.certified_key();
        let _ = certificate.is_valid_at(now());
        let _ = certificate.verifies(&certificate, Default::default());
    }
    accepted += usize::from(EkCertificate::from_der(bytes).is_ok());
    accepted
}

fn all_seeds() -> Vec<&'static [u8]> {
    PUBLICS
        .iter()
        .chain(&ATTESTS)
        .chain(&SIGNATURES)
        .chain(&CERTIFICATES)
        .copied()
        .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Append(Vec<u8>),
    SetByte(usize, u8),
    FlipBit(usize, u8),
    /// Overwrites a big-endian u16 (TPM2B size prefixes, algorithm ids) with a hostile value.
    SetU16(usize, u16),
    Remove(usize, usize),
    Insert(usize, Vec<u8>),
    /// Replaces the tail from an offset with the tail of another seed.
    Splice(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let hostile_u16 = prop_oneof![
        Just(0u16),
        Just(0xffff),
        Just(0x8000),
        Just(0x0010),
        Just(0x0023),
        Just(0x0001),
        any::<u16>()
    ];
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 1..8).prop_map(Mutation::Append),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<usize>(), hostile_u16).prop_map(|(i, v)| Mutation::SetU16(i, v)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(i, s, j)| Mutation::Splice(i, s, j)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation, seeds: &[&[u8]]) {
    let len = bytes.len().max(1);
    match mutation {
        Mutation::Truncate(at) => bytes.truncate(at % len),
        Mutation::Append(tail) => bytes.extend_from_slice(tail),
        Mutation::SetByte(at, value) if !bytes.is_empty() => bytes[at % len] = *value,
        Mutation::FlipBit(at, bit) if !bytes.is_empty() => bytes[at % len] ^= 1 << bit,
        Mutation::SetU16(at, value) if bytes.len() >= 2 => {
            let at = at % (bytes.len() - 1);
            bytes[at..at + 2].copy_from_slice(&value.to_be_bytes());
        }
        Mutation::Remove(at, count) if !bytes.is_empty() => {
            let start = at % len;
            let end = (start + count).min(bytes.len());
            bytes.drain(start..end);
        }
        Mutation::Insert(at, inserted) => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, inserted.iter().copied());
        }
        Mutation::Splice(at, seed, from) => {
            let other = seeds[seed % seeds.len()];
            bytes.truncate(at % len);
            bytes.extend_from_slice(&other[from % other.len().max(1)..]);
        }
        _ => {}
    }
}

#[test]
fn real_structures_parse_verify_and_certify() -> Result<()> {
    for public in PUBLICS {
        let parsed = TpmPublic::parse(public)?;
        ensure!(parsed.as_bytes() == public, "public area bytes not kept");
    }
    for (index, attest) in ATTESTS.iter().enumerate() {
        let parsed = TpmAttest::parse(attest)?;
        let quote = index % 2 == 0;
        ensure!(matches!(parsed.attested, Attested::Quote { .. }) == quote);
        let signer = TpmPublic::parse(PUBLICS[SIGNERS[index]])?;
        let signature = TpmSignature::parse(SIGNATURES[index])?;
        verify_tpm_signature(&signer, attest, &signature)?;
        let mut changed = attest.to_vec();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        ensure!(
            verify_tpm_signature(&signer, &changed, &signature).is_err(),
            "a changed attestation still verifies"
        );
    }
    for (certificate, ek) in CERTIFICATES.iter().zip(CERTIFIED) {
        let parsed = EkCertificate::from_der(certificate)?;
        parsed.check_certifies(&TpmPublic::parse(PUBLICS[ek])?)?;
        // The RSA EK certificate does not certify the P-384 EK, nor the reverse.
        let other = TpmPublic::parse(PUBLICS[1 - ek])?;
        ensure!(parsed.check_certifies(&other).is_err());
    }
    // Every real structure is accepted by exactly its own parser (a certificate by both the
    // generic and the EK parser; a TPMT_PUBLIC is no TPM2B_PUBLIC, and so on).
    for seed in PUBLICS.iter().chain(&ATTESTS).chain(&SIGNATURES) {
        ensure!(parse_everything(seed) == 1, "ambiguous structure");
    }
    for seed in CERTIFICATES {
        ensure!(
            parse_everything(seed) == 2,
            "certificate not accepted twice"
        );
    }
    Ok(())
}

#[test]
fn every_prefix_of_every_structure_is_refused_without_panic() {
    for seed in all_seeds() {
        for len in 0..seed.len() {
            assert_eq!(
                parse_everything(&seed[..len]),
                0,
                "a {len}-byte prefix parsed"
            );
        }
    }
}

#[test]
fn rsa_ek_with_hostile_modulus_is_refused_by_make_credential() -> Result<()> {
    let ek = TpmPublic::parse(PUBLICS[0])?;
    ensure!(matches!(ek.key, PublicKeyArea::Rsa { .. }));
    let name = TpmPublic::parse(PUBLICS[2])?.name();
    make_credential(&ek, &name, &[1; 32])?;
    // Zero the modulus (all but its size prefix at the end of the structure).
    let mut zeroed = PUBLICS[0].to_vec();
    let modulus_start = zeroed.len() - 256;
    zeroed[modulus_start..].fill(0);
    let zeroed = TpmPublic::parse(&zeroed)?;
    ensure!(make_credential(&zeroed, &name, &[1; 32]).is_err());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mutated_structures_never_panic(
        seed in 0usize..15,
        mutations in proptest::collection::vec(mutation(), 1..5),
    ) {
        let seeds = all_seeds();
        let mut bytes = seeds[seed % seeds.len()].to_vec();
        for mutation in &mutations {
            mutate(&mut bytes, mutation, &seeds);
        }
        parse_everything(&bytes);
    }

    #[test]
    fn mutated_attestations_never_verify_with_a_kept_signature(
        index in 0usize..4,
        at in any::<usize>(),
        bit in 0u8..8,
    ) {
        let attest = ATTESTS[index];
        let mut changed = attest.to_vec();
        let at = at % changed.len();
        changed[at] ^= 1 << bit;
        let signer = TpmPublic::parse(PUBLICS[SIGNERS[index]]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let signature = TpmSignature::parse(SIGNATURES[index]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(verify_tpm_signature(&signer, &changed, &signature).is_err());
    }
}
