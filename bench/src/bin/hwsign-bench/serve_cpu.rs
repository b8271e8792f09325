//! `serve_cpu_ratio`: CPU per request of the real `hwsign-verifier serve` release binary, divided
//! by (CPU per request of a plain hyper reverse proxy in front of the same upstream + the raw
//! ECDSA verify of the same request). The proxies' CPU is read from `/proc/<pid>/stat` (utime +
//! stime, clock ticks of 10 ms: batches are sized so a round costs hundreds of ticks); the raw
//! verify is measured in this process on the thread CPU clock.
//!
//! Both proxies get the same signed requests (the realistic 512-byte JSON POST, each with its own
//! nonce) over the same number of keep-alive connections, and forward them to the same hyper
//! upstream in this process, which answers a small JSON body. The plain proxy
//! (`hwsign-bench plain-proxy UPSTREAM`) reads the body in full as `serve` does, forwards with the
//! same hyper-util client and streams the answer back: the difference is verification, the
//! identity and forwarding headers, and the bookkeeping (metrics, limits).

use std::convert::Infallible;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full};
use hwsign_bench::fixtures::{BenchRequest, signing_key};
use hwsign_bench::signers::{InProcessSigner, public_key};
use hwsign_proto::SigningTime;
use hwsign_proto::api::KeyLevel;
use hwsign_verifier::{KeyRegistry, RegisteredKey, SqliteRegistry, VerifyBackend};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::Plan;
use crate::figure::{Figure, Goal};
use crate::measure::{cpu_per_op, median, us};

/// The figure's goal.
const GOAL: Goal = Goal::AtMost(1.3);
/// Keep-alive client connections driving each proxy.
const CONNECTIONS: usize = 8;
/// Linux reports utime and stime in USER_HZ ticks, 100 per second on every architecture.
const TICKS_PER_SEC: f64 = 100.0;
/// The line a child proxy prints once it listens: `listening PORT`.
const READY: &str = "listening ";

/// CPU time (user + system) a process has used so far.
fn process_cpu(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields
        .get(11)
        .zip(fields.get(12))
        .and_then(|(u, s)| Some(u.parse::<u64>().ok()? + s.parse::<u64>().ok()?))
        .context("no utime/stime in /proc stat")?;
    Ok(Duration::from_secs_f64(ticks as f64 / TICKS_PER_SEC))
}

/// A proxy child process, killed on drop.
struct ProxyProcess {
    child: Child,
    addr: SocketAddr,
}

impl ProxyProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until something accepts connections on `addr`.
async fn wait_listening(addr: SocketAddr, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("proxy exited with {status}");
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("proxy did not listen on {addr} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts `hwsign-verifier serve` in front of `upstream` with the bench key registered.
async fn start_serve(
    binary: &Path,
    dir: &Path,
    upstream: SocketAddr,
    capacity: usize,
) -> Result<ProxyProcess> {
    let registry = dir.join("keys.db");
    let public = public_key(&signing_key("serve")?)?;
    SqliteRegistry::open(&registry)?.add(RegisteredKey::new(
        public,
        "bench",
        KeyLevel::Software,
        0,
    ))?;
    let port = hwsign_test_support::ports::free_tcp_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let request = BenchRequest::realistic();
    let config = dir.join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\nupstream = \"http://{upstream}\"\nregistry = \"sqlite:{}\"\n\
             replay_cache = \"memory\"\nreplay_cache_capacity = {capacity}\n\n\
             [verifier]\naudience = {:?}\nhosts = [{:?}]\nreplay_quota_per_key = {capacity}\n",
            registry.display(),
            hwsign_bench::fixtures::AUDIENCE,
            request.authority,
        ),
    )?;
    let mut child = Command::new(binary)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("serve.log"))?)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    wait_listening(addr, &mut child).await?;
    Ok(ProxyProcess { child, addr })
}

