//! The real `hwsign-agent` binary: readiness via sd_notify, SIGTERM with a request in flight,
//! socket activation through systemd's own `systemd-socket-activate`, and socket takeover rules.
#![cfg(feature = "software")]

use crate::support;

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use http::Method;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt as _;
use tokio::net::UnixDatagram;

use support::{Client, read_to_end, start_body_request};

/// Upper bound on waiting for the agent; a guard against hanging, not a synchronization.
const PATIENCE: Duration = Duration::from_secs(60);

struct Daemon {
    child: Child,
    notify: UnixDatagram,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Waits for a notification containing `state` (`READY=1`, `STOPPING=1`).
    async fn wait_for(&self, state: &str) -> Result<()> {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = tokio::time::timeout(PATIENCE, self.notify.recv(&mut buf))
                .await
                .with_context(|| format!("no {state} from the agent"))??;
            let message = String::from_utf8_lossy(&buf[..n]);
            if message.lines().any(|l| l == state) {
                return Ok(());
            }
        }
    }

    fn signal(&self, signal: Signal) -> Result<()> {
        let pid = i32::try_from(self.child.id())?;
        kill(Pid::from_raw(pid), signal)?;
        Ok(())
    }

    fn wait_exit(&mut self) -> Result<std::process::ExitStatus> {
        Ok(self.child.wait()?)
    }
}

fn write_config(dir: &Path, socket: &Path) -> Result<PathBuf> {
    write_config_with(dir, socket, "")
}

/// [`write_config`] with `top_level` lines added before the tables.
fn write_config_with(dir: &Path, socket: &Path, top_level: &str) -> Result<PathBuf> {
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "state_dir = \"{}\"\nsocket_path = \"{}\"\n{top_level}\n[limits]\nshutdown_grace_ms = 30000\n",
            dir.join("state").display(),
            socket.display()
        ),
    )?;
    Ok(path)
}

fn notify_socket(dir: &Path) -> Result<(UnixDatagram, PathBuf)> {
    let path = dir.join("notify.sock");
    Ok((UnixDatagram::bind(&path)?, path))
}

