//! Figures of the real agent binary with a software key: round trip against the echo floor,
//! throughput with 64 concurrent clients, and resident memory idle and after 100,000 signs. One
//! agent process serves all three, so the memory figure covers every kind of load.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result, ensure};
use hwsign_bench::fixtures::{BenchRequest, signing_key};
use hwsign_bench::signers::P256Signer;
use hwsign_client::AgentClient;
use hwsign_proto::api::SignRequest;
use tokio::task::JoinSet;

use crate::Plan;
use crate::agent_proc::{AgentProcess, process_cpu_seconds};
use crate::echo::EchoServer;
use crate::figure::{Figure, Goal};
use crate::measure::{cpu_per_op, median, us};

/// Concurrent clients of the concurrency figure (the number).
const CLIENTS: usize = 64;
/// Signs after which memory growth is read.
const GROWTH_SIGNS: usize = 100_000;

/// Runs the agent figures; `binary` is the release `hwsign-agent`.
pub(crate) async fn run(plan: &Plan, binary: &Path) -> Result<Vec<Figure>> {
    let dir = tempfile::tempdir()?;
    let mut agent =
        AgentProcess::start(binary, dir.path(), "[backends.software]\nenabled = true").await?;
    let idle_kib = agent.rss_kib()?;
    let client = AgentClient::new(agent.socket());
    let key = client.create_key("software", "bench").await?;
    let request = BenchRequest::realistic().sign_request(&key.id);
    let captured = client.sign(&request).await?;
    let echo = EchoServer::start(dir.path(), &serde_json::to_vec(&captured)?)?;
    // The software backend's signer, on a key of its own: the raw sign of the floor.
    let raw = P256Signer::new(signing_key("agent-floor")?);
    let digest = [7u8; 32];

    let mut signs = 1usize;
    let (rtt, n) = round_trip(plan, &client, echo.socket(), &request, &raw, &digest).await?;
    signs += n;
    let after_rtt_kib = agent.rss_kib()?;
    let (concurrency, n) = concurrency(plan, &agent, &request, &raw, &digest).await?;
    signs += n;
    let after_concurrency_kib = agent.rss_kib()?;
    if signs < GROWTH_SIGNS {
        let rest = GROWTH_SIGNS - signs;
        load(agent.socket(), &request, CLIENTS, rest.div_ceil(CLIENTS)).await?;
        signs += rest.div_ceil(CLIENTS) * CLIENTS;
    }
    let after_kib = agent.rss_kib()?;
    agent.stop()?;
    let idle = idle_kib as f64 / 1024.0;
    let growth = (after_kib as f64 - idle_kib as f64) / 1024.0;
    Ok(vec![
        rtt,
        concurrency,
        Figure::measured(
            "agent_rss_idle_mib",
            idle,
            Goal::AtMost(15.0),
            "VmRSS of the release hwsign-agent (software backend) once it answers /v1/status"
                .to_owned(),
        ),
        Figure::measured(
            "agent_rss_growth_100k_mib",
            growth,
            Goal::AtMost(2.0),
            format!(
                "VmRSS {:.2} MiB after {signs} signs − idle; {:.2} MiB after the one-connection phase, {:.2} MiB after the first {CLIENTS}-client phase",
                after_kib as f64 / 1024.0,
                after_rtt_kib as f64 / 1024.0,
                after_concurrency_kib as f64 / 1024.0
            ),
        ),
    ])
}

/// Seconds per sequential call of `client.sign`, over `count` calls.
async fn sequential(client: &AgentClient, request: &SignRequest, count: usize) -> Result<f64> {
    let start = Instant::now();
    for _ in 0..count {
        client.sign(request).await?;
    }
    Ok(start.elapsed().as_secs_f64() / count.max(1) as f64)
}

