//! Raw HTTP/1.1 over TCP: the request is written byte for byte as the test built it, and the
//! response is read to the end (`Connection: close`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A parsed response.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Header fields in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "response body is not JSON: {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Serializes `request` (whose URI may be absolute or origin-form) as HTTP/1.1 bytes: request
/// line with path and query, every header in order, `Content-Length` unless present, `Connection:
/// close`, and the body.
pub fn to_raw(request: &http::Request<Vec<u8>>) -> Result<Vec<u8>> {
    let uri = request.uri();
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = format!("{} {target} HTTP/1.1\r\n", request.method()).into_bytes();
    let has_host = request.headers().contains_key(http::header::HOST);
    if !has_host {
        let authority = uri
            .authority()
            .context("request has neither Host nor authority")?;
        out.extend_from_slice(format!("host: {authority}\r\n").as_bytes());
    }
    for (name, value) in request.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !request.headers().contains_key(http::header::CONTENT_LENGTH) {
        out.extend_from_slice(format!("content-length: {}\r\n", request.body().len()).as_bytes());
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(request.body());
    Ok(out)
}

/// Writes `bytes` to `addr` and reads the whole response (30 s bound).
pub async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Result<RawResponse> {
    tokio::time::timeout(Duration::from_secs(30), async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        exchange(stream, bytes).await
    })
    .await
    .context("response timed out")?
}

/// Writes `bytes` to an open connection (plain or TLS) and reads the whole response.
pub async fn exchange<S>(mut stream: S, bytes: &[u8]) -> Result<RawResponse>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // A server may answer and close before the whole request is sent (413 before the body is
    // read): then the write fails, and the answer is still there to read, as curl reads it.
    if let Err(error) = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    }
    .await
        && !matches!(
            error.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        )
    {
        return Err(error.into());
    }
    let mut response = Vec::new();
    // A peer that closes without a TLS close_notify still delivered what it sent.
    if let Err(error) = stream.read_to_end(&mut response).await
        && response.is_empty()
    {
        return Err(error.into());
    }
    parse_response(&response)
}

fn parse_response(bytes: &[u8]) -> Result<RawResponse> {
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of response head")?;
    let head = std::str::from_utf8(&bytes[..head_end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("empty response")?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .context("no status code")?
        .parse()?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').context("bad header line")?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let raw_body = &bytes[head_end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(raw_body)?
    } else {
        raw_body.to_vec()
    };
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size_text = std::str::from_utf8(&data[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
