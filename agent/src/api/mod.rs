//! API v1: routing and handlers. A handler receives a request whose caller has already passed
//! the uid check ([`crate::peer`]); it reads at most `limits.max_body_bytes` of body within
//! `limits.body_read_timeout_ms`, answers
//! JSON, and maps every failure to a documented wire code ([`ApiError::code`]).

mod error;
mod fido2_register;
pub(crate) mod http;
mod keys;
mod posture;
mod sessions;
mod sign;
mod status;

use std::sync::Arc;

use ::http::{Method, Request, Response};
use hyper::body::Incoming;
use tracing::Instrument as _;

use hwsign_proto::keys::check_key_id;

pub(crate) use self::error::ApiError;
use self::http::Body;
pub(crate) use crate::context::Context;
use crate::peer::Peer;

/// The routes of API v1.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Status,
    Posture,
    Keys,
    Sign,
    SignStepUp,
    EndSession,
    Attestation(String),
    ActivateCredential(String),
    Fido2Register,
}

impl Route {
    fn parse(path: &str) -> Option<Self> {
        let rest = path.strip_prefix(hwsign_proto::api::API_PREFIX)?;
        let segments: Vec<&str> = rest.split('/').collect();
        match segments.as_slice() {
            ["", "status"] => Some(Self::Status),
            ["", "posture"] => Some(Self::Posture),
            ["", "keys"] => Some(Self::Keys),
            ["", "keys", "fido2", "register"] => Some(Self::Fido2Register),
            ["", "sign"] => Some(Self::Sign),
            ["", "sign", "step-up"] => Some(Self::SignStepUp),
            ["", "sessions", "end"] => Some(Self::EndSession),
            ["", "keys", id, "attestation"] => Some(Self::Attestation((*id).to_owned())),
            ["", "keys", id, "activate-credential"] => {
                Some(Self::ActivateCredential((*id).to_owned()))
            }
            _ => None,
        }
    }

    fn allowed(&self) -> &'static str {
        match self {
            Self::Status | Self::Posture | Self::Attestation(_) => "GET",
            Self::Keys => "GET, POST",
            Self::Sign
            | Self::SignStepUp
            | Self::EndSession
            | Self::ActivateCredential(_)
            | Self::Fido2Register => "POST",
        }
    }
}

/// Serves one request of a permitted caller. Never fails: errors become error bodies.
pub(crate) async fn handle(
    ctx: Arc<Context>,
    peer: Peer,
    request: Request<Incoming>,
) -> Response<Body> {
    // A `debug` span: at the default level (`info`) it is disabled and costs nothing per request;
    // the connection's span still names the caller on every line.
    let span = tracing::debug_span!(
        "request",
        uid = peer.uid,
        pid = peer.pid,
        method = %request.method(),
        path = %request.uri().path(),
        status = tracing::field::Empty,
    );
    async move {
        let response = match dispatch(&ctx, peer, request).await {
            Ok(response) => response,
            Err(e) => {
                let code = e.code();
                if code.http_status() >= 500 {
                    tracing::error!(code = %code, error = %crate::ErrorChain(&e), "request failed");
                } else {
                    tracing::info!(code = %code, error = %crate::ErrorChain(&e), "request refused");
                }
                http::error(&e)
            }
        };
        tracing::Span::current().record("status", response.status().as_u16());
        tracing::debug!("answered");
        response
    }
    .instrument(span)
    .await
}

async fn dispatch(
    ctx: &Arc<Context>,
    peer: Peer,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let route = Route::parse(request.uri().path()).ok_or(ApiError::NotFound)?;
    let limit = ctx.config.limits.max_body_bytes;
    let deadline = ctx.config.limits.body_read_timeout();
    let method = request.method().clone();
    match (&route, method) {
        (Route::Status, Method::GET) => Ok(status::status(ctx).await),
        (Route::Posture, Method::GET) => Ok(posture::posture(ctx).await),
        (Route::Keys, Method::GET) => Ok(keys::list(ctx).await),
        (Route::Keys, Method::POST) => {
            let body = http::read_body(request, limit, deadline).await?;
            keys::create(ctx, peer, &body).await
        }
        (Route::Sign, Method::POST) => {
            let body = http::read_body(request, limit, deadline).await?;
            sign::sign(ctx, peer, &body).await
        }
        (Route::SignStepUp, Method::POST) => {
            let body = http::read_body(request, limit, deadline).await?;
            sign::sign_step_up(ctx, peer, &body).await
        }
        (Route::EndSession, Method::POST) => {
            let body = http::read_body(request, limit, deadline).await?;
            sessions::end(ctx, peer, &body)
        }
        (Route::Attestation(id), Method::GET) => {
            check_key_id(id)?;
            keys::attestation(ctx, peer, id, request.uri().query().unwrap_or("")).await
        }
        (Route::ActivateCredential(id), Method::POST) => {
            check_key_id(id)?;
            let body = http::read_body(request, limit, deadline).await?;
            keys::activate_credential(ctx, peer, id, &body).await
        }
        (Route::Fido2Register, Method::POST) => {
            let body = http::read_body(request, limit, deadline).await?;
            fido2_register::register(ctx, peer, &body).await
        }
        (route, _) => Err(ApiError::MethodNotAllowed(route.allowed())),
    }
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("/v1/status"), Some(Route::Status));
        assert_eq!(Route::parse("/v1/keys"), Some(Route::Keys));
        assert_eq!(
            Route::parse("/v1/keys/hk1_x/attestation"),
            Some(Route::Attestation("hk1_x".into()))
        );
        assert_eq!(
            Route::parse("/v1/keys/fido2/register"),
            Some(Route::Fido2Register)
        );
        assert_eq!(Route::parse("/v1/status/"), None);
        assert_eq!(Route::parse("/v2/status"), None);
        assert_eq!(Route::parse("/v1/keys//attestation/x"), None);
        assert_eq!(Route::parse("/v1"), None);
    }
}
