//! The admin tests' fleet: real `hwsign-verifier serve` replicas sharing one SQLite registry
//! (and with it the directory), `[admin.api]` on their admin listeners, a real Python upstream,
//! and one real agent holding the users' keys (delegated) and the administrators' keys (strict).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use hwsign_client::Signer;
use hwsign_e2e::fleet::{FLEET_HOST, Fleet, PythonUpstream};
use hwsign_e2e::{AUDIENCE, AgentProcess, RawResponse, create_key, send_raw, signed, to_raw};
use hwsign_proto::api::KeyLevel;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::delegation_support::make_delegated;

/// The name the admin API knows itself by (its `[admin.api] hosts`).
pub(crate) const ADMIN_HOST: &str = "admin.hwsign.test";
/// The admin API's audience.
pub(crate) const ADMIN_AUDIENCE: &str = "hwsign-admin";
/// The identity provider's bearer token.
pub(crate) const SCIM_TOKEN: &str = "scim-e2e-token-4f1c9a2b7d";
/// How recent a recovery request's signature must be.
pub(crate) const FRESH_SECS: u64 = 10;

/// The fleet, the agent and its keys.
pub(crate) struct AdminFleet {
    pub(crate) agent: AgentProcess,
    _upstream: PythonUpstream,
    pub(crate) fleet: Fleet,
    /// Users' devices: software keys in delegated mode (each is its own device).
    pub(crate) devices: Vec<String>,
    pub(crate) admin: String,
    pub(crate) operator: String,
    pub(crate) viewer: String,
    /// Registered, no role.
    pub(crate) stranger: String,
    /// An admin key in delegated mode (never fresh enough for recovery).
    pub(crate) delegated_admin: String,
    /// With [`AdminFleet::start_audited`]: the audit log's directory and checkpoint public key.
    pub(crate) audit: Option<AuditFiles>,
}

/// The audit log of an audited fleet's one replica.
pub(crate) struct AuditFiles {
    _temp: tempfile::TempDir,
    /// `[audit] dir`.
    pub(crate) dir: PathBuf,
    /// The checkpoint public key (SPKI PEM).
    pub(crate) public_key: PathBuf,
}

impl AdminFleet {
    /// `replicas` replicas and `devices` user devices.
    pub(crate) async fn start(replicas: usize, devices: usize) -> Result<Self> {
        Self::start_with(replicas, devices, None, None).await
    }

    /// `replicas` replicas on the PostgreSQL registry (and directory) at `url`.
    pub(crate) async fn start_on_postgres(
        replicas: usize,
        devices: usize,
        url: &str,
    ) -> Result<Self> {
        Self::start_with(replicas, devices, None, Some(url)).await
    }

    /// One replica with an `[audit]` log (a checkpoint key made by `hwsign-verifier audit
    /// keygen`, a checkpoint every 5 records) and `devices` user devices.
    pub(crate) async fn start_audited(devices: usize) -> Result<Self> {
        let temp = tempfile::Builder::new().prefix("hwsign-audit-").tempdir()?;
        let key = temp.path().join("checkpoint.pem");
        let output = Command::new(hwsign_test_support::binaries::bin_path("hwsign-verifier")?)
            .args(["audit", "keygen", "--out"])
            .arg(&key)
            .output()?;
        ensure!(
            output.status.success(),
            "audit keygen: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let files = AuditFiles {
            dir: temp.path().join("audit"),
            public_key: temp.path().join("checkpoint.pem.pub"),
            _temp: temp,
        };
        Self::start_with(1, devices, Some(files), None).await
    }