async fn round_trip(
    plan: &Plan,
    agent: &AgentClient,
    echo_socket: &Path,
    request: &SignRequest,
    raw: &P256Signer,
    digest: &[u8; 32],
) -> Result<(Figure, usize)> {
    let echo = AgentClient::new(echo_socket);
    let batch = plan.rtt_batch;
    // The sign's own cost on the CPU clock: waiting for a core under load must not widen the floor.
    let raw_sign = || {
        cpu_per_op(batch, |_| {
            std::hint::black_box(raw.sign_digest(digest)?);
            Ok(())
        })
    };
    sequential(agent, request, plan.warmup).await?;
    sequential(&echo, request, plan.warmup).await?;
    raw_sign()?;
    let (mut ratios, mut t_agent, mut t_echo, mut t_raw) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        let (a, e, r) = if round % 2 == 0 {
            let a = sequential(agent, request, batch).await?;
            let e = sequential(&echo, request, batch).await?;
            (a, e, raw_sign()?)
        } else {
            let r = raw_sign()?;
            let e = sequential(&echo, request, batch).await?;
            (sequential(agent, request, batch).await?, e, r)
        };
        ratios.push(a / (e + r));
        t_agent.push(a);
        t_echo.push(e);
        t_raw.push(r);
    }
    let figure = Figure::measured(
        "agent_rtt_ratio",
        median(ratios),
        Goal::AtMost(1.5),
        format!(
            "agent sign round trip {} vs hyper echo {} + raw p256 sign {} (CPU time) (AgentClient, one keep-alive connection)",
            us(median(t_agent)),
            us(median(t_echo)),
            us(median(t_raw))
        ),
    );
    Ok((figure, plan.warmup + plan.rounds * batch))
}

/// `clients` concurrent clients, each with its own connection, each signing `per_client` times.
/// Returns signs per second.
async fn load(
    socket: &Path,
    request: &SignRequest,
    clients: usize,
    per_client: usize,
) -> Result<f64> {
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    for _ in 0..clients {
        let client = AgentClient::new(socket);
        let request = request.clone();
        tasks.spawn(async move {
            for _ in 0..per_client {
                client.sign(&request).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("client task")??;
    }
    Ok((clients * per_client) as f64 / start.elapsed().as_secs_f64())
}

async fn concurrency(
    plan: &Plan,
    agent: &AgentProcess,
    request: &SignRequest,
    raw: &P256Signer,
    digest: &[u8; 32],
) -> Result<(Figure, usize)> {
    let per_client = plan.concurrency_per_client;
    let raw_batch = plan.rtt_batch * 4;
    // One core's capacity: the raw loop on this thread's CPU clock, so time this thread waits
    // for a core (the agent and other load) does not lower the floor.
    let raw_rate = || -> Result<f64> {
        Ok(1.0
            / cpu_per_op(raw_batch, |_| {
                std::hint::black_box(raw.sign_digest(digest)?);
                Ok(())
            })?)
    };
    let socket = agent.socket();
    load(socket, request, CLIENTS, 10).await?;
    let (agent_cpu, own_cpu) = (agent.cpu_seconds()?, process_cpu_seconds("self")?);
    let (mut ratios, mut rates, mut raws) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        let (rate, one_core) = if round % 2 == 0 {
            let rate = load(socket, request, CLIENTS, per_client).await?;
            (rate, raw_rate()?)
        } else {
            let one_core = raw_rate()?;
            (load(socket, request, CLIENTS, per_client).await?, one_core)
        };
        ensure!(one_core.is_finite(), "raw sign rate not measurable");
        ratios.push(rate / (2.0 * one_core));
        rates.push(rate);
        raws.push(one_core);
    }
    // CPU accounting: where each sign's CPU goes (this process also ran the raw sign loops).
    let signs = (CLIENTS * plan.rounds * per_client) as f64;
    let raw_cpu = plan.rounds as f64 * raw_batch as f64 / median(raws.clone());
    let agent_per_sign = (agent.cpu_seconds()? - agent_cpu) / signs;
    let client_per_sign = ((process_cpu_seconds("self")? - own_cpu) - raw_cpu).max(0.0) / signs;
    let figure = Figure::measured(
        "agent_concurrency_ratio",
        median(ratios),
        Goal::AtLeast(0.8),
        format!(
            "{CLIENTS} clients: {:.0} signs/s vs 2 × one-core raw p256 sign {:.0}/s; CPU per sign: agent {}, client {}, raw sign {} (clients run on the same 2 cores)",
            median(rates),
            median(raws.clone()),
            us(agent_per_sign),
            us(client_per_sign),
            us(1.0 / median(raws))
        ),
    );
    Ok((figure, CLIENTS * (10 + plan.rounds * per_client)))
}
