//! HTTP/1.1 over the agent's Unix socket: a few keep-alive connections kept idle and reused, one
//! transparent reconnect when a reused connection turns out to be dead, a deadline on every
//! exchange and a bound on every answer.
//!
//! A connection has no task of its own: the idle pool keeps hyper's `SendRequest` together with
//! its `Connection` (the state machine doing the socket I/O), and the call that takes it drives
//! that state machine inside its own future while the exchange runs. A call therefore never
//! hands its request to another task and waits to be woken from there (on a multi-thread
//! runtime, a wake-up across worker threads per step); it costs what its own socket reads and
//! writes cost. A call future dropped mid-exchange drops its connection with it, so no
//! connection with an unread answer ever returns to the pool.

use std::future::{Future, poll_fn};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::error::ClientError;

type Sender = SendRequest<Full<Bytes>>;
type Driver = http1::Connection<TokioIo<UnixStream>, Full<Bytes>>;

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
    idle: Mutex<Vec<Connection>>,
}

/// One keep-alive connection to the agent: the handle requests are sent through and the state
/// machine that moves them over the socket, driven by whichever call holds the connection.
struct Connection {
    sender: Sender,
    /// `None` once the connection ended (closed by either side, or failed).
    driver: Option<Driver>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("open", &self.is_open())
            .finish_non_exhaustive()
    }
}

/// A failed send on one connection, with whether the request provably never left.
struct SendFailure {
    error: hyper::Error,
    not_sent: bool,
}

/// Why one exchange on one connection failed.
enum ExchangeFailure {
    /// The request could not be sent or no answer head came back.
    Send(SendFailure),
    /// The answer came but cannot be accepted (too large, broken body).
    Answer(ClientError),
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
        let limit = self.config.max_response_bytes;
        let (mut connection, reused) = match self.take_idle() {
            Some(connection) => (connection, true),
            None => (self.connect().await?, false),
        };
        let answer = match connection.exchange(build_request(&call)?, limit).await {
            // A reused connection may have been closed by the agent while idle (restart, idle
            // timeout); that race is not an error of the call, so one fresh connection is tried.
            Err(ExchangeFailure::Send(failure))
                if reused && (failure.not_sent || call.replay_safe) =>
            {
                tracing::debug!(error = %failure.error, "reused agent connection failed; reconnecting");
                connection = self.connect().await?;
                connection.exchange(build_request(&call)?, limit).await
            }
            other => other,
        };
        let answer = answer.map_err(|failure| match failure {
            ExchangeFailure::Send(failure) => ClientError::Io(std::io::Error::other(failure.error)),
            ExchangeFailure::Answer(error) => error,
        })?;
        self.put_idle(connection);
        Ok(answer)
    }

    /// An idle connection that has not ended, if any. One the agent closed meanwhile is found
    /// out by the exchange's first step, before its request is written (hyper then hands the
    /// request back as not sent, so even a call that is not replay-safe reconnects).
    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(connection) = idle.pop() {
            if connection.is_open() {
                return Some(connection);
            }
        }
        None
    }

    /// Keeps `connection` for the next call if it is still open and the pool has room.
    fn put_idle(&self, connection: Connection) {
        if !connection.is_open() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.config.max_idle_connections {
            idle.push(connection);
        }
    }

    async fn connect(&self) -> Result<Connection, ClientError> {
        let path = &self.config.socket_path;
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.clone(),
                source,
            })?;
        self.check_listener(&stream)?;
        let (sender, driver) = http1::Builder::new()
            .max_buf_size(64 * 1024)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Connect {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?;
        Ok(Connection {
            sender,
            driver: Some(driver),
        })
    }
}

impl Connection {
    fn is_open(&self) -> bool {
        self.driver.is_some() && !self.sender.is_closed()
    }

    /// Sends `request` and reads the whole answer, at most `limit` bytes of body, driving the
    /// connection's I/O in this same future.
    async fn exchange(
        &mut self,
        request: Request<Full<Bytes>>,
        limit: usize,
    ) -> Result<(StatusCode, Bytes), ExchangeFailure> {
        let Self { sender, driver } = self;
        let mut exchange = pin!(exchange_on(sender, request, limit));
        poll_fn(|cx| {
            // The driver first: it makes the sender ready, writes what the exchange queued and
            // hands over what it read; then the exchange takes the next step. Each side's
            // progress wakes this same task, so the two alternate without any other task.
            poll_driver(driver, cx);
            exchange.as_mut().poll(cx)
        })
        .await
    }
}

/// Lets a connection's state machine make whatever progress the socket allows; drops it once it
/// ended, which fails whatever still waits on it (so an exchange on it always completes).
fn poll_driver(driver: &mut Option<Driver>, cx: &mut Context<'_>) {
    let Some(connection) = driver.as_mut() else {
        return;
    };
    if let Poll::Ready(result) = connection.poll_without_shutdown(cx) {
        if let Err(error) = result {
            tracing::debug!(%error, "agent connection ended with an error");
        }
        *driver = None;
    }
}

/// One request and its whole answer through `sender`; the caller drives the connection.
async fn exchange_on(
    sender: &mut Sender,
    request: Request<Full<Bytes>>,
    limit: usize,
) -> Result<(StatusCode, Bytes), ExchangeFailure> {
    let response = send(sender, request).await.map_err(ExchangeFailure::Send)?;
    let status = response.status();
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ExchangeFailure::Answer(ClientError::ResponseTooLarge {
            limit,
        }));
    }
    let body = Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            ExchangeFailure::Answer(if e.is::<LengthLimitError>() {
                ClientError::ResponseTooLarge { limit }
            } else {
                ClientError::Io(std::io::Error::other(e))
            })
        })?
        .to_bytes();
    Ok((status, body))
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
