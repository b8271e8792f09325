//! Delegated session keys end to end (docs/PROTOCOL.md §8): the real `hwsign-agent` binary with a
//! software key in delegated mode, a real verifier-protected API, raw HTTP. Statements the agent
//! would never produce (expired, for another audience, signed by another key) are made by an
//! independent signer with test-owned keys and the protocol's own code, so that every signature
//! in them is genuine and only the defect under test decides the verdict.

use crate::delegation_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use delegation_support::{
    Forgery, TestKey, credential, expect_ok, expect_refusal, header, make_delegated, now_unix,
    statement,
};
use hwsign_client::Signer;
use hwsign_e2e::{AUDIENCE, AgentProcess, ApiServer, create_key, send, signed};
use hwsign_proto::PublicKey;
use hwsign_proto::api::KeyLevel;
use hwsign_proto::profile::HWS1_DELEGATION_HEADER;
use hwsign_verifier::{KeyRegistry, RouteRule, VerifierConfig};

/// An agent with one software key in delegated mode, registered with `server`.
struct Delegated {
    agent: AgentProcess,
    key_id: String,
    public: PublicKey,
}

async fn delegated_agent(server: &ApiServer, lifetime_secs: Option<u64>) -> Result<Delegated> {
    let mut agent = AgentProcess::start()?;
    let (key_id, public) = create_key(&agent.client(), "software", "delegated").await?;
    server.register(&public, KeyLevel::Software)?;
    make_delegated(&mut agent, &key_id, lifetime_secs)?;
    Ok(Delegated {
        agent,
        key_id,
        public,
    })
}

fn get(server: &ApiServer, path: &str) -> Result<http::Request<Vec<u8>>> {
    Ok(http::Request::get(server.url(path)).body(Vec::new())?)
}

fn audit_records(agent: &AgentProcess, op: &str) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(agent.state_dir().join("audit.jsonl"))?;
    let mut records = Vec::new();
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line)?;
        if record["op"] == op {
            records.push(record);
        }
    }
    Ok(records)
}

/// Requests signed by the session key are accepted as the device key, at the device key's level,
/// marked delegated; the Credential is the session key, bound by the statement to the device key.
/// Presigned URLs from the same key are signed by the key itself.
#[tokio::test(flavor = "multi_thread")]
async fn delegation_accepted_as_the_device_key() -> Result<()> {
    let server = ApiServer::start().await?;
    let d = delegated_agent(&server, None).await?;
    let signer = Signer::new(d.agent.client(), d.key_id.clone(), AUDIENCE);

    let mut session_ids = BTreeSet::new();
    for i in 0..5 {
        let request = signed(&signer, get(&server, &format!("/items/{i}"))?).await?;
        let json = expect_ok(&send(&server, &request).await?)?;
        ensure!(json["key_id"] == d.key_id.as_str(), "{json}");
        ensure!(
            json["level"] == "software" && json["delegated"] == true,
            "{json}"
        );

        let session_id = credential(&request)?;
        ensure!(
            session_id != d.key_id,
            "the device key signed the request itself"
        );
        let statement = statement(&request)?;
        ensure!(statement.device_key_id == d.key_id);
        ensure!(statement.session_key.key_id() == session_id);
        ensure!(statement.audience == AUDIENCE);
        let lifetime = statement.not_after.unix() - statement.not_before.unix();
        ensure!(lifetime > 0 && lifetime <= 900, "lifetime {lifetime}");
        let signed_headers = header(&request, "authorization")?;
        ensure!(
            signed_headers.contains(HWS1_DELEGATION_HEADER),
            "{signed_headers}"
        );
        // The statement really is the device key's signature over its text.
        let (_, signature) = hwsign_proto::delegation::DelegationStatement::parse_header_value(
            header(&request, HWS1_DELEGATION_HEADER)?,
        )?;
        ensure!(d.public.verify_digest(&statement.digest(), &signature));
        session_ids.insert(session_id);
    }
    ensure!(
        session_ids.len() == 1,
        "one session serves the whole lifetime: {session_ids:?}"
    );

    // One statement issued, on record with its session key; each signature on record with it.
    let issued = audit_records(&d.agent, "issue_delegation")?;
    ensure!(issued.len() == 1, "{issued:?}");
    let session_id = session_ids.first().context("no session")?;
    ensure!(
        issued[0]["key_id"] == d.key_id.as_str()
            && issued[0]["session_key_id"] == session_id.as_str()
    );
    ensure!(issued[0]["outcome"] == "ok" && issued[0]["audience"] == AUDIENCE);
    let signs = audit_records(&d.agent, "sign")?;
    ensure!(
        signs.len() == 5
            && signs
                .iter()
                .all(|r| r["session_key_id"] == session_id.as_str())
    );
    // The session key never reaches the log or the state directory.
    let log = d.agent.log();
    ensure!(log.contains("delegation statement issued"), "{log}");

    let url: http::Uri = server.url("/download").parse()?;
    let presigned = signer
        .presign(&http::Method::GET, &url, &http::HeaderMap::new(), 60)
        .await?;
    let request = http::Request::get(presigned).body(Vec::new())?;
    let json = expect_ok(&send(&server, &request).await?)?;
    ensure!(
        json["key_id"] == d.key_id.as_str() && json["delegated"] == false,
        "{json}"
    );
    Ok(())
}

