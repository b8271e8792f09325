//! A RECORDING TEST DOUBLE of the agent, not the agent: a real hyper server on a real Unix socket
//! that records each request it receives and answers with whatever the test's handler returns.
//! It exists to observe what the client puts on the wire (canonical inputs, connection reuse,
//! error decoding) — things the real agent does not report. Signing behaviour is tested against
//! the real agent in `real_agent.rs`.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

/// One request as received.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub method: String,
    pub path_and_query: String,
    pub host: Option<String>,
    pub body: Vec<u8>,
}

type Handler = dyn Fn(&Recorded) -> (StatusCode, Vec<u8>) + Send + Sync;

/// How the double treats its connections.
#[derive(Debug, Clone)]
enum Mode {
    /// Keep-alive, every answer at once.
    KeepAlive,
    /// Keep-alive, but requests to this path are answered only after the delay.
    Slow { path: String, delay: Duration },
    /// See [`RecordingAgent::start_dropping_reused`].
    DropReused,
    /// See [`RecordingAgent::start_closing_after_answer`].
    CloseAfterAnswer,
}

pub(crate) struct RecordingAgent {
    _dir: tempfile::TempDir,
    path: PathBuf,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    pub connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl RecordingAgent {
    /// Starts the double with keep-alive connections.
    pub(crate) fn start<F>(handler: F) -> anyhow::Result<Self>
    where
        F: Fn(&Recorded) -> (StatusCode, Vec<u8>) + Send + Sync + 'static,
    {
        Self::start_with(handler, Mode::KeepAlive)
    }

    /// Starts a keep-alive double that answers requests to `path` only after `delay` (a slow
    /// agent: a TPM, a queue of callers); other requests at once.
    pub(crate) fn start_slow<F>(path: &str, delay: Duration, handler: F) -> anyhow::Result<Self>
    where
        F: Fn(&Recorded) -> (StatusCode, Vec<u8>) + Send + Sync + 'static,
    {
        Self::start_with(
            handler,
            Mode::Slow {
                path: path.to_owned(),
                delay,
            },
        )
    }

    /// Starts a double that answers one request per connection and closes the socket 30 ms
    /// after the answer — what a client sees when the agent closes idle keep-alive connections.
    pub(crate) fn start_closing_after_answer<F>(handler: F) -> anyhow::Result<Self>
    where
        F: Fn(&Recorded) -> (StatusCode, Vec<u8>) + Send + Sync + 'static,
    {
        Self::start_with(handler, Mode::CloseAfterAnswer)
    }

    /// Starts a double that answers the first request of each connection and, when a second
    /// request arrives on the same connection, reads it and closes the socket without answering
    /// — what a client sees when the agent restarted while its connection sat idle.
    pub(crate) fn start_dropping_reused<F>(handler: F) -> anyhow::Result<Self>
    where
        F: Fn(&Recorded) -> (StatusCode, Vec<u8>) + Send + Sync + 'static,
    {
        Self::start_with(handler, Mode::DropReused)
    }

    fn start_with<F>(handler: F, mode: Mode) -> anyhow::Result<Self>
    where
        F: Fn(&Recorded) -> (StatusCode, Vec<u8>) + Send + Sync + 'static,
    {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path)?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let task = {
            let requests = requests.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    let requests = requests.clone();
                    let handler = handler.clone();
                    let slow = match &mode {
                        Mode::KeepAlive => None,
                        Mode::Slow { path, delay } => Some((path.clone(), *delay)),
                        Mode::DropReused | Mode::CloseAfterAnswer => {
                            let wait_for_next = matches!(mode, Mode::DropReused);
                            tokio::spawn(serve_one_then_drop(
                                stream,
                                requests,
                                handler,
                                wait_for_next,
                            ));
                            continue;
                        }
                    };
                    tokio::spawn(async move {
                        let service = service_fn(move |request: Request<Incoming>| {
                            let requests = requests.clone();
                            let handler = handler.clone();
                            let slow = slow.clone();
                            async move {
                                if let Some((path, delay)) = slow
                                    && request.uri().path() == path
                                {
                                    tokio::time::sleep(delay).await;
                                }
                                Ok::<_, Infallible>(answer(request, &requests, &*handler).await)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Ok(Self {
            _dir: dir,
            path,
            requests,
            connections,
            task,
        })
    }

    pub(crate) fn socket_path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for RecordingAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    request: Request<Incoming>,
    requests: &Mutex<Vec<Recorded>>,
    handler: &Handler,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes().to_vec())
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        host: parts
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
    };
    let (status, body) = handler(&recorded);
    if let Ok(mut all) = requests.lock() {
        all.push(recorded);
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Minimal HTTP/1.1 for [`RecordingAgent::start_dropping_reused`] and
/// [`RecordingAgent::start_closing_after_answer`]: hyper's server cannot be told to vanish
/// mid-connection, so this reads requests by hand. With `wait_for_next` it closes once the next
/// request arrives, else right after the answer.
async fn serve_one_then_drop(
    mut stream: tokio::net::UnixStream,
    requests: Arc<Mutex<Vec<Recorded>>>,
    handler: Arc<Handler>,
    wait_for_next: bool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = Vec::new();
    let Some(recorded) = read_request(&mut stream, &mut buffer).await else {
        return;
    };
    let (status, body) = handler(&recorded);
    if let Ok(mut all) = requests.lock() {
        all.push(recorded);
    }
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(&body).await.is_err() {
        return;
    }
    if wait_for_next {
        // Wait for the next request on this connection, then close without answering.
        let mut byte = [0u8; 1];
        let _ = stream.read(&mut byte).await;
    } else {
        // Close a little later, once the client has put the connection back as idle.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

async fn read_request(
    stream: &mut tokio::net::UnixStream,
    buffer: &mut Vec<u8>,
) -> Option<Recorded> {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path_and_query = request_line.next()?.to_owned();
    let mut host = None;
    let mut length = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("host") {
                host = Some(value.to_owned());
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().ok()?;
            }
        }
    }
    while buffer.len() < head_end + length {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    Some(Recorded {
        method,
        path_and_query,
        host,
        body: buffer[head_end..head_end + length].to_vec(),
    })
}
