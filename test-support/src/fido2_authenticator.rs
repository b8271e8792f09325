//! A software FIDO2 security key behind the agent's test seam.
//!
//! The authenticator is real: 1Password's `passkey-authenticator` (a CTAP2 implementation) makes
//! credentials and assertions, with a signature counter. The only stand-in is the link: instead
//! of USB HID, 64-byte CTAPHID reports travel over a `SOCK_SEQPACKET` socket (one report per
//! packet) — the agent's `[backends.fido2] seam_socket`. CTAPHID framing on this side is
//! passkey-transports' too; the "user" who touches the key is a switch the test sets, and every
//! touch is counted.
//!
//! PIN (`authenticatorClientPIN`, PIN protocol one): passkey-authenticator has no clientPIN, so
//! this module adds one in front of it — a second stand-in, for the key's PIN check only: it
//! answers getRetries / getKeyAgreement / getPinToken as CTAP 2.0 §5.5.8 specifies (ECDH P-256,
//! AES-256-CBC, retries counted down to a block), checks `pinAuth` on makeCredential and
//! getAssertion and then lets passkey-authenticator sign with the UV flag.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use aws_lc_rs::agreement::{self, ECDH_P256, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::{digest, hmac};
use nix::sys::socket::{
    AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr, bind, listen, recv, send,
    socket,
};
use passkey_authenticator::{Authenticator, MemoryStore, UiHint, UserCheck, UserValidationMethod};
use passkey_crypto::AvailableBackend;
use passkey_transports::hid::{ChannelHandler, Command, Message};
use passkey_types::Passkey;
use passkey_types::ctap2::{Aaguid, Ctap2Error, StatusCode, get_assertion, make_credential};

/// The AAGUID this software key reports.
pub const SOFT_KEY_AAGUID: [u8; 16] = *b"hwsign-softkey01";
/// How long the "user" may leave the key untouched before the key itself gives up.
const KEY_SIDE_TIMEOUT: Duration = Duration::from_secs(120);
/// Keep-alive interval while waiting for a touch (CTAPHID: at most 100 ms).
const KEEPALIVE_EVERY: Duration = Duration::from_millis(80);
const BROADCAST: u32 = 0xffff_ffff;
/// PIN retries of a fresh PIN (CTAP: at most 8).
const MAX_PIN_RETRIES: u8 = 8;
const KEEPALIVE_UP_NEEDED: u8 = 2;

/// What the simulated user does and what the key saw.
#[derive(Debug, Default)]
struct Shared {
    /// Whether the user touches the key when it asks.
    touch: AtomicBool,
    /// Touches given.
    touches: AtomicU64,
    /// Requests for a touch (given or not).
    asked: AtomicU64,
    /// Set by `CTAPHID_CANCEL` for the current transaction.
    cancelled: AtomicBool,
    /// Where to send keep-alives for the current transaction: (socket, channel).
    current: Mutex<Option<(Arc<OwnedFd>, u32)>>,
    /// The PIN, when one is set.
    pin: Mutex<Option<Vec<u8>>>,
    /// PIN retries left (8 when set; 0 = blocked).
    retries: AtomicU8,
    /// Whether the current getAssertion carried a valid pinAuth.
    pin_verified: AtomicBool,
}

impl Shared {
    fn keepalive(&self) {
        let current = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some((fd, channel)) = current {
            let _ = write_message(&fd, channel, Command::KeepAlive, &[KEEPALIVE_UP_NEEDED]);
        }
    }
}

/// The simulated user, as passkey-authenticator's user-validation hook.
struct TouchingUser(Arc<Shared>);

#[async_trait::async_trait]
impl UserValidationMethod for TouchingUser {
    type PasskeyItem = Passkey;

    async fn check_user<'a>(
        &self,
        hint: UiHint<'a, Passkey>,
        presence: bool,
        _verification: bool,
    ) -> Result<UserCheck, Ctap2Error> {
        // passkey-authenticator asks for presence when the exclude list names a credential it
        // holds and leaves the refusal to this hook: after the touch, the key answers
        // CTAP2_ERR_CREDENTIAL_EXCLUDED (CTAP 2.1 §6.1.2 step 1), as a real key does.
        let excluded = matches!(hint, UiHint::InformExcludedCredentialFound(_));
        if !presence {
            return Ok(UserCheck {
                presence: false,
                verification: false,
            });
        }
        self.0.asked.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        loop {
            if self.0.touch.load(Ordering::SeqCst) {
                self.0.touches.fetch_add(1, Ordering::SeqCst);
                if excluded {
                    return Err(Ctap2Error::CredentialExcluded);
                }
                return Ok(UserCheck {
                    presence: true,
                    verification: self.0.pin_verified.load(Ordering::SeqCst),
                });
            }
            if self.0.cancelled.load(Ordering::SeqCst) {
                return Err(Ctap2Error::KeepAliveCancel);
            }
            if started.elapsed() > KEY_SIDE_TIMEOUT {
                return Err(Ctap2Error::UserActionTimeout);
            }
            self.0.keepalive();
            tokio::time::sleep(KEEPALIVE_EVERY).await;
        }
    }

    fn is_presence_enabled(&self) -> bool {
        true
    }

    fn is_verification_enabled(&self) -> Option<bool> {
        self.0
            .pin
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
            .then_some(true)
    }
}

