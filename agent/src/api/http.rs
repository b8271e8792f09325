//! HTTP plumbing of the API: bounded JSON bodies in, JSON bodies and error bodies out.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use serde::de::DeserializeOwned;

use hwsign_proto::AgentErrorCode;
use hwsign_proto::api::ErrorResponse;

use super::ApiError;

/// The response body type of every API answer.
pub(crate) type Body = Full<Bytes>;

const JSON: &str = "application/json";

/// Initial capacity of a JSON answer's buffer.
const RESPONSE_CAPACITY: usize = 1024;

/// `status` with `value` as JSON.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    // A sign response is about 700 bytes: one allocation instead of a growing vector's seven.
    let mut bytes = Vec::with_capacity(RESPONSE_CAPACITY);
    match serde_json::to_writer(&mut bytes, value) {
        Ok(()) => with_body(status, bytes),
        Err(e) => error(&ApiError::Internal(format!("serializing a response: {e}"))),
    }
}

fn with_body(status: StatusCode, bytes: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// The error body `{"error":{"code":..,"message":..}}` with the code's status.
pub(crate) fn error(e: &ApiError) -> Response<Body> {
    let mut response = error_with(e.code(), e.public_message());
    match e {
        ApiError::MethodNotAllowed(allow) => {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        // The rest of the body may still come; the connection cannot be reused.
        ApiError::BodyTimeout(_) => {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    response
}

/// An error body with `code` and `message`, and the code's status.
pub(crate) fn error_with(code: AgentErrorCode, message: String) -> Response<Body> {
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = ErrorResponse::new(code, message);
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| {
        br#"{"error":{"code":"internal","message":"internal error"}}"#.to_vec()
    });
    with_body(status, bytes)
}

/// Reads the whole body within `deadline`, refusing more than `limit` bytes (a declared length
/// over the limit is refused before any of the body is read). A body still incomplete at the
/// deadline is [`ApiError::BodyTimeout`]: a caller that sends a head and stalls the body must
/// not hold its connection slot.
pub(crate) async fn read_body(
    request: Request<Incoming>,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, ApiError> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::BodyTooLarge(limit));
    }
    let read = tokio::time::timeout(deadline, Limited::new(request.into_body(), limit).collect());
    match read.await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::BodyTooLarge(limit))
        }
        Ok(Err(e)) => Err(ApiError::InvalidRequest(format!("reading the body: {e}"))),
        Err(_) => Err(ApiError::BodyTimeout(
            u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
        )),
    }
}

/// Parses a JSON body of type `T` (unknown fields refused by the type).
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))
}
