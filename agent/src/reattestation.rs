//! The agent's own re-attestation schedule (`[reattestation]`, docs/POLICY.md
//! "Re-attestation"): right after start and then every `interval_secs`, each TPM key (or each
//! configured key) asks the verifier for a nonce (`POST /hws/v1/attest/challenge`), reads the
//! device's posture, has the TPM quote over `SHA-256(nonce ‖ SHA-256(posture JSON))`, and posts
//! the evidence with the posture (`POST /hws/v1/attest`). A failure is logged and
//! retried at the next tick; the on-demand flow (`attestation_required`) keeps working either
//! way.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Method, Request, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hwsign_proto::attestation::{EVIDENCE_VERSION, KeyAttestation};
use hwsign_proto::posture::bound_nonce;
use hwsign_proto::reattestation::{
    ATTEST_PATH, AttestChallengeRequest, AttestChallengeResponse, AttestRequest, AttestResponse,
    CHALLENGE_PATH,
};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::config::ReattestationSchedule;
use crate::context::Context;
use crate::keystore::{CallError, KeyStore};

/// Deadline of one exchange with the verifier.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest verifier answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The backend whose keys the schedule attests by default.
const TPM_BACKEND: &str = "tpm";

/// Why one key's scheduled attestation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReattestError {
    /// The verifier could not be reached or its answer read.
    #[error("exchange with the verifier failed")]
    Exchange(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The verifier did not answer in time.
    #[error("the verifier did not answer within {0:?}")]
    Timeout(Duration),
    /// The verifier refused.
    #[error("the verifier refused (HTTP {status}, {code})")]
    Refused {
        /// Status.
        status: u16,
        /// `error.code`, or empty.
        code: String,
    },
    /// The answer is not the expected JSON, or the nonce is not base64url.
    #[error("unexpected answer from the verifier: {0}")]
    Protocol(String),
    /// The key's backend could not attest.
    #[error("the backend could not attest the key")]
    Backend(#[source] CallError),
}

/// Runs the schedule until `stop` turns true.
pub(crate) async fn run(
    ctx: Arc<Context>,
    schedule: ReattestationSchedule,
    mut stop: watch::Receiver<bool>,
) {
    let Ok(verifier) = schedule.verifier_uri() else {
        // Config::validate refused it already.
        return;
    };
    let interval = Duration::from_secs(schedule.interval_secs);
    loop {
        attest_all(&ctx, &verifier, &schedule.keys).await;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

async fn attest_all(ctx: &Context, verifier: &Uri, keys: &[String]) {
    let listed = ctx.keys.list().await;
    let chosen = listed.iter().filter(|(backend, key)| {
        if keys.is_empty() {
            *backend == TPM_BACKEND
        } else {
            keys.contains(&key.id)
        }
    });
    for (_, key) in chosen {
        match attest_one(ctx, verifier, &key.id).await {
            Ok(done) => tracing::info!(
                key_id = %key.id,
                device_id = %done.device_id,
                boot_state = %done.boot_state,
                "scheduled re-attestation accepted"
            ),
            Err(error) => tracing::warn!(
                key_id = %key.id,
                error = %crate::ErrorChain(&error),
                "scheduled re-attestation failed; retrying at the next tick"
            ),
        }
    }
}

async fn attest_one(
    ctx: &Context,
    verifier: &Uri,
    key_id: &str,
) -> Result<AttestResponse, ReattestError> {
    let challenge: AttestChallengeResponse = post(
        verifier,
        CHALLENGE_PATH,
        &AttestChallengeRequest {
            key_id: key_id.to_owned(),
        },
    )
    .await?;
    let nonce = URL_SAFE_NO_PAD
        .decode(&challenge.nonce)
        .map_err(|_| ReattestError::Protocol("the nonce is not base64url".into()))?;
    // The posture report rides along, bound into the quote.
    let posture = serde_json::to_string(&crate::posture::collect(&ctx.config.posture).await)
        .map_err(|e| ReattestError::Protocol(e.to_string()))?;
    let nonce = bound_nonce(&nonce, posture.as_bytes());
    let (backend, key) = ctx
        .keys
        .describe(key_id)
        .await
        .map_err(ReattestError::Backend)?;
    let id = key_id.to_owned();
    let evidence = KeyStore::call(&backend, move |b| b.attest(&id, &nonce))
        .await
        .map_err(ReattestError::Backend)?;
    let request = AttestRequest {
        nonce: challenge.nonce,
        evidence: KeyAttestation {
            version: EVIDENCE_VERSION,
            key_id: key_id.to_owned(),
            level: key.level,
            evidence,
        },
        posture: Some(posture),
    };
    post(verifier, ATTEST_PATH, &request).await
}

/// POSTs `body` as JSON to `path` under `base` (HTTP/1.1, one connection per exchange) and
/// reads the JSON answer.
async fn post<B: Serialize, T: DeserializeOwned>(
    base: &Uri,
    path: &str,
    body: &B,
) -> Result<T, ReattestError> {
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(base, path, body))
        .await
        .map_err(|_| ReattestError::Timeout(EXCHANGE_TIMEOUT))?
}

async fn exchange<B: Serialize, T: DeserializeOwned>(
    base: &Uri,
    path: &str,
    body: &B,
) -> Result<T, ReattestError> {
    let boxed = |e: Box<dyn std::error::Error + Send + Sync>| ReattestError::Exchange(e);
    let authority = base
        .authority()
        .ok_or_else(|| ReattestError::Protocol("no authority".into()))?;
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .map_err(|e| boxed(e.into()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| boxed(e.into()))?;
    let driver = tokio::spawn(connection);
    let prefix = base.path().trim_end_matches('/');
    let json = serde_json::to_vec(body).map_err(|e| ReattestError::Protocol(e.to_string()))?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{prefix}{path}"))
        .header(header::HOST, authority.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(json)))
        .map_err(|e| boxed(e.into()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| boxed(e.into()))?;
    let status = response.status();
    let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(boxed)?
        .to_bytes();
    driver.abort();
    if !status.is_success() {
        let code = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(ReattestError::Refused {
            status: status.as_u16(),
            code,
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| ReattestError::Protocol(e.to_string()))
}
