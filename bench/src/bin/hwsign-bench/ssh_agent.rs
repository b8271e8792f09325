//! `ssh_agent_rtt_ratio`: a hwsign sign round trip ÷ an OpenSSH `ssh-agent` sign round trip for an
//! ECDSA P-256 key, both driven by the same client ([`crate::raw_client`]) over their Unix
//! sockets, one connection each, sequential calls, alternating batches. The runner starts its own
//! `ssh-agent` (`-D -a SOCKET`) and loads a fresh key with `ssh-add` (openssh-client).
//!
//! The ssh-agent protocol (draft-miller-ssh-agent): every message is a 4-byte big-endian length
//! and a type byte; `SSH2_AGENTC_REQUEST_IDENTITIES` (11) answers 12 with the key blobs,
//! `SSH2_AGENTC_SIGN_REQUEST` (13: key blob, data, flags) answers 14 with the signature.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use crate::Plan;
use crate::figure::{Figure, Goal};
use crate::measure::{median, us};
use crate::raw_client::{Framing, RawClient};

const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;

/// The goal of the issue.
const GOAL: f64 = 0.45;

/// A private `ssh-agent` holding one ECDSA P-256 key; killed on drop.
#[derive(Debug)]
pub(crate) struct SshAgent {
    child: Child,
    socket: PathBuf,
}

impl SshAgent {
    /// Starts `ssh-agent -D -a DIR/ssh-agent.sock`, generates an ECDSA P-256 key in `dir` with
    /// `ssh-keygen` and loads it with `ssh-add`.
    pub(crate) fn start(dir: &Path) -> Result<Self> {
        let socket = dir.join("ssh-agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ssh-agent (Debian package openssh-client)")?;
        let agent = Self { child, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !agent.socket.exists() {
            ensure!(
                Instant::now() < deadline,
                "ssh-agent did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let key = dir.join("ssh-bench-key");
        let status = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ecdsa",
                "-b",
                "256",
                "-N",
                "",
                "-C",
                "hwsign-bench",
                "-f",
            ])
            .arg(&key)
            .stdin(Stdio::null())
            .status()
            .context("running ssh-keygen")?;
        ensure!(status.success(), "ssh-keygen failed: {status}");
        let status = Command::new("ssh-add")
            .arg("-q")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &agent.socket)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running ssh-add")?;
        ensure!(status.success(), "ssh-add failed: {status}");
        Ok(agent)
    }

    /// A client whose every call asks the agent's first key to sign `data`.
    pub(crate) fn sign_client(&self, data: &[u8]) -> Result<RawClient> {
        let mut identities = RawClient::connect(
            &self.socket,
            message(REQUEST_IDENTITIES, &[]),
            Framing::SshAgent {
                expect: IDENTITIES_ANSWER,
            },
        )?;
        let answer = identities.call()?;
        let mut reader = Reader(answer);
        let count = reader.u32()?;
        ensure!(count >= 1, "ssh-agent holds no key");
        let blob = reader.string()?.to_vec();
        let mut body = Vec::new();
        put_string(&mut body, &blob);
        put_string(&mut body, data);
        body.extend_from_slice(&0u32.to_be_bytes());
        let mut client = RawClient::connect(
            &self.socket,
            message(SIGN_REQUEST, &body),
            Framing::SshAgent {
                expect: SIGN_RESPONSE,
            },
        )?;
        // The signature blob names its algorithm: the key is the ECDSA P-256 one.
        let signature = Reader(client.call()?).string()?.to_vec();
        let algorithm = Reader(&signature).string()?;
        if algorithm != b"ecdsa-sha2-nistp256" {
            bail!(
                "ssh-agent signed with {:?}, not ecdsa-sha2-nistp256",
                String::from_utf8_lossy(algorithm)
            );
        }
        Ok(client)
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.extend_from_slice(&(body.len() as u32 + 1).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    out
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Result<u32> {
        let (head, rest) = self
            .0
            .split_at_checked(4)
            .context("short ssh-agent message")?;
        self.0 = rest;
        Ok(u32::from_be_bytes([head[0], head[1], head[2], head[3]]))
    }

    fn string(&mut self) -> Result<&'a [u8]> {
        let length = self.u32()? as usize;
        let (head, rest) = self
            .0
            .split_at_checked(length)
            .context("short ssh-agent string")?;
        self.0 = rest;
        Ok(head)
    }
}

/// Round-trip samples of the three servers the raw client drove, for the chart.
#[derive(Debug, Default)]
pub(crate) struct RttSamples {
    /// hwsign agent, `POST /v1/sign`.
    pub hwsign: Vec<Duration>,
    /// OpenSSH ssh-agent, sign request.
    pub ssh_agent: Vec<Duration>,
    /// The echo floor (HTTP, canned answer, no signature).
    pub echo: Vec<Duration>,
}

fn mean(samples: &[Duration]) -> f64 {
    samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len().max(1) as f64
}

/// Measures `ssh_agent_rtt_ratio`: `hwsign` and `echo` are raw clients of the hwsign agent and
/// the echo floor, `ssh` one of ssh-agent. Returns the figure, the samples and the number of
/// hwsign signs made.
pub(crate) fn figure(
    plan: &Plan,
    hwsign: &mut RawClient,
    echo: &mut RawClient,
    ssh: &mut RawClient,
) -> Result<(Figure, RttSamples, usize)> {
    let batch = plan.rtt_batch;
    let mut warm = Vec::new();
    hwsign.timed_calls(plan.warmup, &mut warm)?;
    ssh.timed_calls(plan.warmup, &mut warm)?;
    echo.timed_calls(plan.warmup, &mut warm)?;
    let mut samples = RttSamples::default();
    let (mut ratios, mut t_hwsign, mut t_ssh, mut t_echo) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        let (mut h, mut s, mut e) = (
            Vec::with_capacity(batch),
            Vec::with_capacity(batch),
            Vec::with_capacity(batch),
        );
        if round % 2 == 0 {
            hwsign.timed_calls(batch, &mut h)?;
            ssh.timed_calls(batch, &mut s)?;
            echo.timed_calls(batch, &mut e)?;
        } else {
            echo.timed_calls(batch, &mut e)?;
            ssh.timed_calls(batch, &mut s)?;
            hwsign.timed_calls(batch, &mut h)?;
        }
        ratios.push(mean(&h) / mean(&s));
        t_hwsign.push(mean(&h));
        t_ssh.push(mean(&s));
        t_echo.push(mean(&e));
        samples.hwsign.extend(h);
        samples.ssh_agent.extend(s);
        samples.echo.extend(e);
    }
    let figure = Figure::measured(
        "ssh_agent_rtt_ratio",
        median(ratios),
        Goal::AtMost(GOAL),
        format!(
            "hwsign sign round trip {} vs OpenSSH ssh-agent ECDSA P-256 sign {} (echo floor {}); the same raw socket client, one connection each, sequential",
            us(median(t_hwsign)),
            us(median(t_ssh)),
            us(median(t_echo)),
        ),
    );
    Ok((figure, samples, plan.warmup + plan.rounds * batch))
}
