//! The real hwsign agent, run in-process on a Unix socket in a temporary directory with the
//! software backend (`hwsign_agent::run`), and stopped through its shutdown signal.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hwsign_client::{AgentClient, KeyInfo};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) struct RealAgent {
    dir: tempfile::TempDir,
    socket: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RealAgent {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        Self::start_in(tempfile::tempdir()?).await
    }

    /// Starts an agent whose state (keys) lives in `dir`; restarting in the same directory keeps
    /// the keys.
    pub(crate) async fn start_in(dir: tempfile::TempDir) -> anyhow::Result<Self> {
        let socket = dir.path().join("run").join("agent.sock");
        let config = hwsign_agent::Config::for_state_dir(dir.path().join("state"), &socket);
        let listener = hwsign_agent::socket::bind(&config.socket_path)?;
        let config = Arc::new(config);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.await;
            };
            if let Err(e) = hwsign_agent::run(listener, config, shutdown).await {
                eprintln!("agent stopped with an error: {e}");
            }
        });
        Ok(Self {
            dir,
            socket,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    pub(crate) fn client(&self) -> AgentClient {
        AgentClient::new(&self.socket)
    }

    pub(crate) async fn software_key(&self, label: &str) -> anyhow::Result<KeyInfo> {
        Ok(self.client().create_key("software", label).await?)
    }

    /// Stops the agent, waits for it, and hands back its directory.
    pub(crate) async fn stop(mut self) -> anyhow::Result<tempfile::TempDir> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await?;
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir()?);
        Ok(dir)
    }
}

impl Drop for RealAgent {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
