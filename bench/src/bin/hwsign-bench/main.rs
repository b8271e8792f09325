//! `hwsign-bench`: measures every figure of issues 5 and 11 in one run and prints one line per figure,
//! `name value goal pass|FAIL`, each followed by a `#` line with the absolute numbers behind it.
//! Run through `bench/run` (it builds the release binaries first); see docs/PERFORMANCE.md.
//!
//! `hwsign-bench [--quick] [--agent-bin PATH] [--verifier-bin PATH] [--json PATH]` (results as JSON,
//! default `target/bench/results.json`, and an SVG chart beside it); `hwsign-bench echo-server
//! SOCKET RESPONSE [--sign]` is the echo floor's child process, `hwsign-bench plain-proxy UPSTREAM` the
//! serve floor's; `hwsign-bench serve-cpu [--quick] [--verifier-bin PATH]` measures only
//! `serve_cpu_ratio`; `hwsign-bench client-rtt [--quick]` only `agent_rtt_ratio` and the client
//! library's CPU per call; `hwsign-bench fleet [--quick]` only the fleet figures (PostgreSQL, Redis);
//! `hwsign-bench agent-only [--quick] [--agent-bin PATH]` only the agent binary's figures;
//! `hwsign-bench policy-overhead` only `policy_overhead`; `hwsign-bench audit-overhead` only
//! `audit_overhead`; `hwsign-bench profile-verify [N]`
//! verifies N requests in a loop for a profiler (`perf record -g`).
#![forbid(unsafe_code)]

mod agent_figures;
mod agent_proc;
mod audit_overhead;
mod body_hash;
mod client_rtt;
mod delegated;
mod echo;
mod figure;
mod fleet;
mod inproc;
mod measure;
mod raw_client;
mod results;
mod serve_cpu;
mod ssh_agent;
#[cfg(feature = "tpm")]
mod tpm;
mod verify_stages;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use hwsign_bench::verify::RegistryKind;
use hwsign_verifier::VerifyBackend;

use crate::figure::{Figure, Goal};

/// Sizes of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Rounds of (subject, floor) pairs; the median ratio is reported.
    pub rounds: usize,
    /// Untimed iterations before measuring.
    pub warmup: usize,
    /// Verifications per batch.
    pub verify_batch: usize,
    /// In-process signs per batch.
    pub sign_batch: usize,
    /// Agent round trips per batch.
    pub rtt_batch: usize,
    /// Signs per client per round with 64 clients.
    pub concurrency_per_client: usize,
    /// Strict TPM signs through the agent (and as many raw), over all rounds.
    pub tpm_signs: usize,
    /// Rounds of (raw, agent) TPM batches.
    pub tpm_rounds: usize,
    /// Requests per proxy per round of `serve_cpu_ratio` (a round must cost the proxies many
    /// 10 ms ticks of CPU).
    pub serve_batch: usize,
    /// Rounds of (serve, plain proxy) batches.
    pub serve_rounds: usize,
}

impl Plan {
    fn quick() -> Self {
        Self {
            rounds: 7,
            warmup: 200,
            verify_batch: 1_000,
            sign_batch: 2_000,
            rtt_batch: 500,
            concurrency_per_client: 50,
            tpm_signs: 120,
            tpm_rounds: 4,
            serve_batch: 4_000,
            serve_rounds: 5,
        }
    }

    fn full() -> Self {
        Self {
            rounds: 15,
            warmup: 500,
            verify_batch: 3_000,
            sign_batch: 5_000,
            rtt_batch: 2_000,
            // 64 × (10 + 15 × 60) + the round-trip phase stays under 100,000 signs, so the memory
            // figure is read after exactly 100,000.
            concurrency_per_client: 60,
            tpm_signs: 600,
            tpm_rounds: 6,
            serve_batch: 10_000,
            serve_rounds: 7,
        }
    }
}

struct Args {
    quick: bool,
    agent_bin: PathBuf,
    verifier_bin: PathBuf,
    json: Option<PathBuf>,
}

