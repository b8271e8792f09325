//! The re-attestation endpoints as an axum [`Router`]: `POST /hws/v1/attest/challenge` and
//! `POST /hws/v1/attest`, bodies bounded, JSON parsed strictly, refusals with the enrollment
//! codes (docs/ATTESTATION.md §1).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use hwsign_proto::reattestation::{ATTEST_PATH, CHALLENGE_PATH};

use super::attest::Reattestation;
use crate::enrollment::http::step;
use crate::enrollment::{MAX_EVIDENCE_BODY, MAX_START_BODY};

/// The two re-attestation routes. Mount them outside the HWS1 verification layer, beside the
/// enrollment router: the evidence authenticates itself, and a device asked to attest again
/// must be able to reach them with a request the policy refuses.
pub fn router(reattestation: Arc<Reattestation>) -> Router {
    Router::new()
        .route(CHALLENGE_PATH, post(challenge))
        .route(ATTEST_PATH, post(attest))
        .with_state(reattestation)
}

async fn challenge(State(service): State<Arc<Reattestation>>, body: Body) -> Response {
    step(
        service,
        body,
        MAX_START_BODY,
        |s: &Reattestation, request, now| s.challenge(&request, now),
    )
    .await
}

async fn attest(State(service): State<Arc<Reattestation>>, body: Body) -> Response {
    step(
        service,
        body,
        MAX_EVIDENCE_BODY,
        |s: &Reattestation, request, now| s.attest(&request, now),
    )
    .await
}