fn spawn(mut command: Command, notify: UnixDatagram, notify_path: &Path) -> Result<Daemon> {
    let child = command
        .env("NOTIFY_SOCKET", notify_path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    Ok(Daemon { child, notify })
}

fn agent_command(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hwsign-agent"));
    command.arg("--config").arg(config);
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_the_request_in_flight_then_exits() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("run/agent.sock");
    let config = write_config(dir.path(), &socket)?;
    let (notify, notify_path) = notify_socket(dir.path())?;
    let mut daemon = spawn(agent_command(&config), notify, &notify_path)?;
    daemon.wait_for("READY=1").await?;

    let meta = std::fs::metadata(&socket)?;
    ensure!(meta.file_type().is_socket());
    ensure!(meta.permissions().mode() & 0o777 == 0o600);
    ensure!(
        std::fs::metadata(socket.parent().context("parent")?)?
            .permissions()
            .mode()
            & 0o777
            == 0o700
    );

    let body = br#"{"backend":"software","label":"in flight"}"#;
    let mut stream = start_body_request(&socket, "/v1/keys", body.len()).await?;
    daemon.signal(Signal::SIGTERM)?;
    daemon.wait_for("STOPPING=1").await?;
    stream.write_all(body).await?;
    let answer = read_to_end(&mut stream).await?;
    ensure!(answer.starts_with("HTTP/1.1 201"), "{answer}");

    let status = tokio::task::spawn_blocking(move || daemon.wait_exit()).await??;
    ensure!(status.success(), "{status:?}");
    ensure!(!socket.exists(), "socket removed on exit");
    let keys = std::fs::read_dir(dir.path().join("state/software"))?.count();
    ensure!(keys == 1, "the in-flight creation completed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_activation_uses_the_socket_systemd_passes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let activated = dir.path().join("activated.sock");
    // The configured path must stay unused: the agent serves on the inherited socket.
    let configured = dir.path().join("configured/agent.sock");
    let config = write_config(dir.path(), &configured)?;
    let (notify, notify_path) = notify_socket(dir.path())?;
    let mut command = Command::new("systemd-socket-activate");
    command
        .arg("--listen")
        .arg(&activated)
        .arg("-E")
        .arg(format!("NOTIFY_SOCKET={}", notify_path.display()))
        .arg("-E")
        .arg("RUST_LOG=info")
        .arg(env!("CARGO_BIN_EXE_hwsign-agent"))
        .arg("--config")
        .arg(&config);
    command
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn()?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut daemon = Daemon { child, notify };
    // systemd-socket-activate says when it listens, then waits for the first connection, which
    // is what starts the agent.
    let (listening_tx, listening_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut lines = std::io::BufReader::new(stderr).lines();
        let mut listening_tx = Some(listening_tx);
        for line in lines.by_ref().map_while(Result::ok) {
            eprintln!("{line}");
            if line.starts_with("Listening on") {
                if let Some(tx) = listening_tx.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    tokio::time::timeout(PATIENCE, listening_rx)
        .await
        .context("systemd-socket-activate never listened")??;
    let mut client = Client::connect(&activated).await?;
    let answer = client.call(Method::GET, "/v1/status", None).await?;
    ensure!(answer.status == 200, "{answer:?}");
    daemon.wait_for("READY=1").await?;
    ensure!(
        !configured.exists(),
        "the configured socket path was not bound"
    );
    drop(client);
    daemon.signal(Signal::SIGTERM)?;
    let status = tokio::task::spawn_blocking(move || daemon.wait_exit()).await??;
    ensure!(status.success(), "{status:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_socket_is_never_taken_over_and_a_stale_one_is() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("run/agent.sock");
    let config = write_config(dir.path(), &socket)?;
    let (notify, notify_path) = notify_socket(dir.path())?;
    let mut first = spawn(agent_command(&config), notify, &notify_path)?;
    first.wait_for("READY=1").await?;

    let output = agent_command(&config).output()?;
    ensure!(!output.status.success(), "a second agent must not start");
    ensure!(
        String::from_utf8_lossy(&output.stderr).contains("another process is listening"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut client = Client::connect(&socket).await?;
    ensure!(client.call(Method::GET, "/v1/status", None).await?.status == 200);
    drop(client);

    // A crashed agent leaves its socket file behind; the next one replaces it.
    first.signal(Signal::SIGKILL)?;
    tokio::task::spawn_blocking(move || first.wait_exit()).await??;
    ensure!(socket.exists(), "SIGKILL leaves the socket file");
    let (notify, notify_path) = {
        let path = dir.path().join("notify2.sock");
        (UnixDatagram::bind(&path)?, path)
    };
    let second = spawn(agent_command(&config), notify, &notify_path)?;
    second.wait_for("READY=1").await?;
    let mut client = Client::connect(&socket).await?;
    ensure!(client.call(Method::GET, "/v1/status", None).await?.status == 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_in_the_socket_s_place_is_not_deleted() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("run/agent.sock");
    std::fs::create_dir_all(socket.parent().context("parent")?)?;
    std::fs::write(&socket, b"precious")?;
    let config = write_config(dir.path(), &socket)?;
    let output = agent_command(&config).output()?;
    ensure!(!output.status.success());
    ensure!(std::fs::read(&socket)? == b"precious");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_directory_open_to_others_is_refused_not_changed() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared)?;
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777))?;
    let config = write_config(dir.path(), &shared.join("agent.sock"))?;
    let output = agent_command(&config).output()?;
    ensure!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(stderr.contains("accessible to other users"), "{stderr}");
    ensure!(std::fs::metadata(&shared)?.permissions().mode() & 0o7777 == 0o1777);
    ensure!(!shared.join("agent.sock").exists());
    Ok(())
}

/// Runs the agent expecting it to refuse to start, and returns its stderr. An agent that starts
/// anyway (and would serve) is killed after a while and reported.
fn refuses_to_start(mut command: Command) -> Result<String> {
    let stderr_path = tempfile::NamedTempFile::new()?;
    let mut child = command
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_path.reopen()?)
        .spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait()? {
            let stderr = std::fs::read_to_string(stderr_path.path())?;
            ensure!(!status.success(), "the agent exited successfully: {stderr}");
            return Ok(stderr);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(stderr_path.path())?;
            anyhow::bail!("the agent started instead of refusing: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_group_writable_socket_and_state_directories_are_refused() -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;

    // A socket directory its group may write: a group member could swap the socket.
    let dir = tempfile::tempdir()?;
    let run = dir.path().join("run");
    std::fs::create_dir(&run)?;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o770))?;
    let config = write_config(dir.path(), &run.join("agent.sock"))?;
    let stderr = refuses_to_start(agent_command(&config))?;
    ensure!(stderr.contains("writable by its group"), "{stderr}");
    ensure!(std::fs::metadata(&run)?.permissions().mode() & 0o7777 == 0o770);
    ensure!(!run.join("agent.sock").exists());

    // The same for the state directory (keys, audit log).
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    std::fs::create_dir(&state)?;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o770))?;
    let config = write_config(dir.path(), &dir.path().join("run/agent.sock"))?;
    let stderr = refuses_to_start(agent_command(&config))?;
    ensure!(stderr.contains("writable by its group"), "{stderr}");

    // Unless the group is the configured socket group and the agent owns the directory: then
    // the socket is the group's (0660) and the agent serves.
    let dir = tempfile::tempdir()?;
    let run = dir.path().join("run");
    std::fs::create_dir(&run)?;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o770))?;
    let gid = std::fs::metadata(&run)?.gid();
    let socket = run.join("agent.sock");
    let config = write_config_with(dir.path(), &socket, &format!("socket_group = {gid}"))?;
    let (notify, notify_path) = notify_socket(dir.path())?;
    let daemon = spawn(agent_command(&config), notify, &notify_path)?;
    daemon.wait_for("READY=1").await?;
    let meta = std::fs::metadata(&socket)?;
    ensure!(meta.permissions().mode() & 0o777 == 0o660 && meta.gid() == gid);
    let mut client = Client::connect(&socket).await?;
    ensure!(client.call(Method::GET, "/v1/status", None).await?.status == 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_a_configuration_others_could_write_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), &dir.path().join("run/agent.sock"))?;
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    };

    // Writable by everyone: anyone could add their uid to allowed_uids.
    mode(&config, 0o666)?;
    let stderr = refuses_to_start(agent_command(&config))?;
    ensure!(
        stderr.contains("refusing configuration") && stderr.contains("writable by group or others"),
        "{stderr}"
    );
    let mut check = agent_command(&config);
    check.arg("--check-config");
    let output = check.output()?;
    ensure!(!output.status.success(), "--check-config accepted it");

    // Writable by its group.
    mode(&config, 0o620)?;
    let stderr = refuses_to_start(agent_command(&config))?;
    ensure!(stderr.contains("refusing configuration"), "{stderr}");

    // A file that is fine, in a directory others could write (and so replace the file).
    mode(&config, 0o600)?;
    mode(dir.path(), 0o777)?;
    let stderr = refuses_to_start(agent_command(&config));
    mode(dir.path(), 0o700)?;
    let stderr = stderr?;
    ensure!(stderr.contains("refusing configuration"), "{stderr}");

    // Owned by another user.
    std::os::unix::fs::chown(&config, Some(65534), None)?;
    let stderr = refuses_to_start(agent_command(&config))?;
    ensure!(
        stderr.contains("refusing configuration") && stderr.contains("owned by uid 65534"),
        "{stderr}"
    );

    // Owned by the agent's user, 0600 or 0644: accepted.
    std::os::unix::fs::chown(&config, Some(nix::unistd::geteuid().as_raw()), None)?;
    for fine in [0o600, 0o644] {
        mode(&config, fine)?;
        let output = check.output()?;
        ensure!(output.status.success(), "{fine:o}: {output:?}");
    }
    Ok(())
}

