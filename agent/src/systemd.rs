//! systemd integration: socket activation (`LISTEN_FDS`/`LISTEN_PID`) and readiness
//! notification (`sd_notify`).
//!
//! This is the one module of the agent allowed to use `unsafe`. Socket activation hands the
//! listening socket over as a bare file descriptor number (3); turning a number into an owned
//! socket is `FromRawFd::from_raw_fd`, which is `unsafe` because the compiler cannot know that
//! nothing else owns the descriptor. Here that is known: systemd passed it to this process
//! (`sd_notify::listen_fds` checks `LISTEN_PID` against our pid and clears the variables, so the
//! descriptor is adopted once), and nothing in the agent opens descriptors before this runs.
//! The `unsafe` block is a single call; everything around it (the count check, the socket-family
//! check) is safe code.
//!
//! Call [`take_activated_listener`] before starting the async runtime: it clears environment
//! variables, which is only sound while the process has a single thread.

use std::os::fd::{FromRawFd as _, OwnedFd};
use std::os::unix::net::UnixListener;

use crate::AgentError;

fn socket_error(what: &str, source: std::io::Error) -> AgentError {
    AgentError::Socket {
        what: what.to_owned(),
        source,
    }
}

/// The listening Unix socket systemd passed in, if the agent was socket-activated. More than
/// one socket, or a socket that is not a Unix stream socket, is an error.
pub fn take_activated_listener() -> Result<Option<UnixListener>, AgentError> {
    let fds: Vec<_> = sd_notify::listen_fds()
        .map_err(|e| socket_error("reading LISTEN_FDS", e))?
        .collect();
    let fd = match fds.as_slice() {
        [] => return Ok(None),
        [fd] => *fd,
        more => {
            return Err(socket_error(
                "socket activation",
                std::io::Error::other(format!(
                    "expected one socket from systemd, got {}",
                    more.len()
                )),
            ));
        }
    };
    // SAFETY: `fd` was passed to this process by systemd for it alone (LISTEN_PID matched, and
    // listen_fds() has cleared LISTEN_FDS so it cannot be adopted twice); nothing else in the
    // process refers to it, so ownership can be taken exactly once, here.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let listener = UnixListener::from(owned);
    // getsockname fails for anything that is not an AF_UNIX socket (a TCP socket configured by
    // mistake), so the agent refuses to serve on it instead of exposing the API on the network.
    listener
        .local_addr()
        .map_err(|e| socket_error("checking the activated socket", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| socket_error("making the activated socket non-blocking", e))?;
    Ok(Some(listener))
}

/// Tells systemd (if it is watching: `NOTIFY_SOCKET` set) that the agent is ready.
pub fn notify_ready() {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving"),
    ]);
}

/// Tells systemd that the agent is stopping.
pub fn notify_stopping() {
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("draining"),
    ]);
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}
