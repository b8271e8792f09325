//! One token found by label, and sessions on it: a fresh read-write session per operation, logged
//! in as the user when needed.
//!
//! PKCS#11 login state belongs to the application and the token, and ends when the
//! application's last session on the token closes. The token keeps one idle "anchor" session
//! open after a successful login so each operation's session starts logged in and the PIN is not
//! presented (or re-read) per signature.
//!
//! A rejected PIN is remembered (as a salted digest) and never presented again until the PIN
//! source changes: every presentation of a wrong PIN burns one of the token's few retries, and
//! an agent that logged in once per request would lock the token within seconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::ObjectHandle;
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::RawAuthPin;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::config::Pkcs11Config;
use super::error::Pkcs11Error;

/// Identity of the token, as `CK_TOKEN_INFO` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    /// Token label.
    pub label: String,
    /// Manufacturer id.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Serial number.
    pub serial: String,
}

/// Remembers the PIN the token last rejected. Owned by the backend, not the [`Token`], so it
/// survives the token being looked up again (after an unplug, or a restart of the lookup).
#[derive(Debug)]
pub(super) struct PinGuard {
    /// Random per-process salt, so the digest is useless outside this process.
    salt: [u8; 16],
    /// Salted SHA-256 of the rejected PIN.
    rejected: Mutex<Option<[u8; 32]>>,
}

impl PinGuard {
    /// A guard with a fresh salt.
    pub(super) fn new() -> Result<Self, Pkcs11Error> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt)
            .map_err(|e| Pkcs11Error::Malformed(format!("no randomness: {e}")))?;
        Ok(Self {
            salt,
            rejected: Mutex::new(None),
        })
    }

    /// Whether the token rejected the PIN last presented (and no good one has been seen since).
    pub(super) fn has_rejected(&self) -> bool {
        self.rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    fn digest(&self, pin: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        hasher.update(pin);
        hasher.finalize().into()
    }

    fn is_rejected(&self, digest: &[u8; 32]) -> bool {
        let rejected = self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
        rejected
            .as_ref()
            .is_some_and(|r| bool::from(r.ct_eq(digest)))
    }

    fn set(&self, value: Option<[u8; 32]>) {
        *self.rejected.lock().unwrap_or_else(PoisonError::into_inner) = value;
    }
}

/// Login bookkeeping, behind one lock so that two threads never present a PIN at once.
#[derive(Default)]
struct LoginState {
    /// Keeps the user logged in between operations.
    anchor: Option<Session>,
}

/// A token found by label in a loaded module.
pub(super) struct Token {
    ctx: Pkcs11,
    slot: Slot,
    identity: TokenIdentity,
    pins: Arc<PinGuard>,
    login: Mutex<LoginState>,
    /// Private key handles by key id, so a signature costs one check instead of a search.
    /// Handles of token objects stay valid across the application's sessions; each use checks
    /// the handle still names the key (see `keys::handle_is_key`).
    handles: Mutex<HashMap<String, ObjectHandle>>,
}

