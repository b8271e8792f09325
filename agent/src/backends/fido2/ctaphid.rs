//! CTAPHID, the client side: channel allocation (`CTAPHID_INIT`), CBOR transactions with
//! keep-alives, and cancellation when nobody touches the key in time. Framing of messages into
//! 64-byte reports is passkey-transports' ([`Message`], [`ChannelHandler`]).

use std::io;
use std::time::{Duration, Instant};

use passkey_transports::hid::{ChannelHandler, Command, Message};

use super::error::Fido2Error;
use super::transport::{HidTransport, REPORT_LEN};

/// The broadcast channel, used only for `CTAPHID_INIT`.
const BROADCAST_CHANNEL: u32 = 0xffff_ffff;
/// `CAPABILITY_CBOR` in the `CTAPHID_INIT` answer.
const CAPABILITY_CBOR: u8 = 0x04;
/// How long an authenticator may take to answer a command that needs no touch.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait for the answer to `CTAPHID_CANCEL`.
const CANCEL_GRACE: Duration = Duration::from_secs(1);
/// Longest wait for one report before checking the deadline again.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// CTAP2 status codes the agent tells apart (CTAP 2.1 §8.2.1).
pub(crate) mod status {
    /// Success.
    pub(crate) const OK: u8 = 0x00;
    /// `CTAP2_ERR_CREDENTIAL_EXCLUDED`.
    pub(crate) const CREDENTIAL_EXCLUDED: u8 = 0x19;
    /// `CTAP2_ERR_OPERATION_DENIED`.
    pub(crate) const OPERATION_DENIED: u8 = 0x27;
    /// `CTAP2_ERR_KEEPALIVE_CANCEL`.
    pub(crate) const KEEPALIVE_CANCEL: u8 = 0x2D;
    /// `CTAP2_ERR_NO_CREDENTIALS`.
    pub(crate) const NO_CREDENTIALS: u8 = 0x2E;
    /// `CTAP2_ERR_USER_ACTION_TIMEOUT`.
    pub(crate) const USER_ACTION_TIMEOUT: u8 = 0x2F;
    /// `CTAP2_ERR_PIN_INVALID`.
    pub(crate) const PIN_INVALID: u8 = 0x31;
    /// `CTAP2_ERR_PIN_BLOCKED`.
    pub(crate) const PIN_BLOCKED: u8 = 0x32;
    /// `CTAP2_ERR_PIN_AUTH_INVALID`.
    pub(crate) const PIN_AUTH_INVALID: u8 = 0x33;
    /// `CTAP2_ERR_PIN_AUTH_BLOCKED`.
    pub(crate) const PIN_AUTH_BLOCKED: u8 = 0x34;
    /// `CTAP2_ERR_PIN_NOT_SET`.
    pub(crate) const PIN_NOT_SET: u8 = 0x35;
}

/// Adapts a transport to the `io::Write` that [`Message::send`] writes reports to.
struct ReportWriter<'a>(&'a mut dyn HidTransport);

impl io::Write for ReportWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let report: &[u8; REPORT_LEN] = buf
            .try_into()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "not one HID report"))?;
        self.0.write_report(report)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An allocated CTAPHID channel on one authenticator.
pub(crate) struct CtapHid {
    transport: Box<dyn HidTransport>,
    channel: u32,
}

