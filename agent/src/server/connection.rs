//! One connection: the peer's uid is checked before a byte of the request is read; then hyper
//! serves HTTP/1.1 on it under the configured bounds (request head size, header count, time to
//! send a request head) with keep-alive, until the client closes or the agent shuts down.
//!
//! Refusals (uid not allowed, too many connections, shutting down) are still answered in HTTP,
//! with an error body and `Connection: close`: a client then sees a code rather than a reset.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::api::http::{self as api_http, Body};
use crate::api::{self, ApiError, Context};
use crate::config::Limits;
use crate::peer::Peer;

/// How long a refused client gets to send its request head before the connection is dropped.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

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
pub async fn serve(
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

/// Answers every request on `stream` with `error` and closes the connection.
pub async fn refuse(stream: UnixStream, limits: &Limits, error: ApiError) {
    let code = error.code();
    let message = error.public_message();
    let service = service_fn(move |_request: Request<Incoming>| {
        let response: Response<Body> = api_http::error_with(code, message.clone());
        async move { Ok::<_, Infallible>(response) }
    });
    let connection =
        builder(limits, false, REFUSAL_TIMEOUT).serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(REFUSAL_TIMEOUT * 2, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "refused connection ended with an error"),
        Err(_) => tracing::debug!("refused connection timed out"),
    }
}