/// What a caller puts into strings to forge a line of the agent's log and wipe the real one
/// on a terminal.
const FORGED: &str = "\n2001-01-01T00:00:00.000000Z  INFO hwsign_agent::api::sign: FORGED \
                      request signed key_id=hk1_attacker\u{1b}[1A\u{1b}[2K\r";

#[tokio::test(flavor = "multi_thread")]
async fn hardening_caller_strings_cannot_forge_agent_log_lines() -> Result<()> {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("run/agent.sock");
        let config = write_config(dir.path(), &socket)?;
        let (notify, notify_path) = notify_socket(dir.path())?;
        let log_path = dir.path().join("agent.log");
        let mut command = agent_command(&config);
        if format == "json" {
            command.arg("--log-format").arg(format);
        }
        let child = command
            .env("NOTIFY_SOCKET", &notify_path)
            // `request signed` is a debug line (the audit log records every signature).
            .env("RUST_LOG", "info,hwsign_agent=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path)?)
            .spawn()?;
        let mut daemon = Daemon { child, notify };
        daemon.wait_for("READY=1").await?;

        let mut client = Client::connect(&socket).await?;
        let created = client
            .call(
                Method::POST,
                "/v1/keys",
                Some(br#"{"backend":"software","label":"victim"}"#.to_vec()),
            )
            .await?;
        ensure!(created.status == 201, "{created:?}");
        let key: serde_json::Value = serde_json::from_slice(&created.body)?;
        let key_id = key["id"].as_str().context("key id")?.to_owned();
        let sign = |field: &str, value: String| {
            let mut request = serde_json::json!({
                "key_id": key_id,
                "audience": "payments",
                "method": "GET",
                "authority": "api.example.com",
                "path": "/items",
                "body_sha256": hwsign_proto::keys::EMPTY_SHA256,
            });
            request[field] = serde_json::Value::String(value);
            serde_json::to_vec(&request)
        };
        let attacks = [
            sign("path", format!("/items{FORGED}"))?,
            sign("authority", format!("api.example.com{FORGED}"))?,
            sign("audience", format!("payments{FORGED}"))?,
            sign("method", format!("GET{FORGED}"))?,
            sign("query", format!("a=1{FORGED}"))?,
            // An unknown field's name ends up quoted in the parser's error message.
            format!(
                r#"{{"key_id":"{key_id}",{}:1}}"#,
                serde_json::to_string(FORGED)?
            )
            .into_bytes(),
        ];
        for body in attacks {
            let answer = client
                .call(Method::POST, "/v1/sign", Some(body.clone()))
                .await?;
            // Refused (400), or for the query, whose bytes the canonical form percent-encodes,
            // possibly signed; either way, what reaches the log is checked below.
            ensure!(
                !answer.status.is_server_error(),
                "{}: {answer:?}",
                String::from_utf8_lossy(&body)
            );
        }
        let label = serde_json::json!({"backend": "software", "label": format!("x{FORGED}")});
        let answer = client
            .call(Method::POST, "/v1/keys", Some(serde_json::to_vec(&label)?))
            .await?;
        ensure!(answer.status.is_client_error(), "{answer:?}");
        // A request the agent signs is logged, with its (validated) fields.
        let answer = client
            .call(
                Method::POST,
                "/v1/sign",
                Some(sign("path", "/items".into())?),
            )
            .await?;
        ensure!(answer.status == 200, "{answer:?}");
        drop(client);
        daemon.signal(Signal::SIGTERM)?;
        let status = tokio::task::spawn_blocking(move || daemon.wait_exit()).await??;
        ensure!(status.success(), "{status:?}");

        let log = std::fs::read_to_string(&log_path)?;
        ensure!(
            !log.contains('\u{1b}'),
            "an escape sequence reached the log:\n{log}"
        );
        ensure!(
            !log.contains('\r'),
            "a carriage return reached the log:\n{log}"
        );
        for line in log.lines() {
            ensure!(!line.starts_with("2001-"), "forged line in the log:\n{log}");
            if format == "json" {
                let value: serde_json::Value = serde_json::from_str(line)
                    .with_context(|| format!("not a JSON log line: {line}"))?;
                ensure!(
                    value["level"].is_string() && value["timestamp"].is_string(),
                    "{line}"
                );
            }
        }
        ensure!(log.contains("request signed"), "{log}");
        ensure!(log.contains("request refused"), "{log}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_a_socket_passed_by_systemd_in_a_group_writable_directory_is_refused()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let run = dir.path().join("run");
    std::fs::create_dir(&run)?;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o770))?;
    let activated = run.join("agent.sock");
    let config = write_config(dir.path(), &dir.path().join("configured/agent.sock"))?;
    let mut command = Command::new("systemd-socket-activate");
    command
        .arg("--listen")
        .arg(&activated)
        .arg("-E")
        .arg("RUST_LOG=info")
        .arg(env!("CARGO_BIN_EXE_hwsign-agent"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn()?;
    let stderr = child.stderr.take().context("stderr")?;
    let (listening_tx, listening_rx) = tokio::sync::oneshot::channel();
    let collected = std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut listening_tx = Some(listening_tx);
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("Listening on") {
                if let Some(tx) = listening_tx.take() {
                    let _ = tx.send(());
                }
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    tokio::time::timeout(PATIENCE, listening_rx)
        .await
        .context("systemd-socket-activate never listened")??;
    // The first connection starts the agent, which must refuse the socket rather than serve.
    let answer = match Client::connect(&activated).await {
        Ok(mut client) => client.call(Method::GET, "/v1/status", None).await.ok(),
        Err(_) => None,
    };
    let mut daemon = Daemon {
        child,
        notify: UnixDatagram::unbound()?,
    };
    ensure!(answer.is_none(), "the agent served: {answer:?}");
    let status = tokio::task::spawn_blocking(move || daemon.wait_exit()).await??;
    let stderr = collected
        .join()
        .map_err(|_| anyhow::anyhow!("stderr reader"))?;
    ensure!(!status.success(), "{stderr}");
    ensure!(stderr.contains("writable by its group"), "{stderr}");
    Ok(())
}
