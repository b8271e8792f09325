//! `hwsign proxy` end to end: the real binary between callers that know nothing of hwsign (curl,
//! the real openai Python SDK) and APIs behind the real verifier, over plain HTTP to loopback and
//! over HTTPS (rustls, a test CA made with openssl, a rustls TLS front).

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use hwsign_e2e::openai_api::OpenAiApi;
use hwsign_e2e::proxy::{ProxyProcess, curl};
use hwsign_e2e::tls_front::{TestPki, TlsFront};
use hwsign_e2e::{AUDIENCE, AgentProcess, ApiServer, create_key, sdk};
use hwsign_proto::api::KeyLevel;

const CHAT: &str = r#"{"model":"proxy-test","messages":[{"role":"user","content":"hello"}]}"#;

/// An agent with a key registered with a fresh OpenAI-shaped API, and a proxy to that API.
async fn openai_setup(extra: &[&str]) -> Result<(AgentProcess, OpenAiApi, String, ProxyProcess)> {
    let agent = AgentProcess::start()?;
    let api = OpenAiApi::start().await?;
    let (key, public) = create_key(&agent.client(), "software", "proxy").await?;
    api.register(&public, KeyLevel::Software)?;
    let mut args = upstream_args(&format!("http://{}", api.addr), &key);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let proxy = ProxyProcess::start(agent.socket(), &ProxyProcess::free_listen()?, &args)?;
    Ok((agent, api, key, proxy))
}

/// The OpenAI-shaped API behind a rustls TLS front with a test CA, and an agent whose key it
/// knows.
struct HttpsSetup {
    pki: TestPki,
    agent: AgentProcess,
    _api: OpenAiApi,
    front: TlsFront,
    key: String,
}

impl HttpsSetup {
    async fn start() -> Result<Self> {
        let pki = TestPki::generate()?;
        let (listener, tls) = TlsFront::bind(&pki).await?;
        let front_addr = listener.local_addr()?;
        let agent = AgentProcess::start()?;
        let api = OpenAiApi::start_for_hosts(&[front_addr.to_string()]).await?;
        let front = TlsFront::serve(listener, tls, api.addr)?;
        let (key, public) = create_key(&agent.client(), "software", "https").await?;
        api.register(&public, KeyLevel::Software)?;
        Ok(Self {
            pki,
            agent,
            _api: api,
            front,
            key,
        })
    }
}

