//! The demo's moving parts: a temporary directory, the agent on a socket inside it, a software
//! key, and an axum API behind the verifier on 127.0.0.1; and their orderly shutdown.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Json;
use axum::routing::post;
use hwsign_client::{AgentClient, KeyInfo};
use hwsign_proto::PublicKey;
use hwsign_verifier::{
    HwsignLayer, KeyLevel, KeyRegistry, MemoryRegistry, MemoryReplayCache, RegisteredKey,
    VerifiedDevice, Verifier, VerifierConfig,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Nonces the demo's replay cache remembers.
const REPLAY_CAPACITY: usize = 10_000;

pub(crate) struct DemoEnv {
    dir: tempfile::TempDir,
    pub agent: AgentClient,
    pub key: KeyInfo,
    pub verifier: Arc<Verifier>,
    addr: std::net::SocketAddr,
    agent_stop: oneshot::Sender<()>,
    agent_task: JoinHandle<Result<(), hwsign_agent::AgentError>>,
    server_stop: oneshot::Sender<()>,
    server_task: JoinHandle<std::io::Result<()>>,
}

impl DemoEnv {
    pub(crate) async fn start(audience: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("hwsign-demo-")
            .tempdir()
            .context("creating a temporary directory")?;
        println!("[1/6] Starting the agent (software backend)");
        let config = hwsign_agent::Config::for_state_dir(
            dir.path().join("state"),
            dir.path().join("run").join("agent.sock"),
        );
        let listener = hwsign_agent::socket::bind(&config.socket_path)?;
        println!(
            "      socket {} (mode 0600, only your uid is served)",
            config.socket_path.display()
        );
        let agent = AgentClient::new(&config.socket_path);
        let (agent_stop, stopped) = oneshot::channel::<()>();
        let agent_task = tokio::spawn(hwsign_agent::run(listener, Arc::new(config), async move {
            let _ = stopped.await;
        }));

        println!("[2/6] Creating a key in the agent");
        let key = agent
            .create_key("software", "demo")
            .await
            .context("creating the demo key")?;
        println!("      key id {} (level {})", key.id, key.level.as_str());
        println!("      the private key never leaves the agent; clients only ask it to sign");

        println!("[3/6] Starting an API protected by hwsign-verifier");
        let registry = Arc::new(MemoryRegistry::new());
        let added_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        registry.add(RegisteredKey::new(
            PublicKey::from_spki_pem(&key.public_key_pem)?,
            "demo laptop",
            KeyLevel::Software,
            added_unix,
        ))?;
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = tcp.local_addr()?;
        // The API serves exactly the address it listens on: a request signed for another host is
        // refused (wrong_host).
        let config = VerifierConfig::new(audience, [addr.to_string()]);
        println!(
            "      audience {audience:?}, allowed clock skew +/-{} s, key registered by its public key",
            config.clock_skew_secs
        );
        let verifier = Arc::new(Verifier::new(
            config,
            registry,
            Arc::new(MemoryReplayCache::new(REPLAY_CAPACITY)),
        )?);
        let app = axum::Router::new()
            .route("/v1/transfers", post(transfer))
            .layer(HwsignLayer::new(Arc::clone(&verifier)));
        let (server_stop, stop) = oneshot::channel::<()>();
        let server_task = tokio::spawn(
            axum::serve(tcp, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.await;
                })
                .into_future(),
        );
        println!("      listening on http://{addr}");
        println!();
        Ok(Self {
            dir,
            agent,
            key,
            verifier,
            addr,
            agent_stop,
            agent_task,
            server_stop,
            server_task,
        })
    }

    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    /// Stops the server and the agent, waits for both, and removes the directory.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        let _ = self.server_stop.send(());
        let _ = self.agent_stop.send(());
        // The client's idle keep-alive connection would otherwise hold the agent's drain.
        drop(self.agent);
        self.server_task.await?.context("API server")?;
        self.agent_task.await?.context("agent")?;
        self.dir
            .close()
            .context("removing the temporary directory")?;
        Ok(())
    }
}

async fn transfer(VerifiedDevice(who): VerifiedDevice) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "verified_key": who.key_id,
        "label": who.label,
        "level": who.level.as_str(),
    }))
}