/// Starts `hwsign-bench plain-proxy UPSTREAM`.
fn start_plain(upstream: SocketAddr) -> Result<ProxyProcess> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("plain-proxy")
        .arg(upstream.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the plain proxy")?;
    let stdout = child.stdout.take().context("plain proxy stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let Some(port) = line
        .trim()
        .strip_prefix(READY)
        .and_then(|p| p.parse::<u16>().ok())
    else {
        let _ = child.kill();
        bail!("plain proxy did not start (said {line:?})");
    };
    Ok(ProxyProcess {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    })
}

/// Child-process entry: a plain hyper reverse proxy to `upstream` on a free loopback port.
pub(crate) fn plain_proxy(upstream: &str) -> Result<()> {
    let upstream: SocketAddr = upstream.parse().context("upstream address")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("{READY}{}", listener.local_addr()?.port());
        std::io::stdout().flush()?;
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let client = client.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let client = client.clone();
                    async move {
                        let (mut head, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
                        head.uri = format!("http://{upstream}{path}")
                            .parse()
                            .unwrap_or_default();
                        let answer = client
                            .request(Request::from_parts(head, Full::new(body)))
                            .await;
                        let response = match answer {
                            Ok(response) => response.map(boxed_incoming),
                            Err(_) => {
                                let mut bad = Response::new(boxed_bytes(Bytes::new()));
                                *bad.status_mut() = http::StatusCode::BAD_GATEWAY;
                                bad
                            }
                        };
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

type BoxBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

fn boxed_incoming(body: Incoming) -> BoxBody {
    body.boxed()
}

fn boxed_bytes(bytes: Bytes) -> BoxBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// The upstream both proxies forward to, in this process: 200 with a small JSON body.
async fn start_upstream() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let body = Bytes::from_static(br#"{"status":"captured","id":"cap_0042"}"#);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let body = body.clone();
                    async move {
                        let _ = request.into_body().collect().await;
                        let mut response = Response::new(Full::new(body));
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The raw floor's inputs per request: the string to sign and the DER signature.
type RawFloor = Vec<(String, Vec<u8>)>;

/// One signed request, ready to send.
#[derive(Clone)]
struct Prepared {
    request: Request<Full<Bytes>>,
}

/// `count` copies of the realistic request signed now, each with its own nonce; and the raw
/// floor's inputs (string to sign, signature).
fn sign_batch(signer: &InProcessSigner, count: usize) -> Result<(Vec<Prepared>, RawFloor)> {
    let request = BenchRequest::realistic();
    let body_hash = request.body_sha256_hex();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let time = SigningTime::from_unix(i64::try_from(now)?);
    let body = Bytes::from(request.body.clone());
    let mut prepared = Vec::with_capacity(count);
    let mut raw = Vec::with_capacity(count);
    for _ in 0..count {
        let signed = signer.sign_detailed(&request, &body_hash, time)?;
        let mut builder = Request::builder()
            .method(request.method)
            .uri(format!("{}?{}", request.path, request.query));
        for (name, value) in request.headers_with_host() {
            builder = builder.header(name, value);
        }
        for (name, value) in &signed.additions {
            builder = builder.header(name.as_str(), value.as_str());
        }
        prepared.push(Prepared {
            request: builder.body(Full::new(body.clone()))?,
        });
        raw.push((signed.string_to_sign, signed.signature));
    }
    Ok((prepared, raw))
}

/// Sends `requests` through `addr` over [`CONNECTIONS`] keep-alive connections; every answer
/// must be 200.
async fn drive(addr: SocketAddr, requests: Vec<Prepared>) -> Result<()> {
    let per_connection = requests.len().div_ceil(CONNECTIONS);
    let mut tasks = tokio::task::JoinSet::new();
    let mut requests = requests.into_iter();
    for _ in 0..CONNECTIONS {
        let share: Vec<Prepared> = requests.by_ref().take(per_connection).collect();
        tasks.spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            for prepared in share {
                sender.ready().await?;
                let response = sender.send_request(prepared.request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                ensure!(
                    status == http::StatusCode::OK,
                    "proxy answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// CPU per request of the process `pid` while `requests` go through `addr`.
async fn cpu_per_request(pid: u32, addr: SocketAddr, requests: Vec<Prepared>) -> Result<f64> {
    let count = requests.len();
    let before = process_cpu(pid)?;
    drive(addr, requests).await?;
    let after = process_cpu(pid)?;
    Ok((after - before).as_secs_f64() / count.max(1) as f64)
}

/// Measures `serve_cpu_ratio` with the `hwsign-verifier` binary at `verifier_bin`.
pub(crate) async fn figure(plan: &Plan, verifier_bin: &Path) -> Result<Figure> {
    let batch = plan.serve_batch;
    let rounds = plan.serve_rounds;
    let total = batch * (rounds + 1);
    let dir = tempfile::Builder::new()
        .prefix("hwsign-bench-serve-")
        .tempdir()?;
    let upstream = start_upstream().await?;
    let serve = start_serve(verifier_bin, dir.path(), upstream, total.max(1)).await?;
    let plain = start_plain(upstream)?;
    let key = signing_key("serve")?;
    let signer = InProcessSigner::new(&key, true)?;
    let raw_key = Arc::new(VerifyBackend::default().prepare(&public_key(&key)?));

    // Warm-up: connections, pools, caches.
    let (warm, _) = sign_batch(&signer, batch)?;
    drive(serve.addr, warm.clone()).await?;
    drive(plain.addr, warm).await?;

    let (mut ratios, mut subject, mut proxy_floor, mut verify_floor) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (requests, raw) = sign_batch(&signer, batch)?;
        let t_verify = cpu_per_op(raw.len(), |i| {
            let (string_to_sign, signature) = &raw[i];
            ensure!(
                raw_key.verify(string_to_sign.as_bytes(), signature),
                "raw verify refused"
            );
            Ok(())
        })?;
        let (t_serve, t_plain) = if round % 2 == 0 {
            let s = cpu_per_request(serve.pid(), serve.addr, requests.clone()).await?;
            (s, cpu_per_request(plain.pid(), plain.addr, requests).await?)
        } else {
            let p = cpu_per_request(plain.pid(), plain.addr, requests.clone()).await?;
            (cpu_per_request(serve.pid(), serve.addr, requests).await?, p)
        };
        ratios.push(t_serve / (t_plain + t_verify));
        subject.push(t_serve);
        proxy_floor.push(t_plain);
        verify_floor.push(t_verify);
    }
    let (t_serve, t_plain, t_verify) = (median(subject), median(proxy_floor), median(verify_floor));
    Ok(Figure::measured(
        "serve_cpu_ratio",
        median(ratios),
        GOAL,
        format!(
            "hwsign-verifier serve {} CPU/request vs plain hyper proxy {} + raw verify {} ({}); {batch} requests × {rounds} rounds over {CONNECTIONS} keep-alive connections, process CPU from /proc/<pid>/stat",
            us(t_serve),
            us(t_plain),
            us(t_verify),
            VerifyBackend::default().name(),
        ),
    ))
}
