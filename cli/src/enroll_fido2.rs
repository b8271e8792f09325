//! `hwsign enroll --fido2`: onboards a FIDO2 security key with a verifier (docs/WEBAUTHN.md,
//! "Onboarding a security key"). The verifier's creation options are asked for with the
//! one-time token, the agent's security key creates a credential over THAT challenge (one
//! touch; its PIN through the agent's askpass program when the verifier requires user
//! verification), and the attestation goes back to the verifier. The agent keeps the
//! credential, so `hwsign request` and the SDKs sign with it at once.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hwsign_client::{AgentClient, AgentErrorCode, ClientError};
use hwsign_proto::api::{Fido2RegisterRequest, MAX_FIDO2_EXCLUDE};
use hwsign_verifier::webauthn::registration::{
    OptionsRequest, OptionsResponse, REGISTER_OPTIONS_PATH, REGISTER_PATH, RegisterRequest,
    RegisterResponse,
};
use rustls::ClientConfig;

use super::enroll::post;

/// How long the agent may take: a touch (its timeout is at most 600 s) and a PIN prompt.
const AGENT_TIMEOUT: Duration = Duration::from_secs(660);

/// Runs the ceremony against `base` with `token`; the agent's key is labelled `label`, or with
/// the token's label when `None`.
pub(crate) async fn run(
    agent: &AgentClient,
    base: &str,
    tls: &Arc<ClientConfig>,
    token: &str,
    label: Option<String>,
) -> anyhow::Result<ExitCode> {
    let options: OptionsResponse = post(
        base,
        tls,
        REGISTER_OPTIONS_PATH,
        &OptionsRequest {
            token: token.to_owned(),
        },
    )
    .await?;
    let request = agent_request(&options, label)?;
    eprintln!(
        "touch your security key to create the credential for {}",
        request.rp_id
    );
    // The socket the caller chose, with time for a touch and a PIN prompt.
    let made = AgentClient::builder(agent.socket_path())
        .timeout(AGENT_TIMEOUT)
        .build()
        .register_fido2(&request)
        .await
        .map_err(explain)?;
    let done: RegisterResponse = post(
        base,
        tls,
        REGISTER_PATH,
        &RegisterRequest {
            challenge_id: options.challenge_id,
            client_data_json: made.client_data_json,
            attestation_object: made.attestation_object,
        },
    )
    .await?;
    println!(
        "enrolled {}  level={}  credential={}  label={}",
        done.key_id,
        done.level.as_str(),
        done.credential_id,
        made.key.label
    );
    Ok(ExitCode::SUCCESS)
}

/// What the agent is asked, from the verifier's creation options.
fn agent_request(
    options: &OptionsResponse,
    label: Option<String>,
) -> anyhow::Result<Fido2RegisterRequest> {
    let public_key = &options.public_key;
    let text = |value: &serde_json::Value, what: &str| {
        value
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("the verifier's creation options lack {what}"))
    };
    let user_name = text(&public_key.user["name"], "user.name")?;
    let exclude_credentials = public_key
        .exclude_credentials
        .iter()
        .take(MAX_FIDO2_EXCLUDE)
        .map(|descriptor| text(&descriptor["id"], "excludeCredentials[].id"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Fido2RegisterRequest {
        label: label.unwrap_or_else(|| user_name.clone()),
        rp_id: text(&public_key.rp["id"], "rp.id")?,
        challenge: public_key.challenge.clone(),
        user_id: text(&public_key.user["id"], "user.id")?,
        user_name,
        exclude_credentials,
        user_verification: public_key.user_verification_required(),
    })
}

/// The agent's refusal, said for someone holding a security key.
fn explain(error: ClientError) -> anyhow::Error {
    let hint = match error.agent_code() {
        Some(AgentErrorCode::NoSecurityKey) => {
            "no security key found: plug it in (and check the agent may open its hidraw node)"
        }
        Some(AgentErrorCode::TouchTimeout) => {
            "the security key was not touched in time; run the command again and touch it when it blinks"
        }
        Some(AgentErrorCode::CredentialExcluded) => {
            "this security key is already registered with this verifier for this user; nothing was created (the token is still unspent)"
        }
        Some(AgentErrorCode::UnknownBackend) => {
            "the agent has no [backends.fido2] section (or was built without the fido2 feature)"
        }
        Some(AgentErrorCode::InvalidRequest) => {
            "the agent refused the verifier's options (is [backends.fido2] rp_id the verifier's [webauthn] rp_id?)"
        }
        Some(AgentErrorCode::OperationDenied) => {
            "the security key refused: the verifier requires user verification (set a FIDO2 PIN on the key and an askpass program in [backends.fido2]), or the touch was declined"
        }
        Some(AgentErrorCode::PinIncorrect | AgentErrorCode::PinLocked) => {
            "the security key refused its PIN"
        }
        _ => "creating the credential on the security key",
    };
    anyhow::Error::new(error).context(hint)
}
