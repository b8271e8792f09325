//! Who is on the other end of a connection: the kernel's SO_PEERCRED answer, read once per
//! connection before anything the peer sent is looked at.

use std::io;

use tokio::net::UnixStream;

use crate::Config;

/// The credentials of a connected client, as the kernel recorded them at `connect()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer {
    /// Effective uid.
    pub(crate) uid: u32,
    /// Effective gid.
    pub(crate) gid: u32,
    /// Process id, when the kernel reports one.
    pub(crate) pid: Option<i32>,
}

impl Peer {
    /// Reads the peer credentials of `stream`.
    pub(crate) fn of(stream: &UnixStream) -> io::Result<Self> {
        let cred = stream.peer_cred()?;
        Ok(Self {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        })
    }

    /// Whether `config` lets this peer use the socket.
    pub(crate) fn is_allowed(&self, config: &Config) -> bool {
        config.allowed_uids.contains(&self.uid)
    }
}
