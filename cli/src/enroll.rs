//! `hwsign enroll`: the device side of TPM enrollment (docs/ATTESTATION.md). Evidence and
//! credential activation come from the local agent; the three ceremony steps go to the server
//! over HTTPS (rustls; plain HTTP only to a loopback host, or with `--insecure-http`: the
//! one-time token would travel in clear). `--fido2` onboards a security key instead
//! ([`super::enroll_fido2`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Args;
use http::{Method, Request, header};
use hwsign_client::AgentClient;
use hwsign_proto::enrollment::{
    ACTIVATE_PATH, ActivateRequest, ActivateResponse, EVIDENCE_PATH, EnrollErrorResponse,
    EvidenceRequest, EvidenceResponse, START_PATH, StartRequest, StartResponse,
};
use rustls::ClientConfig;
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use super::http_send::{bytes_body, send, set_host};
use crate::https::is_loopback_host;

#[derive(Debug, Args)]
pub(crate) struct EnrollArgs {
    /// The verifier's base URL, e.g. https://verifier.internal:8443 (http:// only to a loopback
    /// host unless --insecure-http).
    #[arg(long, value_name = "URL")]
    server: String,
    /// Trust this CA certificate (PEM) for the server, beside the webpki roots (repeatable).
    #[arg(long, value_name = "FILE")]
    cacert: Vec<PathBuf>,
    /// Allow plain http:// to a host that is not loopback (the token and the ceremony travel
    /// unencrypted).
    #[arg(long)]
    insecure_http: bool,
    /// The one-time token from `hwsign-verifier tokens create`.
    #[arg(long, value_name = "TOKEN")]
    token: String,
    /// Enroll this existing TPM key (hk1_...).
    #[arg(
        long,
        value_name = "KEY_ID",
        conflicts_with_all = ["create", "fido2"],
        required_unless_present_any = ["create", "fido2"]
    )]
    key: Option<String>,
    /// Create a new TPM key to enroll.
    #[arg(long, requires = "label", conflicts_with = "fido2")]
    create: bool,
    /// Onboard the agent's FIDO2 security key instead: it creates a credential over the
    /// verifier's registration challenge (one touch), the agent keeps it for signing.
    #[arg(long)]
    fido2: bool,
    /// Label of the key created with --create or --fido2 (--fido2 default: the token's label).
    #[arg(long)]
    label: Option<String>,
}

pub(crate) async fn run(agent: &AgentClient, args: EnrollArgs) -> anyhow::Result<ExitCode> {
    let base = args.server.trim_end_matches('/').to_owned();
    check_server_url(&base, args.insecure_http)?;
    let tls = crate::https::client_config(&args.cacert)?;
    let token = Zeroizing::new(args.token);
    if args.fido2 {
        return super::enroll_fido2::run(agent, &base, &tls, &token, args.label).await;
    }
    let key_id = match (args.key, args.create, args.label) {
        (Some(key), _, _) => key,
        (None, true, Some(label)) => {
            let key = agent
                .create_key("tpm", &label)
                .await
                .context("creating a TPM key")?;
            eprintln!("created TPM key {}", key.id);
            key.id
        }
        _ => bail!("pass --key KEY_ID, or --create --label LABEL"),
    };

    let started: StartResponse = post(
        &base,
        &tls,
        START_PATH,
        &StartRequest {
            token: token.to_string(),
            key_id: key_id.clone(),
        },
    )
    .await?;
    let evidence = agent
        .attestation(&key_id, &started.nonce)
        .await
        .context("getting attestation evidence from the agent")?;
    let credential: EvidenceResponse = post(
        &base,
        &tls,
        EVIDENCE_PATH,
        &EvidenceRequest {
            challenge_id: started.challenge_id.clone(),
            evidence,
        },
    )
    .await?;
    let released = agent
        .activate_credential(&key_id, &credential.to_activate_request())
        .await
        .context("activating the server's credential in the TPM")?;
    let done: ActivateResponse = post(
        &base,
        &tls,
        ACTIVATE_PATH,
        &ActivateRequest {
            challenge_id: started.challenge_id,
            secret: released.secret,
        },
    )
    .await?;
    println!(
        "enrolled {}  level={}  device={}",
        done.key_id,
        done.level.as_str(),
        done.device_id
    );
    Ok(ExitCode::SUCCESS)
}

/// A refused ceremony step, with the server's code.
#[derive(Debug, thiserror::Error)]
#[error("{step} refused: {code}: {message}")]
pub(crate) struct StepRefused {
    /// The step's path.
    pub step: &'static str,
    /// The server's code (`invalid_token`, `evidence_invalid:<reason>`, ...).
    pub code: String,
    /// The server's message.
    pub message: String,
}

/// A server URL enrollment may use: https://, or http:// to a loopback host, or http:// to any
/// host when `insecure_http`.
fn check_server_url(base: &str, insecure_http: bool) -> anyhow::Result<()> {
    let uri: http::Uri = base
        .parse()
        .with_context(|| format!("--server {base:?} is not a URL"))?;
    let host = uri.host().context("--server has no host")?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if insecure_http || is_loopback_host(host) => Ok(()),
        Some("http") => bail!(
            "--server {base}: refusing plain http:// to a host that is not loopback (the one-time token would travel in clear); use https://, or pass --insecure-http"
        ),
        _ => bail!("--server {base:?}: expected an https:// URL"),
    }
}

pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(
    base: &str,
    tls: &Arc<ClientConfig>,
    path: &'static str,
    body: &B,
) -> anyhow::Result<T> {
    let url = format!("{base}{path}");
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(&url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(bytes_body(serde_json::to_vec(body)?))
        .with_context(|| format!("building a request to {url}"))?;
    set_host(&mut request)?;
    let response = send(request, tls).await?;
    let status = response.status();
    let bytes = response.into_body();
    if status.is_success() {
        return serde_json::from_slice(&bytes).with_context(|| {
            format!("{path}: the server's answer is not what enrollment expects")
        });
    }
    match serde_json::from_slice::<EnrollErrorResponse>(&bytes) {
        Ok(refusal) => Err(StepRefused {
            step: path,
            code: refusal.error.code,
            message: refusal.error.message,
        }
        .into()),
        Err(_) => bail!("{path}: the server answered {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::check_server_url;

    #[test]
    fn plain_http_is_only_for_loopback_unless_insecure() {
        assert!(check_server_url("https://verifier.example", false).is_ok());
        assert!(check_server_url("http://127.0.0.1:8080", false).is_ok());
        assert!(check_server_url("http://[::1]:8080", false).is_ok());
        assert!(check_server_url("http://localhost:8080", false).is_ok());
        assert!(check_server_url("http://verifier.example", false).is_err());
        assert!(check_server_url("http://10.0.0.1:8080", false).is_err());
        assert!(check_server_url("http://verifier.example", true).is_ok());
        assert!(check_server_url("ftp://verifier.example", true).is_err());
    }
}
