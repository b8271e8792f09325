//! A small HTTP server on 127.0.0.1 that checks every request with hwsign-proto's verification
//! pipeline (`parse_header_signed` + `PublicKey::verify_digest`), the body hash, the audience and
//! nonce reuse, and records what it accepted. It answers 200 `{"key_id","nonce"}` or 401 with the
//! reason. It is the verification half of the protocol, done by the protocol crate itself.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hwsign_proto::verify_input::parse_header_signed;
use hwsign_proto::{HWS1, PublicKey, RequestParts};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One accepted request.
#[derive(Debug, Clone)]
pub(crate) struct Accepted {
    pub key_id: String,
    pub nonce: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub body_len: usize,
    pub signed_headers: String,
}

#[derive(Default)]
struct State {
    keys: HashMap<String, PublicKey>,
    audience: String,
    seen_nonces: HashSet<String>,
    accepted: Vec<Accepted>,
    refused: Vec<String>,
}

pub(crate) struct VerifyingServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl VerifyingServer {
    /// Serves `audience`, accepting signatures of `keys` (PEM SPKI).
    pub(crate) async fn start(audience: &str, keys_pem: &[&str]) -> anyhow::Result<Self> {
        let mut keys = HashMap::new();
        for pem in keys_pem {
            let key = PublicKey::from_spki_pem(pem)?;
            keys.insert(key.key_id(), key);
        }
        let state = Arc::new(Mutex::new(State {
            keys,
            audience: audience.to_owned(),
            ..State::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = {
            let state = state.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let state = state.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |request: Request<Incoming>| {
                            let state = state.clone();
                            async move { Ok::<_, Infallible>(handle(request, &state).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Ok(Self { addr, state, task })
    }

    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    pub(crate) fn accepted(&self) -> Vec<Accepted> {
        self.state
            .lock()
            .map(|s| s.accepted.clone())
            .unwrap_or_default()
    }

    pub(crate) fn refused(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| s.refused.clone())
            .unwrap_or_default()
    }
}

impl Drop for VerifyingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(request: Request<Incoming>, state: &Mutex<State>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    match verify(&parts, &body, state) {
        Ok(accepted) => {
            let answer = serde_json::json!({"key_id": accepted.key_id, "nonce": accepted.nonce});
            if let Ok(mut s) = state.lock() {
                s.accepted.push(accepted);
            }
            reply(StatusCode::OK, answer.to_string())
        }
        Err(reason) => {
            if let Ok(mut s) = state.lock() {
                s.refused.push(reason.clone());
            }
            reply(StatusCode::UNAUTHORIZED, reason)
        }
    }
}

fn verify(
    parts: &http::request::Parts,
    body: &[u8],
    state: &Mutex<State>,
) -> Result<Accepted, String> {
    let mut headers: Vec<(&str, &str)> = Vec::new();
    for (name, value) in &parts.headers {
        headers.push((
            name.as_str(),
            value.to_str().map_err(|_| "non-text header")?,
        ));
    }
    let request_parts = RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
    };
    let claimed =
        parse_header_signed(&HWS1, &request_parts).map_err(|e| format!("malformed: {e}"))?;
    let mut state = state.lock().map_err(|_| "poisoned")?;
    if claimed.authorization.scope.audience != state.audience {
        return Err("wrong_audience".into());
    }
    let key = state
        .keys
        .get(&claimed.authorization.credential)
        .ok_or("unknown_key")?;
    if !key.verify_digest(
        &claimed.string_to_sign.digest(),
        &claimed.authorization.signature,
    ) {
        return Err("signature_invalid".into());
    }
    if hex::encode(Sha256::digest(body)) != claimed.payload_hash {
        return Err("body_hash_mismatch".into());
    }
    let nonce = claimed.nonce.ok_or("no nonce")?.as_str().to_owned();
    if !state.seen_nonces.insert(nonce.clone()) {
        return Err("replayed_nonce".into());
    }
    Ok(Accepted {
        key_id: claimed.authorization.credential.clone(),
        nonce,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        body_len: body.len(),
        signed_headers: claimed.authorization.signed_headers.to_string(),
    })
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
