//! `GET /v1/status`.

use ::http::{Response, StatusCode};

use hwsign_proto::api::{BackendStatus, StatusResponse};

use super::Context;
use super::http::{self, Body};

/// Version, backends and their health, number of keys, uptime.
pub(super) async fn status(ctx: &Context) -> Response<Body> {
    let backends = ctx
        .keys
        .health()
        .await
        .into_iter()
        .map(|(name, health)| BackendStatus {
            name: name.to_owned(),
            available: health.available,
            detail: health.detail,
        })
        .collect();
    let keys = ctx.keys.list().await.len();
    http::json(
        StatusCode::OK,
        &StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            backends,
            keys,
            uptime_secs: ctx.started.elapsed().as_secs(),
        },
    )
}