fn parse_args(args: &[String]) -> Result<Args> {
    let mut quick = false;
    let mut agent_bin = None;
    let mut verifier_bin = None;
    let mut json = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--agent-bin" => {
                agent_bin = Some(PathBuf::from(rest.next().context("--agent-bin PATH")?))
            }
            "--verifier-bin" => {
                verifier_bin = Some(PathBuf::from(rest.next().context("--verifier-bin PATH")?))
            }
            "--json" => json = Some(PathBuf::from(rest.next().context("--json PATH")?)),
            other => bail!(
                "unknown argument {other:?} (usage: hwsign-bench [--quick] [--agent-bin PATH] [--verifier-bin PATH] [--json PATH])"
            ),
        }
    }
    let sibling = |name: &str| -> Result<PathBuf> {
        Ok(std::env::current_exe()?
            .parent()
            .context("no directory of the executable")?
            .join(name))
    };
    let agent_bin = match agent_bin {
        Some(path) => path,
        None => sibling("hwsign-agent")?,
    };
    let verifier_bin = match verifier_bin {
        Some(path) => path,
        None => sibling("hwsign-verifier")?,
    };
    Ok(Args {
        quick,
        agent_bin,
        verifier_bin,
        json,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("echo-server") => match (args.get(1), args.get(2)) {
            (Some(socket), Some(response)) => echo::serve(
                Path::new(socket),
                Path::new(response),
                args.get(3).is_some_and(|a| a == "--sign"),
            )
            .map(|()| true),
            _ => Err(anyhow::anyhow!(
                "usage: hwsign-bench echo-server SOCKET RESPONSE [--sign]"
            )),
        },
        Some("audit-overhead") => audit_overhead::audit_overhead(&Plan::full()).map(|figure| {
            println!("{figure}");
            figure.passes()
        }),
        Some("policy-overhead") => {
            let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
            inproc::policy_overhead(&Plan::full(), &policies).map(|figure| {
                println!("{figure}");
                figure.passes()
            })
        }
        Some("fleet") => {
            let plan = if args.get(1).is_some_and(|a| a == "--quick") {
                Plan::quick()
            } else {
                Plan::full()
            };
            let mut figures = fleet::figures(&plan);
            // The same ratio with the in-memory registry, for comparison in the same run.
            let name = "info.verify_rate_ratio_memory_registry";
            figures.push(or_unavailable(
                name,
                Goal::AtLeast(0.95),
                inproc::verify_rate(&plan, VerifyBackend::default(), RegistryKind::Memory, name),
            ));
            for figure in &figures {
                println!("{figure}");
            }
            Ok(figures
                .iter()
                .all(|f| f.passes() || f.name.starts_with("info.")))
        }
        Some("plain-proxy") => match args.get(1) {
            Some(upstream) => serve_cpu::plain_proxy(upstream).map(|()| true),
            None => Err(anyhow::anyhow!(
                "usage: hwsign-bench plain-proxy UPSTREAM_ADDR"
            )),
        },
        Some("client-rtt") => parse_args(&args[1..]).and_then(|a| client_rtt_only(&a)),
        Some("serve-cpu") => parse_args(&args[1..]).and_then(|a| serve_cpu_only(&a)),
        Some("agent-only") => parse_args(&args[1..]).and_then(|a| agent_only(&a)),
        Some("profile-verify") => {
            inproc::profile_verify(args.get(1).and_then(|n| n.parse().ok()).unwrap_or(50_000))
                .map(|()| true)
        }
        _ => parse_args(&args).and_then(|a| report(&a)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("hwsign-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The plan `args` ask for and the two-worker runtime the async figures run on.
fn plan_and_runtime(args: &Args) -> Result<(Plan, tokio::runtime::Runtime)> {
    let plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    Ok((plan, runtime))
}

/// `hwsign-bench serve-cpu [--quick] [--verifier-bin PATH]`: only `serve_cpu_ratio`.
fn serve_cpu_only(args: &Args) -> Result<bool> {
    let (plan, runtime) = plan_and_runtime(args)?;
    let figure = runtime.block_on(serve_cpu::figure(&plan, &args.verifier_bin))?;
    println!("{figure}");
    Ok(figure.passes())
}

/// `hwsign-bench agent-only [--quick] [--agent-bin PATH]`: only the figures of the agent binary
/// (round trips, concurrency, memory, then `tpm_overhead`), for profiling the agent
/// (`perf record -p` on the `hwsign-agent` child) without the rest of the run.
fn agent_only(args: &Args) -> Result<bool> {
    let (plan, runtime) = plan_and_runtime(args)?;
    let mut figures = Vec::new();
    let agent = runtime.block_on(agent_figures::run(&plan, &args.agent_bin))?;
    emit(&mut figures, agent.figures);
    let _ = tpm_phase(&runtime, &plan, &args.agent_bin, &mut figures);
    Ok(figures
        .iter()
        .all(|f| f.passes() || f.name.starts_with("info.")))
}

/// `hwsign-bench client-rtt [--quick] [--agent-bin PATH]`: `agent_rtt_ratio` and the client
/// library's CPU per call, on the runtime the agent figures use.
fn client_rtt_only(args: &Args) -> Result<bool> {
    let plan = [Plan::full(), Plan::quick()][usize::from(args.quick)].clone();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(client_rtt::run(&plan, &args.agent_bin))
}

/// A figure, or the same figure failing with the error that prevented it.
fn or_unavailable(name: &str, goal: Goal, result: Result<Figure>) -> Figure {
    result.unwrap_or_else(|e| Figure::unavailable(name, goal, format!("{e:#}")))
}

fn emit(figures: &mut Vec<Figure>, new: Vec<Figure>) {
    for figure in new {
        println!("{figure}");
        figures.push(figure);
    }
}

/// Measures and prints everything; true when every (non-info) figure passes.
fn report(args: &Args) -> Result<bool> {
    let plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    println!(
        "# hwsign-bench {} run on {} ({} cores); agent binary {}",
        if args.quick { "quick" } else { "full" },
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.agent_bin.display()
    );
    let mut figures = Vec::new();
    let default = VerifyBackend::default();
    emit(
        &mut figures,
        vec![or_unavailable(
            "verify_rate_ratio",
            Goal::AtLeast(0.95),
            inproc::verify_rate(&plan, default, RegistryKind::Sqlite, "verify_rate_ratio"),
        )],
    );
    let name = "info.verify_rate_ratio_memory_registry";
    emit(
        &mut figures,
        vec![or_unavailable(
            name,
            Goal::AtLeast(0.95),
            inproc::verify_rate(&plan, default, RegistryKind::Memory, name),
        )],
    );
    emit(&mut figures, fleet::figures(&plan));
    for backend in VerifyBackend::available().iter().filter(|b| **b != default) {
        let name = format!("info.verify_rate_ratio_{}", backend.name());
        emit(
            &mut figures,
            vec![or_unavailable(
                &name,
                Goal::AtLeast(0.95),
                inproc::verify_rate(&plan, *backend, RegistryKind::Sqlite, &name),
            )],
        );
    }
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    emit(
        &mut figures,
        vec![or_unavailable(
            "policy_overhead",
            Goal::AtMost(1.15),
            inproc::policy_overhead(&plan, &policies),
        )],
    );
    emit(
        &mut figures,
        vec![or_unavailable(
            "audit_overhead",
            Goal::AtMost(1.2),
            audit_overhead::audit_overhead(&plan),
        )],
    );
    emit(
        &mut figures,
        inproc::sign_vs_sigv4a(&plan).unwrap_or_else(|e| {
            vec![Figure::unavailable(
                "sign_vs_aws_sigv4a",
                Goal::AtLeast(4.0),
                format!("{e:#}"),
            )]
        }),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut samples = None;
    match runtime.block_on(agent_figures::run(&plan, &args.agent_bin)) {
        Ok(agent) => {
            samples = agent.samples;
            emit(&mut figures, agent.figures);
        }
        Err(e) => {
            let reason = format!("{e:#}");
            emit(
                &mut figures,
                [
                    ("agent_rtt_ratio", Goal::AtMost(1.2)),
                    ("ssh_agent_rtt_ratio", Goal::AtMost(0.45)),
                    ("agent_concurrency_ratio", Goal::AtLeast(0.8)),
                    ("agent_rss_idle_mib", Goal::AtMost(15.0)),
                    ("agent_rss_growth_100k_mib", Goal::AtMost(1.0)),
                ]
                .into_iter()
                .map(|(name, goal)| Figure::unavailable(name, goal, reason.clone()))
                .collect(),
            );
        }
    }
    emit(
        &mut figures,
        body_hash::figures(&plan).unwrap_or_else(|e| {
            vec![Figure::unavailable(
                "body_hash_rate_ratio",
                Goal::AtLeast(0.9),
                format!("{e:#}"),
            )]
        }),
    );
    emit(
        &mut figures,
        vec![or_unavailable(
            "serve_cpu_ratio",
            Goal::AtMost(1.3),
            runtime.block_on(serve_cpu::figure(&plan, &args.verifier_bin)),
        )],
    );
    let (strict, delegated) = tpm_phase(&runtime, &plan, &args.agent_bin, &mut figures);
    emit(&mut figures, delegated::figures(strict, delegated));
    let stages = match verify_stages::measure(&plan) {
        Ok(stages) => {
            let line: Vec<String> = stages
                .iter()
                .map(|(name, us)| format!("{name} {us:.1}µs"))
                .collect();
            println!("# verify stages (CPU per request): {}", line.join(", "));
            Some(stages)
        }
        Err(e) => {
            println!("# verify stages not measured: {e:#}");
            None
        }
    };
    let failed: Vec<&str> = figures
        .iter()
        .filter(|f| !f.passes() && !f.name.starts_with("info."))
        .map(|f| f.name.as_str())
        .collect();
    let total = figures
        .iter()
        .filter(|f| !f.name.starts_with("info."))
        .count();
    println!(
        "# {} of {total} figures pass{}",
        total - failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; failing: {}", failed.join(", "))
        }
    );
    let json = args.json.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/results.json")
    });
    let header = serde_json::json!({
        "plan": if args.quick { "quick" } else { "full" },
        "cpu": cpu_model(),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "loadavg_at_end": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    let results = results::Results {
        figures,
        samples,
        stages,
    };
    match results::write(&results, &header, &json) {
        Ok(()) => println!(
            "# results: {} and {}",
            json.display(),
            json.with_extension("svg").display()
        ),
        Err(e) => println!("# results not written to {}: {e:#}", json.display()),
    }
    Ok(results
        .figures
        .iter()
        .all(|f| f.passes() || f.name.starts_with("info.")))
}

#[cfg(feature = "tpm")]
fn tpm_phase(
    runtime: &tokio::runtime::Runtime,
    plan: &Plan,
    binary: &Path,
    figures: &mut Vec<Figure>,
) -> (Option<f64>, Result<delegated::Measured, String>) {
    match runtime.block_on(tpm::run(plan, binary)) {
        Ok(result) => {
            emit(figures, vec![result.figure]);
            (Some(result.strict_signs_per_sec), result.delegated)
        }
        Err(e) => {
            emit(
                figures,
                vec![Figure::unavailable(
                    "tpm_overhead",
                    Goal::AtMost(1.10),
                    format!("{e:#}"),
                )],
            );
            (None, Err("the TPM phase failed".to_owned()))
        }
    }
}

#[cfg(not(feature = "tpm"))]
fn tpm_phase(
    _runtime: &tokio::runtime::Runtime,
    _plan: &Plan,
    _binary: &Path,
    figures: &mut Vec<Figure>,
) -> (Option<f64>, Result<delegated::Measured, String>) {
    let reason = "built without feature tpm (bench/run enables it)";
    emit(
        figures,
        vec![Figure::unavailable(
            "tpm_overhead",
            Goal::AtMost(1.10),
            reason,
        )],
    );
    (None, Err(reason.to_owned()))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}
