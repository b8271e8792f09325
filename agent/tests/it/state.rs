//! What the agent keeps on disk: software key files (mode, atomic writes, reload after restart,
//! corrupt files skipped), the audit log, and per-key rules applied to loaded keys.
#![cfg(feature = "software")]

use crate::support;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use anyhow::{Result, ensure};
use serde_json::{Value, json};

use hwsign_proto::api::{HeaderField, KeyInfo, KeyList, SignRequest, SignResponse};
use hwsign_proto::keys::EMPTY_SHA256;

use support::{TestAgent, config_in};

async fn create_key(agent: &TestAgent, label: &str) -> Result<KeyInfo> {
    agent
        .post("/v1/keys", &json!({"backend": "software", "label": label}))
        .await?
        .ok_json()
}

fn sign_request(key_id: &str, audience: &str, authority: &str) -> SignRequest {
    SignRequest {
        key_id: key_id.to_owned(),
        audience: audience.to_owned(),
        method: "GET".into(),
        authority: authority.to_owned(),
        path: "/items".into(),
        query: String::new(),
        headers: vec![HeaderField {
            name: "accept".into(),
            value: "application/json".into(),
        }],
        body_sha256: EMPTY_SHA256.into(),
        signed_headers: Vec::new(),
        presign_expires_secs: None,
        encoding: Default::default(),
    }
}

fn mode(path: &std::path::Path) -> Result<u32> {
    Ok(fs::metadata(path)?.permissions().mode() & 0o777)
}