    async fn start_with(
        replicas: usize,
        devices: usize,
        audit: Option<AuditFiles>,
        postgres: Option<&str>,
    ) -> Result<Self> {
        let mut agent = AgentProcess::start()?;
        let client = agent.client();
        let mut publics = Vec::new();
        let mut device_ids = Vec::new();
        for i in 0..devices {
            let (id, public) = create_key(&client, "software", &format!("laptop {i}")).await?;
            device_ids.push(id);
            publics.push(public);
        }
        let mut role_keys = Vec::new();
        for label in ["admin", "operator", "viewer", "stranger", "delegated admin"] {
            let (id, public) = create_key(&client, "software", label).await?;
            role_keys.push(id);
            publics.push(public);
        }
        let [admin, operator, viewer, stranger, delegated_admin] =
            <[String; 5]>::try_from(role_keys).map_err(|_| anyhow::anyhow!("five keys"))?;
        for device in &device_ids {
            make_delegated(&mut agent, device, None)?;
        }
        make_delegated(&mut agent, &delegated_admin, None)?;

        let token_sha256 = hex::encode(Sha256::digest(SCIM_TOKEN.as_bytes()));
        let sections = format!(
            "[admin.api]
hosts = [{ADMIN_HOST:?}]
min_key_level = \"software\"
fresh_signature_secs = {FRESH_SECS}
admins = [
  {{ key_id = {admin:?}, role = \"admin\" }},
  {{ key_id = {delegated_admin:?}, role = \"admin\" }},
  {{ key_id = {operator:?}, role = \"operator\" }},
  {{ key_id = {viewer:?}, role = \"viewer\" }},
]
[admin.api.scim]
token_sha256 = {token_sha256:?}
"
        );
        let sections = match &audit {
            Some(files) => format!(
                "{sections}
[audit]
dir = {:?}
checkpoint_key = {:?}
checkpoint_every_records = 5
checkpoint_every_secs = 1
",
                files.dir.display().to_string(),
                files
                    .dir
                    .with_file_name("checkpoint.pem")
                    .display()
                    .to_string(),
            ),
            None => sections,
        };
        let upstream = PythonUpstream::start()?;
        let adjust = |settings: &mut hwsign_e2e::fleet::ServeSettings| {
            settings.extra_sections = sections.clone();
        };
        let fleet = match postgres {
            None => Fleet::start(replicas, "memory", upstream.addr(), adjust).await?,
            Some(url) => Fleet::start_on(replicas, url, "memory", upstream.addr(), adjust).await?,
        };
        match postgres {
            None => {
                for public in &publics {
                    fleet.register(public, KeyLevel::Software)?;
                }
            }
            Some(url) => register_with_cli(url, &publics)?,
        }
        Ok(Self {
            agent,
            _upstream: upstream,
            fleet,
            devices: device_ids,
            admin,
            operator,
            viewer,
            stranger,
            delegated_admin,
            audit,
        })
    }

    /// The admin listener of replica `i`.
    pub(crate) fn admin_addr(&self, i: usize) -> SocketAddr {
        self.fleet.replicas[i].admin
    }

    /// `GET /v1/…` through replica `i`, signed by device `device` (its session key).
    pub(crate) async fn api_get(&self, i: usize, device: &str) -> Result<RawResponse> {
        let signer = Signer::new(self.agent.client(), device, AUDIENCE);
        let request = http::Request::get(format!("http://{FLEET_HOST}/v1/items"))
            .header("user-agent", "admin-e2e/1")
            .body(Vec::new())?;
        send_raw(
            self.fleet.replicas[i].addr,
            &to_raw(&signed(&signer, request).await?)?,
        )
        .await
    }

    /// An admin API call to replica `i` signed by `key`.
    pub(crate) async fn admin_call(
        &self,
        i: usize,
        key: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<RawResponse> {
        let raw = self.admin_request(key, method, path, body).await?;
        send_raw(self.admin_addr(i), &raw).await
    }

    /// The raw bytes of a signed admin request (to send later).
    pub(crate) async fn admin_request(
        &self,
        key: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Vec<u8>> {
        let signer = Signer::new(self.agent.client(), key, ADMIN_AUDIENCE);
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("http://{ADMIN_HOST}{path}"));
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        to_raw(&signed(&signer, builder.body(body)?).await?)
    }

    /// An admin API call that must succeed; its JSON.
    pub(crate) async fn admin_ok(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let response = self.admin_call(i, &self.admin, method, path, body).await?;
        ensure!(
            response.status == 200,
            "{method} {path}: {} {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        );
        response.json()
    }

    /// Runs the SCIM client script against replica `i` (`args` after the base URL and token);
    /// its stdout as JSON.
    pub(crate) fn scim(&self, i: usize, args: &[&str]) -> Result<Value> {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/admin_support/scim_client.py");
        let output = Command::new("python3")
            .arg(&script)
            .arg(format!("http://{}", self.admin_addr(i)))
            .arg(SCIM_TOKEN)
            .args(args)
            .output()
            .context("running the SCIM client")?;
        ensure!(
            output.status.success(),
            "scim {args:?}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "scim output is not JSON: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// Provisions `user_name` through SCIM and assigns `devices` to them; the user's id.
    pub(crate) async fn user_with_devices(
        &self,
        user_name: &str,
        devices: &[&str],
    ) -> Result<String> {
        let created = self.scim(0, &["create-user", user_name])?;
        ensure!(created["status"] == 201, "{created}");
        let id = created["body"]["id"]
            .as_str()
            .context("no user id")?
            .to_owned();
        for device in devices {
            self.admin_ok(
                0,
                "POST",
                &format!("/admin/v1/devices/{device}/assign"),
                Some(json!({ "user": user_name })),
            )
            .await?;
        }
        Ok(id)
    }

    /// The live sessions listed by replica `i`.
    pub(crate) async fn sessions(&self, i: usize) -> Result<Vec<Value>> {
        let listed = self.admin_ok(i, "GET", "/admin/v1/sessions", None).await?;
        Ok(listed["sessions"].as_array().cloned().unwrap_or_default())
    }

    /// The session id the device's requests carry (its session key's id).
    pub(crate) async fn session_of(&self, i: usize, device: &str) -> Result<String> {
        self.sessions(i)
            .await?
            .iter()
            .find(|s| s["key_id"] == device)
            .and_then(|s| s["id"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("no session listed for {device}"))
    }
}

/// Registers `publics` (level software) in the registry at `url` with `hwsign-verifier keys add`.
fn register_with_cli(url: &str, publics: &[hwsign_proto::PublicKey]) -> Result<()> {
    let dir = tempfile::tempdir()?;
    for (i, public) in publics.iter().enumerate() {
        let pem = dir.path().join(format!("key-{i}.pem"));
        std::fs::write(&pem, public.to_pem())?;
        let added = hwsign_e2e::tpm::hwsign_verifier(&[
            "keys",
            "add",
            "--registry",
            url,
            "--public-key",
            &pem.display().to_string(),
            "--label",
            &format!("key {i}"),
        ])?;
        ensure!(
            added.status.success(),
            "keys add: {}",
            String::from_utf8_lossy(&added.stderr)
        );
    }
    Ok(())
}

/// Checks a refusal of the admin API: its status and `error.code`.
pub(crate) fn expect_admin_refusal(response: &RawResponse, status: u16, code: &str) -> Result<()> {
    let body: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    ensure!(
        response.status == status && body["error"]["code"] == code,
        "expected {status} {code}, got {} {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    Ok(())
}

/// Checks that a proxied request was accepted.
pub(crate) fn expect_ok(response: &RawResponse) -> Result<()> {
    ensure!(
        response.status == 200,
        "expected 200, got {}: {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    Ok(())
}
