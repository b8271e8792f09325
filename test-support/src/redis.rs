//! Real Redis servers per test: a single node, or a Redis Cluster of three masters created with
//! `redis-cli --cluster create`, every file in a temp dir, on loopback ports, killed on drop.
//! A node can be stopped and started again on the same port (an outage and its recovery), with
//! its data set lost (the default: no persistence) or kept (`appendonly yes`, fsync always).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tempfile::TempDir;

use crate::ports::free_tcp_port;

/// How long a server may take to answer PING, or a cluster to report `cluster_state:ok`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

/// One `redis-server` process.
#[derive(Debug)]
pub struct RedisServer {
    dir: PathBuf,
    port: u16,
    cluster: bool,
    persistent: bool,
    child: Option<Child>,
}

/// A single Redis node in its own temp dir.
#[derive(Debug)]
pub struct Redis {
    server: RedisServer,
    _dir: TempDir,
}

/// A Redis Cluster of three masters (no replicas), each in the cluster's temp dir.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    _dir: TempDir,
}

/// Runs `redis-cli -p PORT ARGS...` and returns its output.
pub fn redis_cli(port: u16, args: &[&str]) -> Result<String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running redis-cli (install redis-tools)")?;
    if !output.status.success() {
        bail!(
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
    bail!("{what} not ready within {READY_TIMEOUT:?}")
}

/// A port P whose cluster bus port P + 10000 is free too.
fn free_cluster_port() -> Result<u16> {
    for _ in 0..50 {
        let port = free_tcp_port()?;
        let Some(bus) = port.checked_add(10_000) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port pair P, P+10000 on 127.0.0.1")
}

impl RedisServer {
    fn launch(dir: &Path, cluster: bool) -> Result<Self> {
        let mut last_error = None;
        for _ in 0..5 {
            let port = if cluster {
                free_cluster_port()?
            } else {
                free_tcp_port()?
            };
            let mut server = Self {
                dir: dir.join(format!("node-{port}")),
                port,
                cluster,
                persistent: false,
                child: None,
            };
            std::fs::create_dir_all(&server.dir)?;
            match server.start() {
                Ok(()) => return Ok(server),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server (again) on its port.
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(if self.persistent {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "everysec"]
            })
            .args(["--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.cluster {
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]);
        }
        let child = command
            .spawn()
            .context("starting redis-server (install redis-server)")?;
        self.child = Some(child);
        let port = self.port;
        let ready = wait_until("redis-server", || {
            redis_cli(port, &["ping"]).is_ok_and(|out| out.trim() == "PONG")
        });
        if ready.is_err() {
            self.stop();
        }
        ready
    }

    /// Whether the next start keeps the data set on disk (`appendonly yes`, fsync on every
    /// write), so a restart finds it again.
    pub fn set_persistent(&mut self, persistent: bool) {
        self.persistent = persistent;
    }

    /// Kills the server (SIGKILL: an outage, not a shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Redis {
    /// Starts a single node.
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let server = RedisServer::launch(dir.path(), false)?;
        Ok(Self { server, _dir: dir })
    }

    /// Starts a single node that keeps its data across restarts (`appendonly yes`).
    pub fn start_persistent() -> Result<Self> {
        let mut redis = Self::start()?;
        redis.server.stop();
        redis.server.set_persistent(true);
        redis.server.start()?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.server.port)
    }

    /// The server process.
    pub fn server(&mut self) -> &mut RedisServer {
        &mut self.server
    }
}

impl RedisCluster {
    /// Starts three cluster-enabled nodes and joins them as three masters.
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::launch(dir.path(), true)?);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        redis_cli(nodes[0].port, &args).context("redis-cli --cluster create")?;
        for node in &nodes {
            let port = node.port;
            wait_until("the Redis Cluster", || {
                redis_cli(port, &["cluster", "info"])
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            })?;
        }
        Ok(Self { nodes, _dir: dir })
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The three master nodes.
    pub fn nodes(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }
}
