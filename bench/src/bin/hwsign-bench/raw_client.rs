//! One benchmark client for two protocols: a blocking Unix-socket client that sends a request
//! prepared once and reads one framed answer, so the hwsign agent (HTTP/1.1, `POST /v1/sign`)
//! and OpenSSH's `ssh-agent` (its binary protocol, `SSH2_AGENTC_SIGN_REQUEST`) are driven by the
//! same code: the same syscalls per call, the same buffers, no HTTP library and no JSON on the
//! client's side. What differs between the two is the server.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

/// How an answer is framed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Framing {
    /// HTTP/1.1: headers up to an empty line, then `content-length` bytes; status must be 200.
    Http,
    /// ssh-agent: a 4-byte big-endian length, then that many bytes; the first one must be the
    /// expected message type.
    SshAgent {
        /// The message type of a successful answer.
        expect: u8,
    },
}

/// A connection with its prepared request.
#[derive(Debug)]
pub(crate) struct RawClient {
    stream: UnixStream,
    request: Vec<u8>,
    framing: Framing,
    buffer: Vec<u8>,
}

impl RawClient {
    /// Connects to `socket`; every [`RawClient::call`] sends `request`.
    pub(crate) fn connect(socket: &Path, request: Vec<u8>, framing: Framing) -> Result<Self> {
        let stream = UnixStream::connect(socket)
            .with_context(|| format!("connecting to {}", socket.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Self {
            stream,
            request,
            framing,
            buffer: Vec::with_capacity(8192),
        })
    }

    /// An HTTP/1.1 `POST path` with a JSON body, as bytes.
    pub(crate) fn http_post(path: &str, json: &[u8]) -> Vec<u8> {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            json.len()
        )
        .into_bytes();
        request.extend_from_slice(json);
        request
    }

    /// Sends the request and reads the whole answer; returns the answer's payload (the HTTP body,
    /// or the ssh-agent message after its type byte).
    pub(crate) fn call(&mut self) -> Result<&[u8]> {
        self.stream.write_all(&self.request)?;
        self.buffer.clear();
        match self.framing {
            Framing::Http => self.read_http(),
            Framing::SshAgent { expect } => self.read_ssh(expect),
        }
    }

    /// `count` calls; the duration of each.
    pub(crate) fn timed_calls(&mut self, count: usize, out: &mut Vec<Duration>) -> Result<()> {
        for _ in 0..count {
            let start = Instant::now();
            self.call()?;
            out.push(start.elapsed());
        }
        Ok(())
    }

    fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk)?;
        ensure!(n > 0, "connection closed mid-answer");
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    fn read_http(&mut self) -> Result<&[u8]> {
        let head_end = loop {
            if let Some(at) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            ensure!(self.buffer.len() < 64 * 1024, "answer headers too long");
            self.fill()?;
        };
        let head = std::str::from_utf8(&self.buffer[..head_end]).context("answer headers")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!(
                "answer: {}",
                head.lines().next().unwrap_or_default().to_owned()
            );
        }
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .context("answer without content-length")?;
        while self.buffer.len() < head_end + length {
            self.fill()?;
        }
        Ok(&self.buffer[head_end..head_end + length])
    }

    fn read_ssh(&mut self, expect: u8) -> Result<&[u8]> {
        while self.buffer.len() < 4 {
            self.fill()?;
        }
        let length = u32::from_be_bytes([
            self.buffer[0],
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
        ]) as usize;
        ensure!(
            (1..=256 * 1024).contains(&length),
            "ssh-agent answer length {length}"
        );
        while self.buffer.len() < 4 + length {
            self.fill()?;
        }
        ensure!(
            self.buffer[4] == expect,
            "ssh-agent answered message type {} (expected {expect})",
            self.buffer[4]
        );
        Ok(&self.buffer[5..4 + length])
    }
}
