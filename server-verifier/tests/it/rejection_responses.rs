//! What a client gets back for a refusal, from every public way a refusal becomes an HTTP answer
//! (`rejection_response`, `Rejection::into_response`, the `VerifiedDevice` extractor off the
//! layer): the status, the `WWW-Authenticate` challenge with the code, and the JSON body.

use anyhow::{Context as _, Result};
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Request, StatusCode};
use hwsign_verifier::layer::NotVerified;
use hwsign_verifier::{RejectCode, Rejection, VerifiedDevice, rejection_response};
use serde_json::{Value, json};

/// The status, challenge and JSON body of `response`.
async fn parts(response: Response) -> Result<(StatusCode, String, Value)> {
    let status = response.status();
    assert_eq!(
        response.headers().get(CONTENT_TYPE).map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    let challenge = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .context("no WWW-Authenticate")?
        .to_str()?
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024).await?;
    Ok((status, challenge, serde_json::from_slice(&body)?))
}

fn body(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

#[tokio::test]
async fn a_rejection_answers_its_codes_status_challenge_and_body() -> Result<()> {
    for (code, status) in [
        (RejectCode::StaleDate, StatusCode::UNAUTHORIZED),
        (RejectCode::PolicyDenied, StatusCode::FORBIDDEN),
        (RejectCode::MalformedRequest, StatusCode::BAD_REQUEST),
        (
            RejectCode::VerifierUnavailable,
            StatusCode::SERVICE_UNAVAILABLE,
        ),
    ] {
        let detail = format!("refused: {}", code.as_str());
        let expected = (
            status,
            format!("HWS1 error=\"{}\"", code.as_str()),
            body(code.as_str(), &detail),
        );
        // The function the layer uses, and the `IntoResponse` handlers use.
        let by_function = parts(rejection_response(&Rejection::new(code, &*detail))).await?;
        assert_eq!(by_function, expected, "{code:?}");
        let by_handler = parts(Rejection::new(code, &*detail).into_response()).await?;
        assert_eq!(by_handler, expected, "{code:?}");
    }
    Ok(())
}

#[tokio::test]
async fn attestation_and_step_up_refusals_carry_their_challenge() -> Result<()> {
    let attest = Rejection::AttestationRequired {
        nonce: "bm9uY2U".into(),
    };
    let (status, challenge, json) = parts(attest.into_response()).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge,
        "HWS1 error=\"attestation_required\", nonce=\"bm9uY2U\""
    );
    assert_eq!(json["error"]["code"], "attestation_required");

    for (user_verification, wanted) in [(true, "required"), (false, "preferred")] {
        let step_up = Rejection::StepUpRequired { user_verification };
        let (status, challenge, json) = parts(step_up.into_response()).await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            challenge,
            format!("HWS1 error=\"step_up_required\", user_verification=\"{wanted}\"")
        );
        assert_eq!(json["error"]["code"], "step_up_required");
    }
    Ok(())
}

/// `VerifiedDevice` on a route the layer does not wrap: extraction fails, and the answer is a
/// 500 `verifier_unavailable`, never a pass.
#[tokio::test]
async fn the_extractor_off_the_layer_fails_closed() -> Result<()> {
    let (mut request, ()) = Request::builder()
        .uri("/unprotected")
        .body(())?
        .into_parts();
    let extracted = VerifiedDevice::from_request_parts(&mut request, &()).await;
    assert_eq!(extracted, Err(NotVerified));
    let (status, challenge, json) = parts(NotVerified.into_response()).await?;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(challenge, "HWS1 error=\"verifier_unavailable\"");
    assert_eq!(
        json,
        body(
            "verifier_unavailable",
            "this route is not protected by the verifier"
        )
    );
    Ok(())
}
