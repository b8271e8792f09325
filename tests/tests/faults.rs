//! Faults (issue #6 §4), each a real fault against the real `hwsign-agent` binary with an exact
//! expected outcome: the TPM dying under load, the agent SIGKILLed while creating keys, SIGTERM
//! with requests in flight, and a thousand connections that never finish their request head.
//! Waits are bounded (a hang fails the test); nothing asserts how long anything took.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use hwsign_client::{AgentClient, AgentErrorCode, ClientError, Signer};
use hwsign_e2e::resources::{memory, raise_fd_limit};
use hwsign_e2e::{AUDIENCE, AgentProcess, ApiServer, agent_raw, send, wait};
use hwsign_proto::PublicKey;
use hwsign_proto::api::{HeaderField, KeyLevel, SignRequest, StatusResponse};
use hwsign_test_support::swtpm::Swtpm;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

const SOFTWARE: &str = "[backends.software]\nenabled = true\n";
/// Concurrent clients in the load tests.
const CLIENTS: usize = 6;
/// Stalled connections in the slowloris tests.
const STALLED: usize = 1000;
/// Growth of the agent's resident memory the slowloris tests tolerate.
const MEMORY_BOUND_KIB: u64 = 50 * 1024;

fn tpm_config(swtpm: &Swtpm) -> String {
    format!(
        "{SOFTWARE}[backends.tpm]\ntcti = \"{}\"\nrequest_timeout_secs = 30\n",
        swtpm.tcti()
    )
}

fn get(url: &str) -> Result<http::Request<Vec<u8>>> {
    Ok(http::Request::get(url).body(Vec::new())?)
}

/// Signs a GET with `signer` and has the API verify it; `Ok(level)` when accepted.
async fn sign_and_verify(
    signer: &Signer,
    server: &ApiServer,
    path: &str,
) -> Result<Result<String, ClientError>> {
    let mut request = get(&server.url(path))?;
    if let Err(e) = signer.sign_request(&mut request).await {
        return Ok(Err(e));
    }
    let response = send(server, &request).await?;
    ensure!(
        response.status == 200,
        "the API refused a signed request: {} {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    Ok(Ok(response.json()?["level"]
        .as_str()
        .unwrap_or_default()
        .to_owned()))
}

fn backend_status(status: &StatusResponse, name: &str) -> Result<bool> {
    Ok(status
        .backends
        .iter()
        .find(|b| b.name == name)
        .with_context(|| format!("no {name} backend in {status:?}"))?
        .available)
}

fn is_backend_unavailable(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Agent {
            code: AgentErrorCode::BackendUnavailable,
            status: 503,
            ..
        }
    )
}