#[tokio::test(flavor = "multi_thread")]
async fn key_files_are_private_and_written_whole() -> Result<()> {
    let agent = TestAgent::start().await?;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(create_key(&agent, &format!("key {i}")).await?.id);
    }
    let dir = agent.state_dir().join("software");
    ensure!(mode(&agent.state_dir())? == 0o700);
    ensure!(mode(&dir)? == 0o700);
    let mut names: Vec<String> = fs::read_dir(&dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    names.sort();
    let mut expected: Vec<String> = ids.iter().map(|id| format!("{id}.key")).collect();
    expected.sort();
    ensure!(
        names == expected,
        "only finished key files, no temporaries: {names:?}"
    );
    for name in &names {
        let path = dir.join(name);
        ensure!(mode(&path)? == 0o600, "{name}");
        let text = fs::read_to_string(&path)?;
        ensure!(
            !text.contains("BEGIN"),
            "no PEM private key lying around in clear text form"
        );
        let value: Value = serde_json::from_str(&text)?;
        ensure!(value["format"] == "hwsign-software-key-v2");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_survive_a_restart() -> Result<()> {
    let agent = TestAgent::start().await?;
    let key = create_key(&agent, "persistent").await?;
    let dir = agent.stop().await?;

    let config = config_in(dir.path());
    let agent = TestAgent::start_in(dir, config).await?;
    let list: KeyList = agent.get_ok("/v1/keys").await?;
    ensure!(
        list.keys == vec![key.clone()],
        "same id, label, public key, time: {list:?}"
    );
    let signed: SignResponse = agent
        .post("/v1/sign", &sign_request(&key.id, "api", "example.com"))
        .await?
        .ok_json()?;
    ensure!(signed.key_id == key.id);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn unusable_key_files_are_skipped_not_fatal() -> Result<()> {
    let agent = TestAgent::start().await?;
    let good = create_key(&agent, "good").await?;
    let exposed = create_key(&agent, "exposed").await?;
    let swapped = create_key(&agent, "swapped").await?;
    let dir = agent.stop().await?;
    let keys = dir.path().join("state/software");

    // Garbage under a key name, a truncated copy, a world-readable key, a key under another
    // key's name, a leftover temporary file of an interrupted write, and an unrelated file.
    let garbage = format!("hk1_{}.key", "0".repeat(32));
    fs::write(keys.join(&garbage), b"\x00\x01 not json")?;
    let full = fs::read(keys.join(format!("{}.key", good.id)))?;
    let truncated = format!("hk1_{}.key", "1".repeat(32));
    fs::write(keys.join(&truncated), &full[..full.len() / 2])?;
    fs::set_permissions(
        keys.join(format!("{}.key", exposed.id)),
        fs::Permissions::from_mode(0o644),
    )?;
    let renamed = format!("hk1_{}.key", "2".repeat(32));
    fs::rename(
        keys.join(format!("{}.key", swapped.id)),
        keys.join(&renamed),
    )?;
    let leftover = format!(".{}.key.tmp-0011223344556677", good.id);
    fs::write(keys.join(&leftover), b"partial")?;
    fs::write(keys.join("README"), b"not a key")?;
    for name in [&garbage, &truncated, &renamed, &leftover] {
        fs::set_permissions(keys.join(name), fs::Permissions::from_mode(0o600))?;
    }

    let config = config_in(dir.path());
    let agent = TestAgent::start_in(dir, config).await?;
    let list: KeyList = agent.get_ok("/v1/keys").await?;
    let ids: Vec<&str> = list.keys.iter().map(|k| k.id.as_str()).collect();
    ensure!(ids == [good.id.as_str()], "{ids:?}");
    ensure!(
        !keys.join(&leftover).exists(),
        "interrupted write cleaned up"
    );
    ensure!(
        keys.join(&garbage).exists(),
        "unusable files are left for the operator"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn key_rules_restrict_audiences_hosts_and_callers() -> Result<()> {
    let agent = TestAgent::start().await?;
    let limited = create_key(&agent, "limited").await?;
    let private = create_key(&agent, "private").await?;
    let free = create_key(&agent, "free").await?;
    let dir = agent.stop().await?;

    let mut config = config_in(dir.path());
    config.key_rules = hwsign_agent::Config::parse(&format!(
        r#"
        state_dir = "/unused"
        socket_path = "/unused.sock"
        [[key_rules]]
        key_id = "{}"
        audiences = ["payments"]
        hosts = ["api.example.com", "*.internal.example"]
        [[key_rules]]
        key_id = "{}"
        uids = [{}]
        "#,
        limited.id,
        private.id,
        hwsign_agent::config::own_uid().wrapping_add(1),
    ))?
    .key_rules;
    config.validate()?;
    let agent = TestAgent::start_in(dir, config).await?;

    let sign = |key: &str, audience: &str, host: &str| sign_request(key, audience, host);
    for (request, expected) in [
        (sign(&limited.id, "payments", "api.example.com"), None),
        (sign(&limited.id, "payments", "api.example.com:8443"), None),
        (sign(&limited.id, "payments", "db.internal.example"), None),
        (
            sign(&limited.id, "billing", "api.example.com"),
            Some("key_not_permitted"),
        ),
        (
            sign(&limited.id, "payments", "evil.example.com"),
            Some("key_not_permitted"),
        ),
        (
            sign(&private.id, "payments", "api.example.com"),
            Some("key_not_permitted"),
        ),
        (sign(&free.id, "anything", "anywhere.example"), None),
    ] {
        let answer = agent.post("/v1/sign", &request).await?;
        match expected {
            None => ensure!(answer.status == 200, "{request:?}: {answer:?}"),
            Some(code) => answer.expect_error(403, code)?,
        }
    }

    // Each decision is in the audit log, with what was (or would have been) signed.
    let log = fs::read_to_string(&agent.config.audit_log)?;
    let records: Vec<Value> = log
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let signs: Vec<&Value> = records.iter().filter(|r| r["op"] == "sign").collect();
    ensure!(signs.len() == 7, "{log}");
    let refused = signs
        .iter()
        .filter(|r| r["outcome"] == "key_not_permitted")
        .count();
    ensure!(refused == 3, "{log}");
    let first = signs[0];
    ensure!(first["key_id"] == limited.id.as_str());
    ensure!(first["audience"] == "payments");
    ensure!(first["host"] == "api.example.com");
    ensure!(first["method"] == "GET");
    ensure!(first["path"] == "/items");
    ensure!(first["backend"] == "software");
    ensure!(first["uid"] == hwsign_agent::config::own_uid());
    ensure!(
        !log.contains("application/json"),
        "header values are not logged"
    );
    let creates = records.iter().filter(|r| r["op"] == "create_key").count();
    ensure!(creates == 3, "creations from the first run are kept: {log}");
    ensure!(mode(&agent.config.audit_log)? == 0o600);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_audit_log_that_cannot_be_opened_stops_start_up() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // A directory where the log file should be.
    let mut config = config_in(dir.path());
    config.audit_log = dir.path().join("state");
    fs::create_dir_all(&config.audit_log)?;
    let agent = TestAgent::start_in(dir, config).await?;
    let outcome = agent.stop().await;
    ensure!(outcome.is_err(), "start-up must fail without an audit log");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_waits_for_the_request_in_flight() -> Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut agent = TestAgent::start().await?;
    let body = br#"{"backend":"software","label":"late"}"#;
    let mut stream = support::start_body_request(agent.socket(), "/v1/keys", body.len()).await?;
    // The handler is now waiting for the body. Stop the agent, then send it.
    let stop = agent.shutdown();
    let finish = async {
        stream.write_all(body).await?;
        support::read_to_end(&mut stream).await
    };
    let (stopped, answer) = tokio::join!(stop, finish);
    stopped?;
    let answer = answer?;
    ensure!(answer.contains("HTTP/1.1 201"), "{answer}");
    ensure!(
        tokio::net::UnixStream::connect(agent.socket())
            .await
            .is_err(),
        "no longer accepting"
    );
    ensure!(
        fs::read_dir(agent.state_dir().join("software"))?.count() == 1,
        "key was created"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_gives_up_on_stuck_requests_after_the_grace_period() -> Result<()> {
    let mut agent = TestAgent::start_with(|c| c.limits.shutdown_grace_ms = 100).await?;
    let stream = support::start_body_request(agent.socket(), "/v1/keys", 100).await?;
    // Returns although the body never comes.
    agent.shutdown().await?;
    drop(stream);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn hardening_attestation_and_activation_follow_key_rules_uids() -> Result<()> {
    let agent = TestAgent::start().await?;
    let private = create_key(&agent, "private").await?;
    let dir = agent.stop().await?;
    let mut config = config_in(dir.path());
    config.key_rules = hwsign_agent::Config::parse(&format!(
        "state_dir = \"/unused\"\nsocket_path = \"/unused.sock\"\n\
         [[key_rules]]\nkey_id = \"{}\"\nuids = [{}]\n",
        private.id,
        hwsign_agent::config::own_uid().wrapping_add(1),
    ))?
    .key_rules;
    config.validate()?;
    let agent = TestAgent::start_in(dir, config).await?;

    // The caller the rule excludes gets the signing refusal for every use of the key.
    agent
        .call(
            http::Method::GET,
            &format!(
                "/v1/keys/{}/attestation?nonce=AAECAwQFBgcICQoLDA0ODw",
                private.id
            ),
            None,
        )
        .await?
        .expect_error(403, "key_not_permitted")?;
    agent
        .post(
            &format!("/v1/keys/{}/activate-credential", private.id),
            &json!({"credential_blob": "AAAA", "encrypted_secret": "AAAA"}),
        )
        .await?
        .expect_error(403, "key_not_permitted")?;
    agent
        .post("/v1/sign", &sign_request(&private.id, "a", "h.example"))
        .await?
        .expect_error(403, "key_not_permitted")?;

    // The refused activation is on record.
    let log = fs::read_to_string(&agent.config.audit_log)?;
    ensure!(
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|r| r["op"] == "activate_credential" && r["outcome"] == "key_not_permitted"),
        "{log}"
    );
    Ok(())
}
