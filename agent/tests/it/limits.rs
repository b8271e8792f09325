//! Bounds: body size, request head size and header count, connection cap, time to send a
//! request head, and the socket's uid check.
#![cfg(feature = "software")]

use crate::support;

use std::time::Duration;

use anyhow::{Result, ensure};
use http::Method;
use tokio::io::AsyncWriteExt as _;

use hwsign_proto::api::MAX_API_BODY;

use support::{TestAgent, raw_exchange, raw_status};

#[tokio::test(flavor = "multi_thread")]
async fn oversized_body_is_refused() -> Result<()> {
    let agent = TestAgent::start().await?;
    // Declared length over the limit: refused before the body is read.
    let body = vec![b' '; MAX_API_BODY + 1];
    agent
        .call(Method::POST, "/v1/sign", Some(body))
        .await?
        .expect_error(413, "too_large")?;
    // Chunked, no length: refused once the limit is crossed.
    let chunk = vec![b'a'; 16 * 1024];
    let mut raw =
        b"POST /v1/keys HTTP/1.1\r\nHost: agent\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..5 {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(&chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(agent.socket(), &raw).await?;
    ensure!(raw_status(&answer) == Some(413), "{answer}");
    ensure!(answer.contains("\"too_large\""), "{answer}");
    // A body at the limit is read (and then refused for its content, not its size).
    let body = vec![b' '; MAX_API_BODY];
    agent
        .call(Method::POST, "/v1/sign", Some(body))
        .await?
        .expect_error(400, "malformed_json")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_request_head_is_refused() -> Result<()> {
    let agent = TestAgent::start().await?;
    let big = "x".repeat(agent.config.limits.max_header_bytes + 1);
    let raw = format!("GET /v1/status HTTP/1.1\r\nHost: agent\r\nX-Big: {big}\r\n\r\n");
    let answer = raw_exchange(agent.socket(), raw.as_bytes()).await?;
    ensure!(raw_status(&answer) == Some(431), "{answer}");

    let mut many = String::from("GET /v1/status HTTP/1.1\r\nHost: agent\r\n");
    for i in 0..=agent.config.limits.max_headers {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let answer = raw_exchange(agent.socket(), many.as_bytes()).await?;
    ensure!(raw_status(&answer) == Some(431), "{answer}");

    // The agent still serves.
    agent
        .call(Method::GET, "/v1/status", None)
        .await?
        .ok_json::<serde_json::Value>()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_cap_get_503() -> Result<()> {
    let agent = TestAgent::start_with(|c| c.max_connections = 2).await?;
    let mut first = agent.connect().await?;
    let mut second = agent.connect().await?;
    // An answered request proves each connection was accepted and holds its slot.
    ensure!(first.call(Method::GET, "/v1/status", None).await?.status == 200);
    ensure!(second.call(Method::GET, "/v1/status", None).await?.status == 200);
    let answer = agent.call(Method::GET, "/v1/status", None).await?;
    answer.expect_error(503, "unavailable")?;
    ensure!(
        answer
            .headers
            .get("connection")
            .is_some_and(|v| v == "close")
    );

    // Closing a connection frees its slot. Nothing signals the agent's bookkeeping, so poll.
    ensure!(first.closed().await);
    let mut freed = false;
    for _ in 0..500 {
        if agent.call(Method::GET, "/v1/status", None).await?.status == 200 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ensure!(freed, "slot of a closed connection was never released");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn uids_not_allowed_are_refused_before_the_request_is_served() -> Result<()> {
    let other = hwsign_agent::config::own_uid().wrapping_add(1);
    let agent = TestAgent::start_with(|c| c.allowed_uids = vec![other]).await?;
    for (method, path) in [
        (Method::GET, "/v1/status"),
        (Method::GET, "/v1/keys"),
        (Method::POST, "/v1/keys"),
        (Method::POST, "/v1/sign"),
    ] {
        let body =
            (method == Method::POST).then(|| br#"{"backend":"software","label":"x"}"#.to_vec());
        let answer = agent.call(method, path, body).await?;
        answer.expect_error(403, "permission_denied")?;
        ensure!(
            answer
                .headers
                .get("connection")
                .is_some_and(|v| v == "close")
        );
    }
    // Nothing was created.
    let dir = agent.state_dir().join("software");
    ensure!(std::fs::read_dir(&dir)?.next().is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_request_heads_are_cut_off() -> Result<()> {
    let agent = TestAgent::start_with(|c| c.limits.header_read_timeout_ms = 200).await?;
    let mut stream = tokio::net::UnixStream::connect(agent.socket()).await?;
    stream
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: ag")
        .await?;
    // The agent closes the connection (possibly after a 408); reading to the end returns.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        use tokio::io::AsyncReadExt as _;
        stream.read_to_end(&mut rest).await
    })
    .await;
    ensure!(
        read.is_ok(),
        "connection still open long after the header timeout"
    );
    let text = String::from_utf8_lossy(&rest);
    ensure!(!text.contains("200 OK"), "{text}");
    agent
        .call(Method::GET, "/v1/status", None)
        .await?
        .ok_json::<serde_json::Value>()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_connections_do_not_hold_a_slot_forever() -> Result<()> {
    use tokio::io::AsyncReadExt as _;
    let agent = TestAgent::start_with(|c| {
        c.max_connections = 1;
        c.limits.header_read_timeout_ms = 200;
    })
    .await?;
    let mut stream = tokio::net::UnixStream::connect(agent.socket()).await?;
    stream
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: agent\r\n\r\n")
        .await?;
    // Read the whole answer (its head says how long the body is), then wait for the close.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let answered = loop {
        let n = stream.read(&mut buf).await?;
        ensure!(n > 0, "closed before answering");
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.parse().ok())
                .unwrap_or(usize::MAX);
            if body.len() >= length {
                break head.to_owned();
            }
        }
    };
    ensure!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    let closed = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf)).await;
    ensure!(
        matches!(closed, Ok(Ok(0))),
        "idle connection kept open: {closed:?}"
    );
    Ok(())
}
