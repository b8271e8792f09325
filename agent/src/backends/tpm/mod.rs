//! TPM 2.0 key backend (tss-esapi 7, any TCTI: `device:/dev/tpmrm0`, `tabrmd`, or a simulator
//! over TCP). Signing keys are ECC P-256 children of an ECC P-256 storage root key re-created
//! from the standard template; their public and TPM-encrypted private blobs live in
//! `<state_dir>/tpm/`. Attestation uses a restricted ECDSA key under the endorsement key, whose
//! certificate is read from NV when the TPM has one (without, the verifier needs the EK registered).
//!
//! One worker thread owns the TPM connection (module `worker`); the [`KeyBackend`] methods send it
//! jobs and wait for the reply, so they block: call them from `spawn_blocking`. Signing can also
//! be queued without waiting ([`KeyBackend::sign_digest_queued`]): the worker then sends the
//! signature straight to the awaiting async task.
//!
//! Deployment notes: the agent's user needs access to the TCTI (group `tss` for
//! `/dev/tpmrm0`); the owner and endorsement hierarchies must have empty authorization (the
//! usual state of a PC's TPM); ESYS writes expected failures (a TPM that went away) to stderr
//! unless `TSS2_LOG=all+none` is set in the service environment.

mod conn;
pub mod ek;
mod error;
mod evidence;
mod ops;
mod store;
pub mod tcti;
mod templates;
mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use hwsign_proto::api::KeyLevel;
use hwsign_proto::attestation::Evidence;
use serde::{Deserialize, Serialize};
use tss_esapi::structures::{EncryptedSecret, IdObject};

use self::error::TpmError;
use self::ops::Blobs;
use self::store::{KeyFile, Store};
use self::worker::{Job, Message, Persistent, Worker};
use super::{BackendError, BackendHealth, BackendKey, KeyBackend, Queued, check_label};

/// Default TCTI: the kernel's resource manager.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";
/// Default time a caller waits for the TPM before getting `Unavailable`.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 60;
/// Longest a health check waits: `/v1/status` must answer even when the TPM hangs.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest nonce TPM2_Certify / TPM2_Quote accept (TPM2B_DATA).
pub const MAX_NONCE_LEN: usize = 64;

/// `[backends.tpm]` in the agent configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmConfig {
    /// TCTI: `device:/dev/tpmrm0`, `tabrmd`, `swtpm:host=127.0.0.1,port=2321`, `mssim:…`.
    /// Unix-socket simulators (`swtpm:path=`) are not reachable through tss-esapi 7.
    #[serde(default = "default_tcti")]
    pub tcti: String,
    /// Seconds a request waits for the TPM (real chips take up to seconds for key creation).
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
}

fn default_tcti() -> String {
    DEFAULT_TCTI.to_owned()
}

fn default_timeout() -> u64 {
    DEFAULT_REQUEST_TIMEOUT_SECS
}

impl Default for TpmConfig {
    fn default() -> Self {
        Self {
            tcti: default_tcti(),
            request_timeout_secs: default_timeout(),
        }
    }
}

/// A key as held in memory: its description and blobs.
#[derive(Debug, Clone)]
struct Entry {
    key: BackendKey,
    blobs: Blobs,
}

/// The TPM backend. Dropping it stops the worker, which flushes its objects from the TPM.
pub struct TpmBackend {
    jobs: Sender<Message>,
    keys: Arc<Mutex<BTreeMap<String, Entry>>>,
    worker: Option<JoinHandle<()>>,
    timeout: Duration,
    tcti: String,
    state_dir: PathBuf,
}

impl std::fmt::Debug for TpmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmBackend")
            .field("tcti", &self.tcti)
            .field("state_dir", &self.state_dir)
            .field("keys", &self.lock_keys().len())
            .finish_non_exhaustive()
    }
}

