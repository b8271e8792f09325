//! Figures measured inside this process on one thread: the verifier against its ECDSA floor, and
//! hwsign's in-process signer against aws-sigv4's SigV4a.

use anyhow::{Result, ensure};
use hwsign_bench::fixtures::{BenchRequest, T0, signing_key};
use hwsign_bench::signers::{InProcessSigner, RingSigner};
use hwsign_bench::sigv4a::Sigv4aSigner;
use hwsign_bench::verify::{RegistryKind, VerifyFixture};
use hwsign_proto::verify_input::parse_header_signed;
use hwsign_proto::{HWS1, RequestParts, SigningTime};
use hwsign_verifier::VerifyBackend;

use crate::Plan;
use crate::figure::{Figure, Goal};
use crate::measure::{cpu_per_op, median, us};

/// `policy_overhead`: CPU per `Verifier::verify` with the 20 policies of `bench/policies` ÷
/// without policies (same backend, registry and request shape; each verifier gets its own fresh
/// nonces). The policies are realistic: 4 apply to every request (the request passes them), the
/// rest are scoped to other routes and must still be looked at.
pub(crate) fn policy_overhead(plan: &Plan, policies: &std::path::Path) -> Result<Figure> {
    let batch = plan.verify_batch;
    let total = plan.warmup + plan.rounds * batch;
    let default = VerifyBackend::default();
    let plain = VerifyFixture::new(default, RegistryKind::Sqlite, total)?;
    let governed =
        VerifyFixture::with_policies(default, RegistryKind::Sqlite, total, Some(policies))?;
    let plain_requests = plain.signed_requests(total)?;
    let governed_requests = governed.signed_requests(total)?;
    let plain_pairs: Vec<Vec<(&str, &str)>> = plain_requests.iter().map(|r| r.pairs()).collect();
    let governed_pairs: Vec<Vec<(&str, &str)>> =
        governed_requests.iter().map(|r| r.pairs()).collect();
    for i in 0..plan.warmup {
        plain.verify(&plain_pairs[i])?;
        governed.verify(&governed_pairs[i])?;
    }
    let (mut ratios, mut with, mut without) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        let start = plan.warmup + round * batch;
        let run_plain = || cpu_per_op(batch, |i| Ok(plain.verify(&plain_pairs[start + i])?));
        let run_governed =
            || cpu_per_op(batch, |i| Ok(governed.verify(&governed_pairs[start + i])?));
        let (t_plain, t_governed) = if round % 2 == 0 {
            let p = run_plain()?;
            (p, run_governed()?)
        } else {
            let g = run_governed()?;
            (run_plain()?, g)
        };
        ratios.push(t_governed / t_plain);
        with.push(t_governed);
        without.push(t_plain);
    }
    let (t_with, t_without) = (median(with), median(without));
    Ok(Figure::measured(
        "policy_overhead",
        median(ratios),
        Goal::AtMost(1.15),
        format!(
            "Verifier::verify with 20 Cedar policies {} vs without {} (policy decision {}), one core (thread CPU time)",
            us(t_with),
            us(t_without),
            us(t_with - t_without),
        ),
    ))
}

/// `verify_rate_ratio` for `backend`: verifications/s of `Verifier::verify` (SQLite registry,
/// in-memory replay cache, a fresh nonce per request) ÷ the backend's bare verify/s.
pub(crate) fn verify_rate(
    plan: &Plan,
    backend: VerifyBackend,
    registry: RegistryKind,
    name: &str,
) -> Result<Figure> {
    let fixture = VerifyFixture::new(backend, registry, verify_requests(plan))?;
    verify_rate_of(plan, &fixture, name, &format!("{registry:?}"))
}

/// How many requests [`verify_rate_of`] verifies (its fixture's replay cache must hold them).
pub(crate) fn verify_requests(plan: &Plan) -> usize {
    plan.warmup + plan.rounds * plan.verify_batch
}