impl std::fmt::Debug for CtapHid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CtapHid")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl CtapHid {
    /// Allocates a channel (`CTAPHID_INIT`) and checks that the authenticator speaks CTAP2.
    pub(crate) fn init(mut transport: Box<dyn HidTransport>) -> Result<Self, Fido2Error> {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| Fido2Error::Transport(io::Error::other(e)))?;
        send(transport.as_mut(), BROADCAST_CHANNEL, Command::Init, &nonce)?;
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let Some(message) = recv(transport.as_mut(), BROADCAST_CHANNEL, deadline)? else {
                return Err(Fido2Error::Protocol("no answer to CTAPHID_INIT"));
            };
            if !matches!(message.command, Command::Init) || message.payload.get(..8) != Some(&nonce)
            {
                continue;
            }
            let payload = &message.payload;
            let (Some(cid), Some(&capabilities)) = (payload.get(8..12), payload.get(16)) else {
                return Err(Fido2Error::Protocol("short CTAPHID_INIT answer"));
            };
            if capabilities & CAPABILITY_CBOR == 0 {
                return Err(Fido2Error::Protocol(
                    "the authenticator does not speak CTAP2",
                ));
            }
            let mut id = [0u8; 4];
            id.copy_from_slice(cid);
            return Ok(Self {
                transport,
                channel: u32::from_le_bytes(id),
            });
        }
    }

    /// Runs one CTAP2 command (`CTAPHID_CBOR`) and returns the CBOR after a success status.
    /// When `touch_timeout` passes without an answer, sends `CTAPHID_CANCEL` and fails with
    /// [`Fido2Error::TouchTimeout`].
    pub(crate) fn cbor(
        &mut self,
        command: u8,
        body: &[u8],
        touch_timeout: Duration,
    ) -> Result<Vec<u8>, Fido2Error> {
        let mut payload = Vec::with_capacity(body.len() + 1);
        payload.push(command);
        payload.extend_from_slice(body);
        send(
            self.transport.as_mut(),
            self.channel,
            Command::Cbor,
            &payload,
        )?;
        let deadline = Instant::now() + touch_timeout;
        let mut cancelled = false;
        let mut deadline_now = deadline;
        loop {
            let message = match recv(self.transport.as_mut(), self.channel, deadline_now)? {
                Some(message) => message,
                None if cancelled => return Err(Fido2Error::TouchTimeout(touch_timeout.as_secs())),
                None => {
                    send(self.transport.as_mut(), self.channel, Command::Cancel, &[])?;
                    cancelled = true;
                    deadline_now = Instant::now() + CANCEL_GRACE;
                    continue;
                }
            };
            match message.command {
                Command::KeepAlive => continue,
                Command::Err => {
                    return Err(Fido2Error::Hid(
                        message.payload.first().copied().unwrap_or(0x7f),
                    ));
                }
                Command::Cbor => {
                    let Some((&code, rest)) = message.payload.split_first() else {
                        return Err(Fido2Error::Protocol("empty CTAPHID_CBOR answer"));
                    };
                    return match code {
                        status::OK => Ok(rest.to_vec()),
                        status::KEEPALIVE_CANCEL | status::USER_ACTION_TIMEOUT => {
                            Err(Fido2Error::TouchTimeout(touch_timeout.as_secs()))
                        }
                        status::OPERATION_DENIED => Err(Fido2Error::Denied),
                        status::CREDENTIAL_EXCLUDED => Err(Fido2Error::CredentialExcluded),
                        status::NO_CREDENTIALS => Err(Fido2Error::NoCredential),
                        status::PIN_INVALID | status::PIN_AUTH_INVALID => {
                            Err(Fido2Error::PinIncorrect { retries: None })
                        }
                        status::PIN_BLOCKED | status::PIN_AUTH_BLOCKED => {
                            Err(Fido2Error::PinBlocked)
                        }
                        status::PIN_NOT_SET => {
                            Err(Fido2Error::NoUserVerification("no PIN is set on the key"))
                        }
                        other => Err(Fido2Error::Ctap(other)),
                    };
                }
                _ => return Err(Fido2Error::Protocol("unexpected CTAPHID command")),
            }
        }
    }
}

fn send(
    transport: &mut dyn HidTransport,
    channel: u32,
    command: Command,
    payload: &[u8],
) -> Result<(), Fido2Error> {
    let message = Message::new(channel, command, payload)
        .map_err(|_| Fido2Error::Protocol("CTAPHID message too large"))?;
    message
        .send(&mut ReportWriter(transport))
        .map_err(Fido2Error::Transport)
}

/// The next whole message on `channel`, or `None` at `deadline`.
fn recv(
    transport: &mut dyn HidTransport,
    channel: u32,
    deadline: Instant,
) -> Result<Option<Message>, Fido2Error> {
    let mut handler = ChannelHandler::default();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let Some(report) = transport
            .read_report(left.min(POLL_SLICE))
            .map_err(Fido2Error::Transport)?
        else {
            continue;
        };
        if let Some(message) = handler.handle_packet(&report)
            && message.channel == channel
        {
            return Ok(Some(message));
        }
    }
}
