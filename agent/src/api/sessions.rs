//! `POST /v1/sessions/end`: a client whose request a verifier refused with `session_revoked`
//! has the agent forget that delegated session, so its next signature starts a new one.

use std::sync::Arc;

use ::http::{Response, StatusCode};
use hwsign_proto::api::{EndSessionRequest, EndSessionResponse};
use hwsign_proto::keys::check_key_id;

use super::http::{self, Body};
use super::{ApiError, Context};
use crate::peer::Peer;

/// Forgets the named session if it is the current one of a key the caller may use.
pub(super) fn end(ctx: &Arc<Context>, peer: Peer, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let request: EndSessionRequest = http::parse_json(body)?;
    check_key_id(&request.key_id)?;
    if let Some(rule) = ctx.config.rule_for(&request.key_id) {
        rule.check_caller(peer.uid)
            .map_err(ApiError::KeyNotPermitted)?;
    }
    let ended = ctx
        .sessions
        .end(&request.key_id, &request.audience, &request.session_key_id);
    if ended {
        tracing::info!(
            key_id = %request.key_id,
            audience = %request.audience.escape_debug(),
            "delegated session ended at the client's request (session_revoked); the next signature starts a new one"
        );
    }
    Ok(http::json(StatusCode::OK, &EndSessionResponse { ended }))
}
