//! The client starts a new session by itself after `session_revoked` (docs/ADMIN.md
//! "Sessions"): an administrator ends the SDK's delegated session; the SDK's next call is
//! refused `session_revoked`, the agent forgets that session, and the call is signed again by a
//! new session and succeeds. Once the device is revoked, the new session is refused too
//! (`device_revoked`): ending a session never outlives the device.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::admin_support::AdminFleet;

use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hwsign_client::Signer;
use hwsign_client::layer::SigningLayer;
use hwsign_client::middleware::SigningMiddleware;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use tower_layer::Layer;
use tower_service::Service;

#[tokio::test(flavor = "multi_thread")]
async fn admin_sdk_starts_a_new_session_after_session_revoked_unless_the_device_is_revoked()
-> Result<()> {
    let f = AdminFleet::start(1, 1).await?;
    let laptop = f.devices[0].clone();
    let signer = Signer::new(f.agent.client(), laptop.clone(), hwsign_e2e::AUDIENCE);
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(SigningMiddleware::new(signer))
        .build();
    let url = format!("http://{}/v1/items", f.fleet.replicas[0].addr);
    let get = || async {
        let response = client.get(&url).send().await?;
        let status = response.status().as_u16();
        let body: Value = serde_json::from_slice(&response.bytes().await?).unwrap_or(Value::Null);
        anyhow::Ok((status, body))
    };

    force_logout_then_revoke(&f, &laptop, get).await
}

/// The transport under the tower layer: the request sent with reqwest, the answer collected.
#[derive(Clone)]
struct ReqwestSend(reqwest::Client);

type SendFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<http::Response<Bytes>, anyhow::Error>> + Send>>;

