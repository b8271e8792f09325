//! One connection: the peer's uid is checked before a byte of the request is read; then hyper
//! serves HTTP/1.1 on it under the configured bounds (request head size, header count, time to
//! send a request head) with keep-alive, until the client closes or the agent shuts down.
//!
//! Refusals (uid not allowed, too many connections, shutting down) are still answered in HTTP,
//! with an error body and `Connection: close`: a client then sees a code rather than a reset.
//! They are answered at once, before the request is read, so a slow client cannot hold a
//! refusal slot.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::sync::watch;

use hwsign_proto::api::ErrorResponse;

use crate::api::{self, ApiError, Context};
use crate::config::Limits;
use crate::peer::Peer;

use super::write_deadline::WriteDeadline;

/// How long a refusal waits for the request head before answering anyway.
pub(super) const REFUSAL_HEAD_WAIT: Duration = Duration::from_millis(250);
/// How long a refused connection may take to accept its answer.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a refused connection stays open after its answer (see [`refuse`]).
pub(super) const REFUSAL_LINGER: Duration = Duration::from_millis(100);

fn builder(limits: &Limits, keep_alive: bool, header_timeout: Duration) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(keep_alive);
    builder
}

/// Serves a connection of a permitted peer until it closes; on `shutdown`, finishes the request
/// in progress (if any) and closes.
pub(super) async fn serve(
    ctx: Arc<Context>,
    stream: UnixStream,
    peer: Peer,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = ctx.config.limits.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let ctx = Arc::clone(&ctx);
        async move { Ok::<_, Infallible>(api::handle(ctx, peer, request).await) }
    });
    let stream = WriteDeadline::new(stream, limits.write_timeout());
    let connection = builder(&limits, true, limits.header_read_timeout())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = async { drop(shutdown.wait_for(|stop| *stop).await) } => {
            connection.as_mut().graceful_shutdown();
            connection.as_mut().await
        }
    };
    if let Err(e) = result {
        // Timeouts, oversized heads and clients vanishing mid-request end up here; hyper has
        // already answered what could be answered (408/431/400).
        tracing::debug!(uid = peer.uid, error = %e, "connection ended with an error");
    }
}

/// Answers `error` on `stream` and closes the connection, without parsing the request and
/// without waiting long for it: the answer goes out once the request head is in (an HTTP client
/// does not expect an answer before it has sent its request), or after [`REFUSAL_HEAD_WAIT`]
/// whatever the client sent by then. While refusals waited for complete heads (up to 2 s
/// each), slow clients held every refusal slot and the over-cap connections of everybody else
/// were closed without an answer.
///
/// After the answer the write side is shut down and what the client still sends (its body) is
/// read and discarded for at most [`REFUSAL_LINGER`] and a bounded number of bytes, so that the
/// close does not reset the connection before the client has read the answer.
pub(super) async fn refuse(mut stream: UnixStream, limits: &Limits, error: ApiError) {
    let head_limit = limits.max_header_bytes;
    let _ = tokio::time::timeout(REFUSAL_HEAD_WAIT, async {
        let mut seen = 0usize;
        let mut tail = [0u8; 3];
        let mut buf = [0u8; 4096];
        while seen < head_limit {
            let n = match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = buf.get(..n).unwrap_or_default();
            let mut window = Vec::with_capacity(n + 3);
            window.extend_from_slice(&tail[..seen.min(3)]);
            window.extend_from_slice(chunk);
            if window.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
            seen = seen.saturating_add(n);
            let keep = window.len().min(3);
            if let Some(last) = window.get(window.len() - keep..) {
                tail[..keep].copy_from_slice(last);
            }
        }
    })
    .await;
    let answer = refusal_bytes(&error);
    let written = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "refused connection ended with an error");
            return;
        }
        Err(_) => {
            tracing::debug!("refused connection did not take the answer in time");
            return;
        }
    }
    let budget = limits.max_body_bytes.saturating_add(head_limit);
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        let mut sink = [0u8; 4096];
        let mut read = 0usize;
        while read < budget {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read = read.saturating_add(n),
            }
        }
    })
    .await;
}

/// The whole HTTP/1.1 answer for a refusal: the error body with `Connection: close`.
fn refusal_bytes(error: &ApiError) -> Vec<u8> {
    let code = error.code();
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(&ErrorResponse::new(code, error.public_message()))
        .unwrap_or_else(|_| {
            br#"{"error":{"code":"internal","message":"internal error"}}"#.to_vec()
        });
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_whole_http_answers() {
        let answer = refusal_bytes(&ApiError::Unavailable);
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(
            head.contains(&format!("\r\ncontent-length: {}", body.len())),
            "{head}"
        );
        assert!(body.contains(r#""code":"unavailable""#), "{body}");
        let answer = refusal_bytes(&ApiError::TooManyConnections(2));
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 429 Too Many Requests"));
    }
}
