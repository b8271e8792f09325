//! PKCS#11 backend: keys on a smart card, a YubiKey (PIV), a network HSM, SoftHSM2 or
//! tpm2-pkcs11, through the vendor's module.
//!
//! The backend can exist without its token: [`Pkcs11Backend::open_or_defer`] never fails, and
//! while the module is missing, refused or the token absent, every call tries to open it again
//! and otherwise answers [`BackendError::Unavailable`], so the agent keeps serving its other
//! backends. A token that disappears mid-operation (unplugged) is forgotten and looked up again
//! on the next call.
//!
//! Keys carry level `hardware-unattested`: the token's claims about a key (generated on the
//! token, never extractable) are reported, but nothing proves them.

mod config;
mod error;
mod keys;
mod loader;
mod module_check;
mod token;

use std::sync::{Arc, Mutex, PoisonError};

use hwsign_proto::api::KeyLevel;
use hwsign_proto::attestation::{Evidence, TokenClaims};

pub use config::{DEFAULT_KEY_LABEL_PREFIX, Pkcs11Config};
pub use error::Pkcs11Error;
pub use keys::P256_EC_PARAMS;
pub use module_check::check_module;
pub use token::TokenIdentity;

use self::error::Disposition;
use self::token::{PinGuard, Token};
use super::{BackendError, BackendHealth, BackendKey, KeyBackend, check_label};

/// Whether the token is in hand.
#[derive(Debug)]
enum State {
    Ready(Arc<Token>),
    /// Not open; the next call tries again.
    Unavailable,
}

/// The PKCS#11 key backend.
#[derive(Debug)]
pub struct Pkcs11Backend {
    config: Pkcs11Config,
    state: Mutex<State>,
    pins: Arc<PinGuard>,
}

impl Pkcs11Backend {
    /// Loads the module, finds the token; fails if either is not possible now.
    pub fn open(config: &Pkcs11Config) -> Result<Self, BackendError> {
        let pins = Arc::new(PinGuard::new()?);
        let token = open_token(config, Arc::clone(&pins))?;
        Ok(Self {
            config: config.clone(),
            state: Mutex::new(State::Ready(Arc::new(token))),
            pins,
        })
    }

    /// Like [`Self::open`], but a failure leaves the backend in the unavailable state (reported by
    /// `health()`, retried on the next call) instead of failing the agent.
    pub fn open_or_defer(config: Pkcs11Config) -> Result<Self, BackendError> {
        let pins = Arc::new(PinGuard::new()?);
        let state = match open_token(&config, Arc::clone(&pins)) {
            Ok(token) => State::Ready(Arc::new(token)),
            Err(e) => {
                tracing::warn!(error = %crate::ErrorChain(&e), "pkcs11 backend unavailable; will retry on use");
                State::Unavailable
            }
        };
        Ok(Self {
            config,
            state: Mutex::new(state),
            pins,
        })
    }

    /// The token's identity, if it is available now.
    pub fn token_identity(&self) -> Result<TokenIdentity, BackendError> {
        Ok(self.token()?.identity().clone())
    }

    /// The token, opening it if it is not open.
    fn token(&self) -> Result<Arc<Token>, BackendError> {
        // Held while opening so concurrent callers do not each load and search; the state has
        // no invariant a panicking holder could break.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let State::Ready(token) = &*state {
            return Ok(Arc::clone(token));
        }
        match open_token(&self.config, Arc::clone(&self.pins)) {
            Ok(token) => {
                let token = Arc::new(token);
                tracing::info!(token = ?token.identity(), "pkcs11 token available");
                *state = State::Ready(Arc::clone(&token));
                Ok(token)
            }
            Err(e) => {
                *state = State::Unavailable;
                Err(e.into())
            }
        }
    }

    /// Runs `op` on the token; forgets the token if the error says it went away.
    fn run<T>(&self, op: impl FnOnce(&Token) -> Result<T, Pkcs11Error>) -> Result<T, BackendError> {
        let token = self.token()?;
        op(&token).map_err(|e| {
            if e.disposition() == Disposition::TokenGone {
                self.forget(&token, &e);
            }
            e.into()
        })
    }

    fn forget(&self, token: &Arc<Token>, error: &Pkcs11Error) {
        token.forget_login();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(&*state, State::Ready(current) if Arc::ptr_eq(current, token)) {
            tracing::warn!(error = %crate::ErrorChain(error), "pkcs11 token lost; will look it up again");
            *state = State::Unavailable;
        }
    }

    /// A backend key from a token key.
    fn backend_key(&self, key: keys::TokenKey, created_unix: i64) -> BackendKey {
        let label = key
            .token_label
            .strip_prefix(self.config.label_prefix())
            .unwrap_or(&key.token_label)
            .to_owned();
        BackendKey {
            id: key.public_key.key_id(),
            label,
            level: KeyLevel::HardwareUnattested,
            public_key: key.public_key,
            created_unix,
        }
    }
}

