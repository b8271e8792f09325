//! `hwsign-verifier serve` replicas sharing a real Redis replay cache and one registry (issue 11
//! item 5): the cross-replica guarantees the per-replica memory cache cannot give.

use std::time::Duration;

use anyhow::{Result, ensure};
use hwsign_client::Signer;
use hwsign_e2e::fleet::{FLEET_HOST, Fleet, PythonUpstream, ServeSettings};
use hwsign_e2e::{AUDIENCE, AgentProcess, create_key, expect_refusal, send_raw, signed, to_raw};
use hwsign_proto::api::KeyLevel;
use hwsign_test_support::redis::Redis;

struct Setup {
    _agent: AgentProcess,
    _upstream: PythonUpstream,
    redis: Redis,
    fleet: Fleet,
    signer: Signer,
}

async fn setup(adjust: impl Fn(&mut ServeSettings)) -> Result<Setup> {
    setup_on(Redis::start()?, adjust).await
}

async fn setup_on(redis: Redis, adjust: impl Fn(&mut ServeSettings)) -> Result<Setup> {
    let agent = AgentProcess::start()?;
    let upstream = PythonUpstream::start()?;
    let fleet = Fleet::start(3, &redis.url(), upstream.addr(), adjust).await?;
    let (key_id, public) = create_key(&agent.client(), "software", "fleet").await?;
    fleet.register(&public, KeyLevel::Software)?;
    let signer = Signer::new(agent.client(), key_id, AUDIENCE);
    Ok(Setup {
        _agent: agent,
        _upstream: upstream,
        redis,
        fleet,
        signer,
    })
}

async fn signed_get(signer: &Signer, path: &str) -> Result<Vec<u8>> {
    let request = http::Request::builder()
        .method("GET")
        .uri(format!("http://{FLEET_HOST}{path}"))
        .body(Vec::new())?;
    to_raw(&signed(signer, request).await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_redis_one_captured_request_sent_to_every_replica_at_once_is_accepted_once()
-> Result<()> {
    let s = setup(|_| {}).await?;
    for round in 0..5 {
        let raw = signed_get(&s.signer, &format!("/race/{round}")).await?;
        let sends = s.fleet.replicas.iter().map(|replica| {
            let (addr, raw) = (replica.addr, raw.clone());
            async move { send_raw(addr, &raw).await }
        });
        let answers = futures_join_all(sends).await;
        let mut accepted = 0;
        for answer in answers {
            let answer = answer??;
            if answer.status == 200 {
                accepted += 1;
            } else {
                expect_refusal(&answer, 401, "replayed_nonce")?;
            }
        }
        ensure!(accepted == 1, "round {round}: {accepted} replicas accepted");
    }
    Ok(())
}

/// Runs the futures concurrently (no extra crate: one task each).
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<Result<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.map_err(anyhow::Error::from));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_redis_a_replay_to_another_replica_later_is_refused() -> Result<()> {
    let s = setup(|_| {}).await?;
    let raw = signed_get(&s.signer, "/once").await?;
    let first = send_raw(s.fleet.replicas[0].addr, &raw).await?;
    ensure!(first.status == 200, "first copy: {}", first.status);
    for replica in &s.fleet.replicas[1..] {
        expect_refusal(&send_raw(replica.addr, &raw).await?, 401, "replayed_nonce")?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_redis_per_key_quota_holds_across_replicas() -> Result<()> {
    let s = setup(|settings| settings.verifier_extra = "replay_quota_per_key = 3\n".into()).await?;
    // Three live nonces, each on another replica: the key's quota is spent fleet-wide.
    for (i, replica) in s.fleet.replicas.iter().enumerate() {
        let answer = send_raw(
            replica.addr,
            &signed_get(&s.signer, &format!("/q{i}")).await?,
        )
        .await?;
        ensure!(answer.status == 200, "request {i}: {}", answer.status);
    }
    for replica in &s.fleet.replicas {
        let answer = send_raw(replica.addr, &signed_get(&s.signer, "/over").await?).await?;
        expect_refusal(&answer, 429, "rate_limited")?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_redis_down_is_503_on_every_replica_and_served_again_without_restart() -> Result<()> {
    // With persistence (`appendonly yes`), as production runs it: Redis comes back with its
    // nonces, so the replicas serve at once (without it they would refuse for a replay window:
    // server-verifier's fleet_redis_restarted_empty_is_refused_for_a_replay_window).
    let mut s = setup_on(Redis::start_persistent()?, |_| {}).await?;
    s.redis.server().stop();
    for replica in &s.fleet.replicas {
        let answer = send_raw(replica.addr, &signed_get(&s.signer, "/down").await?).await?;
        expect_refusal(&answer, 503, "verifier_unavailable")?;
        ensure!(replica.admin_get("/readyz").await?.status == 503);
    }
    s.redis.server().start()?;
    for replica in &s.fleet.replicas {
        // The replica reconnects on its own; allow it a few attempts (each with a fresh signature).
        let mut status = 0;
        for _ in 0..50 {
            status = send_raw(replica.addr, &signed_get(&s.signer, "/back").await?)
                .await?
                .status;
            if status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(status == 200, "replica not served again: {status}");
    }
    Ok(())
}
