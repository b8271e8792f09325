//! An in-process agent on a temporary socket, and an HTTP/1.1 client over Unix sockets.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, anyhow};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use hwsign_agent::{AgentError, Config};
use hwsign_proto::api::ErrorResponse;

/// A running in-process agent.
pub struct TestAgent {
    pub dir: tempfile::TempDir,
    pub config: Arc<Config>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), AgentError>>>,
}

/// A config rooted in `dir`.
pub fn config_in(dir: &Path) -> Config {
    Config::for_state_dir(dir.join("state"), dir.join("run/agent.sock"))
}

impl TestAgent {
    /// Starts an agent with the default test configuration.
    pub async fn start() -> Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Starts an agent after `adjust` changed its configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut config = config_in(dir.path());
        adjust(&mut config);
        Self::start_in(dir, config).await
    }

    /// Starts an agent with `config` (whose paths should be under `dir`).
    pub async fn start_in(dir: tempfile::TempDir, config: Config) -> Result<Self> {
        let config = Arc::new(config);
        let listener = hwsign_agent::socket::bind(&config.socket_path)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(hwsign_agent::run(
            listener,
            Arc::clone(&config),
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Self {
            dir,
            config,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.config.socket_path
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.config.state_dir.clone()
    }

    /// Signals shutdown and waits for `run` to return; hands back the temp dir.
    pub async fn stop(mut self) -> Result<tempfile::TempDir> {
        self.shutdown().await?;
        let dir = tempfile::tempdir()?;
        Ok(std::mem::replace(&mut self.dir, dir))
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn shutdown(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }

    /// A new client connection.
    pub async fn connect(&self) -> Result<Client> {
        Client::connect(self.socket()).await
    }

    /// One request on a fresh connection.
    pub async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Answer> {
        self.connect().await?.call(method, path, body).await
    }

    /// A JSON GET that must succeed.
    pub async fn get_ok<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None).await?.ok_json()
    }

    /// A JSON POST.
    pub async fn post<B: Serialize>(&self, path: &str, body: &B) -> Result<Answer> {
        self.call(Method::POST, path, Some(serde_json::to_vec(body)?))
            .await
    }
}

/// What the agent answered.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as `T` after checking for a 2xx status.
    pub fn ok_json<T: DeserializeOwned>(&self) -> Result<T> {
        if !self.status.is_success() {
            return Err(anyhow!(
                "HTTP {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            ));
        }
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// The error code of an error body.
    pub fn error_code(&self) -> Result<String> {
        let error: ErrorResponse = serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "HTTP {} body is not an error body: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })?;
        Ok(error.error.code.as_str().to_owned())
    }

    /// Asserts status and error code.
    pub fn expect_error(&self, status: u16, code: &str) -> Result<()> {
        anyhow::ensure!(
            self.status.as_u16() == status,
            "expected HTTP {status}, got {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        let actual = self.error_code()?;
        anyhow::ensure!(actual == code, "expected code {code}, got {actual}");
        Ok(())
    }
}

/// One HTTP/1.1 connection to the agent.
pub struct Client {
    sender: http1::SendRequest<Full<Bytes>>,
    connection: JoinHandle<Result<(), hyper::Error>>,
}

impl Client {
    /// Connects and completes the (wire-silent) HTTP/1 handshake.
    pub async fn connect(socket: &Path) -> Result<Self> {
        let stream = UnixStream::connect(socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        let connection = tokio::spawn(connection);
        Ok(Self { sender, connection })
    }

    /// Sends one request and reads the whole answer.
    pub async fn call(&mut self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Answer> {
        self.send(request(method, path, body)?).await
    }

    /// Sends a prepared request.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Answer> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Whether the server closed the connection (the connection task ended).
    pub async fn closed(self) -> bool {
        drop(self.sender);
        self.connection.await.is_ok()
    }
}

/// Builds a request to the agent.
pub fn request(method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Request<Full<Bytes>>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "agent");
    if body.is_some() {
        builder = builder.header(http::header::CONTENT_TYPE, "application/json");
    }
    Ok(builder.body(Full::new(Bytes::from(body.unwrap_or_default())))?)
}