/// What the load clients of the TPM test saw, by phase: 0 before the fault, 1 while swtpm is
/// gone, 2 after it came back. A result is filed under the phase current when it arrived.
#[derive(Default)]
struct Tally {
    phase: AtomicUsize,
    ok: [[AtomicUsize; 3]; CLIENTS],
    unavailable: [[AtomicUsize; 3]; CLIENTS],
    failures: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Tally {
    fn every_client(&self, counts: &[[AtomicUsize; 3]; CLIENTS], phase: usize, n: usize) -> bool {
        counts.iter().all(|c| c[phase].load(Ordering::SeqCst) >= n)
    }

    fn summary(&self) -> String {
        let read = |c: &[[AtomicUsize; 3]; CLIENTS]| -> Vec<[usize; 3]> {
            c.iter()
                .map(|p| std::array::from_fn(|i| p[i].load(Ordering::SeqCst)))
                .collect()
        };
        format!(
            "ok {:?}, unavailable {:?}, failures {:?}",
            read(&self.ok),
            read(&self.unavailable),
            self.failures.lock().map(|f| f.clone()).unwrap_or_default()
        )
    }
}

async fn tpm_load_client(tally: Arc<Tally>, me: usize, signer: Signer, server: Arc<ApiServer>) {
    let mut i = 0;
    while !tally.stop.load(Ordering::SeqCst) {
        i += 1;
        let outcome = sign_and_verify(&signer, &server, &format!("/load/{me}/{i}")).await;
        let phase = tally.phase.load(Ordering::SeqCst);
        match outcome {
            Ok(Ok(level)) if level == "tpm" => {
                tally.ok[me][phase].fetch_add(1, Ordering::SeqCst);
            }
            Ok(Err(e)) if is_backend_unavailable(&e) && phase > 0 => {
                tally.unavailable[me][phase].fetch_add(1, Ordering::SeqCst);
            }
            other => {
                let text = match other {
                    Ok(Ok(level)) => format!("accepted at level {level}"),
                    Ok(Err(e)) => format!("{e:#}"),
                    Err(e) => format!("{e:#}"),
                };
                if let Ok(mut failures) = tally.failures.lock() {
                    failures.push(format!("client {me}, phase {phase}: {text}"));
                }
                return;
            }
        }
    }
}

/// swtpm is killed while clients sign with a TPM key: they get `backend_unavailable` (not a
/// hang, not a 500), a software key on the same agent keeps signing, and when swtpm is back the
/// same agent process signs with the TPM key again. Afterwards the TPM holds no object.
#[tokio::test(flavor = "multi_thread")]
async fn faults_swtpm_killed_under_load_then_recovered() -> Result<()> {
    let mut swtpm = Swtpm::start_tcp()?;
    let mut agent = AgentProcess::start_with(&tpm_config(&swtpm), &[])?;
    let pid = agent.pid();
    let server = Arc::new(ApiServer::start().await?);
    let client = agent.client();
    let (tpm_key, tpm_public) = hwsign_e2e::create_key(&client, "tpm", "under-load").await?;
    server.register(&tpm_public, KeyLevel::Tpm)?;
    let (sw_key, sw_public) = hwsign_e2e::create_key(&client, "software", "bystander").await?;
    server.register(&sw_public, KeyLevel::Software)?;
    let bystander = Signer::new(client.clone(), sw_key, AUDIENCE);

    let tally = Arc::new(Tally::default());
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|me| {
            let signer = Signer::new(agent.client(), tpm_key.clone(), AUDIENCE);
            tokio::spawn(tpm_load_client(
                Arc::clone(&tally),
                me,
                signer,
                Arc::clone(&server),
            ))
        })
        .collect();
    let failed = || !tally.failures.lock().map(|f| f.is_empty()).unwrap_or(false);
    let summary = || tally.summary();

    wait::until(
        "every client to sign before the fault",
        || failed() || tally.every_client(&tally.ok, 0, 3),
        summary,
    )
    .await?;
    tally.phase.store(1, Ordering::SeqCst);
    swtpm.power_off()?;
    wait::until(
        "every client to get backend_unavailable",
        || failed() || tally.every_client(&tally.unavailable, 1, 2),
        summary,
    )
    .await?;
    ensure!(!failed(), "{}", summary());

    let status = client.status().await?;
    ensure!(!backend_status(&status, "tpm")?, "tpm reported available");
    ensure!(backend_status(&status, "software")?);
    for i in 0..20 {
        let level = sign_and_verify(&bystander, &server, &format!("/bystander/{i}")).await??;
        ensure!(level == "software");
    }

    tally.phase.store(2, Ordering::SeqCst);
    swtpm.restart()?;
    wait::until(
        "every client to sign again after swtpm returned",
        || failed() || tally.every_client(&tally.ok, 2, 3),
        summary,
    )
    .await?;
    tally.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await?;
    }
    ensure!(!failed(), "{}", summary());
    println!("faults: swtpm kill under load: {}", summary());
    ensure!(agent.pid() == pid, "the agent was restarted");
    ensure!(backend_status(&client.status().await?, "tpm")?);

    ensure!(
        agent.stop()?,
        "agent did not exit cleanly:\n{}",
        agent.log()
    );
    let output = swtpm
        .tool("tpm2_getcap")
        .arg("handles-transient")
        .output()?;
    ensure!(output.status.success(), "tpm2_getcap: {output:?}");
    let listed = String::from_utf8_lossy(&output.stdout);
    ensure!(
        listed.trim().is_empty(),
        "objects left in the TPM: {listed}"
    );
    Ok(())
}

