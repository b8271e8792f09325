//! `POST /v1/sign`: parses the described request, hands it to the signing use case
//! ([`crate::signing`]) and answers with what to add to the request. It logs what was signed
//! (key, audience, method, host, path), never header values or bodies, at `debug`: the audit log
//! records every signature, and a line per request at `info` cost the agent CPU on every sign.

use std::sync::Arc;

use ::http::{Response, StatusCode};

use hwsign_proto::api::{SignRequest, StepUpSignRequest};
use hwsign_proto::keys::check_key_id;

use super::ApiError;
use super::http::{self, Body};
use crate::context::Context;
use crate::peer::Peer;
use crate::signing;

/// Signs the described request.
pub(super) async fn sign(
    ctx: &Arc<Context>,
    peer: Peer,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let request: SignRequest = http::parse_json(body)?;
    check_key_id(&request.key_id)?;
    // Nothing the caller described is logged before it has been validated: the line below is
    // written only for a request the agent signed (so its audience, method, host and path passed
    // the canonicalizer's checks). A refusal is logged by the router with its code, and the
    // logging layer escapes every value anyway (crate::logging).
    let signed = signing::sign(ctx, peer, &request, None).await?;
    log_signed(&request, false);
    Ok(http::json(StatusCode::OK, &signed.response))
}

/// Signs the described request strictly with a touch of its FIDO2 key (step-up).
pub(super) async fn sign_step_up(
    ctx: &Arc<Context>,
    peer: Peer,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let step_up: StepUpSignRequest = http::parse_json(body)?;
    let request = step_up.request;
    check_key_id(&request.key_id)?;
    let signed = signing::sign(ctx, peer, &request, Some(step_up.user_verification)).await?;
    log_signed(&request, true);
    Ok(http::json(StatusCode::OK, &signed.response))
}

fn log_signed(request: &SignRequest, step_up: bool) {
    tracing::debug!(
        key_id = %request.key_id,
        audience = %request.audience,
        method = %request.method,
        host = %request.authority,
        path = %request.path,
        presigned = request.presign_expires_secs.is_some(),
        step_up,
        "request signed"
    );
}
