//! `hwsign-verifier serve` on a PostgreSQL registry (issue 11): a real PostgreSQL started by the
//! harness (initdb/pg_ctl in a temp dir), two `serve` replicas on it, the real agent, the Python
//! upstream, and the administration command on the same `postgres://` URL.

use anyhow::{Result, ensure};
use hwsign_client::Signer;
use hwsign_e2e::fleet::{FLEET_HOST, Fleet, PythonUpstream};
use hwsign_e2e::tpm::hwsign_verifier;
use hwsign_e2e::{AUDIENCE, AgentProcess, create_key, send_raw, signed, to_raw};
use hwsign_test_support::postgres::Postgres;

use crate::fleet_serve::refused_soon;

/// A freshly signed `GET path` for the fleet's host.
async fn signed_get(signer: &Signer, path: &str) -> Result<Vec<u8>> {
    let request = http::Request::get(format!("http://{FLEET_HOST}{path}")).body(Vec::new())?;
    to_raw(&signed(signer, request).await?)
}

/// A key added with `hwsign-verifier keys add --registry postgres://…` is accepted by both
/// replicas; revoked with `hwsign-verifier keys revoke --registry postgres://…`, it is refused by
/// both (each replica's key cache is invalidated by the notification; polled, not timed).
#[tokio::test(flavor = "multi_thread")]
async fn fleet_serve_postgres_key_added_and_revoked_with_the_cli_on_two_replicas() -> Result<()> {
    let pg = Postgres::start()?;
    let url = pg.database("fleet")?;
    let agent = AgentProcess::start()?;
    let upstream = PythonUpstream::start()?;
    let fleet = Fleet::start_on(2, &url, "memory", upstream.addr(), |_| {}).await?;

    let (key_id, public) = create_key(&agent.client(), "software", "fleet").await?;
    let dir = tempfile::tempdir()?;
    let pem = dir.path().join("key.pem");
    std::fs::write(&pem, public.to_pem())?;
    let pem = pem.display().to_string();
    let added = hwsign_verifier(&[
        "keys",
        "add",
        "--registry",
        &url,
        "--public-key",
        &pem,
        "--label",
        "laptop",
    ])?;
    ensure!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    ensure!(String::from_utf8(added.stdout)?.trim() == key_id);

    let signer = Signer::new(agent.client(), key_id.clone(), AUDIENCE);
    for replica in &fleet.replicas {
        let response = send_raw(replica.addr, &signed_get(&signer, "/v1/pg").await?).await?;
        ensure!(
            response.status == 200,
            "{} {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        );
    }
    // Warm both caches once more, so the refusal below must come from an invalidation.
    for replica in &fleet.replicas {
        let response = send_raw(replica.addr, &signed_get(&signer, "/v1/pg").await?).await?;
        ensure!(response.status == 200, "{}", response.status);
    }

    let revoked = hwsign_verifier(&["keys", "revoke", "--registry", &url, &key_id])?;
    ensure!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    for replica in &fleet.replicas {
        refused_soon(&signer, replica.addr, "/v1/pg", 403, "device_revoked").await?;
    }
    Ok(())
}
