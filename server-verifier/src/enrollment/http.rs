//! The enrollment endpoints as an axum [`Router`]: bodies read once and bounded per step, JSON
//! parsed strictly, the step run on a blocking thread (SQLite, RSA), every refusal a JSON error
//! with a documented code.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hwsign_proto::enrollment::{
    ACTIVATE_PATH, EVIDENCE_PATH, EnrollErrorDetail, EnrollErrorResponse, START_PATH,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ceremony::Enrollment;
use super::error::EnrollmentError;

/// Largest `POST /enroll/start` body (a token and a key id).
pub const MAX_START_BODY: usize = 4 * 1024;
/// Largest `POST /enroll/evidence` body (certificates and TPM structures, base64).
pub const MAX_EVIDENCE_BODY: usize = 64 * 1024;
/// Largest `POST /enroll/activate` body (a challenge id and a 32-byte secret).
pub const MAX_ACTIVATE_BODY: usize = 4 * 1024;

/// The three enrollment routes (`/enroll/start`, `/enroll/evidence`, `/enroll/activate`). Mount
/// them outside the HWS1 verification layer: a device has no registered key yet.
pub fn router(enrollment: Arc<Enrollment>) -> Router {
    Router::new()
        .route(START_PATH, post(start))
        .route(EVIDENCE_PATH, post(evidence))
        .route(ACTIVATE_PATH, post(activate))
        .with_state(enrollment)
}

async fn start(State(enrollment): State<Arc<Enrollment>>, body: Body) -> Response {
    step(
        enrollment,
        body,
        MAX_START_BODY,
        |e: &Enrollment, request, now| e.start(&request, now),
    )
    .await
}

async fn evidence(State(enrollment): State<Arc<Enrollment>>, body: Body) -> Response {
    step(
        enrollment,
        body,
        MAX_EVIDENCE_BODY,
        |e: &Enrollment, request, now| e.submit_evidence(&request, now),
    )
    .await
}

async fn activate(State(enrollment): State<Arc<Enrollment>>, body: Body) -> Response {
    step(
        enrollment,
        body,
        MAX_ACTIVATE_BODY,
        |e: &Enrollment, request, now| e.activate(&request, now),
    )
    .await
}

/// One JSON step of a ceremony: reads the body (at most `limit` bytes), parses it strictly,
/// runs `run` on a blocking thread (SQLite, RSA) with the time, and answers with its JSON or
/// its refusal. Shared by enrollment and re-attestation.
pub(crate) async fn step<S, Req, Resp, F>(
    service: Arc<S>,
    body: Body,
    limit: usize,
    run: F,
) -> Response
where
    S: Send + Sync + 'static,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    F: FnOnce(&S, Req, SystemTime) -> Result<Resp, EnrollmentError> + Send + 'static,
{
    let result = async {
        let bytes = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|_| EnrollmentError::TooLarge(limit))?
            .to_bytes();
        // serde's messages may quote the offending value (a token): report only where it broke.
        let request: Req = serde_json::from_slice(&bytes).map_err(|e| {
            EnrollmentError::Malformed(format!(
                "invalid JSON ({:?}) at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        tokio::task::spawn_blocking(move || run(&service, request, SystemTime::now()))
            .await
            .map_err(|e| EnrollmentError::Store(format!("ceremony task failed: {e}")))?
    }
    .await;
    match result {
        Ok(answer) => json(StatusCode::OK, &answer),
        Err(error) => error_response(&error),
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            // Nonces and credentials are single-use: nothing on the way may keep them.
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => error_response(&EnrollmentError::Store(format!("encoding the answer: {e}"))),
    }
}

/// The HTTP answer to a refused step: `{"error":{"code","message"}}` with the code's status.
pub fn error_response(error: &EnrollmentError) -> Response {
    let status =
        StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // Store failures are logged in full and answered without detail.
    let message = match error {
        EnrollmentError::Store(_) | EnrollmentError::Registry(_) => {
            tracing::error!(error = %crate::ErrorChain(error), "enrollment unavailable");
            "enrollment is unavailable; retry later".to_owned()
        }
        other => crate::ErrorChain(other).to_string(),
    };
    let body = EnrollErrorResponse {
        error: EnrollErrorDetail {
            code: error.code(),
            message,
        },
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