type SoftAuthenticator = Authenticator<MemoryStore, TouchingUser, AvailableBackend>;

/// A software security key listening on a seam socket; stops listening on drop.
pub struct SoftKey {
    path: PathBuf,
    shared: Arc<Shared>,
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for SoftKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SoftKey {
    /// Starts the key, listening at `dir/fido2-seam.sock`. The user touches by default.
    pub fn start(dir: &Path) -> Result<Self> {
        let path = dir.join("fido2-seam.sock");
        let listener = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .context("SOCK_SEQPACKET socket")?;
        bind(listener.as_raw_fd(), &UnixAddr::new(&path)?).context("binding the seam")?;
        listen(&listener, Backlog::new(8)?).context("listening on the seam")?;
        let shared = Arc::new(Shared::default());
        shared.touch.store(true, Ordering::SeqCst);
        let mut authenticator: SoftAuthenticator = Authenticator::new(
            Aaguid::from(SOFT_KEY_AAGUID),
            MemoryStore::new(),
            TouchingUser(Arc::clone(&shared)),
            AvailableBackend,
        );
        authenticator.set_make_credentials_with_signature_counter(true);
        let authenticator = Arc::new(tokio::sync::Mutex::new(authenticator));
        let closed = Arc::new(AtomicBool::new(false));
        {
            let shared = Arc::clone(&shared);
            let closed = Arc::clone(&closed);
            thread::Builder::new()
                .name("softkey-accept".into())
                .spawn(move || accept_loop(listener, &shared, &authenticator, &closed))?;
        }
        Ok(Self {
            path,
            shared,
            closed,
        })
    }

    /// The seam socket, for the agent's `[backends.fido2] seam_socket`.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Whether the simulated user touches the key when asked.
    pub fn set_touch(&self, touch: bool) {
        self.shared.touch.store(touch, Ordering::SeqCst);
    }

    /// Touches given so far.
    pub fn touches(&self) -> u64 {
        self.shared.touches.load(Ordering::SeqCst)
    }

    /// Times the key asked for a touch (given or not).
    pub fn touch_requests(&self) -> u64 {
        self.shared.asked.load(Ordering::SeqCst)
    }

    /// Sets the key's PIN (8 retries).
    pub fn set_pin(&self, pin: &str) {
        *self
            .shared
            .pin
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(pin.as_bytes().to_vec());
        self.shared.retries.store(MAX_PIN_RETRIES, Ordering::SeqCst);
    }

    /// PIN retries left.
    pub fn pin_retries(&self) -> u8 {
        self.shared.retries.load(Ordering::SeqCst)
    }

    /// Blocks the PIN, as too many wrong PINs do.
    pub fn block_pin(&self) {
        self.shared.retries.store(0, Ordering::SeqCst);
    }

    /// Unplugs the key: the seam stops accepting, as if the key were pulled out.
    pub fn unplug(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for SoftKey {
    fn drop(&mut self) {
        self.unplug();
    }
}

fn accept_loop(
    listener: OwnedFd,
    shared: &Arc<Shared>,
    authenticator: &Arc<tokio::sync::Mutex<SoftAuthenticator>>,
    closed: &AtomicBool,
) {
    let pin_state = Arc::new(PinState {
        shared: Arc::clone(shared),
        agreement: Mutex::new(None),
        token: random_token(),
    });
    let pin_state = &pin_state;
    // std's listener only calls accept(2), which serves a SOCK_SEQPACKET socket as well; the
    // accepted descriptor keeps the packet semantics.
    let listener = UnixListener::from(listener);
    while let Ok((stream, _)) = listener.accept() {
        if closed.load(Ordering::SeqCst) {
            return;
        }
        let fd = Arc::new(OwnedFd::from(stream));
        let shared = Arc::clone(shared);
        let authenticator = Arc::clone(authenticator);
        let pin_state = Arc::clone(pin_state);
        let _ = thread::Builder::new()
            .name("softkey-conn".into())
            .spawn(move || serve_connection(&fd, &shared, &authenticator, &pin_state));
    }
}

fn write_message(fd: &OwnedFd, channel: u32, command: Command, payload: &[u8]) -> Result<()> {
    struct Packets<'a>(&'a OwnedFd);
    impl std::io::Write for Packets<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            send(self.0.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL).map_err(std::io::Error::from)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let message = Message::new(channel, command, payload)
        .map_err(|e| anyhow::anyhow!("CTAPHID message: {e:?}"))?;
    message.send(&mut Packets(fd))?;
    Ok(())
}

/// One agent connection: reads reports, answers CTAPHID, runs CTAP2 commands on a thread of
/// their own so that `CTAPHID_CANCEL` is seen while a command waits for a touch.
fn serve_connection(
    fd: &Arc<OwnedFd>,
    shared: &Arc<Shared>,
    authenticator: &Arc<tokio::sync::Mutex<SoftAuthenticator>>,
    pin_state: &Arc<PinState>,
) {
    let mut handler = ChannelHandler::default();
    let mut next_channel: u32 = 1;
    let mut running: Option<thread::JoinHandle<()>> = None;
    loop {
        let mut report = [0u8; 64];
        match recv(fd.as_raw_fd(), &mut report, MsgFlags::empty()) {
            Ok(64) => {}
            _ => break,
        }
        let Some(message) = handler.handle_packet(&report) else {
            continue;
        };
        match message.command {
            Command::Init if message.channel == BROADCAST => {
                let mut payload = message.payload.get(..8).unwrap_or(&[0; 8]).to_vec();
                payload.extend_from_slice(&next_channel.to_le_bytes());
                // CTAPHID version 2, device version 1.0.0, capabilities CBOR | NMSG.
                payload.extend_from_slice(&[2, 1, 0, 0, 0x04 | 0x08]);
                next_channel += 1;
                let _ = write_message(fd, BROADCAST, Command::Init, &payload);
            }
            Command::Ping => {
                let _ = write_message(fd, message.channel, Command::Ping, &message.payload);
            }
            Command::Cancel => shared.cancelled.store(true, Ordering::SeqCst),
            Command::Cbor => {
                if let Some(previous) = running.take() {
                    let _ = previous.join();
                }
                shared.cancelled.store(false, Ordering::SeqCst);
                *shared
                    .current
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) =
                    Some((Arc::clone(fd), message.channel));
                let fd = Arc::clone(fd);
                let authenticator = Arc::clone(authenticator);
                let pin_state = Arc::clone(pin_state);
                running = thread::Builder::new()
                    .name("softkey-ctap2".into())
                    .spawn(move || {
                        let answer = run_ctap2(&authenticator, &pin_state, &message.payload);
                        let _ = write_message(&fd, message.channel, Command::Cbor, &answer);
                    })
                    .ok();
            }
            _ => {
                // CTAPHID_ERROR, ERR_INVALID_CMD.
                let _ = write_message(fd, message.channel, Command::Err, &[0x01]);
            }
        }
    }
    if let Some(previous) = running.take() {
        shared.cancelled.store(true, Ordering::SeqCst);
        let _ = previous.join();
    }
}

/// Runs one CTAP2 command; the answer is the status byte and the CBOR.
fn run_ctap2(
    authenticator: &tokio::sync::Mutex<SoftAuthenticator>,
    pin_state: &PinState,
    payload: &[u8],
) -> Vec<u8> {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return vec![u8::from(StatusCode::from(Ctap2Error::Other))];
    };
    let Some((&command, body)) = payload.split_first() else {
        return vec![0x01];
    };
    runtime.block_on(async {
        let mut authenticator = authenticator.lock().await;
        let result = match command {
            0x01 => match ciborium::de::from_reader::<make_credential::Request, _>(body) {
                Ok(mut request) => match pin_state.verify_pin_auth(
                    request.pin_auth.take(),
                    request.pin_protocol.take(),
                    &request.client_data_hash,
                ) {
                    Ok(verified) => {
                        request.options.uv |= verified;
                        let answer = authenticator
                            .make_credential(request)
                            .await
                            .map(|r| encode(&r));
                        pin_state.shared.pin_verified.store(false, Ordering::SeqCst);
                        answer
                    }
                    Err(status) => Err(status),
                },
                Err(_) => Err(Ctap2Error::InvalidCbor.into()),
            },
            0x02 => match ciborium::de::from_reader::<get_assertion::Request, _>(body) {
                Ok(request) => match pin_state.check_pin_auth(request) {
                    Ok(request) => {
                        let answer = authenticator
                            .get_assertion(request)
                            .await
                            .map(|r| encode(&r));
                        pin_state.shared.pin_verified.store(false, Ordering::SeqCst);
                        answer
                    }
                    Err(status) => Err(status),
                },
                Err(_) => Err(Ctap2Error::InvalidCbor.into()),
            },
            0x06 => pin_state.client_pin(body).map(Some),
            0x04 => Ok(encode(&*authenticator.get_info().await)),
            // CTAP1_ERR_INVALID_COMMAND.
            _ => Err(StatusCode::from(0x01)),
        };
        match result {
            Ok(Some(cbor)) => {
                let mut answer = vec![0];
                answer.extend(cbor);
                answer
            }
            Ok(None) => vec![u8::from(StatusCode::from(Ctap2Error::Other))],
            Err(status) => vec![u8::from(status)],
        }
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).ok()?;
    Some(out)
}

/// The clientPIN stand-in's state: the key-agreement key (new after each wrong PIN) and the
/// pinToken (new at each power-up, i.e. each `SoftKey`).
struct PinState {
    shared: Arc<Shared>,
    agreement: Mutex<Option<PrivateKey>>,
    token: [u8; 32],
}

fn random_token() -> [u8; 32] {
    let mut token = [0u8; 32];
    let _ = aws_lc_rs::rand::fill(&mut token);
    token
}

fn status(code: u8) -> StatusCode {
    StatusCode::from(code)
}

fn cbor_int(n: i64) -> ciborium::Value {
    ciborium::Value::Integer(n.into())
}

fn map_field(entries: &[(ciborium::Value, ciborium::Value)], key: i64) -> Option<&ciborium::Value> {
    entries.iter().find_map(|(k, v)| match k {
        ciborium::Value::Integer(i) if i128::from(*i) == i128::from(key) => Some(v),
        _ => None,
    })
}

/// AES-256-CBC with a zero IV (PIN protocol one), in place.
fn pin_cipher(secret: &[u8; 32], data: &mut [u8], encrypt: bool) -> Option<()> {
    use aws_lc_rs::cipher::{
        AES_256, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext,
        UnboundCipherKey,
    };
    use aws_lc_rs::iv::FixedLength;
    let key = UnboundCipherKey::new(&AES_256, secret).ok()?;
    if encrypt {
        EncryptingKey::cbc(key)
            .ok()?
            .less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from([0u8; 16])))
            .ok()?;
    } else {
        DecryptingKey::cbc(key)
            .ok()?
            .decrypt(data, DecryptionContext::Iv128(FixedLength::from([0u8; 16])))
            .ok()?;
    }
    Some(())
}

