//! `hwsign-bench client-rtt [--quick] [--agent-bin PATH]`: `agent_rtt_ratio` alone (the same
//! measurement as the full run's), then what the client library itself costs per call. This
//! process is the only client; the agent and the echo server are processes of their own, so the
//! CPU this process spends per sequential `AgentClient::sign` is the library's (JSON, HTTP,
//! runtime), and the raw client's echo round trip beside `AgentClient`'s shows the library's
//! wall-clock cost above the socket. Changes no figure of the full run.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use hwsign_bench::fixtures::{BenchRequest, signing_key};
use hwsign_bench::signers::AwsLcSigner;
use hwsign_client::AgentClient;

use crate::Plan;
use crate::agent_figures::{round_trip, sequential};
use crate::agent_proc::AgentProcess;
use crate::echo::EchoServer;
use crate::measure::{median, process_cpu, us};
use crate::raw_client::{Framing, RawClient};

/// Runs the measurement and prints `agent_rtt_ratio` and `#` lines; true if the figure passes.
pub(crate) async fn run(plan: &Plan, binary: &Path) -> Result<bool> {
    let dir = tempfile::tempdir()?;
    let mut agent =
        AgentProcess::start(binary, dir.path(), "[backends.software]\nenabled = true").await?;
    let client = AgentClient::new(agent.socket());
    let key = client.create_key("software", "bench").await?;
    let request = BenchRequest::realistic().sign_request(&key.id);
    let captured = client.sign(&request).await?;
    let canned = serde_json::to_vec(&captured)?;
    let echo_server = EchoServer::start(dir.path(), &canned, false)?;
    let raw = AwsLcSigner::from_p256(&signing_key("agent-floor")?)?;
    let (figure, _) = round_trip(
        plan,
        &client,
        echo_server.socket(),
        &request,
        &raw,
        &[7u8; 32],
    )
    .await?;
    println!("{figure}");

    // Client CPU per call (this process, every thread) and the raw client's echo floor.
    let echo = AgentClient::new(echo_server.socket());
    let json = serde_json::to_vec(&request)?;
    let mut raw_echo = RawClient::connect(
        echo_server.socket(),
        RawClient::http_post("/v1/sign", &json),
        Framing::Http,
    )?;
    let batch = plan.rtt_batch;
    let (mut cpu_echo, mut cpu_agent, mut wall_echo, mut wall_raw) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let agent_cpu_start = agent.cpu_seconds()?;
    for _ in 0..plan.rounds {
        let before = process_cpu()?;
        wall_echo.push(sequential(&echo, &request, batch).await?);
        cpu_echo.push((process_cpu()? - before).as_secs_f64() / batch as f64);
        let before = process_cpu()?;
        sequential(&client, &request, batch).await?;
        cpu_agent.push((process_cpu()? - before).as_secs_f64() / batch as f64);
        let mut samples: Vec<Duration> = Vec::with_capacity(batch);
        raw_echo.timed_calls(batch, &mut samples)?;
        wall_raw.push(samples.iter().map(Duration::as_secs_f64).sum::<f64>() / batch as f64);
    }
    // From /proc (10 ms ticks), so over all rounds.
    let agent_cpu = (agent.cpu_seconds()? - agent_cpu_start) / (plan.rounds * batch) as f64;
    println!(
        "# client CPU per call (AgentClient, this process): echo {}, agent {}; agent process CPU per sign {}; echo round trip: AgentClient {} vs raw client {}",
        us(median(cpu_echo)),
        us(median(cpu_agent)),
        us(agent_cpu),
        us(median(wall_echo)),
        us(median(wall_raw)),
    );
    agent.stop()?;
    Ok(figure.passes())
}
