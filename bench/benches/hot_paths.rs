//! Criterion benches of the hot paths the runner's figures are made of: canonicalization, the
//! sign pipeline (hwsign with ring and p256, aws-sigv4 SigV4a), the verify pipeline per backend,
//! and the raw ECDSA floors. `cargo bench -p hwsign-bench`.

// Criterion bench functions cannot return errors; a fixture that fails to build is a broken
// bench, and stopping with its message is the right outcome.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hwsign_bench::fixtures::{BenchRequest, T0, signing_key};
use hwsign_bench::signers::{InProcessSigner, P256Signer, RingSigner, public_key};
use hwsign_bench::sigv4a::Sigv4aSigner;
use hwsign_bench::verify::{RegistryKind, VerifyFixture};
use hwsign_proto::sign::prepare_headers;
use hwsign_proto::{HWS1, HeaderSelection, Nonce, RequestParts, SigningParams, SigningTime};
use hwsign_verifier::VerifyBackend;

/// Verifications one bench may run: each needs a fresh nonce, so requests are signed up front.
const VERIFY_POOL: usize = 60_000;

fn canonicalization(c: &mut Criterion) {
    let request = BenchRequest::realistic();
    let body_hash = request.body_sha256_hex();
    let headers = request.headers_with_host();
    let nonce = Nonce::from_random([9; 16]);
    let key_id = public_key(&signing_key("criterion").expect("fixture key is valid"))
        .expect("fixture key is valid")
        .key_id();
    c.bench_function(
        "prepare_headers (canonical request + string to sign)",
        |b| {
            b.iter(|| {
                let parts = RequestParts {
                    method: request.method,
                    path: request.path,
                    query: request.query,
                    headers: &headers,
                };
                let params = SigningParams {
                    profile: &HWS1,
                    credential: &key_id,
                    audience: "payments",
                    time: SigningTime::from_unix(T0),
                    nonce: Some(&nonce),
                    added_headers: &[],
                };
                black_box(prepare_headers(
                    &params,
                    &parts,
                    &body_hash,
                    HeaderSelection::ProfileWith(&[]),
                ))
            });
        },
    );
}

fn signing(c: &mut Criterion) {
    let request = BenchRequest::realistic();
    let body_hash = request.body_sha256_hex();
    let key = signing_key("criterion").expect("fixture key is valid");
    let time = SigningTime::from_unix(T0);
    let mut group = c.benchmark_group("sign");
    for ring in [true, false] {
        let signer = InProcessSigner::new(&key, ring).expect("fixture key is valid");
        group.bench_function(
            format!("hwsign in-process ({})", signer.ecdsa().name()),
            |b| {
                b.iter(|| black_box(signer.sign(&request, &body_hash, time)));
            },
        );
    }
    let aws = Sigv4aSigner::new(&request);
    group.bench_function("aws-sigv4 SigV4a", |b| {
        b.iter(|| black_box(aws.sign(&request, &body_hash)));
    });
    let message = [b'm'; 160];
    let ring = RingSigner::from_p256(&key).expect("fixture key is valid");
    group.bench_function("raw ring ECDSA P-256 (SHA-256 + sign)", |b| {
        b.iter(|| black_box(ring.sign(&message)));
    });
    let p256 = P256Signer::new(key.clone());
    group.bench_function("raw p256 ECDSA P-256 (prehash sign)", |b| {
        b.iter(|| black_box(p256.sign_digest(&[7; 32])));
    });
    group.finish();
}

fn verifying(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    for backend in VerifyBackend::available() {
        let fixture = VerifyFixture::new(*backend, RegistryKind::Sqlite, VERIFY_POOL)
            .expect("verifier fixture");
        let requests = fixture
            .signed_requests(VERIFY_POOL)
            .expect("signed fixture requests");
        let mut next = requests.iter().cycle();
        group.bench_function(format!("raw {}", backend.name()), |b| {
            b.iter(|| {
                let request = next.next().expect("cycle never ends");
                black_box(fixture.raw_verify(request))
            });
        });
        // Each verification consumes its request's nonce: hand out fresh ones until the pool is
        // used up, then stop measuring rather than measure replay rejections.
        let mut fresh = requests.iter();
        group.bench_function(
            format!("Verifier::verify {} + sqlite", backend.name()),
            |b| {
                b.iter_batched(
                    || fresh.next().map(|r| r.pairs()),
                    |pairs| pairs.map(|p| fixture.verify(&p).is_ok()),
                    BatchSize::SmallInput,
                );
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = canonicalization, signing, verifying
}
criterion_main!(benches);
