//! Raw HTTP/1.1 on the agent's Unix socket. The client library sends a request in one go; fault
//! tests need to control when each part arrives: a request held open in the agent (head sent,
//! body pending), or half a request head that never completes.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Longest a test waits for the agent to answer; a guard against hanging, not a synchronization.
const ANSWER_PATIENCE: Duration = Duration::from_secs(60);
/// Largest interim response head read (`HTTP/1.1 100 Continue`).
const MAX_INTERIM_HEAD: usize = 1024;

/// The agent's answer to one request.
#[derive(Debug, Clone)]
pub struct AgentAnswer {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl AgentAnswer {
    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "agent answer is not JSON: {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error.code` of an error answer.
    pub fn error_code(&self) -> Option<String> {
        let json = self.json().ok()?;
        json["error"]["code"].as_str().map(str::to_owned)
    }
}

/// Connects to the agent's socket.
pub async fn connect(socket: &Path) -> Result<UnixStream> {
    UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))
}

/// Writes the head of `POST path` announcing a JSON body of `body_len` bytes with
/// `Expect: 100-continue`, and `Connection: close` so the answer ends with the connection.
pub async fn start_post(stream: &mut UnixStream, path: &str, body_len: usize) -> Result<()> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {body_len}\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    Ok(())
}

/// Writes a whole `POST path` with a JSON `body` and `Connection: close`.
pub async fn post(stream: &mut UnixStream, path: &str, body: &[u8]) -> Result<()> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await?;
    Ok(())
}

/// Waits for `HTTP/1.1 100 Continue`: the agent has read the head and its handler is now
/// reading the body, so the request is in flight inside the agent.
pub async fn await_continue(stream: &mut UnixStream) -> Result<()> {
    let head = tokio::time::timeout(ANSWER_PATIENCE, async {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            ensure!(
                head.len() < MAX_INTERIM_HEAD,
                "interim response head too long"
            );
            let byte = stream.read_u8().await.context("agent closed before 100")?;
            head.push(byte);
        }
        Ok(head)
    })
    .await
    .context("no 100 Continue from the agent")??;
    ensure!(
        head.starts_with(b"HTTP/1.1 100"),
        "expected 100 Continue, got {}",
        String::from_utf8_lossy(&head)
    );
    Ok(())
}

/// Sends `body` and reads the answer to the end of the connection.
pub async fn finish(stream: &mut UnixStream, body: &[u8]) -> Result<AgentAnswer> {
    stream.write_all(body).await?;
    read_answer(stream).await
}

/// `GET path` on a fresh connection, answer read to the end.
pub async fn get(socket: &Path, path: &str) -> Result<AgentAnswer> {
    let mut stream = connect(socket).await?;
    let head = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    read_answer(&mut stream).await
}

/// Reads a response to the end of the connection (the request asked for `Connection: close`).
pub async fn read_answer(stream: &mut UnixStream) -> Result<AgentAnswer> {
    let mut bytes = Vec::new();
    tokio::time::timeout(ANSWER_PATIENCE, stream.read_to_end(&mut bytes))
        .await
        .context("the agent did not finish its answer")??;
    parse(&bytes)
}

fn parse(bytes: &[u8]) -> Result<AgentAnswer> {
    let Some(head_end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!(
            "no complete response head in {:?}",
            String::from_utf8_lossy(bytes)
        );
    };
    let head = std::str::from_utf8(&bytes[..head_end])?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .context("no status code")?
        .parse()
        .context("status code")?;
    Ok(AgentAnswer {
        status,
        body: bytes[head_end + 4..].to_vec(),
    })
}
