//! What a refused request gets back, and the extractor handlers use to learn who signed.

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use hwsign_proto::RejectCode;
use serde::Serialize;

use crate::rejection::Rejection;
use crate::verify::VerifiedPrincipal;

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

fn error_response(
    status: StatusCode,
    code: RejectCode,
    message: &str,
    nonce: Option<&str>,
) -> Response {
    let body = serde_json::to_vec(&ErrorBody {
        error: ErrorDetail {
            code: code.as_str(),
            message,
        },
    })
    // Serializing two strings cannot fail; an empty body is still a correct refusal.
    .unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Codes are fixed snake_case ASCII and nonces base64url, always a valid header value.
    let challenge = match nonce {
        Some(nonce) => format!(
            "HWS1 error=\"{code}\", {}=\"{nonce}\"",
            hwsign_proto::reattestation::NONCE_PARAM
        ),
        None => format!("HWS1 error=\"{code}\""),
    };
    if let Ok(challenge) = HeaderValue::from_str(&challenge) {
        headers.insert(WWW_AUTHENTICATE, challenge);
    }
    response
}

/// The HTTP answer to a rejection: status from [`RejectCode::http_status`],
/// `WWW-Authenticate: HWS1 error="<code>"` (with `, nonce="<nonce>"` for
/// `attestation_required`) and `{"error":{"code":"<code>","message":"..."}}`.
pub fn rejection_response(rejection: &Rejection) -> Response {
    let status = StatusCode::from_u16(rejection.code().http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = error_response(
        status,
        rejection.code(),
        &rejection.detail(),
        rejection.attestation_nonce(),
    );
    if let Some(user_verification) = rejection.step_up_user_verification() {
        let value = crate::webauthn::step_up_challenge(user_verification);
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static(value));
    }
    response
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        rejection_response(&self)
    }
}

/// The principal [`crate::HwsignLayer`] verified, for handlers:
///
/// ```
/// use hwsign_verifier::VerifiedDevice;
///
/// async fn handler(VerifiedDevice(who): VerifiedDevice) -> String {
///     who.key_id
/// }
/// ```
///
/// On a route the layer does not wrap, extraction fails with 500 (a deployment error, never a
/// silent pass).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDevice(pub VerifiedPrincipal);

/// The extractor's failure: the route is not behind [`crate::HwsignLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotVerified;

impl IntoResponse for NotVerified {
    fn into_response(self) -> Response {
        tracing::error!("VerifiedDevice used on a route without HwsignLayer");
        error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            RejectCode::VerifierUnavailable,
            "this route is not protected by the verifier",
            None,
        )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for VerifiedDevice {
    type Rejection = NotVerified;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<VerifiedPrincipal>()
            .cloned()
            .map(VerifiedDevice)
            .ok_or(NotVerified)
    }
}
