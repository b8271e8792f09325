//! The `hwsign` binary against an agent running in this process (software backend, and in some
//! tests a PKCS#11 backend whose module is missing, so that a configured backend is down).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use anyhow::{Context as _, Result, ensure};
use hwsign_agent::Config;
use hwsign_agent::backends::pkcs11::Pkcs11Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// An agent serving a socket in a temporary directory until dropped.
struct TestAgent {
    dir: tempfile::TempDir,
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), hwsign_agent::AgentError>>>,
}

impl TestAgent {
    /// `with_broken_pkcs11`: also configure a PKCS#11 backend whose module does not exist.
    async fn start(with_broken_pkcs11: bool) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("hwsign-cli-").tempdir()?;
        let socket = dir.path().join("run/agent.sock");
        let mut config = Config::for_state_dir(dir.path().join("state"), &socket);
        if with_broken_pkcs11 {
            config.backends.pkcs11 = Some(Pkcs11Config {
                module_path: PathBuf::from("/nonexistent/hwsign-test/libvendor-pkcs11.so"),
                token_label: "hwsign".into(),
                pin_file: Some(dir.path().join("pin")),
                pin_credential: None,
                key_label_prefix: None,
            });
        }
        let listener = hwsign_agent::socket::bind(&config.socket_path)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(hwsign_agent::run(listener, Arc::new(config), async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            dir,
            socket,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Runs `hwsign --socket SOCKET args...`.
    async fn hwsign(&self, args: &[&str]) -> Result<Output> {
        let socket = self.socket.clone();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_hwsign"))
                .arg("--socket")
                .arg(&socket)
                .args(&args)
                .output()
                .context("running hwsign")
        })
        .await?
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr)
    )
}

#[tokio::test]
async fn newuser_status_exits_3_when_a_backend_is_down() -> Result<()> {
    let agent = TestAgent::start(true).await?;
    let output = agent.hwsign(&["status"]).await?;
    ensure!(output.status.code() == Some(3), "{}", describe(&output));
    let stdout = text(&output.stdout);
    ensure!(
        stdout.contains("backend       pkcs11 (UNAVAILABLE: ")
            && stdout.contains("libvendor-pkcs11.so"),
        "{}",
        describe(&output)
    );
    ensure!(
        stdout.contains("backend       software (available)"),
        "{stdout}"
    );

    let output = agent.hwsign(&["status", "--json"]).await?;
    ensure!(output.status.code() == Some(3), "{}", describe(&output));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let backends = status["backends"].as_array().context("no backends")?;
    ensure!(
        backends
            .iter()
            .any(|b| b["name"] == "pkcs11" && b["available"] == false),
        "{status}"
    );
    agent.stop().await
}

#[tokio::test]
async fn newuser_status_exits_0_when_all_backends_are_up() -> Result<()> {
    let agent = TestAgent::start(false).await?;
    let output = agent.hwsign(&["status"]).await?;
    ensure!(output.status.success(), "{}", describe(&output));
    ensure!(
        text(&output.stdout).contains("backend       software (available)"),
        "{}",
        describe(&output)
    );
    agent.stop().await
}

#[tokio::test]
async fn newuser_keys_list_names_the_failing_backend() -> Result<()> {
    let agent = TestAgent::start(true).await?;
    let output = agent.hwsign(&["keys", "list"]).await?;
    ensure!(output.status.code() == Some(3), "{}", describe(&output));
    let stderr = text(&output.stderr);
    ensure!(
        stderr.contains("backend pkcs11 is unavailable, its keys are not listed"),
        "{}",
        describe(&output)
    );
    // No "no keys, create a software key" advice while a backend's keys are missing.
    ensure!(
        !text(&output.stdout).contains("no keys"),
        "{}",
        describe(&output)
    );

    let output = agent.hwsign(&["keys", "list", "--json"]).await?;
    ensure!(output.status.code() == Some(3), "{}", describe(&output));
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    ensure!(
        listed["keys"].as_array().is_some_and(Vec::is_empty),
        "{listed}"
    );
    ensure!(
        listed["unavailable_backends"][0]["name"] == "pkcs11",
        "{listed}"
    );
    agent.stop().await
}

#[tokio::test]
async fn newuser_keys_export_prints_the_public_pem() -> Result<()> {
    let agent = TestAgent::start(false).await?;
    let output = agent
        .hwsign(&[
            "keys",
            "create",
            "--backend",
            "software",
            "--label",
            "laptop",
            "--json",
        ])
        .await?;
    ensure!(output.status.success(), "{}", describe(&output));
    let created: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let id = created["id"].as_str().context("no id")?.to_owned();
    let pem = created["public_key_pem"]
        .as_str()
        .context("no pem")?
        .to_owned();

    for name in [id.as_str(), "laptop"] {
        let output = agent.hwsign(&["keys", "export", name]).await?;
        ensure!(output.status.success(), "{}", describe(&output));
        ensure!(text(&output.stdout) == pem, "{}", describe(&output));
    }
    // What `keys export` prints is what `hwsign-verifier keys add` reads.
    let exported = agent.path("laptop.pem");
    std::fs::write(&exported, &pem)?;
    let parsed = hwsign_proto::PublicKey::from_spki_pem(&std::fs::read_to_string(&exported)?)?;
    ensure!(parsed.key_id() == id);

    let output = agent
        .hwsign(&["keys", "export", "hk1_00000000000000000000000000000000"])
        .await?;
    ensure!(output.status.code() == Some(1), "{}", describe(&output));
    ensure!(
        text(&output.stderr)
            .contains("the agent has no key \"hk1_00000000000000000000000000000000\""),
        "{}",
        describe(&output)
    );

    // Dates are printed for people, not as epoch seconds.
    let output = agent.hwsign(&["keys", "list"]).await?;
    ensure!(output.status.success(), "{}", describe(&output));
    ensure!(
        text(&output.stdout).contains(" UTC") && text(&output.stdout).contains(&id),
        "{}",
        describe(&output)
    );
    agent.stop().await
}

