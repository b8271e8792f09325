//! `audit_overhead`: `Verifier::verify` with the decision log on ÷ off (docs/AUDIT.md).

use std::sync::Arc;

use anyhow::{Result, anyhow};
use hwsign_bench::verify::{RegistryKind, VerifyFixture};
use hwsign_verifier::VerifyBackend;
use hwsign_verifier::audit::{AuditLog, AuditSettings, CheckpointSigner};

use crate::Plan;
use crate::figure::{Figure, Goal};
use crate::measure::{median, process_cpu, thread_cpu, us};

/// CPU per verify (process CPU, so the writer thread's sealing, hashing and writing count),
/// with the default settings (group commit every 10 ms, a checkpoint every 10,000 records or
/// 10 s); every batch with the log ends with `sync()`, so its records are written and
/// `fdatasync`ed inside the measured span. The request path's own share is reported beside it.
pub(crate) fn audit_overhead(plan: &Plan) -> Result<Figure> {
    let batch = plan.verify_batch;
    let total = plan.warmup + plan.rounds * batch;
    let default = VerifyBackend::default();
    let dir = tempfile::tempdir()?;
    let (private, _) = CheckpointSigner::generate_pem()?;
    let key = dir.path().join("checkpoint.pem");
    std::fs::write(&key, private.as_bytes())?;
    let log = Arc::new(AuditLog::open(&AuditSettings::new(
        dir.path().join("audit"),
        &key,
    ))?);
    let plain = VerifyFixture::new(default, RegistryKind::Sqlite, total)?;
    let logged =
        VerifyFixture::new(default, RegistryKind::Sqlite, total)?.with_audit_log(Arc::clone(&log));
    let plain_requests = plain.signed_requests(total)?;
    let logged_requests = logged.signed_requests(total)?;
    let plain_pairs: Vec<Vec<(&str, &str)>> = plain_requests.iter().map(|r| r.pairs()).collect();
    let logged_pairs: Vec<Vec<(&str, &str)>> = logged_requests.iter().map(|r| r.pairs()).collect();
    let sync = || log.sync().map_err(|e| anyhow!("{e}"));
    for i in 0..plan.warmup {
        plain.verify(&plain_pairs[i])?;
        logged.verify(&logged_pairs[i])?;
    }
    sync()?;
    // (process CPU per op, thread CPU per op) of a batch.
    let measure = |fixture: &VerifyFixture, pairs: &[Vec<(&str, &str)>], with_log: bool| {
        let (process, thread) = (process_cpu()?, thread_cpu()?);
        for headers in pairs {
            fixture.verify(headers)?;
        }
        if with_log {
            sync()?;
        }
        let n = pairs.len().max(1) as f64;
        Ok::<_, anyhow::Error>((
            (process_cpu()? - process).as_secs_f64() / n,
            (thread_cpu()? - thread).as_secs_f64() / n,
        ))
    };
    let (mut ratios, mut with, mut without, mut path) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        let span = plan.warmup + round * batch..plan.warmup + (round + 1) * batch;
        let run_plain = || measure(&plain, &plain_pairs[span.clone()], false);
        let run_logged = || measure(&logged, &logged_pairs[span.clone()], true);
        let ((p, _), (l, l_thread)) = if round % 2 == 0 {
            let p = run_plain()?;
            (p, run_logged()?)
        } else {
            let l = run_logged()?;
            (run_plain()?, l)
        };
        ratios.push(l / p);
        with.push(l);
        without.push(p);
        path.push(l_thread);
    }
    let (t_with, t_without, t_path) = (median(with), median(without), median(path));
    drop(logged);
    log.close();
    let bytes: u64 = hwsign_verifier::audit::chain_files(&dir.path().join("audit"))?
        .iter()
        .map(|file| std::fs::metadata(file).map(|m| m.len()).unwrap_or(0))
        .sum();
    let records = (plan.warmup + plan.rounds * batch).max(1) as u64;
    Ok(Figure::measured(
        "audit_overhead",
        median(ratios),
        Goal::AtMost(1.2),
        format!(
            "Verifier::verify with the decision log {} vs without {} (process CPU, writer thread included; request path alone {}); {} bytes per record",
            us(t_with),
            us(t_without),
            us(t_path),
            bytes / records,
        ),
    ))
}
