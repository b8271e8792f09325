//! HTTP/1.1 over the agent's Unix socket: a few keep-alive connections kept idle and reused, one
//! transparent reconnect when a reused connection turns out to be dead, a deadline on every
//! exchange and a bound on every answer.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::error::ClientError;

type Sender = SendRequest<Full<Bytes>>;

/// Limits and timing of a [`Transport`].
#[derive(Debug, Clone)]
pub(crate) struct TransportConfig {
    pub socket_path: PathBuf,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    pub max_idle_connections: usize,
    /// A uid trusted to run the agent besides the client's own and root's.
    pub agent_uid: Option<u32>,
}

/// One call: method, path (origin form) and optional JSON body.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    pub method: Method,
    pub path: &'a str,
    pub body: Option<Bytes>,
    /// The call changes nothing in the agent (or repeating it is harmless), so it may be sent
    /// again when a reused connection died without an answer.
    pub replay_safe: bool,
}

/// A connection pool of one socket path.
#[derive(Debug)]
pub(crate) struct Transport {
    config: TransportConfig,
    idle: Mutex<Vec<Sender>>,
}

/// A failed send on one connection, with whether the request provably never left.
struct SendFailure {
    error: hyper::Error,
    not_sent: bool,
}

impl Transport {
    pub(crate) fn new(config: TransportConfig) -> Self {
        Self {
            config,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn socket_path(&self) -> &Path {
        &self.config.socket_path
    }

    /// Sends `call` and returns the status and the whole (bounded) body.
    pub(crate) async fn exchange(
        &self,
        call: Call<'_>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let timeout = self.config.timeout;
        tokio::time::timeout(timeout, self.exchange_within_deadline(call))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    async fn exchange_within_deadline(
        &self,
        call: Call<'_>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let (mut sender, reused) = match self.take_idle() {
            Some(sender) => (sender, true),
            None => (self.connect().await?, false),
        };
        let response = match send(&mut sender, build_request(&call)?).await {
            Ok(response) => response,
            // A reused connection may have been closed by the agent while idle (restart, idle
            // timeout); that race is not an error of the call, so one fresh connection is tried.
            Err(failure) if reused && (failure.not_sent || call.replay_safe) => {
                tracing::debug!(error = %failure.error, "reused agent connection failed; reconnecting");
                sender = self.connect().await?;
                send(&mut sender, build_request(&call)?)
                    .await
                    .map_err(|f| ClientError::Io(std::io::Error::other(f.error)))?
            }
            Err(failure) => return Err(ClientError::Io(std::io::Error::other(failure.error))),
        };
        let status = response.status();
        let limit = self.config.max_response_bytes;
        let declared = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(ClientError::ResponseTooLarge { limit });
        }
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<LengthLimitError>() {
                    ClientError::ResponseTooLarge { limit }
                } else {
                    ClientError::Io(std::io::Error::other(e))
                }
            })?
            .to_bytes();
        self.put_idle(sender);
        Ok((status, body))
    }

    fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn put_idle(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.config.max_idle_connections {
            idle.push(sender);
        }
    }

    async fn connect(&self) -> Result<Sender, ClientError> {
        let path = &self.config.socket_path;
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.clone(),
                source,
            })?;
        self.check_listener(&stream)?;
        let (sender, connection) = http1::Builder::new()
            .max_buf_size(64 * 1024)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Connect {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?;
        // The connection task ends when every sender is dropped or the agent closes the socket.
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "agent connection ended with an error");
            }
        });
        Ok(sender)
    }
}

impl Transport {
    /// Who listens on the socket, before a byte is sent: the kernel's SO_PEERCRED answer (the
    /// credentials of the process that called `listen()`) must be the client's own uid, root
    /// (a system agent, or systemd holding the socket for socket activation), or the configured
    /// agent uid. Anyone else may have put their own socket in the agent's place to collect the
    /// requests (with their cookies and tokens) that SDKs send for signing.
    fn check_listener(&self, stream: &UnixStream) -> Result<(), ClientError> {
        let path = &self.config.socket_path;
        let connect_error = |source| ClientError::Connect {
            path: path.clone(),
            source,
        };
        let listener_uid = stream.peer_cred().map_err(connect_error)?.uid();
        let own_uid = own_uid().map_err(connect_error)?;
        let mut trusted = vec![own_uid, 0];
        trusted.extend(self.config.agent_uid);
        if trusted.contains(&listener_uid) {
            return Ok(());
        }
        trusted.dedup();
        Err(ClientError::UntrustedAgent {
            path: path.clone(),
            uid: listener_uid,
            trusted,
        })
    }
}

/// The client's effective uid, without unsafe code: the peer credentials of a socket pair are
/// the creator's own.
fn own_uid() -> std::io::Result<u32> {
    let (one, _other) = UnixStream::pair()?;
    Ok(one.peer_cred()?.uid())
}

async fn send(
    sender: &mut Sender,
    request: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, SendFailure> {
    if let Err(error) = sender.ready().await {
        return Err(SendFailure {
            error,
            not_sent: true,
        });
    }
    sender.try_send_request(request).await.map_err(|mut e| {
        let not_sent = e.take_message().is_some();
        SendFailure {
            error: e.into_error(),
            not_sent,
        }
    })
}

fn build_request(call: &Call<'_>) -> Result<Request<Full<Bytes>>, ClientError> {
    let body = call.body.clone().unwrap_or_default();
    let mut builder = Request::builder()
        .method(call.method.clone())
        .uri(call.path)
        // The agent is local; HTTP/1.1 still requires a Host header.
        .header(header::HOST, HeaderValue::from_static("localhost"))
        .header(header::ACCEPT, HeaderValue::from_static("application/json"));
    if call.body.is_some() {
        builder = builder.header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    builder
        .body(Full::new(body))
        .map_err(|e| ClientError::Protocol(format!("cannot build agent request: {e}")))
}