impl TpmBackend {
    /// Loads the key files from `<state_dir>/tpm/` and starts the worker. A TPM that cannot be
    /// reached now is not an error: the backend reports itself unavailable and connects on
    /// the next request (a TPM resource manager may start after the agent). A malformed TCTI is.
    pub fn open(config: &TpmConfig, state_dir: &Path) -> Result<Self, BackendError> {
        let tcti = tcti::parse_tcti(&config.tcti)
            .map_err(|e| BackendError::InvalidInput(e.to_string()))?;
        let store = Store::open(state_dir)?;
        let mut keys = BTreeMap::new();
        for file in store.load_keys()? {
            let id = file.id.clone();
            match entry_from_file(file) {
                Ok(entry) => {
                    keys.insert(entry.key.id.clone(), entry);
                }
                Err(err) => tracing::warn!(key = %id, error = %err, "skipping TPM key file"),
            }
        }
        let ak = match store.load_ak()? {
            Some(file) => Some(worker::ak_from_file(&file).map_err(BackendError::from)?),
            None => None,
        };
        let (jobs, receiver) = mpsc::channel();
        let worker = Worker::new(tcti, Persistent::new(store, ak));
        let handle = std::thread::Builder::new()
            .name("hwsign-tpm".into())
            .spawn(move || worker.serve(receiver))?;
        let backend = Self {
            jobs,
            keys: Arc::new(Mutex::new(keys)),
            worker: Some(handle),
            timeout: Duration::from_secs(config.request_timeout_secs.max(1)),
            tcti: config.tcti.clone(),
            state_dir: state_dir.to_path_buf(),
        };
        if let Err(err) = backend.call(|w| w.ping()) {
            tracing::warn!(tcti = %config.tcti, error = %err, "TPM not reachable at start-up");
        }
        Ok(backend)
    }

    /// Transient object handles the TPM currently holds for this backend's connection (the
    /// storage root key among them). A diagnostic for leak tests and `hwsign status`.
    pub fn transient_handles(&self) -> Result<Vec<u32>, BackendError> {
        self.call(|w| w.run(|live, _| live.transient_handles()))
    }

    fn lock_keys(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        // The map is only ever replaced whole-entry, so a panic elsewhere cannot leave it torn.
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, key_id: &str) -> Result<Entry, BackendError> {
        self.lock_keys()
            .get(key_id)
            .cloned()
            .ok_or(BackendError::UnknownKey)
    }

    /// Sends `f` to the worker and waits (bounded) for its result.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Worker) -> Result<T, TpmError> + Send + 'static,
    ) -> Result<T, BackendError> {
        self.call_within(self.timeout, f)
    }

    /// Sends `f` to the worker and returns at once; the worker sends the result to the returned
    /// [`Queued`], which its receiver awaits for at most the request timeout.
    fn queue<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Worker) -> Result<T, TpmError> + Send + 'static,
    ) -> Result<Queued<T>, BackendError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |worker| {
            // The caller may have given up (timeout, connection closed): nobody to tell.
            let _ = reply.send(f(worker).map_err(BackendError::from));
        });
        self.jobs
            .send(Message::Job(job))
            .map_err(|_| BackendError::unavailable("TPM worker stopped"))?;
        Ok(Queued {
            answer,
            within: self.timeout,
        })
    }

    /// [`Self::call`] with an explicit bound. A job whose caller gave up still runs later; jobs
    /// therefore leave the backend consistent on their own (see `create_key`).
    fn call_within<T: Send + 'static>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&mut Worker) -> Result<T, TpmError> + Send + 'static,
    ) -> Result<T, BackendError> {
        let (reply, result) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |worker| {
            let _ = reply.send(f(worker));
        });
        self.jobs
            .send(Message::Job(job))
            .map_err(|_| BackendError::unavailable("TPM worker stopped"))?;
        match result.recv_timeout(timeout) {
            Ok(result) => result.map_err(BackendError::from),
            Err(RecvTimeoutError::Timeout) => Err(BackendError::unavailable(format!(
                "TPM did not answer within {} s",
                timeout.as_secs()
            ))),
            Err(RecvTimeoutError::Disconnected) => {
                Err(BackendError::unavailable("TPM worker stopped"))
            }
        }
    }
}

impl Drop for TpmBackend {
    fn drop(&mut self) {
        let _ = self.jobs.send(Message::Shutdown);
        if let Some(handle) = self.worker.take() {
            let _ = handle.join();
        }
    }
}

fn entry_from_file(file: KeyFile) -> Result<Entry, TpmError> {
    let blobs = worker::blobs_from_hex(&file.public, &file.private)?;
    let public_key = templates::signing_public_key(&blobs.public)?;
    let id = public_key.key_id();
    if id != file.id {
        return Err(TpmError::Unexpected(format!(
            "file names key {} but holds key {id}",
            file.id
        )));
    }
    check_label(&file.label).map_err(|e| TpmError::Unexpected(e.to_string()))?;
    Ok(Entry {
        key: BackendKey {
            id,
            label: file.label,
            level: KeyLevel::Tpm,
            public_key,
            created_unix: file.created_unix,
        },
        blobs,
    })
}