impl Service<http::Request<Full<Bytes>>> for ReqwestSend {
    type Response = http::Response<Bytes>;
    type Error = anyhow::Error;
    type Future = SendFuture;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Full<Bytes>>) -> Self::Future {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            let request =
                reqwest::Request::try_from(http::Request::from_parts(parts, body.to_vec()))?;
            let response = client.execute(request).await?;
            let (status, headers) = (response.status(), response.headers().clone());
            let mut answer = http::Response::new(response.bytes().await?);
            *answer.status_mut() = status;
            *answer.headers_mut() = headers;
            Ok(answer)
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_tower_layer_starts_a_new_session_after_session_revoked() -> Result<()> {
    let f = AdminFleet::start(1, 1).await?;
    let laptop = f.devices[0].clone();
    let signer = Signer::new(f.agent.client(), laptop.clone(), hwsign_e2e::AUDIENCE);
    let service = SigningLayer::new(signer).layer(ReqwestSend(reqwest::Client::new()));
    let url = format!("http://{}/v1/items", f.fleet.replicas[0].addr);
    let get = || {
        let mut service = service.clone();
        let url = url.clone();
        async move {
            std::future::poll_fn(|cx| {
                Service::<http::Request<Full<Bytes>>>::poll_ready(&mut service, cx)
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let request = http::Request::get(&url).body(Full::new(Bytes::new()))?;
            let response = service
                .call(request)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let body: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
            anyhow::Ok((response.status().as_u16(), body))
        }
    };

    force_logout_then_revoke(&f, &laptop, get).await
}

/// The scenario both adapters pass: a call succeeds; after a force logout of its session the
/// next call succeeds with a new session; after the device is revoked it is refused
/// `device_revoked` and no session of the device is left.
async fn force_logout_then_revoke<F, Fut>(f: &AdminFleet, laptop: &str, get: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(u16, Value)>>,
{
    let (status, body) = get().await?;
    ensure!(status == 200, "{status} {body}");
    let first = f.session_of(0, laptop).await?;
    // Force logout of that session.
    let ended = f
        .admin_ok(
            0,
            "POST",
            "/admin/v1/sessions/end",
            Some(json!({"scope": "session", "id": first})),
        )
        .await?;
    ensure!(ended["sessions_ended"] == 1, "{ended}");
    // The SDK's next call succeeds, with a new session.
    let (status, body) = get().await?;
    ensure!(status == 200, "after force logout: {status} {body}");
    let second = f.session_of(0, laptop).await?;
    ensure!(second != first, "a new session key: {second}");

    // A revoked device gets no new session: the retry is refused device_revoked.
    let revoked = f
        .admin_ok(
            0,
            "POST",
            &format!("/admin/v1/devices/{laptop}/revoke"),
            None,
        )
        .await?;
    ensure!(revoked["revoked"] == true, "{revoked}");
    let (status, body) = get().await?;
    ensure!(
        status == 403 && body["error"]["code"] == "device_revoked",
        "after revocation: {status} {body}"
    );
    let sessions = f.sessions(0).await?;
    ensure!(
        sessions.iter().all(|s| s["key_id"] != laptop),
        "no live session for the revoked device: {sessions:?}"
    );
    Ok(())
}

/// One SDK adapter's client in its own process (tests/python/sdk_resession.py,
/// tests/node/sdk_resession.mjs): `get` on its stdin sends one signed GET, and the answer comes
/// back as one JSON line (read by a thread of its own, so the runtime never blocks on the pipe).
struct SdkDriver {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<std::io::Result<String>>,
}

impl SdkDriver {
    fn spawn(name: &'static str, mut command: Command, f: &AdminFleet) -> Result<Self> {
        command
            .env("HWSIGN_AGENT_SOCK", f.agent.socket())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        let stdin = child.stdin.take().context("driver stdin")?;
        let stdout = child.stdout.take().context("driver stdout")?;
        let (send, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name,
            child,
            stdin,
            lines,
        })
    }

    async fn get(&mut self) -> Result<(u16, Value)> {
        self.stdin.write_all(b"get\n")?;
        self.stdin.flush()?;
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.recv())
            .await
            .with_context(|| format!("{}: no answer within 60 s", self.name))?;
        let Some(line) = line else {
            let status = self.child.wait()?;
            bail!("{} exited ({status}) without answering", self.name);
        };
        let line = line?;
        let answer: Value =
            serde_json::from_str(&line).with_context(|| format!("{}: {line}", self.name))?;
        if let Some(error) = answer.get("error") {
            bail!("{}: the SDK raised {error}", self.name);
        }
        let status = answer["status"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .with_context(|| format!("{}: {line}", self.name))?;
        Ok((status, answer["body"].clone()))
    }
}

impl Drop for SdkDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_python_and_node_sdks_start_a_new_session_after_session_revoked() -> Result<()> {
    let python = hwsign_e2e::sdk::prepare("python")?;
    let node_sdk = hwsign_e2e::sdk::prepare("node")?;
    let root = hwsign_e2e::sdk::repo_root()?;
    let f = AdminFleet::start(1, 4).await?;
    let url = format!("http://{}/v1/items", f.fleet.replicas[0].addr);
    let adapters: [&'static str; 4] = ["httpx", "httpx-async", "requests", "node"];
    for (adapter, laptop) in adapters.into_iter().zip(f.devices.clone()) {
        let command = if adapter == "node" {
            let mut command = Command::new("node");
            command
                .arg(root.join("tests/node/sdk_resession.mjs"))
                .arg(&node_sdk);
            command
        } else {
            let mut command = Command::new(&python);
            command
                .arg(root.join("tests/python/sdk_resession.py"))
                .arg(adapter);
            command
        };
        let mut command = command;
        command.args([url.as_str(), laptop.as_str(), hwsign_e2e::AUDIENCE]);
        let driver = Arc::new(Mutex::new(SdkDriver::spawn(adapter, command, &f)?));
        let get = || {
            let driver = Arc::clone(&driver);
            async move { driver.lock().await.get().await }
        };
        force_logout_then_revoke(&f, &laptop, get)
            .await
            .with_context(|| format!("SDK adapter {adapter}"))?;
    }
    Ok(())
}
