//! Measures the round trip of `Signer::sign_request` against an in-process agent (software key)
//! on one reused connection: `cargo run --release -p hwsign-client --example sign_latency`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hwsign_client::{AgentClient, Signer};

const ROUNDS: usize = 2000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = hwsign_agent::Config::for_state_dir(
        dir.path().join("state"),
        dir.path().join("run").join("agent.sock"),
    );
    let listener = hwsign_agent::socket::bind(&config.socket_path)?;
    let agent = AgentClient::new(&config.socket_path);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(hwsign_agent::run(listener, Arc::new(config), async move {
        let _ = stopped.await;
    }));
    let key = agent.create_key("software", "latency").await?;
    let signer = Signer::new(agent.clone(), &key.id, "bench");
    let body = vec![b'x'; 1024];
    let mut samples: Vec<Duration> = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS + 100 {
        let mut request = http::Request::post("https://api.example.com/v1/items?x=1")
            .header("content-type", "application/json")
            .body(body.clone())?;
        let start = Instant::now();
        signer.sign_request(&mut request).await?;
        if i >= 100 {
            samples.push(start.elapsed());
        }
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!(
        "sign_request (1 KiB body, software key, {ROUNDS} rounds): median {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    drop(signer);
    drop(agent);
    let _ = stop.send(());
    task.await??;
    Ok(())
}
