//! `GET /v1/posture`: the device's posture as the agent reads it now
//! ([`hwsign_proto::posture::Posture`]; unknown facts left out).

use ::http::{Response, StatusCode};

use super::Context;
use super::http::{self, Body};

/// Collects and answers the posture report.
pub(super) async fn posture(ctx: &Context) -> Response<Body> {
    let report = crate::posture::collect(&ctx.config.posture).await;
    http::json(StatusCode::OK, &report)
}