/// A statement whose window has passed: genuine device and session signatures, a fresh request
/// date, refused `delegation_invalid`. So is one not valid yet. The same construction with a
/// current window is accepted, so the refusals are about the window.
#[tokio::test(flavor = "multi_thread")]
async fn delegation_expired_statement_is_refused() -> Result<()> {
    let server = ApiServer::start().await?;
    let device = TestKey::from_seed("expiry device")?;
    let session = TestKey::from_seed("expiry session")?;
    server.register(&device.public, KeyLevel::Software)?;
    let now = now_unix()?;
    let forgery = |not_before: i64, not_after: i64| Forgery {
        device: &device,
        statement_signer: &device,
        session: &session,
        statement_audience: AUDIENCE,
        scope_audience: AUDIENCE,
        not_before,
        not_after,
        date: now,
    };

    let current = forgery(now - 30, now + 870).request(&server, "/window")?;
    let json = expect_ok(&send(&server, &current).await?)?;
    ensure!(json["key_id"] == device.public.key_id().as_str() && json["delegated"] == true);

    let expired = forgery(now - 900, now - 1).request(&server, "/window")?;
    expect_refusal(&send(&server, &expired).await?, 401, "delegation_invalid")?;
    let future = forgery(now + 60, now + 900).request(&server, "/window")?;
    expect_refusal(&send(&server, &future).await?, 401, "delegation_invalid")?;
    // Longer than the protocol allows, even if current.
    let too_long = forgery(now - 30, now + 900).request(&server, "/window")?;
    expect_refusal(&send(&server, &too_long).await?, 401, "delegation_invalid")?;
    Ok(())
}

/// A statement for another audience than the request's scope is refused `delegation_invalid`;
/// a delegated agent signing for another API is refused `wrong_audience`, as any request.
#[tokio::test(flavor = "multi_thread")]
async fn delegation_wrong_audience_is_refused() -> Result<()> {
    let server = ApiServer::start().await?;
    let device = TestKey::from_seed("audience device")?;
    let session = TestKey::from_seed("audience session")?;
    server.register(&device.public, KeyLevel::Software)?;
    let now = now_unix()?;
    let forgery = |statement_audience| Forgery {
        device: &device,
        statement_signer: &device,
        session: &session,
        statement_audience,
        scope_audience: AUDIENCE,
        not_before: now - 30,
        not_after: now + 870,
        date: now,
    };
    let other = forgery("other-api").request(&server, "/aud")?;
    expect_refusal(&send(&server, &other).await?, 401, "delegation_invalid")?;
    let own = forgery(AUDIENCE).request(&server, "/aud")?;
    expect_ok(&send(&server, &own).await?)?;

    let d = delegated_agent(&server, None).await?;
    let signer = Signer::new(d.agent.client(), d.key_id.clone(), "other-api");
    let request = signed(&signer, get(&server, "/aud")?).await?;
    ensure!(statement(&request)?.audience == "other-api");
    expect_refusal(&send(&server, &request).await?, 401, "wrong_audience")?;
    Ok(())
}

/// Revoking the device key stops its session keys at once, although the verifier has the
/// statement cached and the agent keeps using it.
#[tokio::test(flavor = "multi_thread")]
async fn delegation_statement_from_revoked_device_is_refused() -> Result<()> {
    let server = ApiServer::start().await?;
    let d = delegated_agent(&server, None).await?;
    let signer = Signer::new(d.agent.client(), d.key_id.clone(), AUDIENCE);
    let first = signed(&signer, get(&server, "/before")?).await?;
    expect_ok(&send(&server, &first).await?)?;

    server.registry.revoke(&d.key_id)?;
    let second = signed(&signer, get(&server, "/after")?).await?;
    ensure!(
        header(&second, HWS1_DELEGATION_HEADER)? == header(&first, HWS1_DELEGATION_HEADER)?,
        "the agent should still be using the same statement"
    );
    expect_refusal(&send(&server, &second).await?, 403, "device_revoked")?;
    Ok(())
}

