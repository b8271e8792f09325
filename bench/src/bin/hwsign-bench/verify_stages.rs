//! Verify cost per stage, for the chart: the default backend's bare ECDSA verify, HWS1 parsing
//! and the string to sign, the rest of the in-memory pipeline (replay cache, body hash, checks),
//! and what the SQLite registry adds — each on this thread's CPU clock, medians over rounds.

use anyhow::{Result, ensure};
use hwsign_bench::verify::{RegistryKind, VerifyFixture};
use hwsign_proto::verify_input::parse_header_signed;
use hwsign_proto::{HWS1, RequestParts};
use hwsign_verifier::VerifyBackend;

use crate::Plan;
use crate::measure::{cpu_per_op, median};

/// One stage and its CPU cost in microseconds.
pub(crate) type Stage = (&'static str, f64);

/// Measures the stages of `Verifier::verify` (default backend).
pub(crate) fn measure(plan: &Plan) -> Result<Vec<Stage>> {
    let backend = VerifyBackend::default();
    let batch = plan.verify_batch;
    let total = plan.rounds * batch;
    let memory = VerifyFixture::new(backend, RegistryKind::Memory, total)?;
    let sqlite = VerifyFixture::new(backend, RegistryKind::Sqlite, total)?;
    let for_memory = memory.signed_requests(total)?;
    let for_sqlite = sqlite.signed_requests(total)?;
    let pairs_memory: Vec<Vec<(&str, &str)>> = for_memory.iter().map(|r| r.pairs()).collect();
    let pairs_sqlite: Vec<Vec<(&str, &str)>> = for_sqlite.iter().map(|r| r.pairs()).collect();
    let (mut raw, mut parse, mut mem, mut sql) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        let start = round * batch;
        raw.push(cpu_per_op(batch, |i| {
            ensure!(
                memory.raw_verify(&for_memory[start + i]),
                "raw verify refused"
            );
            Ok(())
        })?);
        parse.push(cpu_per_op(batch, |i| {
            let parts = RequestParts {
                method: memory.request.method,
                path: memory.request.path,
                query: memory.request.query,
                headers: &pairs_memory[start + i],
            };
            std::hint::black_box(parse_header_signed(&HWS1, &parts)?);
            Ok(())
        })?);
        mem.push(cpu_per_op(batch, |i| {
            Ok(memory.verify(&pairs_memory[start + i])?)
        })?);
        sql.push(cpu_per_op(batch, |i| {
            Ok(sqlite.verify(&pairs_sqlite[start + i])?)
        })?);
    }
    let (raw, parse, mem, sql) = (median(raw), median(parse), median(mem), median(sql));
    Ok(vec![
        ("ECDSA verify (ring)", raw * 1e6),
        ("parse + string to sign", parse * 1e6),
        (
            "replay cache, body hash, checks",
            (mem - raw - parse).max(0.0) * 1e6,
        ),
        ("SQLite registry lookup", (sql - mem).max(0.0) * 1e6),
    ])
}
