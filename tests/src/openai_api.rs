//! An OpenAI-shaped API behind the real verifier, for the SDK tests (`sdk_python_*`,
//! `sdk_node_*`): the official OpenAI SDKs, unmodified, call it through the hwsign SDKs.
//!
//! Routes (all behind [`HwsignLayer`], so only verified requests reach them):
//! - `POST /v1/chat/completions` — a `chat.completion`, or with `"stream": true` the same content
//!   as `chat.completion.chunk` server-sent events ending in `data: [DONE]`. The assistant's
//!   content is JSON: the verified key id, the `X-Hws-Nonce` of every attempt made with this
//!   request's `model` so far, and the last user message. A `model` starting with
//!   `rate-limit-once` is answered `429` (with `retry-after-ms`) the first time it is seen, so the
//!   SDK's own retry can be observed: it must carry a new signature and nonce to be accepted.
//! - `POST /v1/files` — a multipart upload (`file`, `purpose`), answered with a `file` object whose
//!   `sha256` and `bytes` describe what arrived.
//! - `POST /v1/challenge/{code}` — a stand-in for the verifier's coming re-attestation and
//!   step-up challenges (not built in the verifier yet): answers `401` with
//!   `WWW-Authenticate: HWS1 error="<code>"` for `attestation_required` and `step_up_required`,
//!   so the SDKs' handling of those answers is exercised end to end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Result;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hwsign_proto::PublicKey;
use hwsign_proto::api::KeyLevel;
use hwsign_verifier::{
    HwsignLayer, KeyRegistry, MemoryRegistry, RegisteredKey, VerifiedDevice, VerifierConfig,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{AUDIENCE, memory_verifier, serve_until_shutdown};

/// Models (rate-limit tests) whose attempts are remembered; older ones are forgotten past this.
const MAX_TRACKED_MODELS: usize = 1024;
/// Attempts remembered per model.
const MAX_ATTEMPTS_PER_MODEL: usize = 16;
/// Prefix of a `model` whose first attempt is answered 429.
const RATE_LIMIT_ONCE: &str = "rate-limit-once";

/// The running API on 127.0.0.1, stopped on drop.
#[derive(Debug)]
pub struct OpenAiApi {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its key registry.
    pub registry: Arc<MemoryRegistry>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

#[derive(Debug, Default)]
struct ApiState {
    /// `model` → the nonces of its attempts, in order.
    attempts: Mutex<HashMap<String, Vec<String>>>,
}

impl ApiState {
    /// Records an attempt and returns every attempt's nonce so far.
    fn record(&self, model: &str, nonce: &str) -> Vec<String> {
        let mut attempts = self.attempts.lock().unwrap_or_else(PoisonError::into_inner);
        if attempts.len() >= MAX_TRACKED_MODELS && !attempts.contains_key(model) {
            attempts.clear();
        }
        let seen = attempts.entry(model.to_owned()).or_default();
        if seen.len() < MAX_ATTEMPTS_PER_MODEL {
            seen.push(nonce.to_owned());
        }
        seen.clone()
    }
}

impl OpenAiApi {
    /// Starts the API for [`AUDIENCE`], serving exactly `127.0.0.1:<port>`.
    pub async fn start() -> Result<Self> {
        Self::start_for_hosts(&[]).await
    }

    /// Starts the API for [`AUDIENCE`], serving `127.0.0.1:<port>` and `extra_hosts` (the
    /// authority of a TLS front in front of it).
    pub async fn start_for_hosts(extra_hosts: &[String]) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut config = VerifierConfig::any_host(AUDIENCE);
        config.hosts = vec![addr.to_string()];
        config.hosts.extend(extra_hosts.iter().cloned());
        let (registry, verifier) = memory_verifier(config)?;
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            // The verifier bounds bodies (10 MiB by default); axum's own 2 MB multipart limit
            // would refuse uploads the verifier accepted.
            .route(
                "/v1/files",
                post(upload_file).layer(DefaultBodyLimit::disable()),
            )
            .route("/v1/challenge/{code}", post(challenge))
            .with_state(Arc::new(ApiState::default()))
            .layer(HwsignLayer::new(verifier));
        let shutdown = serve_until_shutdown(listener, app);
        Ok(Self {
            addr,
            registry,
            shutdown: Some(shutdown),
        })
    }

    /// Registers a public key at `level`.
    pub fn register(&self, public: &PublicKey, level: KeyLevel) -> Result<()> {
        self.registry
            .add(RegisteredKey::new(public.clone(), "sdk test key", level, 0))?;
        Ok(())
    }

    /// The base URL the OpenAI SDKs take: `http://127.0.0.1:<port>/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Drop for OpenAiApi {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// An OpenAI-style error answer.
fn api_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": kind}});
    (status, axum::Json(body)).into_response()
}

async fn chat_completions(
    State(state): State<Arc<ApiState>>,
    device: VerifiedDevice,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "body is not JSON",
        );
    };
    let model = request["model"].as_str().unwrap_or_default();
    let nonce = headers
        .get("x-hws-nonce")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let nonces = state.record(model, nonce);
    if model.starts_with(RATE_LIMIT_ONCE) && nonces.len() == 1 {
        let mut response = api_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            "rate limited once by the test API",
        );
        response
            .headers_mut()
            .insert("retry-after-ms", HeaderValue::from_static("10"));
        return response;
    }
    let last_user = request["messages"]
        .as_array()
        .and_then(|messages| messages.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| m["content"].clone())
        .unwrap_or(Value::Null);
    let content = json!({
        "key_id": device.0.key_id,
        "nonces": nonces,
        "echo": last_user,
    })
    .to_string();
    let id = "chatcmpl-hwsign-test";
    if request["stream"] == true {
        return stream_completion(id, model, &content);
    }
    axum::Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop",
            "logprobs": null,
        }],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }))
    .into_response()
}

