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
pub(crate) struct TestAgent {
    pub dir: tempfile::TempDir,
    pub config: Arc<Config>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), AgentError>>>,
}

/// A config rooted in `dir`.
pub(crate) fn config_in(dir: &Path) -> Config {
    Config::for_state_dir(dir.join("state"), dir.join("run/agent.sock"))
}

impl TestAgent {
    /// Starts an agent with the default test configuration.
    pub(crate) async fn start() -> Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Starts an agent after `adjust` changed its configuration.
    pub(crate) async fn start_with(adjust: impl FnOnce(&mut Config)) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut config = config_in(dir.path());
        adjust(&mut config);
        Self::start_in(dir, config).await
    }

    /// Starts an agent with `config` (whose paths should be under `dir`).
    pub(crate) async fn start_in(dir: tempfile::TempDir, config: Config) -> Result<Self> {
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
    pub(crate) fn socket(&self) -> &Path {
        &self.config.socket_path
    }

    /// The state directory.
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.config.state_dir.clone()
    }

    /// Signals shutdown and waits for `run` to return; hands back the temp dir.
    pub(crate) async fn stop(mut self) -> Result<tempfile::TempDir> {
        self.shutdown().await?;
        let dir = tempfile::tempdir()?;
        Ok(std::mem::replace(&mut self.dir, dir))
    }

    /// Signals shutdown and waits for `run` to return.
    pub(crate) async fn shutdown(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }

    /// A new client connection.
    pub(crate) async fn connect(&self) -> Result<Client> {
        Client::connect(self.socket()).await
    }

    /// One request on a fresh connection.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer> {
        self.connect().await?.call(method, path, body).await
    }

    /// A JSON GET that must succeed.
    pub(crate) async fn get_ok<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None).await?.ok_json()
    }

    /// A JSON POST.
    pub(crate) async fn post<B: Serialize>(&self, path: &str, body: &B) -> Result<Answer> {
        self.call(Method::POST, path, Some(serde_json::to_vec(body)?))
            .await
    }
}

/// What the agent answered.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as `T` after checking for a 2xx status.
    pub(crate) fn ok_json<T: DeserializeOwned>(&self) -> Result<T> {
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
    pub(crate) fn error_code(&self) -> Result<String> {
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
    pub(crate) fn expect_error(&self, status: u16, code: &str) -> Result<()> {
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
pub(crate) struct Client {
    sender: http1::SendRequest<Full<Bytes>>,
    connection: JoinHandle<Result<(), hyper::Error>>,
}

impl Client {
    /// Connects and completes the (wire-silent) HTTP/1 handshake.
    pub(crate) async fn connect(socket: &Path) -> Result<Self> {
        let stream = UnixStream::connect(socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        let connection = tokio::spawn(connection);
        Ok(Self { sender, connection })
    }

    /// Sends one request and reads the whole answer.
    pub(crate) async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer> {
        self.send(request(method, path, body)?).await
    }

    /// Sends a prepared request.
    pub(crate) async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Answer> {
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
    pub(crate) async fn closed(self) -> bool {
        drop(self.sender);
        self.connection.await.is_ok()
    }
}

/// Builds a request to the agent.
pub(crate) fn request(
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Request<Full<Bytes>>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "agent");
    if body.is_some() {
        builder = builder.header(http::header::CONTENT_TYPE, "application/json");
    }
    Ok(builder.body(Full::new(Bytes::from(body.unwrap_or_default())))?)
}

/// Writes `bytes` on a fresh connection and reads until the agent closes it. A reset after the
/// answer (the agent closing with unread input) ends the read like a close.
pub(crate) async fn raw_exchange(socket: &Path, bytes: &[u8]) -> Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = UnixStream::connect(socket).await?;
    // The agent may answer and close before reading everything (431, 413): a failed write is
    // then expected, and the answer is still there to read.
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The status code of the first response in `raw`.
pub(crate) fn raw_status(raw: &str) -> Option<u16> {
    raw.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Sends the head of a POST with `Expect: 100-continue` and waits for `100 Continue`: from then
/// on a handler is in flight, waiting for the `length`-byte body.
pub(crate) async fn start_body_request(
    socket: &Path,
    path: &str,
    length: usize,
) -> Result<UnixStream> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = UnixStream::connect(socket).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(
            stream.read(&mut byte).await? == 1,
            "closed before 100 Continue"
        );
        seen.push(byte[0]);
        anyhow::ensure!(seen.len() < 1024, "no 100 Continue");
    }
    anyhow::ensure!(
        seen.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    Ok(stream)
}

/// Reads until the agent closes the connection.
pub(crate) async fn read_to_end(stream: &mut UnixStream) -> Result<String> {
    use tokio::io::AsyncReadExt as _;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}