impl PinState {
    fn pin(&self) -> Option<Vec<u8>> {
        self.shared
            .pin
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A getAssertion with `pinAuth`: checked against the pinToken, then handed to
    /// passkey-authenticator as a `uv` request the simulated user verifies.
    fn check_pin_auth(
        &self,
        mut request: get_assertion::Request,
    ) -> Result<get_assertion::Request, StatusCode> {
        let verified = self.verify_pin_auth(
            request.pin_auth.take(),
            request.pin_protocol.take(),
            &request.client_data_hash,
        )?;
        request.options.uv |= verified;
        Ok(request)
    }

    /// Checks a makeCredential's or getAssertion's `pinAuth` (LEFT(HMAC-SHA-256(pinToken,
    /// clientDataHash), 16), PIN protocol one): `Ok(false)` without one, `Ok(true)` (and the
    /// simulated user verifies) when it is right.
    fn verify_pin_auth(
        &self,
        pin_auth: Option<passkey_types::Bytes>,
        pin_protocol: Option<u8>,
        client_data_hash: &[u8],
    ) -> Result<bool, StatusCode> {
        let Some(pin_auth) = pin_auth else {
            return Ok(false);
        };
        if pin_protocol != Some(1) || self.pin().is_none() {
            return Err(status(0x33)); // CTAP2_ERR_PIN_AUTH_INVALID
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.token);
        let tag = hmac::sign(&key, client_data_hash);
        if tag.as_ref().get(..16) != Some(&pin_auth[..]) {
            return Err(status(0x33));
        }
        self.shared.pin_verified.store(true, Ordering::SeqCst);
        Ok(true)
    }

    /// `authenticatorClientPIN`, protocol one: getRetries, getKeyAgreement, getPinToken.
    fn client_pin(&self, body: &[u8]) -> Result<Vec<u8>, StatusCode> {
        let Ok(ciborium::Value::Map(fields)) = ciborium::de::from_reader(body) else {
            return Err(Ctap2Error::InvalidCbor.into());
        };
        if !matches!(map_field(&fields, 1), Some(v) if *v == cbor_int(1)) {
            return Err(status(0x02)); // CTAP1_ERR_INVALID_PARAMETER
        }
        let Some(pin) = self.pin() else {
            return Err(status(0x35)); // CTAP2_ERR_PIN_NOT_SET
        };
        let retries = self.shared.retries.load(Ordering::SeqCst);
        let answer = match map_field(&fields, 2) {
            Some(v) if *v == cbor_int(1) => vec![(cbor_int(3), cbor_int(retries.into()))],
            Some(v) if *v == cbor_int(2) => {
                let mut slot = self
                    .agreement
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let key = match slot.take() {
                    Some(key) => key,
                    None => PrivateKey::generate(&ECDH_P256).map_err(|_| status(0x7F))?,
                };
                let public = key.compute_public_key().map_err(|_| status(0x7F))?;
                let point = public.as_ref().to_vec();
                *slot = Some(key);
                let cose = ciborium::Value::Map(vec![
                    (cbor_int(1), cbor_int(2)),
                    (cbor_int(3), cbor_int(-25)),
                    (cbor_int(-1), cbor_int(1)),
                    (
                        cbor_int(-2),
                        ciborium::Value::Bytes(point.get(1..33).unwrap_or_default().to_vec()),
                    ),
                    (
                        cbor_int(-3),
                        ciborium::Value::Bytes(point.get(33..65).unwrap_or_default().to_vec()),
                    ),
                ]);
                vec![(cbor_int(1), cose)]
            }
            Some(v) if *v == cbor_int(5) => {
                if retries == 0 {
                    return Err(status(0x32)); // CTAP2_ERR_PIN_BLOCKED
                }
                let secret = self.shared_secret(&fields)?;
                let Some(ciborium::Value::Bytes(encrypted)) = map_field(&fields, 6) else {
                    return Err(status(0x14)); // CTAP2_ERR_MISSING_PARAMETER
                };
                let mut pin_hash = encrypted.clone();
                if pin_hash.len() != 16 || pin_cipher(&secret, &mut pin_hash, false).is_none() {
                    return Err(status(0x02));
                }
                let expected = digest::digest(&digest::SHA256, &pin);
                if expected.as_ref().get(..16) != Some(&pin_hash[..]) {
                    let left = retries - 1;
                    self.shared.retries.store(left, Ordering::SeqCst);
                    // A new agreement key after each wrong PIN (CTAP 2.0 §5.5.8.2).
                    *self
                        .agreement
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = None;
                    return Err(status(if left == 0 { 0x32 } else { 0x31 }));
                }
                self.shared.retries.store(MAX_PIN_RETRIES, Ordering::SeqCst);
                let mut token = self.token.to_vec();
                pin_cipher(&secret, &mut token, true).ok_or(status(0x7F))?;
                vec![(cbor_int(2), ciborium::Value::Bytes(token))]
            }
            _ => return Err(status(0x02)),
        };
        encode(&ciborium::Value::Map(answer)).ok_or(status(0x7F))
    }

    /// SHA-256 of the ECDH x coordinate with the platform's key (parameter 3).
    fn shared_secret(
        &self,
        fields: &[(ciborium::Value, ciborium::Value)],
    ) -> Result<[u8; 32], StatusCode> {
        let Some(ciborium::Value::Map(cose)) = map_field(fields, 3) else {
            return Err(status(0x14));
        };
        let (Some(ciborium::Value::Bytes(x)), Some(ciborium::Value::Bytes(y))) =
            (map_field(cose, -2), map_field(cose, -3))
        else {
            return Err(status(0x02));
        };
        let mut peer = vec![0x04];
        peer.extend_from_slice(x);
        peer.extend_from_slice(y);
        let slot = self
            .agreement
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = slot.as_ref().ok_or(status(0x02))?;
        agreement::agree(
            key,
            UnparsedPublicKey::new(&ECDH_P256, peer),
            status(0x02),
            |z| {
                let mut out = [0u8; 32];
                out.copy_from_slice(digest::digest(&digest::SHA256, z).as_ref());
                Ok(out)
            },
        )
    }
}
