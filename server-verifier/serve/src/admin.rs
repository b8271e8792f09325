//! The admin listener: `GET /healthz` (the process serves), `GET /readyz` (the registry and the
//! replay cache answer now), `GET /metrics` (Prometheus text). Anything else is 404.
//!
//! It is a separate listener so that probes and metrics stay off the public network and never
//! shadow a path of the API behind the proxy.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::response::Response;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode};
use hwsign_verifier::{Freshness, KeyRegistry, ReplayCache, Reservation};

use crate::metrics::Metrics;

/// The registry key id and replay-cache key the readiness probe uses; not an `hk1_` id, so it
/// can never be a real key's.
const PROBE_KEY: &str = "readyz-probe";
/// How long a probe may take before the store counts as not answering.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the admin listener answers from.
#[derive(Debug)]
pub(crate) struct Admin {
    pub(crate) registry: Arc<dyn KeyRegistry>,
    pub(crate) replay: Arc<dyn ReplayCache>,
    pub(crate) metrics: Arc<Metrics>,
}

impl Admin {
    /// Answers one admin request.
    pub(crate) async fn handle<B>(&self, request: Request<B>) -> Response {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".to_owned());
        }
        match request.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n".to_owned()),
            "/readyz" => self.ready().await,
            "/metrics" => {
                let mut response = text(StatusCode::OK, self.metrics.render());
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n".to_owned()),
        }
    }

    /// 200 when both stores answer a probe within [`PROBE_TIMEOUT`], else 503 naming the ones
    /// that did not.
    async fn ready(&self) -> Response {
        let registry = Arc::clone(&self.registry);
        let registry_ok = probe(move || registry.lookup(PROBE_KEY).is_ok()).await;
        let replay = Arc::clone(&self.replay);
        let replay_ok = probe(move || replay_answers(replay.as_ref())).await;
        let mut failing = Vec::new();
        if !registry_ok {
            failing.push("registry");
        }
        if !replay_ok {
            failing.push("replay_cache");
        }
        if failing.is_empty() {
            text(StatusCode::OK, "ready\n".to_owned())
        } else {
            tracing::warn!(?failing, "not ready");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", failing.join(", ")),
            )
        }
    }
}

/// Runs a blocking probe off the runtime, bounded in time.
async fn probe(check: impl FnOnce() -> bool + Send + 'static) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::task::spawn_blocking(check)).await,
        Ok(Ok(true))
    )
}

/// Reserves a fresh nonce for the probe key, expiring this second: the cache must answer
/// `Fresh` (an expired or refused answer means it does not work). The entry is forgotten at once.
fn replay_answers(replay: &dyn ReplayCache) -> bool {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok());
    let Some(now) = now else {
        return false;
    };
    let nonce = probe_nonce(now);
    let reservation = Reservation {
        key_id: PROBE_KEY,
        nonce: &nonce,
        expires_unix: now,
        now_unix: now,
        per_key_limit: usize::MAX,
    };
    matches!(
        replay.check_and_remember(&reservation),
        Ok(Freshness::Fresh)
    )
}

/// A nonce unique within this process (uniqueness, not secrecy, is what the probe needs; the
/// process id keeps replicas sharing a cache apart).
fn probe_nonce(now: i64) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{now}-{}-{count}", std::process::id())
}

fn text(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
