//! FIDO2 security keys (cargo feature `fido2`): CTAP2 over USB HID.
//!
//! Stack: 1Password's passkey-rs — `passkey-types` for the CTAP2 messages and
//! `passkey-transports` for CTAPHID framing — over a transport this module supplies: Linux
//! hidraw for real keys ([`transport::Hidraw`]), or the test seam ([`transport::SeqpacketSeam`],
//! a stand-in for the USB link only). The key never signs an arbitrary digest: it makes WebAuthn
//! assertions ([`KeyBackend::webauthn_assert`]), each needing a touch. All device I/O runs on
//! the backend's own thread, one operation at a time.

mod config;
mod ctap2;
mod ctaphid;
mod error;
mod notify;
mod pin;
mod store;
mod transport;

use std::path::Path;
use std::sync::mpsc;
use std::thread;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hwsign_proto::api::KeyLevel;
use hwsign_proto::webauthn::{TYPE_CREATE, client_data_json};
use sha2::{Digest as _, Sha256};

pub use self::config::{DEFAULT_TOUCH_TIMEOUT_SECS, Fido2Config};
use self::ctap2::Verification;
use self::ctaphid::CtapHid;
pub use self::error::Fido2Error;
use self::store::{CredentialStore, StoredCredential};
use self::transport::{HidTransport, Hidraw, SeqpacketSeam};
use super::{
    BackendError, BackendHealth, BackendKey, Fido2Creation, Fido2Registration, KeyBackend,
    WebauthnAssertion, WebauthnClient, check_label,
};

type Job = Box<dyn FnOnce(&Worker) + Send>;

/// The FIDO2 backend: a handle on its worker thread.
#[derive(Debug)]
pub struct Fido2Backend {
    jobs: mpsc::Sender<Job>,
    client: WebauthnClient,
    store: std::sync::Arc<CredentialStore>,
}

/// State of the worker thread.
#[derive(Debug)]
struct Worker {
    config: Fido2Config,
    store: std::sync::Arc<CredentialStore>,
    runtime: Option<tokio::runtime::Handle>,
}

impl Fido2Backend {
    /// Opens the metadata directory and starts the worker thread. No key needs to be present.
    pub fn open(config: &Fido2Config, state_dir: &Path) -> Result<Self, BackendError> {
        config.validate().map_err(BackendError::InvalidInput)?;
        let store = std::sync::Arc::new(CredentialStore::open(state_dir)?);
        let worker = Worker {
            config: config.clone(),
            store: std::sync::Arc::clone(&store),
            runtime: tokio::runtime::Handle::try_current().ok(),
        };
        let (jobs, queue) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("hwsign-fido2".into())
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    job(&worker);
                }
            })?;
        Ok(Self {
            jobs,
            client: WebauthnClient {
                rp_id: config.rp_id.clone(),
                origin: config.origin(),
            },
            store,
        })
    }

    /// Runs `f` on the worker thread and waits for its answer.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Worker) -> Result<T, Fido2Error> + Send + 'static,
    ) -> Result<T, BackendError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |worker: &Worker| {
                let _ = reply.send(f(worker));
            }))
            .map_err(|_| Fido2Error::WorkerGone)?;
        answer
            .recv()
            .map_err(|_| Fido2Error::WorkerGone)?
            .map_err(BackendError::from)
    }

    fn find(&self, key_id: &str) -> Result<StoredCredential, BackendError> {
        self.store
            .load()?
            .into_iter()
            .find(|c| c.key_id == key_id)
            .ok_or(BackendError::UnknownKey)
    }
}

impl Worker {
    /// Connects to the key: the seam, the configured node, or the first FIDO hidraw node.
    fn connect(&self) -> Result<CtapHid, Fido2Error> {
        let transport: Box<dyn HidTransport> = if let Some(seam) = &self.config.seam_socket {
            Box::new(SeqpacketSeam::connect(seam).map_err(|e| Fido2Error::NoDevice(Some(e)))?)
        } else {
            let path = match &self.config.device {
                Some(path) => path.clone(),
                None => Hidraw::discover()
                    .map_err(Fido2Error::Transport)?
                    .ok_or(Fido2Error::NoDevice(None))?,
            };
            Box::new(Hidraw::open(&path).map_err(|e| Fido2Error::NoDevice(Some(e)))?)
        };
        CtapHid::init(transport)
    }

    fn prompt(&self, what: &str) {
        notify::touch_prompt(self.runtime.as_ref(), self.config.notify, what);
    }

    /// Opens the key and decides how the user is verified for an operation over
    /// `client_data_hash`: with `user_verification`, the PIN from the askpass program (a PIN
    /// token's `pinAuth`) or the key's built-in verification; else presence only. The PIN is
    /// asked for before the key is opened, so that a cancelled prompt touches nothing.
    fn open_verified(
        &self,
        user_verification: bool,
        client_data_hash: &[u8; 32],
    ) -> Result<(CtapHid, Verification), Fido2Error> {
        let pin = match (&self.config.askpass, user_verification) {
            (Some(askpass), true) => Some(pin::read_pin(askpass)?),
            _ => None,
        };
        let mut device = self.connect()?;
        let verification = match pin {
            Some(pin) => {
                let token = pin::pin_token(&mut device, &pin, self.config.touch_timeout())?;
                Verification::Pin(token.auth(client_data_hash))
            }
            None if user_verification => Verification::BuiltIn,
            None => Verification::None,
        };
        Ok((device, verification))
    }