#[tokio::test]
async fn newuser_sign_json_gives_the_headers_by_name() -> Result<()> {
    let agent = TestAgent::start(false).await?;
    let output = agent
        .hwsign(&[
            "keys",
            "create",
            "--backend",
            "software",
            "--label",
            "ci",
            "--json",
        ])
        .await?;
    ensure!(output.status.success(), "{}", describe(&output));
    let created: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let id = created["id"].as_str().context("no id")?.to_owned();
    let body = agent.path("body.json");
    std::fs::write(&body, br#"{"amount":5}"#)?;
    let output = agent
        .hwsign(&[
            "sign",
            "--json",
            "--key",
            &id,
            "--audience",
            "payments",
            "--method",
            "POST",
            "--url",
            "https://api.example.com/v1/transfers",
            "--data-file",
            path_str(&body)?,
            "-H",
            "Content-Type: application/json",
        ])
        .await?;
    ensure!(output.status.success(), "{}", describe(&output));
    let signed: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    ensure!(signed["key_id"] == id.as_str(), "{signed}");
    let authorization = signed["headers"]["Authorization"]
        .as_str()
        .context("no Authorization")?;
    ensure!(
        authorization.starts_with("HWS1-ECDSA-P256-SHA256 Credential=")
            && authorization.contains("content-type"),
        "{signed}"
    );
    ensure!(
        signed["headers"]["X-Hws-Date"] == signed["date"],
        "{signed}"
    );
    agent.stop().await
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().context("non-UTF-8 temp path")
}

/// Runs `hwsign args...` with no agent.
fn hwsign_offline(args: &[&str]) -> Result<Output> {
    std::process::Command::new(env!("CARGO_BIN_EXE_hwsign"))
        .args(args)
        .output()
        .context("running hwsign")
}

#[test]
fn newuser_completions_and_man_page_are_generated() -> Result<()> {
    let output = hwsign_offline(&["completions", "bash"])?;
    ensure!(output.status.success(), "{}", describe(&output));
    let script = text(&output.stdout);
    ensure!(
        script.contains("complete") && script.contains("keys") && script.contains("--json"),
        "{script}"
    );
    for shell in ["zsh", "fish"] {
        let output = hwsign_offline(&["completions", shell])?;
        ensure!(
            output.status.success() && !output.stdout.is_empty(),
            "{}",
            describe(&output)
        );
    }
    let output = hwsign_offline(&["man"])?;
    ensure!(output.status.success(), "{}", describe(&output));
    let page = text(&output.stdout);
    ensure!(
        page.starts_with(".ie") || page.contains(".TH hwsign"),
        "{page}"
    );
    ensure!(page.contains("status"), "{page}");
    Ok(())
}

/// The README's `hwsign sign` + `curl` recipe, run as written against a verifier-protected API:
/// the key registered from what `hwsign keys export` printed.
#[tokio::test]
async fn newuser_readme_curl_recipe_is_accepted() -> Result<()> {
    use hwsign_verifier::{
        HwsignLayer, KeyLevel, KeyRegistry, MemoryRegistry, MemoryReplayCache, RegisteredKey,
        VerifiedDevice, Verifier, VerifierConfig,
    };

    let agent = TestAgent::start(false).await?;
    let output = agent
        .hwsign(&[
            "keys",
            "create",
            "--backend",
            "software",
            "--label",
            "curl",
            "--json",
        ])
        .await?;
    ensure!(output.status.success(), "{}", describe(&output));
    let created: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let id = created["id"].as_str().context("no id")?.to_owned();
    let exported = agent.hwsign(&["keys", "export", &id]).await?;
    ensure!(exported.status.success(), "{}", describe(&exported));

    let registry = Arc::new(MemoryRegistry::new());
    registry.add(RegisteredKey::new(
        hwsign_proto::PublicKey::from_spki_pem(&text(&exported.stdout))?,
        "curl",
        KeyLevel::Software,
        0,
    ))?;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = tcp.local_addr()?;
    let verifier = Arc::new(Verifier::new(
        VerifierConfig::new("payments", [addr.to_string()]),
        registry,
        Arc::new(MemoryReplayCache::new(100)),
    )?);
    let app = axum::Router::new()
        .route(
            "/v1/transfers",
            axum::routing::post(|VerifiedDevice(who): VerifiedDevice| async move { who.key_id }),
        )
        .layer(HwsignLayer::new(verifier));
    let server = tokio::spawn(axum::serve(tcp, app).into_future());

    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))?;
    let script = readme
        .split("```sh\n")
        .filter_map(|b| b.split_once("```").map(|(block, _)| block))
        .find(|b| b.contains("curl ") && b.contains("hwsign sign"))
        .context("no hwsign sign + curl block in README.md")?
        .to_owned();
    std::fs::write(
        agent.path("body.json"),
        b"{\"amount\": 5,\n \"to\": \"bob\"}\n",
    )?;
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_hwsign"))
        .parent()
        .context("binary dir")?
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let (socket, dir) = (agent.socket.clone(), agent.path(""));
    let url = format!("http://{addr}/v1/transfers");
    let key = id.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .args(["-euc", &script])
            .current_dir(dir)
            .env("PATH", path)
            .env("HWSIGN_AGENT_SOCK", socket)
            .env("KEY", key)
            .env("URL", url)
            .output()
    })
    .await??;
    server.abort();
    ensure!(output.status.success(), "{}", describe(&output));
    ensure!(text(&output.stdout) == id, "{}", describe(&output));
    agent.stop().await
}

