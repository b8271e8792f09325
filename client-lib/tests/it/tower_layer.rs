//! The tower adapter against the real agent: every attempt of a tower retry is signed anew when
//! the retry sits outside the signing layer.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hwsign_client::layer::{SigningLayer, SigningServiceError};
use hwsign_client::{ClientError, Signer};
use hyper_util::rt::TokioIo;
use support::real_agent::RealAgent;
use support::verifying_server::VerifyingServer;
use tower::retry::Policy;
use tower::{Service, ServiceBuilder, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The transport under the layer: one HTTP/1.1 request per TCP connection.
#[derive(Clone)]
struct TcpSend;

impl Service<Request<Full<Bytes>>> for TcpSend {
    type Response = Response<String>;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let authority = parts.uri.authority().ok_or("no authority")?.clone();
            let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            parts.uri = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .parse()?;
            parts
                .headers
                .insert(http::header::HOST, authority.as_str().parse()?);
            let response = sender
                .send_request(Request::from_parts(parts, body))
                .await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok(Response::from_parts(
                parts,
                String::from_utf8_lossy(&body).into_owned(),
            ))
        })
    }
}

/// Retries every request until `attempts` calls were made, whatever the outcome — standing in
/// for a retry on a flaky upstream.
#[derive(Clone)]
struct Repeat {
    remaining: Arc<AtomicUsize>,
}

impl<Res, E> Policy<Request<Full<Bytes>>, Res, E> for Repeat {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _: &mut Request<Full<Bytes>>,
        _: &mut Result<Res, E>,
    ) -> Option<Self::Future> {
        let left = self.remaining.load(Ordering::SeqCst);
        if left == 0 {
            return None;
        }
        self.remaining.store(left - 1, Ordering::SeqCst);
        Some(std::future::ready(()))
    }

    fn clone_request(&mut self, request: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        let mut copy = Request::new(request.body().clone());
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.headers_mut() = request.headers().clone();
        Some(copy)
    }
}

fn transfer(server: &VerifyingServer) -> anyhow::Result<Request<Full<Bytes>>> {
    Ok(Request::post(server.url("/v1/transfers?currency=EUR"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"amount":100}"#)))?)
}

#[tokio::test]
async fn every_retry_attempt_is_signed_anew() -> anyhow::Result<()> {
    let agent = RealAgent::start().await?;
    let key = agent.software_key("tower").await?;
    let server = VerifyingServer::start("payments", &[&key.public_key_pem]).await?;
    let signer = Signer::new(agent.client(), &key.id, "payments");

    let service = ServiceBuilder::new()
        .retry(Repeat {
            remaining: Arc::new(AtomicUsize::new(2)),
        })
        .layer(SigningLayer::new(signer.clone()))
        .service(TcpSend);
    let response = service
        .oneshot(transfer(&server)?)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(response.status(), StatusCode::OK, "{}", response.body());
    let accepted = server.accepted();
    assert_eq!(
        accepted.len(),
        3,
        "three attempts, each accepted: {:?}",
        server.refused()
    );
    assert_ne!(accepted[0].nonce, accepted[1].nonce);
    assert_ne!(accepted[1].nonce, accepted[2].nonce);
    assert_eq!(accepted[0].query, "currency=EUR");

    // The wrong order — signing once, outside the retry — replays the first attempt's nonce.
    let wrong = ServiceBuilder::new()
        .layer(SigningLayer::new(signer))
        .retry(Repeat {
            remaining: Arc::new(AtomicUsize::new(1)),
        })
        .service(TcpSend);
    let response = wrong
        .oneshot(transfer(&server)?)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.body(), "replayed_nonce");
    agent.stop().await?;
    Ok(())
}

#[tokio::test]
async fn bodies_over_the_bound_are_refused_unsent() -> anyhow::Result<()> {
    let agent = RealAgent::start().await?;
    let key = agent.software_key("bound").await?;
    let server = VerifyingServer::start("payments", &[&key.public_key_pem]).await?;
    let signer = Signer::new(agent.client(), &key.id, "payments");
    let mut service = ServiceBuilder::new()
        .layer(SigningLayer::new(signer).max_body(8))
        .service(TcpSend);
    let request = Request::post(server.url("/v1/upload"))
        .body(Full::new(Bytes::from_static(b"0123456789")))?;
    let result = ServiceExt::<Request<Full<Bytes>>>::ready(&mut service)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .call(request)
        .await;
    assert!(
        matches!(
            result,
            Err(SigningServiceError::Sign(ClientError::BodyTooLarge {
                limit: 8
            }))
        ),
        "{result:?}"
    );
    assert!(server.accepted().is_empty() && server.refused().is_empty());
    agent.stop().await?;
    Ok(())
}