fn open_token(config: &Pkcs11Config, pins: Arc<PinGuard>) -> Result<Token, Pkcs11Error> {
    config.validate()?;
    let ctx = loader::load_module(&config.module_path)?;
    Token::find(ctx, config, pins)
}

impl KeyBackend for Pkcs11Backend {
    fn name(&self) -> &'static str {
        "pkcs11"
    }

    fn health(&self) -> BackendHealth {
        let unavailable = |detail: String| BackendHealth {
            available: false,
            detail: Some(detail),
        };
        let token = match self.token() {
            Ok(token) => token,
            Err(e) => return unavailable(crate::error_chain(&e)),
        };
        match token.check_present() {
            Ok(()) if self.pins.has_rejected() => unavailable(
                "the token rejected the user PIN; fix the PIN file (the same PIN is not retried)"
                    .into(),
            ),
            // A token the agent cannot log in to cannot sign: not "available".
            Ok(()) => match self.config.check_pin_source() {
                Ok(()) => BackendHealth {
                    available: true,
                    detail: None,
                },
                Err(e) => unavailable(crate::error_chain(&e)),
            },
            Err(e) => {
                if e.disposition() == Disposition::TokenGone {
                    self.forget(&token, &e);
                }
                unavailable(crate::error_chain(&e))
            }
        }
    }

    fn list_keys(&self) -> Result<Vec<BackendKey>, BackendError> {
        let keys = self.run(|token| token.with_session(&self.config, keys::list))?;
        // PKCS#11 records no creation time.
        Ok(keys.into_iter().map(|k| self.backend_key(k, 0)).collect())
    }

    fn create_key(&self, label: &str) -> Result<BackendKey, BackendError> {
        check_label(label)?;
        let token_label = format!("{}{label}", self.config.label_prefix());
        let key = self.run(|token| {
            token.with_session(&self.config, |session| {
                keys::generate(session, &token_label)
            })
        })?;
        let now = crate::unix_time::now();
        let key = self.backend_key(key, now);
        tracing::info!(key_id = %key.id, label = %key.label, "pkcs11 key created");
        Ok(key)
    }

    fn sign_digest(&self, key_id: &str, digest: &[u8; 32]) -> Result<Vec<u8>, BackendError> {
        self.run(|token| {
            token.with_session(&self.config, |session| {
                let handle = match token.cached_handle(key_id) {
                    Some(handle) if keys::handle_is_key(session, handle, key_id) => handle,
                    _ => {
                        let key = keys::find_key(session, key_id)?;
                        if keys::handle_is_key(session, key.private, key_id) {
                            token.remember_handle(key_id, key.private);
                        }
                        key.private
                    }
                };
                keys::sign(session, handle, digest)
            })
        })
    }

    fn attest(&self, key_id: &str, nonce: &[u8]) -> Result<Evidence, BackendError> {
        // Token claims are not signed by anything, so there is nothing to bind the nonce to.
        let _ = nonce;
        self.run(|token| {
            let claims = token.with_session(&self.config, |session| {
                let key = keys::find_key(session, key_id)?;
                keys::claims(session, key.private)
            })?;
            let identity = token.identity();
            Ok(Evidence::Pkcs11Claims(TokenClaims {
                claims_not_proof: true,
                local: claims.local,
                never_extractable: claims.never_extractable,
                always_sensitive: claims.always_sensitive,
                manufacturer: identity.manufacturer.clone(),
                model: identity.model.clone(),
                serial: identity.serial.clone(),
                token_label: identity.label.clone(),
            }))
        })
    }
}