impl KeyBackend for TpmBackend {
    fn name(&self) -> &'static str {
        "tpm"
    }

    fn is_fast(&self) -> bool {
        false
    }

    fn health(&self) -> BackendHealth {
        match self.call_within(self.timeout.min(HEALTH_TIMEOUT), |w| w.ping()) {
            Ok(()) => BackendHealth {
                available: true,
                detail: None,
            },
            Err(err) => BackendHealth {
                available: false,
                detail: Some(crate::error_chain(&err)),
            },
        }
    }

    fn list_keys(&self) -> Result<Vec<BackendKey>, BackendError> {
        let mut keys: Vec<BackendKey> = self.lock_keys().values().map(|e| e.key.clone()).collect();
        keys.sort_by(|a, b| (a.created_unix, &a.id).cmp(&(b.created_unix, &b.id)));
        Ok(keys)
    }

    fn create_key(&self, label: &str) -> Result<BackendKey, BackendError> {
        check_label(label)?;
        let template = templates::signing_key()?;
        let label = label.to_owned();
        let keys = Arc::clone(&self.keys);
        let key = self.call(move |w| {
            let blobs = w.run(|live, _| ops::create_signing_key(live, &template))?;
            let public_key = templates::signing_public_key(&blobs.public)?;
            let key = BackendKey {
                id: public_key.key_id(),
                label: label.clone(),
                level: KeyLevel::Tpm,
                public_key,
                created_unix: crate::unix_time::now(),
            };
            w.persistent().store.save_key(&store::key_file(
                key.id.clone(),
                key.label.clone(),
                key.created_unix,
                &ops::marshall_public(&blobs.public)?,
                blobs.private.value(),
            ))?;
            // Registered here, not by the caller: if the caller timed out meanwhile, the
            // persisted key must still be listed and usable.
            keys.lock().unwrap_or_else(|p| p.into_inner()).insert(
                key.id.clone(),
                Entry {
                    key: key.clone(),
                    blobs,
                },
            );
            Ok(key)
        })?;
        tracing::info!(key = %key.id, "created TPM key");
        Ok(key)
    }

    fn sign_digest(&self, key_id: &str, digest: &[u8; 32]) -> Result<Vec<u8>, BackendError> {
        let entry = self.entry(key_id)?;
        let digest = *digest;
        self.call(move |w| w.run(|live, _| ops::sign(live, &entry.blobs, &digest)))
    }

    fn sign_digest_queued(
        &self,
        key_id: &str,
        digest: &[u8; 32],
    ) -> Option<Result<Queued<Vec<u8>>, BackendError>> {
        let digest = *digest;
        Some(self.entry(key_id).and_then(|entry| {
            self.queue(move |w| w.run(|live, _| ops::sign(live, &entry.blobs, &digest)))
        }))
    }

    fn attest(&self, key_id: &str, nonce: &[u8]) -> Result<Evidence, BackendError> {
        if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN {
            return Err(BackendError::InvalidInput(format!(
                "nonce must be 1 to {MAX_NONCE_LEN} bytes"
            )));
        }
        let entry = self.entry(key_id)?;
        let nonce = nonce.to_vec();
        let evidence = self.call(move |w| {
            w.run(|live, persistent| {
                // Without an EK certificate in NV the evidence carries none; the verifier accepts
                // it only for an EK an administrator registered (docs/ATTESTATION.md §5).
                let (ak, ek) = persistent.ensure_ak(live)?;
                let output = ops::attest(live, &entry.blobs, &ak, ek, &nonce)?;
                evidence::tpm_evidence(&output, &ak.blobs.public, &entry.blobs.public)
            })
        })?;
        Ok(Evidence::Tpm(evidence))
    }

    fn activate_credential(
        &self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        if credential_blob.is_empty() || encrypted_secret.is_empty() {
            return Err(BackendError::InvalidInput(
                "empty credential blob or secret".into(),
            ));
        }
        let blob = IdObject::try_from(credential_blob.to_vec()).map_err(|_| {
            BackendError::InvalidInput(format!(
                "credential blob longer than {} bytes",
                IdObject::MAX_SIZE
            ))
        })?;
        let secret = EncryptedSecret::try_from(encrypted_secret.to_vec()).map_err(|_| {
            BackendError::InvalidInput(format!(
                "encrypted secret longer than {} bytes",
                EncryptedSecret::MAX_SIZE
            ))
        })?;
        self.call(move |w| {
            w.run(|live, persistent| {
                let (ak, ek) = persistent.ensure_ak(live)?;
                ops::activate_credential(live, &ak, &ek, blob.clone(), secret.clone())
            })
        })
    }
}
