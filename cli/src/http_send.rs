//! Sending one request over HTTP/1.1 (plain, or TLS with rustls: [`crate::https`]) with hyper's
//! connection API: just what the CLI needs, no pooling, no redirects.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, header};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, ReadBuf};

use crate::https::connect;

/// Request bodies the CLI sends.
pub(crate) type SendBody = BoxBody<Bytes, io::Error>;

/// The largest response body the CLI reads.
pub(crate) const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;

/// An in-memory body.
pub(crate) fn bytes_body(bytes: impl Into<Bytes>) -> SendBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A file body read in chunks while it is sent; `Content-Length` is the size when opened.
pub(crate) async fn file_body(path: &Path) -> anyhow::Result<(SendBody, u64)> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let length = file.metadata().await?.len();
    Ok((FileBody::new(file, length).boxed(), length))
}

/// `length` bytes of a file, read in chunks while they are sent.
pub(crate) struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buffer: Box<[u8]>,
}

impl FileBody {
    /// The next `length` bytes of `file`, from its current position.
    pub(crate) fn new(file: tokio::fs::File, length: u64) -> Self {
        Self {
            file,
            remaining: length,
            buffer: vec![0u8; 64 * 1024].into_boxed_slice(),
        }
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(this.remaining)
            .unwrap_or(usize::MAX)
            .min(this.buffer.len());
        let mut read_buf = ReadBuf::new(&mut this.buffer[..want]);
        match Pin::new(&mut this.file).poll_read(cx, &mut read_buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) if read_buf.filled().is_empty() => {
                // The signed hash covers the size the file had; a shorter file cannot match.
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was sent",
                ))))
            }
            Poll::Ready(Ok(())) => {
                let chunk = Bytes::copy_from_slice(read_buf.filled());
                this.remaining -= chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Sets `Host` from an absolute `http://` or `https://` URI, as it will be signed and sent.
pub(crate) fn set_host(request: &mut Request<SendBody>) -> anyhow::Result<()> {
    let uri = request.uri();
    let default_port = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        _ => bail!("only http:// and https:// URLs can be sent"),
    };
    let authority = uri.authority().context("the URL has no host")?;
    let host = match authority.port_u16() {
        Some(port) if port != default_port => format!("{}:{port}", authority.host()),
        _ => authority.host().to_owned(),
    };
    request
        .headers_mut()
        .insert(header::HOST, HeaderValue::from_str(&host)?);
    Ok(())
}

/// Sends `request` (absolute `http://` or `https://` URI, signed; TLS trusts `tls`'s roots) and
/// reads the whole response, bounded.
pub(crate) async fn send(
    mut request: Request<SendBody>,
    tls: &Arc<ClientConfig>,
) -> anyhow::Result<Response<Bytes>> {
    let uri = request.uri().clone();
    let stream = connect(&uri, tls).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    let connection = tokio::spawn(connection);
    // hyper's connection API sends the target as given: origin form for a direct request.
    let origin: Uri = uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()?;
    *request.uri_mut() = origin;
    let response = sender
        .send_request(request)
        .await
        .context("sending the request")?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_RESPONSE_BODY)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the response body: {e}"))?
        .to_bytes();
    drop(sender);
    connection.abort();
    Ok(Response::from_parts(parts, body))
}