/// Refusals of what the user typed name the form expected, and each cause appears once.
#[tokio::test]
async fn newuser_errors_name_the_expected_form() -> Result<()> {
    let agent = TestAgent::start(false).await?;
    let output = agent
        .hwsign(&["keys", "create", "--backend", "tmp", "--label", "x"])
        .await?;
    ensure!(output.status.code() == Some(1), "{}", describe(&output));
    let stderr = text(&output.stderr);
    ensure!(
        stderr.contains("backend \"tmp\" is not available in this agent (it has: software)"),
        "{stderr}"
    );

    let output = agent
        .hwsign(&[
            "keys",
            "create",
            "--backend",
            "software",
            "--label",
            "k",
            "--json",
        ])
        .await?;
    let created: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let id = created["id"].as_str().context("no id")?.to_owned();
    let output = agent
        .hwsign(&[
            "sign",
            "--key",
            &id,
            "--audience",
            "Payments API",
            "--url",
            "https://api.example.com/",
        ])
        .await?;
    ensure!(output.status.code() == Some(1), "{}", describe(&output));
    let stderr = text(&output.stderr);
    ensure!(
        stderr.contains("invalid audience") && stderr.contains("expected the API's name"),
        "{stderr}"
    );
    ensure!(stderr.matches("invalid audience").count() == 1, "{stderr}");

    let output = agent
        .hwsign(&[
            "sign",
            "--key",
            &id,
            "--audience",
            "payments",
            "--url",
            "/v1/x",
        ])
        .await?;
    ensure!(output.status.code() == Some(1), "{}", describe(&output));
    ensure!(
        text(&output.stderr).contains("the URL must be absolute, like https://host/path"),
        "{}",
        describe(&output)
    );
    agent.stop().await
}

/// Every relative link in README.md and docs/*.md names a file that exists.
#[test]
fn newuser_doc_links_resolve() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut docs = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in &docs {
        let text = std::fs::read_to_string(doc)?;
        let dir = doc.parent().context("doc dir")?;
        for (start, _) in text.match_indices("](") {
            let rest = &text[start + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.starts_with("http") || target.starts_with('#') || target.contains(' ') {
                continue;
            }
            let file = target.split('#').next().unwrap_or(target);
            checked += 1;
            if !dir.join(file).exists() {
                broken.push(format!("{}: {target}", doc.display()));
            }
        }
    }
    ensure!(checked > 10, "only {checked} links found");
    ensure!(broken.is_empty(), "broken links: {broken:#?}");
    Ok(())
}

#[tokio::test]
async fn newuser_audit_verify_checks_the_agents_chain() -> Result<()> {
    let agent = TestAgent::start(false).await?;
    for label in ["one", "two"] {
        let output = agent
            .hwsign(&["keys", "create", "--backend", "software", "--label", label])
            .await?;
        ensure!(output.status.success(), "{}", describe(&output));
    }
    let log = agent.path("state/audit.jsonl");
    let log_arg = log.display().to_string();
    let output = agent.hwsign(&["audit", "verify", &log_arg]).await?;
    ensure!(output.status.success(), "{}", describe(&output));
    ensure!(
        text(&output.stdout).contains("3 chained records (seq 0..=2)"),
        "{}",
        describe(&output)
    );
    // The second key's creation rewritten to name another label: found at its seq.
    let original = std::fs::read_to_string(&log)?;
    std::fs::write(
        &log,
        original.replace("\"label\":\"two\"", "\"label\":\"evil\""),
    )?;
    let output = agent.hwsign(&["audit", "verify", &log_arg]).await?;
    ensure!(!output.status.success(), "{}", describe(&output));
    ensure!(
        text(&output.stderr).contains("seq 2: edited"),
        "{}",
        describe(&output)
    );
    agent.stop().await
}
