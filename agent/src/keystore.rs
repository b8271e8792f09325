//! Routes key ids to the backend holding them, and runs backend calls where they belong: a
//! fast backend (software) is called on the async runtime, a slow one (TPM, token) on tokio's
//! blocking pool so that a 200 ms TPM signature never stalls other connections. Nothing else:
//! rules and audit belong to the use cases (the `signing` module, `api::keys`), delegated sessions
//! to [`crate::session`].

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::AgentError;
use crate::backends::{BackendError, BackendHealth, BackendKey, KeyBackend};
use crate::config::Config;

/// Why a call into a backend did not produce the backend's own answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The backend answered with an error.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The blocking task panicked or was cancelled.
    #[error("backend task failed: {0}")]
    Task(String),
}

/// The open backends and the key id → backend index.
#[derive(Debug)]
pub(crate) struct KeyStore {
    backends: Vec<Arc<dyn KeyBackend>>,
    index: RwLock<HashMap<String, usize>>,
}

impl KeyStore {
    /// Opens every backend the configuration enables. Opening may touch hardware, so it runs on
    /// the blocking pool.
    pub(crate) async fn open(config: Arc<Config>) -> Result<Self, AgentError> {
        let backends = tokio::task::spawn_blocking(move || open_backends(&config))
            .await
            .map_err(|e| AgentError::Task(e.to_string()))??;
        if backends.is_empty() {
            return Err(AgentError::NoBackend);
        }
        Ok(Self::with_backends(backends))
    }

    /// A key store over backends opened by the caller.
    pub(crate) fn with_backends(backends: Vec<Arc<dyn KeyBackend>>) -> Self {
        Self {
            backends,
            index: RwLock::new(HashMap::new()),
        }
    }

    /// The backends, in configuration order.
    pub(crate) fn backends(&self) -> &[Arc<dyn KeyBackend>] {
        &self.backends
    }

    /// The backend called `name`.
    pub(crate) fn backend(&self, name: &str) -> Option<&Arc<dyn KeyBackend>> {
        self.backends.iter().find(|b| b.name() == name)
    }