/// The content as three deltas (the role, then two halves), a final chunk and `[DONE]`.
fn stream_completion(id: &str, model: &str, content: &str) -> Response {
    let chunk = |delta: Value, finish: Value| {
        let chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        });
        format!("data: {chunk}\n\n")
    };
    let middle = content
        .char_indices()
        .map(|(i, _)| i)
        .nth(content.chars().count() / 2)
        .unwrap_or(0);
    let (first, second) = content.split_at(middle);
    let events = vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": first}), Value::Null),
        chunk(json!({"content": second}), Value::Null),
        chunk(json!({}), json!("stop")),
        "data: [DONE]\n\n".to_owned(),
    ];
    let stream = event_stream(events);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(stream)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A body sent as one frame per event (so the client really reads a stream).
fn event_stream(events: Vec<String>) -> Body {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        for event in events {
            if sender.send(Bytes::from(event)).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    channel_body(receiver)
}

/// A body that sends what `receiver` yields, one data frame per item, as it comes.
pub fn channel_body(receiver: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
    Body::new(EventBody(receiver))
}

/// The events of a channel as an HTTP body, one data frame each.
struct EventBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for EventBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|event| event.map(|data| Ok(http_body::Frame::data(data))))
    }
}

async fn upload_file(device: VerifiedDevice, mut multipart: Multipart) -> Response {
    let mut purpose = String::new();
    let mut file: Option<(String, Bytes)> = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    &e.to_string(),
                );
            }
        };
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field.file_name().unwrap_or("upload").to_owned();
        let Ok(data) = field.bytes().await else {
            return api_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "unreadable multipart field",
            );
        };
        match name.as_str() {
            "purpose" => purpose = String::from_utf8_lossy(&data).into_owned(),
            "file" => file = Some((filename, data)),
            _ => {}
        }
    }
    let Some((filename, data)) = file else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "no file field",
        );
    };
    let sha256 = hex::encode(Sha256::digest(&data));
    axum::Json(json!({
        "id": format!("file-{}", &sha256[..24]),
        "object": "file",
        "bytes": data.len(),
        "created_at": 0,
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "sha256": sha256,
        "key_id": device.0.key_id,
    }))
    .into_response()
}

async fn challenge(_device: VerifiedDevice, Path(code): Path<String>) -> Response {
    if code != "attestation_required" && code != "step_up_required" {
        return api_error(StatusCode::NOT_FOUND, "not_found", "unknown challenge");
    }
    let body = json!({"error": {"code": code, "message": "stand-in challenge of the test API"}});
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!(
        "HWS1 error=\"{code}\", nonce=\"bm9uY2UtZm9yLXRlc3Q\""
    )) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}
