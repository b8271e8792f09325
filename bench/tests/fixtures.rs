//! The fixtures measure what they claim: requests signed in process verify through the real
//! verifier with every backend, a replayed one is refused, and aws-sigv4 really signs SigV4a.

use anyhow::Result;
use hwsign_bench::fixtures::{BenchRequest, T0, signing_key};
use hwsign_bench::signers::InProcessSigner;
use hwsign_bench::sigv4a::Sigv4aSigner;
use hwsign_bench::verify::{RegistryKind, VerifyFixture};
use hwsign_proto::SigningTime;
use hwsign_verifier::VerifyBackend;

#[test]
fn signed_requests_verify_once_with_every_backend() -> Result<()> {
    for backend in VerifyBackend::available() {
        for registry in [RegistryKind::Sqlite, RegistryKind::Memory] {
            let fixture = VerifyFixture::new(*backend, registry, 16)?;
            let requests = fixture.signed_requests(3)?;
            for request in &requests {
                assert!(fixture.raw_verify(request), "raw floor refused a fixture");
                fixture.verify(&request.pairs())?;
            }
            assert!(
                fixture.verify(&requests[0].pairs()).is_err(),
                "a replayed request must be refused, or the benchmark measures nothing real"
            );
        }
    }
    Ok(())
}

#[test]
fn both_in_process_signers_produce_an_authorization_header() -> Result<()> {
    let request = BenchRequest::realistic();
    let key = signing_key("test")?;
    for ring in [true, false] {
        let signer = InProcessSigner::new(&key, ring)?;
        let added = signer.sign(
            &request,
            &request.body_sha256_hex(),
            SigningTime::from_unix(T0),
        )?;
        let (name, value) = added
            .last()
            .ok_or_else(|| anyhow::anyhow!("no headers were added"))?;
        assert_eq!(name, "authorization");
        assert!(value.starts_with("HWS1-ECDSA-P256-SHA256 Credential="));
    }
    Ok(())
}

#[test]
fn sigv4a_signer_signs_with_ecdsa() -> Result<()> {
    let request = BenchRequest::realistic();
    let added = Sigv4aSigner::new(&request).sign(&request, &request.body_sha256_hex())?;
    let authorization = added
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value.as_str())
        .unwrap_or_default();
    assert!(
        authorization.starts_with("AWS4-ECDSA-P256-SHA256 Credential=AKIDEXAMPLE/"),
        "{authorization}"
    );
    assert!(added.iter().any(|(name, _)| name == "x-amz-region-set"));
    Ok(())
}