/// A statement naming one key but signed by another is refused `delegation_invalid`. With the
/// real agent: key A's statement text spliced with key B's statement signature (both registered)
/// on A's request; the untouched request is accepted afterwards, so the splice alone was refused
/// (and did not burn the nonce). With a test signer: a statement naming device A signed by key B,
/// and a request signature that is genuine over exactly that statement.
#[tokio::test(flavor = "multi_thread")]
async fn delegation_statement_signed_by_another_key_is_refused() -> Result<()> {
    let server = ApiServer::start().await?;
    let mut agent = AgentProcess::start()?;
    let (a, a_public) = create_key(&agent.client(), "software", "a").await?;
    let (b, b_public) = create_key(&agent.client(), "software", "b").await?;
    server.register(&a_public, KeyLevel::Software)?;
    server.register(&b_public, KeyLevel::Software)?;
    make_delegated(&mut agent, &a, None)?;
    make_delegated(&mut agent, &b, None)?;
    let request_a = signed(
        &Signer::new(agent.client(), a.clone(), AUDIENCE),
        get(&server, "/spliced")?,
    )
    .await?;
    let request_b = signed(
        &Signer::new(agent.client(), b.clone(), AUDIENCE),
        get(&server, "/spliced")?,
    )
    .await?;
    let (text_a, _) = header(&request_a, HWS1_DELEGATION_HEADER)?
        .split_once('.')
        .context("statement A")?;
    let (_, signature_b) = header(&request_b, HWS1_DELEGATION_HEADER)?
        .split_once('.')
        .context("statement B")?;
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(text_a)?)?;
    ensure!(text.contains(&a) && !text.contains(&b));
    let mut spliced = request_a.clone();
    spliced.headers_mut().insert(
        HWS1_DELEGATION_HEADER,
        format!("{text_a}.{signature_b}").parse()?,
    );
    expect_refusal(&send(&server, &spliced).await?, 401, "delegation_invalid")?;
    expect_ok(&send(&server, &request_a).await?)?;

    let device = TestKey::from_seed("named device")?;
    let impostor = TestKey::from_seed("impostor")?;
    let session = TestKey::from_seed("impostor session")?;
    server.register(&device.public, KeyLevel::Software)?;
    server.register(&impostor.public, KeyLevel::Software)?;
    let now = now_unix()?;
    let forgery = |statement_signer| Forgery {
        device: &device,
        statement_signer,
        session: &session,
        statement_audience: AUDIENCE,
        scope_audience: AUDIENCE,
        not_before: now - 30,
        not_after: now + 870,
        date: now,
    };
    let foreign = forgery(&impostor).request(&server, "/foreign")?;
    expect_refusal(&send(&server, &foreign).await?, 401, "delegation_invalid")?;
    let genuine = forgery(&device).request(&server, "/foreign")?;
    expect_ok(&send(&server, &genuine).await?)?;
    Ok(())
}

/// A route rule with `strict = true` refuses delegated requests `policy_denied` (403) and
/// accepts the same device's strict requests; other routes accept delegated requests.
#[tokio::test(flavor = "multi_thread")]
async fn delegation_strict_route_refuses_delegated_requests() -> Result<()> {
    let mut config = VerifierConfig::any_host(AUDIENCE);
    config.route_rules = vec![RouteRule {
        path_prefix: "/admin/".into(),
        min_level: KeyLevel::Software,
        strict: true,
        presigned: Default::default(),
        step_up: None,
        users: Vec::new(),
        groups: Vec::new(),
    }];
    let server = ApiServer::start_with(config).await?;
    let d = delegated_agent(&server, None).await?;
    let delegated = Signer::new(d.agent.client(), d.key_id.clone(), AUDIENCE);
    let request = signed(&delegated, get(&server, "/admin/keys")?).await?;
    expect_refusal(&send(&server, &request).await?, 403, "policy_denied")?;
    for spelling in ["/%61dmin/keys", "//admin/keys"] {
        let request = signed(&delegated, get(&server, spelling)?).await?;
        expect_refusal(&send(&server, &request).await?, 403, "policy_denied")?;
    }
    let request = signed(&delegated, get(&server, "/public")?).await?;
    ensure!(expect_ok(&send(&server, &request).await?)?["delegated"] == true);

    let (strict_key, strict_public) = create_key(&d.agent.client(), "software", "strict").await?;
    server.register(&strict_public, KeyLevel::Software)?;
    let strict = Signer::new(d.agent.client(), strict_key.clone(), AUDIENCE);
    let request = signed(&strict, get(&server, "/admin/keys")?).await?;
    ensure!(header(&request, HWS1_DELEGATION_HEADER).is_err());
    let json = expect_ok(&send(&server, &request).await?)?;
    ensure!(json["key_id"] == strict_key.as_str() && json["delegated"] == false);
    Ok(())
}

