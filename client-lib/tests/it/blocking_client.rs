//! The blocking client against the real agent, from a thread without a runtime.

use crate::support;

use http::Request;
use hwsign_client::blocking::BlockingAgentClient;
use hwsign_client::{ClientError, SignerConfig};
use hwsign_proto::verify_input::parse_header_signed;
use hwsign_proto::{HWS1, PublicKey, RequestParts};
use sha2::{Digest, Sha256};
use support::real_agent::RealAgent;

#[test]
fn blocking_calls_sign_verifiable_requests() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let agent = runtime.block_on(RealAgent::start())?;
    let client = BlockingAgentClient::new(agent.socket())?;

    let key = client.create_key("software", "blocking")?;
    assert!(client.list_keys()?.iter().any(|k| k.id == key.id));
    assert_eq!(client.status()?.keys, 1);

    let config = SignerConfig {
        key_id: key.id.clone(),
        audience: "payments".into(),
        signed_headers: vec![],
    };
    let body = b"{\"amount\":1}".to_vec();
    let mut request = Request::post("https://api.example.com/v1/transfers?x=1")
        .header("content-type", "application/json")
        .body(body.clone())?;
    client.sign_request(&config, &mut request)?;

    // Verify as a server would, with the protocol crate's pipeline.
    let mut headers: Vec<(&str, &str)> = vec![("host", "api.example.com")];
    for (name, value) in request.headers() {
        headers.push((name.as_str(), value.to_str()?));
    }
    let parts = RequestParts {
        method: "POST",
        path: "/v1/transfers",
        query: "x=1",
        headers: &headers,
    };
    let claimed = parse_header_signed(&HWS1, &parts)?;
    let public = PublicKey::from_spki_pem(&key.public_key_pem)?;
    assert!(public.verify_digest(
        &claimed.string_to_sign.digest(),
        &claimed.authorization.signature
    ));
    assert_eq!(claimed.payload_hash, hex::encode(Sha256::digest(&body)));
    assert_eq!(claimed.authorization.credential, key.id);

    // Inside a runtime the blocking client refuses instead of blocking the runtime's thread.
    let inside = runtime.block_on(async { client.status().err() });
    assert!(
        matches!(inside, Some(ClientError::BlockingInsideRuntime)),
        "{inside:?}"
    );

    runtime.block_on(agent.stop())?;
    Ok(())
}