    /// Runs `f` against `backend`, off the runtime unless the backend is fast.
    pub(crate) async fn call<T, F>(backend: &Arc<dyn KeyBackend>, f: F) -> Result<T, CallError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn KeyBackend) -> Result<T, BackendError> + Send + 'static,
    {
        if backend.is_fast() {
            return Ok(f(backend.as_ref())?);
        }
        let backend = Arc::clone(backend);
        tokio::task::spawn_blocking(move || f(backend.as_ref()))
            .await
            .map_err(|e| CallError::Task(e.to_string()))?
            .map_err(CallError::from)
    }

    /// `backend.sign_digest(key_id, digest)`: inline for a fast backend, awaited from the
    /// backend's own thread when it takes queued signatures (TPM), else on the blocking pool.
    pub(crate) async fn sign_digest(
        backend: &Arc<dyn KeyBackend>,
        key_id: &str,
        digest: &[u8; 32],
    ) -> Result<Vec<u8>, CallError> {
        if backend.is_fast() {
            return Ok(backend.sign_digest(key_id, digest)?);
        }
        if let Some(queued) = backend.sign_digest_queued(key_id, digest) {
            let queued = queued?;
            return match tokio::time::timeout(queued.within, queued.answer).await {
                Ok(Ok(result)) => Ok(result?),
                Ok(Err(_)) => Err(CallError::Backend(BackendError::unavailable(format!(
                    "the {} backend's worker stopped",
                    backend.name()
                )))),
                Err(_) => Err(CallError::Backend(BackendError::unavailable(format!(
                    "the {} backend did not answer within {} s",
                    backend.name(),
                    queued.within.as_secs()
                )))),
            };
        }
        let key_id = key_id.to_owned();
        let digest = *digest;
        Self::call(backend, move |b| b.sign_digest(&key_id, &digest)).await
    }

    /// Every key of every backend. A backend that fails to list is logged and left out, so one
    /// unplugged token does not hide the other keys.
    pub(crate) async fn list(&self) -> Vec<(&'static str, BackendKey)> {
        self.list_noting_failure().await.0
    }

    /// [`Self::list`], and the first backend's failure to list, if any.
    async fn list_noting_failure(&self) -> (Vec<(&'static str, BackendKey)>, Option<CallError>) {
        let mut failure = None;
        let mut all = Vec::new();
        for (position, backend) in self.backends.iter().enumerate() {
            match Self::call(backend, |b| b.list_keys()).await {
                Ok(keys) => {
                    let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
                    for key in keys {
                        index.insert(key.id.clone(), position);
                        all.push((backend.name(), key));
                    }
                }
                Err(e) => {
                    tracing::warn!(backend = backend.name(), error = %crate::ErrorChain(&e), "listing keys failed");
                    failure.get_or_insert(e);
                }
            }
        }
        (all, failure)
    }

    /// Health of every backend, by name.
    pub(crate) async fn health(&self) -> Vec<(&'static str, BackendHealth)> {
        let mut all = Vec::new();
        for backend in &self.backends {
            let health = Self::call(backend, |b| Ok(b.health()))
                .await
                .unwrap_or_else(|e| BackendHealth {
                    available: false,
                    detail: Some(crate::error_chain(&e)),
                });
            all.push((backend.name(), health));
        }
        all
    }

    /// The backend holding `key_id`. Keys that appeared since the last listing (a token
    /// plugged in) are found by listing again.
    pub(crate) async fn backend_for(&self, key_id: &str) -> Result<Arc<dyn KeyBackend>, CallError> {
        if let Some(backend) = self.indexed(key_id) {
            return Ok(backend);
        }
        let (_, failure) = self.list_noting_failure().await;
        // A key not listed may be on a backend that cannot list now (wrong or locked PIN, token
        // unplugged): report that rather than "no such key", which would invite re-enrolment.
        self.indexed(key_id)
            .ok_or_else(|| failure.unwrap_or(CallError::Backend(BackendError::UnknownKey)))
    }

    /// The backend holding `key_id` and the key's description, listed afresh.
    pub(crate) async fn describe(
        &self,
        key_id: &str,
    ) -> Result<(Arc<dyn KeyBackend>, BackendKey), CallError> {
        let backend = self.backend_for(key_id).await?;
        let keys = Self::call(&backend, |b| b.list_keys()).await?;
        let key = keys
            .into_iter()
            .find(|k| k.id == key_id)
            .ok_or(CallError::Backend(BackendError::UnknownKey))?;
        Ok((backend, key))
    }

    fn indexed(&self, key_id: &str) -> Option<Arc<dyn KeyBackend>> {
        let position = *self
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key_id)?;
        self.backends.get(position).map(Arc::clone)
    }

    /// Remembers that `key` lives in `backend` (after creation).
    pub(crate) fn remember(&self, backend: &Arc<dyn KeyBackend>, key: &BackendKey) {
        if let Some(position) = self.backends.iter().position(|b| Arc::ptr_eq(b, backend)) {
            self.index
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key.id.clone(), position);
        }
    }
}

#[cfg_attr(
    not(any(feature = "tpm", feature = "pkcs11")),
    allow(clippy::unnecessary_wraps)
)]
fn open_backends(config: &Config) -> Result<Vec<Arc<dyn KeyBackend>>, AgentError> {
    #[cfg_attr(
        not(any(feature = "software", feature = "tpm", feature = "pkcs11")),
        allow(unused_mut)
    )]
    let mut backends: Vec<Arc<dyn KeyBackend>> = Vec::new();
    #[cfg(feature = "software")]
    if config.backends.software_enabled() {
        let software = crate::backends::software::SoftwareBackend::open(&config.state_dir)
            .map_err(|source| AgentError::Backend {
                backend: "software",
                source,
            })?;
        backends.push(Arc::new(software));
    }
    #[cfg(feature = "tpm")]
    if let Some(tpm) = &config.backends.tpm {
        let backend =
            crate::backends::tpm::TpmBackend::open(tpm, &config.state_dir).map_err(|source| {
                AgentError::Backend {
                    backend: "tpm",
                    source,
                }
            })?;
        backends.push(Arc::new(backend));
    }
    #[cfg(feature = "pkcs11")]
    if let Some(pkcs11) = &config.backends.pkcs11 {
        let backend = crate::backends::pkcs11::Pkcs11Backend::open_or_defer(pkcs11.clone())
            .map_err(|source| AgentError::Backend {
                backend: "pkcs11",
                source,
            })?;
        backends.push(Arc::new(backend));
    }
    #[cfg(feature = "fido2")]
    if let Some(fido2) = &config.backends.fido2 {
        let backend = crate::backends::fido2::Fido2Backend::open(fido2, &config.state_dir)
            .map_err(|source| AgentError::Backend {
                backend: "fido2",
                source,
            })?;
        backends.push(Arc::new(backend));
    }
    #[cfg(not(any(feature = "software", feature = "tpm", feature = "pkcs11")))]
    let _ = config;
    Ok(backends)
}
