//! Figures of the real agent binary with a software key: round trip against the echo floor and
//! against OpenSSH's ssh-agent, throughput with 64 concurrent clients against the minimal agent
//! (the echo server making one raw AWS-LC signature per request), and resident memory idle and
//! after 100,000 signs. One agent process serves all of them, so the memory figure covers every
//! kind of load. Every floor signs with AWS-LC, as the agent's software backend does.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result, ensure};
use hwsign_bench::fixtures::{BenchRequest, signing_key};
use hwsign_bench::signers::AwsLcSigner;
use hwsign_client::AgentClient;
use hwsign_proto::api::SignRequest;
use tokio::task::JoinSet;

use crate::Plan;
use crate::agent_proc::{AgentProcess, process_cpu_seconds};
use crate::echo::EchoServer;
use crate::figure::{Figure, Goal};
use crate::measure::{cpu_per_op, median, us};
use crate::raw_client::{Framing, RawClient};
use crate::ssh_agent::{RttSamples, SshAgent};

/// Concurrent clients of the concurrency figure (the number).
const CLIENTS: usize = 64;
/// Signs after which memory growth is read.
const GROWTH_SIGNS: usize = 100_000;

/// The agent figures and the round-trip samples behind the chart.
#[derive(Debug)]
pub(crate) struct AgentResults {
    /// The figures, in report order.
    pub figures: Vec<Figure>,
    /// Round trips of the raw client (hwsign, ssh-agent, echo floor), if measured.
    pub samples: Option<RttSamples>,
}

/// Runs the agent figures; `binary` is the release `hwsign-agent`.
pub(crate) async fn run(plan: &Plan, binary: &Path) -> Result<AgentResults> {
    let dir = tempfile::tempdir()?;
    let mut agent =
        AgentProcess::start(binary, dir.path(), "[backends.software]\nenabled = true").await?;
    let idle_kib = agent.rss_kib()?;
    let client = AgentClient::new(agent.socket());
    let key = client.create_key("software", "bench").await?;
    let request = BenchRequest::realistic().sign_request(&key.id);
    let captured = client.sign(&request).await?;
    let canned = serde_json::to_vec(&captured)?;
    let echo = EchoServer::start(dir.path(), &canned, false)?;
    let echo_sign = EchoServer::start(dir.path(), &canned, true)?;
    // The software backend's signer, on a key of its own: the raw sign of the floor.
    let raw = AwsLcSigner::from_p256(&signing_key("agent-floor")?)?;
    let digest = [7u8; 32];

    let mut signs = 1usize;
    let (rtt, n) = round_trip(plan, &client, echo.socket(), &request, &raw, &digest).await?;
    signs += n;
    let (ssh, samples) = match ssh_phase(plan, dir.path(), agent.socket(), echo.socket(), &request)
    {
        Ok((figure, samples, n)) => {
            signs += n;
            (figure, Some(samples))
        }
        Err(e) => (
            Figure::unavailable("ssh_agent_rtt_ratio", Goal::AtMost(0.45), format!("{e:#}")),
            None,
        ),
    };
    let after_rtt_kib = agent.rss_kib()?;
    let (concurrency, n) = concurrency(plan, &agent, echo_sign.socket(), &request).await?;
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
    let figures = vec![
        rtt,
        ssh,
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
            Goal::AtMost(1.0),
            format!(
                "VmRSS {:.2} MiB after {signs} signs − idle; {:.2} MiB after the one-connection phases, {:.2} MiB after the first {CLIENTS}-client phase",
                after_kib as f64 / 1024.0,
                after_rtt_kib as f64 / 1024.0,
                after_concurrency_kib as f64 / 1024.0
            ),
        ),
    ];
    Ok(AgentResults { figures, samples })
}

/// `ssh_agent_rtt_ratio` with the raw client: hwsign agent, ssh-agent, echo floor.
fn ssh_phase(
    plan: &Plan,
    dir: &Path,
    agent_socket: &Path,
    echo_socket: &Path,
    request: &SignRequest,
) -> Result<(Figure, RttSamples, usize)> {
    let ssh = SshAgent::start(dir)?;
    let json = serde_json::to_vec(request)?;
    let http = RawClient::http_post("/v1/sign", &json);
    let mut hwsign = RawClient::connect(agent_socket, http.clone(), Framing::Http)?;
    let mut echo = RawClient::connect(echo_socket, http, Framing::Http)?;
    // ssh-agent signs data of the size of an HWS1 string to sign (it hashes it itself).
    let mut ssh_client = ssh.sign_client(&[b'x'; 256])?;
    crate::ssh_agent::figure(plan, &mut hwsign, &mut echo, &mut ssh_client)
}

/// Seconds per sequential call of `client.sign`, over `count` calls.
pub(crate) async fn sequential(
    client: &AgentClient,
    request: &SignRequest,
    count: usize,
) -> Result<f64> {
    let start = Instant::now();
    for _ in 0..count {
        client.sign(request).await?;
    }
    Ok(start.elapsed().as_secs_f64() / count.max(1) as f64)
}

pub(crate) async fn round_trip(
    plan: &Plan,
    agent: &AgentClient,
    echo_socket: &Path,
    request: &SignRequest,
    raw: &AwsLcSigner,
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
        Goal::AtMost(1.2),
        format!(
            "agent sign round trip {} vs hyper echo {} + raw AWS-LC sign {} (CPU time) (AgentClient, one keep-alive connection)",
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
    floor_socket: &Path,
    request: &SignRequest,
) -> Result<(Figure, usize)> {
    let per_client = plan.concurrency_per_client;
    let socket = agent.socket();
    load(socket, request, CLIENTS, 10).await?;
    load(floor_socket, request, CLIENTS, 10).await?;
    let agent_cpu = agent.cpu_seconds()?;
    let mut client_cpu = 0.0;
    let (mut ratios, mut rates, mut floors) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        let timed_agent = || async {
            let before = process_cpu_seconds("self")?;
            let rate = load(socket, request, CLIENTS, per_client).await?;
            anyhow::Ok((rate, process_cpu_seconds("self")? - before))
        };
        let ((rate, cpu), floor) = if round % 2 == 0 {
            let agent = timed_agent().await?;
            (
                agent,
                load(floor_socket, request, CLIENTS, per_client).await?,
            )
        } else {
            let floor = load(floor_socket, request, CLIENTS, per_client).await?;
            (timed_agent().await?, floor)
        };
        ensure!(
            floor.is_finite() && floor > 0.0,
            "floor rate not measurable"
        );
        client_cpu += cpu;
        ratios.push(rate / floor);
        rates.push(rate);
        floors.push(floor);
    }
    // CPU accounting: where each agent sign's CPU goes (the agent is idle during the floor's
    // batches; this process's CPU is counted during the agent's batches only).
    let signs = (CLIENTS * plan.rounds * per_client) as f64;
    let agent_per_sign = (agent.cpu_seconds()? - agent_cpu) / signs;
    let client_per_sign = client_cpu / signs;
    let figure = Figure::measured(
        "agent_concurrency_ratio",
        median(ratios),
        Goal::AtLeast(0.8),
        format!(
            "{CLIENTS} clients: {:.0} signs/s vs the minimal agent (echo + one raw AWS-LC sign per request) {:.0}/s; CPU per sign: agent {}, client {} (clients run on the same 2 cores)",
            median(rates),
            median(floors),
            us(agent_per_sign),
            us(client_per_sign),
        ),
    );
    Ok((figure, CLIENTS * (10 + plan.rounds * per_client)))
}