/// With 2-second statements, four concurrent clients signing for seven seconds see the session
/// rotate several times and not one refused request: renewal happens before expiry.
#[tokio::test(flavor = "multi_thread")]
async fn delegation_rotation_without_failed_requests() -> Result<()> {
    let server = std::sync::Arc::new(ApiServer::start().await?);
    let d = delegated_agent(&server, Some(2)).await?;
    let deadline = Instant::now() + Duration::from_secs(7);
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..4 {
        let server = std::sync::Arc::clone(&server);
        let signer = Signer::new(d.agent.client(), d.key_id.clone(), AUDIENCE);
        tasks.spawn(async move {
            let mut sessions = BTreeSet::new();
            let mut sent = 0u32;
            while Instant::now() < deadline {
                let request =
                    signed(&signer, get(&server, &format!("/rot/{client}/{sent}"))?).await?;
                let response = send(&server, &request).await?;
                let json = expect_ok(&response)
                    .with_context(|| format!("client {client}, request {sent}"))?;
                ensure!(json["delegated"] == true);
                sessions.insert(credential(&request)?);
                sent += 1;
            }
            anyhow::Ok((sent, sessions))
        });
    }
    let mut sessions = BTreeSet::new();
    let mut total = 0;
    while let Some(result) = tasks.join_next().await {
        let (sent, seen) = result??;
        total += sent;
        sessions.extend(seen);
    }
    // Each statement lasts 2 s, so 7 s of traffic needs at least 3 of them.
    ensure!(
        sessions.len() >= 3,
        "{} sessions over {total} requests",
        sessions.len()
    );
    let issued = audit_records(&d.agent, "issue_delegation")?;
    ensure!(
        issued.len() >= sessions.len(),
        "{} issued, {} seen",
        issued.len(),
        sessions.len()
    );
    println!(
        "rotation: {total} requests, {} sessions, 0 refused",
        sessions.len()
    );
    Ok(())
}

/// Issue 9 §5: one key signing for ever new audiences cannot fill the agent's table of delegated
/// sessions so that other keys get 503. Each key holds at most `limits.max_sessions_per_key`
/// sessions: a new audience evicts the key's own least recently used session, never another
/// key's. (Before the fix the table was global: past 1024 sessions every key was refused.)
#[tokio::test(flavor = "multi_thread")]
async fn hardening_one_key_cannot_fill_the_session_table_for_other_keys() -> Result<()> {
    const AUDIENCES: usize = 1100;
    let server = ApiServer::start().await?;
    let mut agent = AgentProcess::start()?;
    let (greedy, _) = create_key(&agent.client(), "software", "greedy").await?;
    let (other, other_public) = create_key(&agent.client(), "software", "other").await?;
    server.register(&other_public, KeyLevel::Software)?;
    let path = agent.dir().join("agent.toml");
    let mut config = std::fs::read_to_string(&path)?;
    for key_id in [&greedy, &other] {
        config.push_str(&format!(
            "\n[[key_rules]]\nkey_id = \"{key_id}\"\nmode = \"delegated\"\n"
        ));
    }
    std::fs::write(&path, config)?;
    agent.restart(&[])?;

    let client = agent.client();
    let sign_for = |audience: String| hwsign_proto::api::SignRequest {
        key_id: greedy.clone(),
        audience,
        method: "GET".into(),
        authority: "api.example.test".into(),
        path: "/flood".into(),
        query: String::new(),
        headers: Vec::new(),
        body_sha256: hwsign_proto::keys::EMPTY_SHA256.to_owned(),
        signed_headers: Vec::new(),
        presign_expires_secs: None,
        encoding: Default::default(),
    };
    for i in 0..AUDIENCES {
        let response = client
            .sign(&sign_for(format!("aud-{i}")))
            .await
            .with_context(|| format!("the greedy key's session for audience {i}"))?;
        ensure!(
            response
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case(HWS1_DELEGATION_HEADER)),
            "not delegated: {response:?}"
        );
    }

    // The other key still gets its session, and the API accepts what it signs.
    let signer = Signer::new(agent.client(), other.clone(), AUDIENCE);
    let request = signed(&signer, get(&server, "/after-the-flood")?).await?;
    let json = expect_ok(&send(&server, &request).await?)?;
    ensure!(
        json["delegated"] == true && json["key_id"] == other.as_str(),
        "{json}"
    );

    // The greedy key kept only its newest sessions: its latest audience is served from its
    // session, its first one needs a new statement.
    let issued = |agent: &AgentProcess| -> Result<usize> {
        Ok(audit_records(agent, "issue_delegation")?
            .iter()
            .filter(|r| r["key_id"] == greedy.as_str())
            .count())
    };
    ensure!(issued(&agent)? == AUDIENCES);
    client
        .sign(&sign_for(format!("aud-{}", AUDIENCES - 1)))
        .await?;
    ensure!(issued(&agent)? == AUDIENCES);
    client.sign(&sign_for("aud-0".into())).await?;
    ensure!(issued(&agent)? == AUDIENCES + 1);
    Ok(())
}
