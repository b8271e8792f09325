//! The floor of the agent round trip: a hyper HTTP/1.1 server on a Unix socket, in its own process
//! with the same runtime as the agent, that reads the request body and answers with a fixed body
//! (a real `SignResponse` captured from the agent, so both answers have the same size and
//! headers). The same `AgentClient` talks to it, so the difference to the agent is the agent's own
//! work: JSON, canonicalization, rules, audit, logging, the backend call.

use std::convert::Infallible;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt as _, Full};
use hwsign_bench::fixtures::signing_key;
use hwsign_bench::signers::AwsLcSigner;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

/// The line the child prints once it listens.
const READY: &str = "ready";

/// Child-process entry: serves `socket`, answering every request with the bytes of `response`;
/// with `sign`, each request first makes one raw AWS-LC signature (the minimal agent: the floor
/// of `agent_concurrency_ratio`).
pub(crate) fn serve(socket: &Path, response: &Path, sign: bool) -> Result<()> {
    let body = Bytes::from(std::fs::read(response).context("reading the canned response")?);
    let signer = if sign {
        Some(Arc::new(AwsLcSigner::from_p256(&signing_key(
            "echo-floor",
        )?)?))
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = UnixListener::bind(socket).context("binding the echo socket")?;
        println!("{READY}");
        std::io::stdout().flush()?;
        loop {
            let (stream, _) = listener.accept().await?;
            let body = body.clone();
            let signer = signer.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let body = body.clone();
                    let signer = signer.clone();
                    async move {
                        // Read the whole request, as the agent does before answering.
                        let _ = request.into_body().collect().await;
                        if let Some(signer) = signer {
                            let _ = std::hint::black_box(signer.sign_digest(&[7u8; 32]));
                        }
                        let mut response = Response::new(Full::new(body));
                        response
                            .headers_mut()
                            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// The echo server child process; killed on drop.
#[derive(Debug)]
pub(crate) struct EchoServer {
    child: Child,
    socket: PathBuf,
}

impl EchoServer {
    /// Starts `hwsign-bench echo-server` on a socket in `dir`, answering with `response`, and
    /// waits for its ready line.
    /// With `sign`, every request also makes one raw AWS-LC signature.
    pub(crate) fn start(dir: &Path, response: &[u8], sign: bool) -> Result<Self> {
        let name = if sign { "echo-sign" } else { "echo" };
        let socket = dir.join(format!("{name}.sock"));
        let response_path = dir.join("echo-response.json");
        std::fs::write(&response_path, response)?;
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("echo-server").arg(&socket).arg(&response_path);
        if sign {
            command.arg("--sign");
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .context("starting the echo server")?;
        let stdout = child.stdout.take().context("echo server stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != READY {
            let _ = child.kill();
            bail!("echo server did not start (said {line:?})");
        }
        Ok(Self { child, socket })
    }

    /// Its socket.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