    fn create(&self, label: &str) -> Result<StoredCredential, Fido2Error> {
        let mut user_id = [0u8; 16];
        let mut challenge = [0u8; 32];
        getrandom::fill(&mut user_id)
            .and_then(|()| getrandom::fill(&mut challenge))
            .map_err(|e| Fido2Error::Transport(std::io::Error::other(e)))?;
        // No verifier takes part here, so the creation's client data carries a random
        // challenge; `register` is the call that completes a verifier's registration.
        let creation = Fido2Creation {
            rp_id: self.config.rp_id.clone(),
            challenge: challenge.to_vec(),
            user_id: user_id.to_vec(),
            user_name: label.to_owned(),
            exclude: Vec::new(),
            user_verification: false,
        };
        self.register(label, &creation).map(|(stored, _, _)| stored)
    }

    /// Has the key create a credential over `creation`'s challenge and stores it under
    /// `label`: the stored credential, the clientDataJSON and the key's answer.
    fn register(
        &self,
        label: &str,
        creation: &Fido2Creation,
    ) -> Result<(StoredCredential, String, ctap2::NewCredential), Fido2Error> {
        // The agent is the WebAuthn client: like a browser checking an RP ID against the
        // origin, it creates credentials only for the RP it is configured for.
        if creation.rp_id != self.config.rp_id {
            return Err(Fido2Error::RpIdMismatch);
        }
        let client_data = client_data_json(
            TYPE_CREATE,
            &URL_SAFE_NO_PAD.encode(&creation.challenge),
            &self.config.origin(),
        );
        let client_data_hash: [u8; 32] = Sha256::digest(client_data.as_bytes()).into();
        let timeout = self.config.touch_timeout();
        let (mut device, verification) =
            self.open_verified(creation.user_verification, &client_data_hash)?;
        self.prompt("create a key");
        let made = ctap2::make_credential(
            &mut device,
            ctap2::Creation {
                rp_id: &creation.rp_id,
                user_id: &creation.user_id,
                user_name: &creation.user_name,
                client_data_hash: &client_data_hash,
                exclude: &creation.exclude,
                verification,
            },
            timeout,
        )?;
        let stored = StoredCredential::new(
            label,
            &made.credential_id,
            &made.public_key,
            &creation.rp_id,
            &made.attestation_format,
            crate::unix_time::now(),
        );
        self.store
            .add(stored.clone())
            .map_err(Fido2Error::Transport)?;
        Ok((stored, client_data, made))
    }

    fn assert(
        &self,
        credential: &StoredCredential,
        client_data_hash: &[u8; 32],
        user_verification: bool,
    ) -> Result<WebauthnAssertion, Fido2Error> {
        let credential_id = credential
            .credential_id_bytes()
            .ok_or(Fido2Error::Protocol(
                "stored credential id is not base64url",
            ))?;
        let timeout = self.config.touch_timeout();
        let (mut device, verification) = self.open_verified(user_verification, client_data_hash)?;
        self.prompt("sign a request");
        let assertion = ctap2::get_assertion(
            &mut device,
            &credential.rp_id,
            &credential_id,
            client_data_hash,
            verification,
            timeout,
        )?;
        Ok(WebauthnAssertion {
            credential_id,
            authenticator_data: assertion.authenticator_data,
            signature: assertion.signature,
        })
    }
}

fn describe(credential: &StoredCredential) -> Option<BackendKey> {
    Some(BackendKey {
        id: credential.key_id.clone(),
        label: credential.label.clone(),
        // The agent does not check the key's attestation; the verifier's FIDO2 enrollment
        // decides whether it earns `fido2`.
        level: KeyLevel::Fido2Unattested,
        public_key: credential.public_key()?,
        created_unix: credential.created_unix,
    })
}

impl KeyBackend for Fido2Backend {
    fn name(&self) -> &'static str {
        "fido2"
    }

    fn health(&self) -> BackendHealth {
        match self.run(|worker| worker.connect().map(drop)) {
            Ok(()) => BackendHealth {
                available: true,
                detail: None,
            },
            Err(e) => BackendHealth {
                available: false,
                detail: Some(crate::error_chain(&e)),
            },
        }
    }

    fn list_keys(&self) -> Result<Vec<BackendKey>, BackendError> {
        Ok(self.store.load()?.iter().filter_map(describe).collect())
    }

    fn create_key(&self, label: &str) -> Result<BackendKey, BackendError> {
        check_label(label)?;
        let label = label.to_owned();
        let stored = self.run(move |worker| worker.create(&label))?;
        describe(&stored).ok_or_else(|| BackendError::failed("stored public key unreadable"))
    }

    fn sign_digest(&self, key_id: &str, digest: &[u8; 32]) -> Result<Vec<u8>, BackendError> {
        let _ = (key_id, digest);
        // A FIDO2 key signs only authenticator data ‖ client data hash (a WebAuthn assertion).
        Err(BackendError::Unsupported("fido2"))
    }

    fn webauthn_client(&self) -> Option<WebauthnClient> {
        Some(self.client.clone())
    }

    fn webauthn_assert(
        &self,
        key_id: &str,
        client_data_hash: &[u8; 32],
        user_verification: bool,
    ) -> Result<WebauthnAssertion, BackendError> {
        let credential = self.find(key_id)?;
        let hash = *client_data_hash;
        self.run(move |worker| worker.assert(&credential, &hash, user_verification))
    }

    fn fido2_register(
        &self,
        label: &str,
        creation: &Fido2Creation,
    ) -> Result<Fido2Registration, BackendError> {
        check_label(label)?;
        let label = label.to_owned();
        let creation = creation.clone();
        let (stored, client_data_json, made) =
            self.run(move |worker| worker.register(&label, &creation))?;
        Ok(Fido2Registration {
            key: describe(&stored)
                .ok_or_else(|| BackendError::failed("stored public key unreadable"))?,
            credential_id: made.credential_id,
            client_data_json,
            attestation_object: made.attestation_object,
        })
    }
}
