//! The reqwest-middleware adapter against the real agent: each attempt made by a retry
//! middleware placed before it is signed anew.

use crate::support;

use http::Extensions;
use hwsign_client::middleware::SigningMiddleware;
use hwsign_client::{ClientError, RequestError, Signer};
use reqwest::{Request, Response, StatusCode};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use support::real_agent::RealAgent;
use support::verifying_server::VerifyingServer;

/// Sends every request `attempts` times and returns the last response — standing in for a retry
/// middleware facing a flaky upstream.
struct Repeat {
    attempts: usize,
}

#[async_trait::async_trait]
impl Middleware for Repeat {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let mut last = None;
        for _ in 0..self.attempts {
            let attempt = request.try_clone().ok_or_else(|| {
                reqwest_middleware::Error::Middleware(anyhow::anyhow!("body not cloneable"))
            })?;
            last = Some(next.clone().run(attempt, extensions).await?);
        }
        last.ok_or_else(|| reqwest_middleware::Error::Middleware(anyhow::anyhow!("no attempt")))
    }
}

fn client(signer: &Signer, retry_first: bool) -> anyhow::Result<ClientWithMiddleware> {
    let inner = reqwest::Client::builder().no_proxy().build()?;
    let builder = ClientBuilder::new(inner);
    Ok(if retry_first {
        builder
            .with(Repeat { attempts: 3 })
            .with(SigningMiddleware::new(signer.clone()))
            .build()
    } else {
        builder
            .with(SigningMiddleware::new(signer.clone()))
            .with(Repeat { attempts: 2 })
            .build()
    })
}

#[tokio::test]
async fn every_attempt_is_signed_and_verifies() -> anyhow::Result<()> {
    let agent = RealAgent::start().await?;
    let key = agent.software_key("reqwest").await?;
    let server = VerifyingServer::start("payments", &[&key.public_key_pem]).await?;
    let signer = Signer::new(agent.client(), &key.id, "payments");

    let http = client(&signer, true)?;
    let response = http
        .post(server.url("/v1/transfers/caf%C3%A9?currency=EUR&note=a+b"))
        .header("content-type", "application/json")
        .body(r#"{"amount":100}"#)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK, "{:?}", server.refused());
    let accepted = server.accepted();
    assert_eq!(accepted.len(), 3);
    assert_ne!(accepted[0].nonce, accepted[1].nonce);
    assert_ne!(accepted[1].nonce, accepted[2].nonce);
    assert_eq!(accepted[0].path, "/v1/transfers/caf%C3%A9");
    assert_eq!(accepted[0].query, "currency=EUR&note=a+b");

    let response = http.get(server.url("/v1/accounts")).send().await?;
    assert_eq!(response.status(), StatusCode::OK);

    // Signing once outside the retry replays the first attempt's nonce.
    let wrong = client(&signer, false)?;
    let response = wrong.get(server.url("/v1/accounts")).send().await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.text().await?, "replayed_nonce");
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn streaming_bodies_are_refused_rather_than_guessed() -> anyhow::Result<()> {
    let agent = RealAgent::start().await?;
    let key = agent.software_key("stream").await?;
    let server = VerifyingServer::start("payments", &[&key.public_key_pem]).await?;
    let signer = Signer::new(agent.client(), &key.id, "payments");
    let middleware = SigningMiddleware::new(signer);
    let stream = futures_stream();
    let mut request = reqwest::Client::new()
        .post(server.url("/v1/upload"))
        .body(reqwest::Body::wrap(stream))
        .build()?;
    let err = middleware.sign(&mut request).await.err();
    assert!(
        matches!(err, Some(ClientError::Request(RequestError::StreamingBody))),
        "{err:?}"
    );
    agent.stop().await?;
    Ok(())
}

/// A one-chunk streaming body.
fn futures_stream() -> http_body_util::Full<bytes::Bytes> {
    http_body_util::Full::new(bytes::Bytes::from_static(b"chunk"))
}
