//! `POST /v1/sign`: parses the described request, hands it to the signing use case
//! ([`crate::signing`]) and answers with what to add to the request. It logs what was signed
//! (key, audience, method, host, path), never header values or bodies.

use std::sync::Arc;

use ::http::{Response, StatusCode};

use hwsign_proto::api::SignRequest;
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
    let signed = signing::sign(ctx, peer, &request).await?;
    tracing::info!(
        key_id = %request.key_id,
        audience = %request.audience,
        method = %request.method,
        host = %request.authority,
        path = %request.path,
        presigned = request.presign_expires_secs.is_some(),
        "request signed"
    );
    Ok(http::json(StatusCode::OK, &signed.response))
}
