//! Prints how long `Verifier::verify` takes per request with each backend and registry.
//! Run: `cargo run --release -p hwsign-verifier --example verify_speed`.

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::Result;
use hwsign_proto::keys::sha256_hex;
use hwsign_proto::sign::prepare_headers;
use hwsign_proto::{
    HWS1, HeaderSelection, Nonce, PublicKey, RequestParts, SigningParams, SigningTime,
};
use hwsign_verifier::{
    KeyLevel, KeyRegistry, MemoryRegistry, MemoryReplayCache, RegisteredKey, SqliteRegistry,
    Verifier, VerifierConfig, VerifyBackend,
};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use sha2::{Digest, Sha256};

const T0: i64 = 1_795_462_200;
const N: usize = 4000;

fn signed_requests(key: &SigningKey, key_id: &str) -> Result<Vec<Vec<(String, String)>>> {
    let body_hash = sha256_hex(b"");
    (0..N)
        .map(|i| {
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let nonce = Nonce::from_random(nonce);
            let headers = [
                ("host", "api.example.com"),
                ("content-type", "application/json"),
            ];
            let parts = RequestParts {
                method: "POST",
                path: "/v1/payments/42",
                query: "currency=eur&x=1",
                headers: &headers,
            };
            let prepared = prepare_headers(
                &SigningParams {
                    profile: &HWS1,
                    credential: key_id,
                    audience: "payments",
                    time: SigningTime::from_unix(T0),
                    nonce: Some(&nonce),
                    added_headers: &[],
                },
                &parts,
                &body_hash,
                HeaderSelection::ProfileWith(&[]),
            )?;
            let signature: Signature = key.sign_prehash(&prepared.digest())?;
            let mut all: Vec<(String, String)> = headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect();
            all.extend(prepared.finish(&HWS1, signature.to_der().as_bytes()));
            Ok(all)
        })
        .collect()
}

fn measure(verifier: &Verifier, requests: &[Vec<(String, String)>]) -> Result<Duration> {
    let body: [u8; 32] = Sha256::digest(b"").into();
    let now = UNIX_EPOCH + Duration::from_secs(T0 as u64);
    let start = Instant::now();
    for headers in requests {
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let parts = RequestParts {
            method: "POST",
            path: "/v1/payments/42",
            query: "currency=eur&x=1",
            headers: &pairs,
        };
        verifier.verify(&parts, &body, now)?;
    }
    Ok(start.elapsed() / requests.len() as u32)
}

/// Canonicalization and parsing alone, for comparison with the full pipeline.
fn measure_parse(requests: &[Vec<(String, String)>]) -> Result<Duration> {
    let start = Instant::now();
    for headers in requests {
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let parts = RequestParts {
            method: "POST",
            path: "/v1/payments/42",
            query: "currency=eur&x=1",
            headers: &pairs,
        };
        std::hint::black_box(hwsign_proto::verify_input::parse_header_signed(
            &HWS1, &parts,
        )?);
    }
    Ok(start.elapsed() / requests.len() as u32)
}

fn main() -> Result<()> {
    let key = SigningKey::from_slice(&Sha256::digest(b"speed"))?;
    let public = PublicKey::from_verifying_key(*key.verifying_key())?;
    let requests = signed_requests(&key, &public.key_id())?;
    let dir = tempfile::tempdir()?;
    let sqlite = Arc::new(SqliteRegistry::open(&dir.path().join("keys.db"))?);
    let memory = Arc::new(MemoryRegistry::new());
    for registry in [sqlite.clone() as Arc<dyn KeyRegistry>, memory.clone()] {
        registry.add(RegisteredKey::new(
            public.clone(),
            "speed",
            KeyLevel::Software,
            T0,
        ))?;
    }
    println!(
        "parse   (canonical request + string to sign)  {:>7.1} µs/request",
        measure_parse(&requests)?.as_secs_f64() * 1e6
    );
    let registries: [(&str, Arc<dyn KeyRegistry>); 2] = [("memory", memory), ("sqlite", sqlite)];
    for backend in VerifyBackend::available() {
        for (name, registry) in &registries {
            let mut config = VerifierConfig::new("payments", ["api.example.com"]);
            // One key signs every request here: its quota is the whole cache.
            config.replay_quota_per_key = N;
            let verifier = Verifier::new(
                config,
                registry.clone(),
                Arc::new(MemoryReplayCache::new(N)),
            )?
            .with_backend(*backend);
            let per_request = measure(&verifier, &requests)?;
            println!(
                "verify  backend={:<5} registry={name:<6} {:>7.1} µs/request",
                backend.name(),
                per_request.as_secs_f64() * 1e6
            );
        }
    }
    Ok(())
}