/// Every file under `dir` (recursively), relative paths.
fn files_under(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path.strip_prefix(dir)?.display().to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// After a restart: the acknowledged keys are listed, every listed key of `backend` signs a
/// request the API accepts, key files and listed keys correspond one to one, no temporary file
/// is left, and every audit record is whole.
async fn check_after_restart(
    agent: &AgentProcess,
    server: &ApiServer,
    registered: &mut BTreeSet<String>,
    acknowledged: &BTreeSet<String>,
    backend: &str,
    level: KeyLevel,
) -> Result<()> {
    let keys: Vec<_> = agent
        .client()
        .list_keys()
        .await?
        .into_iter()
        .filter(|k| k.backend == backend)
        .collect();
    let listed: BTreeSet<String> = keys.iter().map(|k| k.id.clone()).collect();
    ensure!(
        acknowledged.is_subset(&listed),
        "acknowledged keys missing after restart: {:?}",
        acknowledged.difference(&listed).collect::<Vec<_>>()
    );
    for key in &keys {
        if registered.insert(key.id.clone()) {
            server.register(&PublicKey::from_spki_pem(&key.public_key_pem)?, level)?;
        }
        let signer = Signer::new(agent.client(), key.id.clone(), AUDIENCE);
        let accepted = sign_and_verify(&signer, server, "/after-crash").await?;
        ensure!(
            accepted.as_deref().ok() == Some(level.as_str()),
            "{}: {accepted:?}",
            key.id
        );
    }
    let files = files_under(&agent.state_dir())?;
    ensure!(
        !files.iter().any(|f| f.contains(".tmp-")),
        "temporary files left: {files:?}"
    );
    // The audit log is appended to while keys are created: no record may be cut in half.
    let audit = std::fs::read_to_string(agent.state_dir().join("audit.jsonl"))?;
    ensure!(
        audit.ends_with('\n'),
        "the audit log ends in a partial record"
    );
    for line in audit.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .with_context(|| format!("audit record is not JSON: {line}"))?;
    }
    let key_files = files
        .iter()
        .filter(|f| match backend {
            "software" => f.starts_with("software/") && f.ends_with(".key"),
            _ => f.starts_with("tpm/key-") && f.ends_with(".json"),
        })
        .count();
    ensure!(
        key_files == keys.len(),
        "{key_files} key files but {} keys listed: {files:?}",
        keys.len()
    );
    Ok(())
}