/// Most remembered key handles; past this the map starts over.
const MAX_CACHED_HANDLES: usize = 1024;

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("slot", &self.slot.id())
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Finds the token labelled `config.token_label` among the slots with a token present.
    pub(super) fn find(
        ctx: Pkcs11,
        config: &Pkcs11Config,
        pins: Arc<PinGuard>,
    ) -> Result<Self, Pkcs11Error> {
        let slots = ctx
            .get_slots_with_token()
            .map_err(|e| Pkcs11Error::call("C_GetSlotList", e))?;
        let mut present = Vec::new();
        for slot in slots {
            let info = match ctx.get_token_info(slot) {
                Ok(info) => info,
                // A token pulled out between the two calls is simply not there.
                Err(_) => continue,
            };
            let label = info.label().trim_end().to_owned();
            if label == config.token_label {
                return Ok(Self {
                    ctx,
                    slot,
                    identity: TokenIdentity {
                        label,
                        manufacturer: info.manufacturer_id().trim_end().to_owned(),
                        model: info.model().trim_end().to_owned(),
                        serial: info.serial_number().trim_end().to_owned(),
                    },
                    pins,
                    login: Mutex::new(LoginState::default()),
                    handles: Mutex::new(HashMap::new()),
                });
            }
            present.push(format!("{label:?}"));
        }
        Err(Pkcs11Error::TokenAbsent {
            label: config.token_label.clone(),
            module: config.module_path.display().to_string(),
            present: if present.is_empty() {
                "none".into()
            } else {
                present.join(", ")
            },
        })
    }

    /// The token's identity.
    pub(super) fn identity(&self) -> &TokenIdentity {
        &self.identity
    }

    /// The remembered private key handle of `key_id`.
    pub(super) fn cached_handle(&self, key_id: &str) -> Option<ObjectHandle> {
        let handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        handles.get(key_id).copied()
    }

    /// Remembers the private key handle of `key_id`.
    pub(super) fn remember_handle(&self, key_id: &str, handle: ObjectHandle) {
        let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        if handles.len() >= MAX_CACHED_HANDLES {
            handles.clear();
        }
        handles.insert(key_id.to_owned(), handle);
    }

    /// Whether the token is still in its slot, and its PIN not locked.
    pub(super) fn check_present(&self) -> Result<(), Pkcs11Error> {
        let info = self
            .ctx
            .get_token_info(self.slot)
            .map_err(|e| Pkcs11Error::call("C_GetTokenInfo", e))?;
        if info.user_pin_locked() {
            return Err(Pkcs11Error::PinLocked);
        }
        Ok(())
    }

    /// Opens a read-write session (read-only on a write-protected token) logged in as the user,
    /// runs `op`, closes the session.
    pub(super) fn with_session<T>(
        &self,
        config: &Pkcs11Config,
        op: impl FnOnce(&Session) -> Result<T, Pkcs11Error>,
    ) -> Result<T, Pkcs11Error> {
        let session = match self.ctx.open_rw_session(self.slot) {
            Ok(session) => session,
            // Write-protected tokens (some smart cards) still sign in a read-only session.
            Err(CkError::Pkcs11(RvError::TokenWriteProtected, _)) => self
                .ctx
                .open_ro_session(self.slot)
                .map_err(|e| Pkcs11Error::call("C_OpenSession", e))?,
            Err(e) => return Err(Pkcs11Error::call("C_OpenSession", e)),
        };
        self.ensure_logged_in(&session, config)?;
        let result = op(&session);
        // Close explicitly so a close error is at least visible in the logs; the result of the
        // operation stands either way.
        if let Err(e) = session.close() {
            tracing::debug!(error = %e, "C_CloseSession failed");
        }
        result
    }

    /// Drops the anchor session (the user is logged out once the last session closes).
    pub(super) fn forget_login(&self) {
        let mut state = self.login.lock().unwrap_or_else(PoisonError::into_inner);
        state.anchor = None;
    }

    fn ensure_logged_in(
        &self,
        session: &Session,
        config: &Pkcs11Config,
    ) -> Result<(), Pkcs11Error> {
        if is_user_session(session)? {
            return Ok(());
        }
        // One login attempt at a time: two threads with the same wrong PIN would burn two retries.
        let mut state = self.login.lock().unwrap_or_else(PoisonError::into_inner);
        if is_user_session(session)? {
            return Ok(());
        }
        let info = self
            .ctx
            .get_token_info(self.slot)
            .map_err(|e| Pkcs11Error::call("C_GetTokenInfo", e))?;
        if info.user_pin_locked() {
            return Err(Pkcs11Error::PinLocked);
        }
        let pin = config.read_pin()?;
        let digest = self.pins.digest(&pin);
        if self.pins.is_rejected(&digest) {
            // Same PIN as the one the token refused: do not spend another retry on it.
            return Err(Pkcs11Error::PinIncorrect);
        }
        let raw = RawAuthPin::new(Box::new(pin.to_vec()));
        drop(pin);
        match session.login_with_raw(UserType::User, &raw) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => {
                let error = Pkcs11Error::call("C_Login", e);
                if matches!(error, Pkcs11Error::PinIncorrect) {
                    self.pins.set(Some(digest));
                    tracing::warn!(
                        token = %self.identity.label,
                        "the token rejected the user PIN; it will not be presented again until \
                         the PIN file changes"
                    );
                }
                return Err(error);
            }
        }
        self.pins.set(None);
        if state.anchor.is_none() {
            state.anchor = Some(
                self.ctx
                    .open_ro_session(self.slot)
                    .map_err(|e| Pkcs11Error::call("C_OpenSession", e))?,
            );
        }
        Ok(())
    }
}

fn is_user_session(session: &Session) -> Result<bool, Pkcs11Error> {
    let info = session
        .get_session_info()
        .map_err(|e| Pkcs11Error::call("C_GetSessionInfo", e))?;
    Ok(matches!(
        info.session_state(),
        SessionState::RwUser | SessionState::RoUser
    ))
}