/// `--upstream <url> --key <key> --audience AUDIENCE`.
fn upstream_args(url: &str, key: &str) -> Vec<String> {
    ["--upstream", url, "--key", key, "--audience", AUDIENCE]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

fn chat_content(body: &serde_json::Value) -> Result<serde_json::Value> {
    let content = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    Ok(serde_json::from_str(content)?)
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_curl_is_signed_and_a_repeat_gets_a_fresh_signature() -> Result<()> {
    let (_agent, _api, key, proxy) = openai_setup(&[]).await?;
    let url = proxy.url("/v1/chat/completions");
    let call = || {
        curl(&[
            "-H",
            "content-type: application/json",
            // The caller's own credentials are not forwarded (the signature takes Authorization).
            "-H",
            "authorization: Bearer sk-caller-secret",
            "-d",
            CHAT,
            &url,
        ])
    };
    let first = call()?;
    let second = call()?;
    ensure!(
        first.status == 200,
        "first: {first:?}\nproxy log:\n{}",
        proxy.log()
    );
    ensure!(
        second.status == 200,
        "second: {second:?}\nproxy log:\n{}",
        proxy.log()
    );
    let content = chat_content(&second.json()?)?;
    ensure!(
        content["key_id"] == key.as_str(),
        "signed by another key: {content}"
    );
    let nonces = content["nonces"].as_array().cloned().unwrap_or_default();
    ensure!(
        nonces.len() == 2
            && nonces[0] != nonces[1]
            && nonces[0].as_str().is_some_and(|n| !n.is_empty()),
        "two accepted calls with two different nonces expected: {nonces:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_serves_the_real_openai_python_sdk_plain_and_streaming() -> Result<()> {
    let python = sdk::prepare("python")?;
    let (_agent, _api, key, proxy) = openai_setup(&[]).await?;
    // No hwsign code in the client: the SDK only gets the proxy as its base URL.
    let script = r#"
import json, os, sys
from openai import OpenAI
client = OpenAI(base_url=os.environ["PROXY_BASE"], api_key="sk-not-used", max_retries=0)
plain = client.chat.completions.create(
    model="sdk-plain", messages=[{"role": "user", "content": "plain call"}])
streamed = "".join(
    chunk.choices[0].delta.content or ""
    for chunk in client.chat.completions.create(
        model="sdk-stream", messages=[{"role": "user", "content": "streamed call"}], stream=True)
    if chunk.choices)
print(json.dumps({"plain": json.loads(plain.choices[0].message.content),
                  "streamed": json.loads(streamed)}))
"#;
    let mut command = Command::new(python);
    command.args(["-c", script]);
    let env = [("PROXY_BASE".to_owned(), proxy.url("/v1"))];
    let output = sdk::run(command, &env, Duration::from_secs(120)).await?;
    ensure!(
        output.success,
        "python failed:\n{}\nproxy log:\n{}",
        output.text,
        proxy.log()
    );
    let line = output.text.lines().last().unwrap_or_default();
    let result: serde_json::Value = serde_json::from_str(line)?;
    for (name, echo) in [("plain", "plain call"), ("streamed", "streamed call")] {
        ensure!(
            result[name]["key_id"] == key.as_str() && result[name]["echo"] == echo,
            "{name}: {result}"
        );
    }
    Ok(())
}

#[test]
fn proxy_refuses_to_listen_beyond_loopback() -> Result<()> {
    let output = Command::new(hwsign_test_support::binaries::bin_path("hwsign")?)
        .args([
            "--socket",
            "/nonexistent/agent.sock",
            "proxy",
            "--listen",
            "0.0.0.0:0",
            "--upstream",
            "https://api.example.com",
            "--key",
            "hk1_x",
            "--audience",
            "api",
        ])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success() && stderr.contains("listens only on loopback"),
        "{:?}: {stderr}",
        output.status
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_refuses_a_body_over_its_bound_with_413() -> Result<()> {
    let (_agent, _api, _key, proxy) = openai_setup(&["--max-body", "1024"]).await?;
    let big = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(2048)
    );
    let url = proxy.url("/v1/chat/completions");
    let declared = curl(&["-H", "content-type: application/json", "-d", &big, &url])?;
    // Chunked: no Content-Length to refuse early, the bound applies while spooling.
    let chunked = curl(&[
        "-H",
        "content-type: application/json",
        "-H",
        "transfer-encoding: chunked",
        "-d",
        &big,
        &url,
    ])?;
    let small = curl(&["-H", "content-type: application/json", "-d", CHAT, &url])?;
    for refused in [&declared, &chunked] {
        ensure!(
            refused.status == 413 && refused.json()?["error"]["code"] == "proxy_body_too_large",
            "{refused:?}"
        );
    }
    ensure!(small.status == 200, "{small:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_forwards_only_to_its_configured_upstream() -> Result<()> {
    let (agent, api, _key, proxy) = openai_setup(&[]).await?;
    // Another verifier-protected API that trusts the same key: the caller must not reach it.
    let other = ApiServer::start().await?;
    let (_, public) = create_key(&agent.client(), "software", "other").await?;
    other.register(&public, KeyLevel::Software)?;
    // Absolute-form (curl as a forward-proxy client): refused.
    let absolute = curl(&[
        "-x",
        &format!("http://{}", proxy.listen),
        &other.url("/v1/anything"),
    ])?;
    ensure!(
        absolute.status == 400 && absolute.json()?["error"]["code"] == "proxy_absolute_target",
        "{absolute:?}"
    );
    // A Host header naming the other server changes nothing: the request goes to the
    // configured upstream, signed for it, and is accepted there.
    let host = format!("host: {}", other.authority());
    let spoofed = curl(&[
        "-H",
        &host,
        "-H",
        "content-type: application/json",
        "-d",
        CHAT,
        &proxy.url("/v1/chat/completions"),
    ])?;
    ensure!(spoofed.status == 200, "{spoofed:?}\n{}", proxy.log());
    ensure!(
        spoofed.json()?["object"] == "chat.completion",
        "{spoofed:?}"
    );
    drop(api);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_spools_a_large_body_to_a_file_and_forwards_it_whole() -> Result<()> {
    let agent = AgentProcess::start()?;
    let api = ApiServer::start().await?;
    let (key, public) = create_key(&agent.client(), "software", "proxy").await?;
    api.register(&public, KeyLevel::Software)?;
    let listen = ProxyProcess::free_listen()?;
    let args = upstream_args(&api.url(""), &key);
    let proxy = ProxyProcess::start(agent.socket(), &listen, &args)?;
    // 3 MiB: above the 1 MiB in-memory threshold, below the 64 MiB bound.
    let body = vec![b'z'; 3 * 1024 * 1024 + 7];
    let file = proxy.dir().join("body.bin");
    std::fs::write(&file, &body)?;
    let data = format!("@{}", file.display());
    let answer = curl(&[
        "-H",
        "content-type: application/octet-stream",
        "--data-binary",
        &data,
        &proxy.url("/upload?part=1"),
    ])?;
    ensure!(answer.status == 200, "{answer:?}\n{}", proxy.log());
    let json = answer.json()?;
    use sha2::Digest as _;
    let expected = hex::encode(sha2::Sha256::digest(&body));
    ensure!(
        json["body_sha256"] == expected.as_str()
            && json["body_len"] == body.len()
            && json["path"] == "/upload"
            && json["query"] == "part=1",
        "{json}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_reaches_an_https_upstream_through_rustls_with_a_test_ca() -> Result<()> {
    let HttpsSetup {
        pki,
        agent,
        _api,
        front,
        key,
    } = HttpsSetup::start().await?;
    let args = |cacert: bool| {
        let mut args = upstream_args(&front.url(), &key);
        if cacert {
            args.push("--cacert".to_owned());
            args.push(pki.ca_path().display().to_string());
        }
        args
    };
    let trusted = ProxyProcess::start(agent.socket(), &ProxyProcess::free_listen()?, &args(true))?;
    let untrusted =
        ProxyProcess::start(agent.socket(), &ProxyProcess::free_listen()?, &args(false))?;
    let call = |proxy: &ProxyProcess| {
        curl(&[
            "-H",
            "content-type: application/json",
            "-d",
            CHAT,
            &proxy.url("/v1/chat/completions"),
        ])
    };
    let accepted = call(&trusted)?;
    let refused = call(&untrusted)?;
    ensure!(accepted.status == 200, "{accepted:?}\n{}", trusted.log());
    ensure!(
        chat_content(&accepted.json()?)?["key_id"] == key.as_str(),
        "{accepted:?}"
    );
    // Without the test CA the certificate is not trusted: no request reaches the API.
    ensure!(
        refused.status == 502 && refused.json()?["error"]["code"] == "proxy_upstream_unreachable",
        "{refused:?}"
    );
    ensure!(
        untrusted.log().contains("certificate"),
        "{}",
        untrusted.log()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_on_a_unix_socket_serves_only_allowed_uids() -> Result<()> {
    let agent = AgentProcess::start()?;
    let api = OpenAiApi::start().await?;
    let (key, public) = create_key(&agent.client(), "software", "proxy").await?;
    api.register(&public, KeyLevel::Software)?;
    let dir = tempfile::tempdir()?;
    let start = |name: &str, extra: &[&str]| {
        let mut args = upstream_args(&format!("http://{}", api.addr), &key);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let listen = format!("unix:{}", dir.path().join(name).display());
        ProxyProcess::start(agent.socket(), &listen, &args)
    };
    let own = start("own.sock", &[])?;
    // Only some other uid is allowed: this process's uid is refused.
    let other_uid = (nix::unistd::geteuid().as_raw() + 4242).to_string();
    let others = start("others.sock", &["--allow-uid", &other_uid])?;
    let call = |proxy: &ProxyProcess| {
        let socket = proxy.listen.trim_start_matches("unix:").to_owned();
        curl(&[
            "--unix-socket",
            &socket,
            "-H",
            "content-type: application/json",
            "-d",
            CHAT,
            "http://localhost/v1/chat/completions",
        ])
    };
    let accepted = call(&own)?;
    let refused = call(&others)?;
    ensure!(accepted.status == 200, "{accepted:?}\n{}", own.log());
    ensure!(refused.status == 0, "{refused:?}");
    ensure!(
        others.log().contains("refused a connection from uid"),
        "{}",
        others.log()
    );
    Ok(())
}

/// `hwsign request` (item 4 of issue 16, beside the proxy's HTTPS): https:// through rustls with
/// `--cacert`, accepted by the verifier behind the TLS front; refused without the test CA.
#[tokio::test(flavor = "multi_thread")]
async fn proxy_cli_request_speaks_https_with_a_cacert() -> Result<()> {
    let HttpsSetup {
        pki,
        agent,
        _api,
        front,
        key,
    } = HttpsSetup::start().await?;
    let url = format!("{}/v1/chat/completions", front.url());
    let ca = pki.ca_path().display().to_string();
    let request = |extra: &[&str]| {
        let mut command = Command::new(hwsign_test_support::binaries::bin_path("hwsign")?);
        command.arg("--socket").arg(agent.socket()).args([
            "request",
            "--key",
            &key,
            "--audience",
            AUDIENCE,
            "-H",
            "content-type: application/json",
            "-d",
            CHAT,
        ]);
        command.args(extra).arg(&url);
        anyhow::Ok(command.output()?)
    };
    let accepted = request(&["--cacert", &ca])?;
    let refused = request(&[])?;
    let stdout = String::from_utf8_lossy(&accepted.stdout);
    ensure!(
        accepted.status.success() && stdout.contains("200 OK") && stdout.contains(&key),
        "{stdout}{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        !refused.status.success() && stderr.contains("certificate"),
        "{stderr}"
    );
    Ok(())
}

/// Reads from `stream` until `needle` has arrived; a guard of 30 s turns a hang into a failure.
async fn read_until(
    stream: &mut tokio::net::TcpStream,
    seen: &mut String,
    needle: &str,
) -> Result<()> {
    use tokio::io::AsyncReadExt as _;
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(30), async {
        while !seen.contains(needle) {
            let read = stream.read(&mut buffer).await?;
            anyhow::ensure!(read > 0, "connection closed before {needle:?}: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
        Ok(())
    })
    .await
    .map_err(|_| anyhow::anyhow!("{needle:?} did not arrive through the proxy: {seen}"))?
}

/// Server-sent events pass the proxy one by one: the first event reaches the caller while the
/// upstream has not produced the second yet (a buffering proxy would hang here).
#[tokio::test(flavor = "multi_thread")]
async fn proxy_streams_events_as_the_upstream_sends_them() -> Result<()> {
    use std::sync::{Arc, Mutex, PoisonError};

    use axum::response::IntoResponse as _;
    use hwsign_verifier::{
        HwsignLayer, KeyRegistry as _, RegisteredKey, VerifiedDevice, VerifierConfig,
    };
    use tokio::io::AsyncWriteExt as _;

    let agent = AgentProcess::start()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut config = VerifierConfig::any_host(AUDIENCE);
    config.hosts = vec![addr.to_string()];
    let (registry, verifier) = hwsign_e2e::memory_verifier(config)?;
    let (key, public) = create_key(&agent.client(), "software", "stream").await?;
    registry.add(RegisteredKey::new(public, "stream", KeyLevel::Software, 0))?;
    let (events, receiver) = tokio::sync::mpsc::channel::<axum::body::Bytes>(4);
    let receiver = Arc::new(Mutex::new(Some(receiver)));
    let app = axum::Router::new()
        .route(
            "/events",
            axum::routing::get(move |_device: VerifiedDevice| {
                let receiver = receiver
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                async move {
                    match receiver {
                        Some(receiver) => (
                            [(http::header::CONTENT_TYPE, "text/event-stream")],
                            hwsign_e2e::openai_api::channel_body(receiver),
                        )
                            .into_response(),
                        None => http::StatusCode::CONFLICT.into_response(),
                    }
                }
            }),
        )
        .layer(HwsignLayer::new(verifier));
    let _server = hwsign_e2e::serve_until_shutdown(listener, app);
    let args = upstream_args(&format!("http://{addr}"), &key);
    let proxy = ProxyProcess::start(agent.socket(), &ProxyProcess::free_listen()?, &args)?;

    events.send("data: one\n\n".into()).await?;
    let mut stream = tokio::net::TcpStream::connect(&proxy.listen).await?;
    stream
        .write_all(b"GET /events HTTP/1.1\r\nHost: caller.invalid\r\nConnection: close\r\n\r\n")
        .await?;
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "data: one").await?;
    ensure!(seen.starts_with("HTTP/1.1 200"), "{seen}\n{}", proxy.log());
    ensure!(!seen.contains("data: two"), "{seen}");
    events.send("data: two\n\n".into()).await?;
    drop(events);
    read_until(&mut stream, &mut seen, "data: two").await?;
    Ok(())
}

/// Several upstreams from a TOML config: each path prefix goes to its own API, signed with its
/// own key; a path no prefix matches is refused; a config with an unknown field does not start.
#[tokio::test(flavor = "multi_thread")]
async fn proxy_routes_prefixes_to_the_upstreams_of_its_config() -> Result<()> {
    let agent = AgentProcess::start()?;
    let mut upstreams = String::new();
    let mut apis = Vec::new();
    for name in ["alpha", "beta"] {
        let api = OpenAiApi::start().await?;
        let (key, public) = create_key(&agent.client(), "software", name).await?;
        api.register(&public, KeyLevel::Software)?;
        upstreams.push_str(&format!(
            "[[upstream]]\nprefix = \"/{name}\"\nurl = \"http://{}\"\nkey = \"{key}\"\naudience = \"{AUDIENCE}\"\n\n",
            api.addr
        ));
        apis.push((name, api, key));
    }
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, format!("max_body_bytes = 65536\n\n{upstreams}"))?;
    let config_arg = config.display().to_string();
    let proxy = ProxyProcess::start(
        agent.socket(),
        &ProxyProcess::free_listen()?,
        &["--config".to_owned(), config_arg.clone()],
    )?;
    for (name, _api, key) in &apis {
        let answer = curl(&[
            "-H",
            "content-type: application/json",
            "-d",
            CHAT,
            &proxy.url(&format!("/{name}/v1/chat/completions")),
        ])?;
        ensure!(answer.status == 200, "{name}: {answer:?}\n{}", proxy.log());
        ensure!(
            chat_content(&answer.json()?)?["key_id"] == key.as_str(),
            "{name}: {answer:?}"
        );
    }
    let unrouted = curl(&["-d", CHAT, &proxy.url("/gamma/v1/chat/completions")])?;
    ensure!(
        unrouted.status == 404 && unrouted.json()?["error"]["code"] == "proxy_no_upstream",
        "{unrouted:?}"
    );

    std::fs::write(&config, format!("surprise = true\n{upstreams}"))?;
    let output = Command::new(hwsign_test_support::binaries::bin_path("hwsign")?)
        .arg("--socket")
        .arg(agent.socket())
        .args([
            "proxy",
            "--listen",
            &ProxyProcess::free_listen()?,
            "--config",
            &config_arg,
        ])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success() && stderr.contains("surprise"),
        "{stderr}"
    );
    Ok(())
}