/// How long one `create_key` of `backend` takes on this machine (median of a few), so the kill
/// points can be spread over the whole creation whatever the disk's fsync or the TPM costs.
async fn creation_time(agent: &AgentProcess, backend: &str) -> Result<Duration> {
    let mut times = Vec::new();
    for i in 0..5 {
        let start = std::time::Instant::now();
        agent
            .client()
            .create_key(backend, &format!("calibration-{i}"))
            .await?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// SIGKILLs the agent at `iterations` points of a `create_key` (the first right after the
/// request is written, the others spread over 1.5 times a typical creation) and restarts it.
async fn killed_during_creation(
    agent: &mut AgentProcess,
    backend: &str,
    level: KeyLevel,
    iterations: u32,
) -> Result<()> {
    let server = ApiServer::start().await?;
    let mut registered = BTreeSet::new();
    let mut acknowledged = BTreeSet::new();
    let typical = creation_time(agent, backend).await?;
    let mut interrupted = 0;
    for i in 0..iterations {
        let body = serde_json::to_vec(&serde_json::json!({
            "backend": backend,
            "label": format!("crash-{i}"),
        }))?;
        let mut stream = agent_raw::connect(agent.socket()).await?;
        agent_raw::post(&mut stream, "/v1/keys", &body).await?;
        let answer = tokio::spawn(async move { agent_raw::read_answer(&mut stream).await });
        let delay = typical * 3 * i / (2 * iterations);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        tokio::task::block_in_place(|| agent.kill())?;
        match answer.await? {
            Ok(answer) if answer.status == 201 => {
                let id = answer.json()?["id"]
                    .as_str()
                    .context("created key without id")?
                    .to_owned();
                acknowledged.insert(id);
            }
            Ok(answer) => anyhow::bail!(
                "creation answered {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ),
            Err(_) => interrupted += 1,
        }
        tokio::task::block_in_place(|| agent.restart(&[]))?;
        check_after_restart(
            agent,
            &server,
            &mut registered,
            &acknowledged,
            backend,
            level,
        )
        .await
        .with_context(|| format!("iteration {i}"))?;
    }
    let log = agent.log();
    ensure!(
        !log.contains("ERROR") && !log.contains("panicked"),
        "the agent logged errors:\n{log}"
    );
    println!(
        "faults: {backend}: {iterations} kills over {typical:?} creations: {} acknowledged, \
         {interrupted} interrupted, {} keys on disk (5 from calibration)",
        acknowledged.len(),
        registered.len()
    );
    Ok(())
}

/// A SIGKILL at any point of a software key creation leaves either a complete key or none.
#[tokio::test(flavor = "multi_thread")]
async fn faults_sigkill_during_software_key_creation() -> Result<()> {
    let mut agent = AgentProcess::start()?;
    killed_during_creation(&mut agent, "software", KeyLevel::Software, 40).await
}

/// The same for TPM keys: the blob files are complete or absent, and objects the killed agent
/// left loaded in the TPM do not exhaust its three slots.
#[tokio::test(flavor = "multi_thread")]
async fn faults_sigkill_during_tpm_key_creation() -> Result<()> {
    let swtpm = Swtpm::start_tcp()?;
    let mut agent = AgentProcess::start_with(&tpm_config(&swtpm), &[])?;
    killed_during_creation(&mut agent, "tpm", KeyLevel::Tpm, 12).await?;
    ensure!(agent.stop()?, "agent did not exit cleanly");
    let output = swtpm
        .tool("tpm2_getcap")
        .arg("handles-transient")
        .output()?;
    ensure!(output.status.success(), "tpm2_getcap: {output:?}");
    let listed = String::from_utf8_lossy(&output.stdout);
    ensure!(
        listed.trim().is_empty(),
        "objects left in the TPM: {listed}"
    );
    Ok(())
}

/// What the agent is asked to sign: a bodiless GET of `path` on `authority`.
fn sign_request(key_id: &str, authority: &str, path: &str) -> SignRequest {
    SignRequest {
        key_id: key_id.to_owned(),
        audience: AUDIENCE.to_owned(),
        method: "GET".into(),
        authority: authority.to_owned(),
        path: path.to_owned(),
        query: String::new(),
        headers: Vec::new(),
        body_sha256: hex::encode(Sha256::digest(b"")),
        signed_headers: Vec::new(),
        presign_expires_secs: None,
        encoding: Default::default(),
    }
}

/// Sends the GET that `headers` (the agent's answer to [`sign_request`]) sign to the API.
async fn verify_signed_get(server: &ApiServer, path: &str, headers: &[HeaderField]) -> Result<()> {
    let mut request = get(&server.url(path))?;
    for field in headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(field.name.as_bytes())?,
            http::HeaderValue::from_str(&field.value)?,
        );
    }
    let response = send(server, &request).await?;
    ensure!(
        response.status == 200,
        "{path}: {} {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    Ok(())
}

/// SIGTERM while requests are inside the agent (head read, handler waiting for the body) and
/// while clients keep signing: every request the agent took completes with 200 and a signature
/// the API accepts; later calls find the socket closed; the agent exits with status 0.
#[tokio::test(flavor = "multi_thread")]
async fn faults_sigterm_drains_requests_in_flight() -> Result<()> {
    const HELD: usize = 40;
    let mut agent = AgentProcess::start_with(
        &format!("{SOFTWARE}[limits]\nshutdown_grace_ms = 60000\n"),
        &[],
    )?;
    let server = ApiServer::start().await?;
    let (key_id, public) = hwsign_e2e::create_key(&agent.client(), "software", "drain").await?;
    server.register(&public, KeyLevel::Software)?;

    let mut held = Vec::new();
    for i in 0..HELD {
        let path = format!("/held/{i}");
        let body = serde_json::to_vec(&sign_request(&key_id, &server.authority(), &path))?;
        let mut stream = agent_raw::connect(agent.socket()).await?;
        agent_raw::start_post(&mut stream, "/v1/sign", body.len()).await?;
        held.push((stream, path, body));
    }
    for (stream, _, _) in &mut held {
        agent_raw::await_continue(stream).await?;
    }

    let signed = Arc::new(AtomicUsize::new(0));
    let loaders: Vec<_> = (0..CLIENTS)
        .map(|me| {
            let client = agent.client();
            let request = sign_request(&key_id, &server.authority(), &format!("/loader/{me}"));
            let signed = Arc::clone(&signed);
            tokio::spawn(async move {
                loop {
                    match client.sign(&request).await {
                        Ok(_) => {
                            signed.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(ClientError::Connect { .. }) => return Ok(()),
                        Err(e) => return Err(anyhow::Error::new(e).context(format!("loader {me}"))),
                    }
                }
            })
        })
        .collect();
    wait::until(
        "the loaders to sign",
        || signed.load(Ordering::SeqCst) >= CLIENTS * 10,
        || format!("{signed:?}"),
    )
    .await?;

    let pid = Pid::from_raw(i32::try_from(agent.pid().context("agent not running")?)?);
    kill(pid, Signal::SIGTERM)?;
    for loader in loaders {
        tokio::time::timeout(wait::PATIENCE, loader)
            .await
            .context("a loader was still being served long after SIGTERM")???;
    }
    for (mut stream, path, body) in held {
        let answer = agent_raw::finish(&mut stream, &body).await?;
        ensure!(
            answer.status == 200,
            "held request {path}: {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        let response: hwsign_proto::api::SignResponse = serde_json::from_slice(&answer.body)?;
        verify_signed_get(&server, &path, &response.headers).await?;
    }
    ensure!(
        agent_raw::connect(agent.socket()).await.is_err(),
        "the agent still accepts connections after SIGTERM"
    );
    let exited_cleanly = tokio::task::block_in_place(|| agent.stop())?;
    ensure!(exited_cleanly, "exit status not 0:\n{}", agent.log());
    println!(
        "faults: SIGTERM drained {HELD} held requests; loaders signed {} before it",
        signed.load(Ordering::SeqCst)
    );
    Ok(())
}

/// Opens [`STALLED`] connections to the agent that each send half a request head and stop.
async fn stall_agent(socket: &Path) -> Result<Vec<tokio::net::UnixStream>> {
    let mut stalled = Vec::with_capacity(STALLED);
    while stalled.len() < STALLED {
        let mut stream = match tokio::net::UnixStream::connect(socket).await {
            Ok(stream) => stream,
            // The listen backlog is full while the agent catches up with accepting.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::task::yield_now().await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // The agent may already have refused (cap reached) and closed; that is its right.
        let _ = stream
            .write_all(b"POST /v1/sign HTTP/1.1\r\nhost: localhost\r\ncontent-le")
            .await;
        stalled.push(stream);
    }
    Ok(stalled)
}

/// Waits until the agent has closed every stalled connection (the header read timeout).
async fn closed_by_agent(stalled: Vec<tokio::net::UnixStream>) -> Result<()> {
    use tokio::io::AsyncReadExt;
    for mut stream in stalled {
        let mut sink = Vec::new();
        // EOF, with or without a 408 first, or a reset: either way the agent let go.
        let _ = tokio::time::timeout(wait::PATIENCE, stream.read_to_end(&mut sink))
            .await
            .context("a stalled connection was never closed by the agent")?;
    }
    Ok(())
}

/// A thousand half-sent request heads, with room for all of them under the connection cap: the
/// agent's memory stays bounded, a well-behaved client is served meanwhile, and the header read
/// timeout closes every stalled connection.
#[tokio::test(flavor = "multi_thread")]
async fn faults_slowloris_on_the_agent_socket_stays_bounded() -> Result<()> {
    raise_fd_limit(4 * STALLED as u64)?;
    let agent = AgentProcess::start_with(
        &format!("max_connections = 2048\n{SOFTWARE}[limits]\nheader_read_timeout_ms = 3000\n"),
        &[],
    )?;
    let pid = agent.pid().context("agent not running")?;
    let server = ApiServer::start().await?;
    let (key_id, public) = hwsign_e2e::create_key(&agent.client(), "software", "loris").await?;
    server.register(&public, KeyLevel::Software)?;
    let signer = Signer::new(agent.client(), key_id.clone(), AUDIENCE);
    sign_and_verify(&signer, &server, "/warm").await??;
    let before = memory(pid)?;

    let stalled = stall_agent(agent.socket()).await?;
    let fresh = Signer::new(AgentClient::new(agent.socket()), key_id, AUDIENCE);
    let level = sign_and_verify(&fresh, &server, "/while-stalled").await??;
    ensure!(level == "software");
    let during = memory(pid)?;
    closed_by_agent(stalled).await?;
    let after = memory(pid)?;
    println!(
        "faults: slowloris x{STALLED}: agent RSS {} KiB before, {} KiB during, peak {} KiB, \
         {} KiB after",
        before.rss_kib, during.rss_kib, after.peak_kib, after.rss_kib
    );
    ensure!(
        after.peak_kib.saturating_sub(before.rss_kib) < MEMORY_BOUND_KIB,
        "agent memory grew from {} KiB to a peak of {} KiB",
        before.rss_kib,
        after.peak_kib
    );
    sign_and_verify(&fresh, &server, "/after").await??;
    Ok(())
}

/// A thousand half-sent request heads against a small connection cap: the stalled connections
/// fill it, later ones are refused (503 `unavailable` or closed), and a well-behaved client that
/// retries is served once the header read timeout has freed the slots.
#[tokio::test(flavor = "multi_thread")]
async fn faults_slowloris_over_the_connection_cap_still_serves() -> Result<()> {
    raise_fd_limit(4 * STALLED as u64)?;
    let agent = AgentProcess::start_with(
        &format!("max_connections = 16\n{SOFTWARE}[limits]\nheader_read_timeout_ms = 1000\n"),
        &[],
    )?;
    let pid = agent.pid().context("agent not running")?;
    let (key_id, _) = hwsign_e2e::create_key(&agent.client(), "software", "capped").await?;
    let request = sign_request(&key_id, "api.example.test", "/capped");
    let before = memory(pid)?;

    let stalled = stall_agent(agent.socket()).await?;
    let client = AgentClient::new(agent.socket());
    let mut refused = 0;
    let mut closed = 0;
    let served = tokio::time::timeout(wait::PATIENCE, async {
        loop {
            match client.sign(&request).await {
                Ok(response) => return Ok(response),
                Err(ClientError::Agent {
                    code: AgentErrorCode::Unavailable,
                    status: 503,
                    ..
                }) => refused += 1,
                // Past the refusal slots the agent closes without answering; while it catches
                // up with accepting, the listen backlog may be full.
                Err(ClientError::Io(_) | ClientError::Connect { .. }) => closed += 1,
                Err(e) => return Err(anyhow::Error::new(e)),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .context("the well-behaved client was never served")??;
    ensure!(!served.headers.is_empty());
    let after = memory(pid)?;
    println!(
        "faults: slowloris x{STALLED} over a cap of 16: client refused {refused}x, closed \
         {closed}x before being served; agent RSS {} KiB before, peak {} KiB",
        before.rss_kib, after.peak_kib
    );
    ensure!(
        after.peak_kib.saturating_sub(before.rss_kib) < MEMORY_BOUND_KIB,
        "agent memory grew from {} KiB to a peak of {} KiB",
        before.rss_kib,
        after.peak_kib
    );
    drop(stalled);
    Ok(())
}

/// The same against the verifier-protected API over TCP: with a thousand half-sent heads open,
/// a signed request is still verified and answered.
#[tokio::test(flavor = "multi_thread")]
async fn faults_slowloris_on_the_api_leaves_it_serving() -> Result<()> {
    raise_fd_limit(4 * STALLED as u64)?;
    let agent = AgentProcess::start()?;
    let server = ApiServer::start().await?;
    let (key_id, public) = hwsign_e2e::create_key(&agent.client(), "software", "api").await?;
    server.register(&public, KeyLevel::Software)?;
    let signer = Signer::new(agent.client(), key_id, AUDIENCE);
    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        let mut stream = tokio::net::TcpStream::connect(server.addr).await?;
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nhost: 127.0.0.1\r\nauthoriz")
            .await?;
        stalled.push(stream);
    }
    let level = sign_and_verify(&signer, &server, "/while-stalled").await??;
    ensure!(level == "software");
    drop(stalled);
    Ok(())
}

/// A POST whose head is complete and whose body (100 bytes declared) stops after 10 bytes.
const STALLED_BODY: &[u8] =
    b"POST /v1/sign HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
content-length: 100\r\n\r\n{\"key_id\":";

/// Opens a connection and sends [`STALLED_BODY`].
async fn stall_body(socket: &Path) -> Result<tokio::net::UnixStream> {
    let mut stream = tokio::net::UnixStream::connect(socket).await?;
    stream.write_all(STALLED_BODY).await?;
    Ok(stream)
}

/// Issue 9 §5: a permitted caller that sends a complete request head and then stalls the body
/// no longer holds its connection slot forever: past `body_read_timeout_ms` the agent answers
/// `408 request_timeout` and closes, and the slots serve others again.
#[tokio::test(flavor = "multi_thread")]
async fn hardening_a_stalled_request_body_is_cut_off_and_frees_its_slot() -> Result<()> {
    use tokio::io::AsyncReadExt;
    let agent = AgentProcess::start_with(
        &format!("max_connections = 3\n{SOFTWARE}[limits]\nbody_read_timeout_ms = 500\n"),
        &[],
    )?;
    // Three slots: the key creation's connection may still hold one for a moment.
    let (key_id, _) = hwsign_e2e::create_key(&agent.client(), "software", "body").await?;
    let mut stalled = vec![
        stall_body(agent.socket()).await?,
        stall_body(agent.socket()).await?,
    ];
    for stream in &mut stalled {
        let mut answer = Vec::new();
        tokio::time::timeout(wait::PATIENCE, stream.read_to_end(&mut answer))
            .await
            .context("a connection with a stalled body was never closed by the agent")??;
        let answer = String::from_utf8_lossy(&answer);
        ensure!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        ensure!(answer.contains("\"request_timeout\""), "{answer}");
    }
    // Both slots are free again (the stalled clients still have their sockets open).
    let client = AgentClient::new(agent.socket());
    let request = sign_request(&key_id, "api.example.test", "/after-the-stall");
    wait_until_signed(&client, &request).await?;
    drop(stalled);
    Ok(())
}

/// Signs `request`, retrying while the agent is briefly busy (503 `unavailable`, or a
/// connection closed while it catches up); anything else fails at once.
async fn wait_until_signed(client: &AgentClient, request: &SignRequest) -> Result<()> {
    tokio::time::timeout(wait::PATIENCE, async {
        loop {
            match client.sign(request).await {
                Ok(response) => {
                    ensure!(!response.headers.is_empty());
                    return Ok(());
                }
                Err(
                    ClientError::Agent {
                        code: AgentErrorCode::Unavailable,
                        ..
                    }
                    | ClientError::Io(_)
                    | ClientError::Connect { .. },
                ) => {}
                Err(e) => return Err(anyhow::Error::new(e)),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .context("the well-behaved client was never served")?
}

/// The uid the other caller runs as in the per-uid tests.
const OTHER_UID: u32 = 65534;

/// Run as [`OTHER_UID`]: opens `argv[2]` connections to the socket `argv[1]`, sends
/// [`STALLED_BODY`] on each, prints one JSON line with what each got within a second (`"held"`
/// for no answer, else the error code), and keeps every connection open until stdin closes.
const OTHER_UID_CLIENT: &str = r#"
import json, re, socket, sys
path, count, head = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
socks = []
for _ in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(head)
    socks.append(s)
seen = []
for s in socks:
    s.settimeout(1.0)
    try:
        data = s.recv(65536).decode("utf-8", "replace")
        code = re.search(r'"code":"([a-z_]+)"', data)
        seen.append(code.group(1) if code else "closed:" + data[:40])
    except socket.timeout:
        seen.append("held")
print(json.dumps(seen), flush=True)
sys.stdin.read()
"#;

/// A process of [`OTHER_UID`] holding stalled connections to the agent; killed on drop.
struct OtherUidClient {
    child: std::process::Child,
    seen: Vec<String>,
}

impl OtherUidClient {
    fn start(socket: &Path, count: usize) -> Result<Self> {
        use std::io::BufRead as _;
        use std::os::unix::process::CommandExt as _;
        let mut child = std::process::Command::new("python3")
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .uid(OTHER_UID)
            .gid(OTHER_UID)
            .arg("-c")
            .arg(OTHER_UID_CLIENT)
            .arg(socket)
            .arg(count.to_string())
            .arg(String::from_utf8_lossy(STALLED_BODY).as_ref())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("starting python3 as another uid")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let seen: Vec<String> = serde_json::from_str(&line)
            .with_context(|| format!("the other uid's client said {line:?}"))?;
        Ok(Self { child, seen })
    }
}

impl Drop for OtherUidClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lets other uids reach the agent's socket (the harness makes its directories 0700, as the
/// agent does for a personal socket): what a shared agent's socket group would grant.
fn open_socket_to_other_uids(agent: &AgentProcess) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let socket = agent.socket();
    let run = socket.parent().context("socket without a directory")?;
    for dir in [agent.dir(), run] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
    }
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666))?;
    Ok(())
}

/// Issue 9 §5: with several allowed uids, one uid cannot take every connection slot. Another
/// uid opens more stalled connections than the cap (bodies that never come, under a body
/// deadline far beyond the test); it gets its share and `429 too_many_connections` past it,
/// and this uid is still served at once.
#[tokio::test(flavor = "multi_thread")]
async fn hardening_one_uid_cannot_take_every_connection_slot() -> Result<()> {
    let own = nix::unistd::geteuid().as_raw();
    ensure!(
        own == 0,
        "this test runs as root, to connect as uid {OTHER_UID} too"
    );
    let agent = AgentProcess::start_with(
        &format!(
            "allowed_uids = [{own}, {OTHER_UID}]\nmax_connections = 4\n{SOFTWARE}\
             [limits]\nbody_read_timeout_ms = 600000\n"
        ),
        &[],
    )?;
    let (key_id, _) = hwsign_e2e::create_key(&agent.client(), "software", "shared").await?;
    open_socket_to_other_uids(&agent)?;

    let other = OtherUidClient::start(agent.socket(), 4)?;
    // Its share is half the cap: two held, the rest refused with the per-uid code.
    ensure!(
        other.seen
            == [
                "held",
                "held",
                "too_many_connections",
                "too_many_connections"
            ],
        "the other uid saw {:?}",
        other.seen
    );
    // Two slots remain for everybody else: this uid is served without waiting.
    let client = AgentClient::new(agent.socket());
    let request = sign_request(&key_id, "api.example.test", "/while-the-other-uid-stalls");
    let response = client.sign(&request).await?;
    ensure!(!response.headers.is_empty());
    drop(other);
    Ok(())
}

/// Issue 20: refusals must not wait on slow clients. Both slots are held by half-sent heads,
/// and slow clients keep arriving (ten half-sent heads before each attempt). A well-behaved
/// client over the cap must still be told `503 unavailable` — before the fix each refusal
/// waited up to 2 s for a complete request head, the slow clients held every refusal slot, and
/// the well-behaved client's connections were closed without an answer.
#[tokio::test(flavor = "multi_thread")]
async fn faults_over_cap_clients_are_answered_while_slow_clients_keep_coming() -> Result<()> {
    const ATTEMPTS: usize = 40;
    raise_fd_limit(4 * STALLED as u64)?;
    let agent = AgentProcess::start_with(
        &format!("max_connections = 2\n{SOFTWARE}[limits]\nheader_read_timeout_ms = 600000\n"),
        &[],
    )?;
    let (key_id, _) = hwsign_e2e::create_key(&agent.client(), "software", "answered").await?;
    let half_head = || async {
        let mut stream = tokio::net::UnixStream::connect(agent.socket()).await?;
        // The agent may already have answered and closed; that is its right.
        let _ = stream
            .write_all(b"POST /v1/sign HTTP/1.1\r\nhost: localhost\r\ncontent-le")
            .await;
        anyhow::Ok(stream)
    };
    let mut stalled = vec![half_head().await?, half_head().await?];
    let request = sign_request(&key_id, "api.example.test", "/over-the-cap");
    let (mut answered, mut closed, mut served) = (0, 0, 0);
    for _ in 0..ATTEMPTS {
        for _ in 0..10 {
            stalled.push(half_head().await?);
        }
        // A new client each time: no connection of its own is kept between attempts.
        match AgentClient::new(agent.socket()).sign(&request).await {
            Err(ClientError::Agent {
                code: AgentErrorCode::Unavailable,
                status: 503,
                ..
            }) => answered += 1,
            Err(ClientError::Io(_) | ClientError::Connect { .. }) => closed += 1,
            // Only if a slot was still held by the key creation's connection when the first
            // half-sent heads came.
            Ok(_) => served += 1,
            Err(e) => return Err(anyhow::Error::new(e)),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "faults: {ATTEMPTS} attempts over a cap of 2 among {} slow clients: {answered} answered \
         503, {closed} closed without an answer",
        stalled.len()
    );
    ensure!(
        served <= 1,
        "served {served} times while stalled heads hold every slot"
    );
    ensure!(
        answered >= ATTEMPTS * 3 / 4,
        "only {answered} of {ATTEMPTS} over-cap attempts were answered ({closed} closed)"
    );
    Ok(())
}

/// Issue 9 §5, the same class from the other side: a permitted caller that pipelines requests
/// and never reads the answers parks the agent in a write once the socket buffers are full, and
/// held its slot forever (hyper bounds the time to send a request head, not the time to take an
/// answer). With `write_timeout_ms` the agent closes such a connection and serves others.
#[tokio::test(flavor = "multi_thread")]
async fn hardening_a_client_that_never_reads_its_answers_cannot_hold_a_slot() -> Result<()> {
    let agent = AgentProcess::start_with(
        &format!("max_connections = 2\n{SOFTWARE}[limits]\nwrite_timeout_ms = 500\n"),
        &[],
    )?;
    let (key_id, _) = hwsign_e2e::create_key(&agent.client(), "software", "reader").await?;
    // Three, so that two hold both slots even if the key creation's connection still held one.
    let mut hogs = Vec::new();
    for _ in 0..3 {
        let stream = tokio::net::UnixStream::connect(agent.socket()).await?;
        let (reader, mut writer) = stream.into_split();
        let pipelined = b"GET /v1/status HTTP/1.1\r\nhost: localhost\r\n\r\n".repeat(20_000);
        let task = tokio::spawn(async move {
            // Fails once the agent has closed the connection; that is the point.
            let _ = writer.write_all(&pipelined).await;
            writer
        });
        hogs.push((reader, task));
    }
    let client = AgentClient::new(agent.socket());
    let request = sign_request(&key_id, "api.example.test", "/while-nobody-reads");
    wait_until_signed(&client, &request).await?;
    drop(hogs);
    Ok(())
}