/// The verify rate ratio of a ready fixture whose registry is described by `registry`.
pub(crate) fn verify_rate_of(
    plan: &Plan,
    fixture: &VerifyFixture,
    name: &str,
    registry: &str,
) -> Result<Figure> {
    let backend = fixture.verifier.backend();
    let batch = plan.verify_batch;
    let total = verify_requests(plan);
    let requests = fixture.signed_requests(total)?;
    let pairs: Vec<Vec<(&str, &str)>> = requests.iter().map(|r| r.pairs()).collect();
    for (request, headers) in requests.iter().zip(&pairs).take(plan.warmup) {
        ensure!(fixture.raw_verify(request), "raw verify refused a fixture");
        fixture.verify(headers)?;
    }
    // The wire-format share of the overhead: parsing and rebuilding the string to sign.
    let parse = cpu_per_op(batch.min(total), |i| {
        let parts = RequestParts {
            method: fixture.request.method,
            path: fixture.request.path,
            query: fixture.request.query,
            headers: &pairs[i],
        };
        std::hint::black_box(parse_header_signed(&HWS1, &parts)?);
        Ok(())
    })?;
    let (mut ratios, mut subject, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        let start = plan.warmup + round * batch;
        let raw = || {
            cpu_per_op(batch, |i| {
                ensure!(
                    fixture.raw_verify(&requests[start + i]),
                    "raw verify refused"
                );
                Ok(())
            })
        };
        let full = || cpu_per_op(batch, |i| Ok(fixture.verify(&pairs[start + i])?));
        let (t_raw, t_full) = if round % 2 == 0 {
            let r = raw()?;
            (r, full()?)
        } else {
            let f = full()?;
            (raw()?, f)
        };
        ratios.push(t_raw / t_full);
        subject.push(t_full);
        floor.push(t_raw);
    }
    let (t_full, t_raw) = (median(subject), median(floor));
    Ok(Figure::measured(
        name,
        median(ratios),
        Goal::AtLeast(0.95),
        format!(
            "backend={} registry={registry}: Verifier::verify {} ({:.0}/s) vs raw verify {} ({:.0}/s), one core (thread CPU time); of the overhead {}, parsing + string to sign {}",
            backend.name(),
            us(t_full),
            1.0 / t_full,
            us(t_raw),
            1.0 / t_raw,
            us(t_full - t_raw),
            us(parse)
        ),
    ))
}

/// `sign_vs_aws_sigv4a` (ring, the fastest signer here) and the same ratio with `p256`.
pub(crate) fn sign_vs_sigv4a(plan: &Plan) -> Result<Vec<Figure>> {
    let request = BenchRequest::realistic();
    let body_hash = request.body_sha256_hex();
    let key = signing_key("sign")?;
    let ring = InProcessSigner::new(&key, true)?;
    let p256 = InProcessSigner::new(&key, false)?;
    let raw_ring = RingSigner::from_p256(&key)?;
    let aws = Sigv4aSigner::new(&request);
    let time = SigningTime::from_unix(T0);
    let example_sts = ring
        .sign_detailed(&request, &body_hash, time)?
        .string_to_sign;
    let batch = plan.sign_batch;
    let run_aws = || {
        cpu_per_op(batch, |_| {
            std::hint::black_box(aws.sign(&request, &body_hash)?);
            Ok(())
        })
    };
    let run_ring = || {
        cpu_per_op(batch, |_| {
            std::hint::black_box(ring.sign(&request, &body_hash, time)?);
            Ok(())
        })
    };
    let run_p256 = || {
        cpu_per_op(batch, |_| {
            std::hint::black_box(p256.sign(&request, &body_hash, time)?);
            Ok(())
        })
    };
    let run_raw = || {
        cpu_per_op(batch, |_| {
            std::hint::black_box(raw_ring.sign(example_sts.as_bytes())?);
            Ok(())
        })
    };
    for _ in 0..2 {
        run_aws()?;
        run_ring()?;
        run_p256()?;
        run_raw()?;
    }
    let (mut ratio_ring, mut ratio_p256) = (Vec::new(), Vec::new());
    let (mut t_aws, mut t_ring, mut t_p256, mut t_raw) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        let (a, r, p, w) = if round % 2 == 0 {
            (run_aws()?, run_ring()?, run_p256()?, run_raw()?)
        } else {
            let w = run_raw()?;
            let p = run_p256()?;
            let r = run_ring()?;
            (run_aws()?, r, p, w)
        };
        ratio_ring.push(a / r);
        ratio_p256.push(a / p);
        t_aws.push(a);
        t_ring.push(r);
        t_p256.push(p);
        t_raw.push(w);
    }
    let (aws_t, ring_t, p256_t, raw_t) =
        (median(t_aws), median(t_ring), median(t_p256), median(t_raw));
    Ok(vec![
        Figure::measured(
            "sign_vs_aws_sigv4a",
            median(ratio_ring),
            Goal::AtLeast(4.0),
            format!(
                "aws-sigv4 SigV4a {} vs hwsign in-process (ring) {} = pipeline {} + ring sign {}",
                us(aws_t),
                us(ring_t),
                us(ring_t - raw_t),
                us(raw_t)
            ),
        ),
        Figure::measured(
            "info.sign_vs_aws_sigv4a_p256",
            median(ratio_p256),
            Goal::AtLeast(4.0),
            format!("hwsign in-process with p256 {}", us(p256_t)),
        ),
    ])
}

/// Signs `count` requests, then verifies them all: a loop to run under a profiler.
pub(crate) fn profile_verify(count: usize) -> Result<()> {
    let fixture = VerifyFixture::new(VerifyBackend::default(), RegistryKind::Sqlite, count)?;
    let requests = fixture.signed_requests(count)?;
    let pairs: Vec<Vec<(&str, &str)>> = requests.iter().map(|r| r.pairs()).collect();
    let per_op = cpu_per_op(count, |i| Ok(fixture.verify(&pairs[i])?))?;
    println!("Verifier::verify {} per request", us(per_op));
    Ok(())
}
