//! A software FIDO2 security key behind the agent's test seam.
//!
//! The authenticator is real: 1Password's `passkey-authenticator` (a CTAP2 implementation) makes
//! credentials and assertions, with a signature counter. The only stand-in is the link: instead
//! of USB HID, 64-byte CTAPHID reports travel over a `SOCK_SEQPACKET` socket (one report per
//! packet) — the agent's `[backends.fido2] seam_socket`. CTAPHID framing on this side is
//! passkey-transports' too; the "user" who touches the key is a switch the test sets, and every
//! touch is counted.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
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
        _hint: UiHint<'a, Passkey>,
        presence: bool,
        _verification: bool,
    ) -> Result<UserCheck, Ctap2Error> {
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
                return Ok(UserCheck {
                    presence: true,
                    verification: false,
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
        None
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
        let _ = thread::Builder::new()
            .name("softkey-conn".into())
            .spawn(move || serve_connection(&fd, &shared, &authenticator));
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
                running = thread::Builder::new()
                    .name("softkey-ctap2".into())
                    .spawn(move || {
                        let answer = run_ctap2(&authenticator, &message.payload);
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
fn run_ctap2(authenticator: &tokio::sync::Mutex<SoftAuthenticator>, payload: &[u8]) -> Vec<u8> {
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
                Ok(request) => authenticator
                    .make_credential(request)
                    .await
                    .map(|r| encode(&r)),
                Err(_) => Err(Ctap2Error::InvalidCbor.into()),
            },
            0x02 => match ciborium::de::from_reader::<get_assertion::Request, _>(body) {
                Ok(request) => authenticator
                    .get_assertion(request)
                    .await
                    .map(|r| encode(&r)),
                Err(_) => Err(Ctap2Error::InvalidCbor.into()),
            },
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
