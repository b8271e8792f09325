//! Where the 64-byte CTAPHID reports travel: a Linux hidraw node (a real security key), or the
//! test seam (a `SOCK_SEQPACKET` socket, one report per packet, with a software CTAP2
//! authenticator on the other end; test-support's `fido2_authenticator`). The seam is the only
//! stand-in of the FIDO2 stack: everything above it — CTAPHID framing, CTAP2 messages, the
//! authenticator — is the real protocol.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, socket};

/// Size of a CTAPHID report (full-speed USB HID).
pub(crate) const REPORT_LEN: usize = 64;

/// HID usage page of FIDO authenticators (FIDO Alliance, `0xF1D0`).
const FIDO_USAGE_PAGE: [u8; 3] = [0x06, 0xD0, 0xF1];

/// Longest report descriptor read during discovery.
const MAX_DESCRIPTOR_LEN: u64 = 4096;

/// One report-oriented link to an authenticator.
pub(crate) trait HidTransport: Send {
    /// Writes one report.
    fn write_report(&mut self, report: &[u8; REPORT_LEN]) -> io::Result<()>;
    /// Reads one report, or `None` when nothing arrived within `timeout`.
    fn read_report(&mut self, timeout: Duration) -> io::Result<Option<[u8; REPORT_LEN]>>;
}

/// Waits until `fd` is readable or `timeout` passes.
fn readable(fd: &impl AsFd, timeout: Duration) -> io::Result<bool> {
    let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let ready = poll(&mut fds, PollTimeout::from(millis)).map_err(io::Error::from)?;
    Ok(ready > 0)
}

/// A security key's `/dev/hidrawN` node.
#[derive(Debug)]
pub(crate) struct Hidraw {
    file: File,
}

impl Hidraw {
    /// Opens `path` read-write.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_CLOEXEC)
            .open(path)?;
        Ok(Self { file })
    }

    /// The first hidraw node whose report descriptor declares the FIDO usage page.
    pub(crate) fn discover() -> io::Result<Option<PathBuf>> {
        let entries = match fs::read_dir("/sys/class/hidraw") {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut names: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for name in names {
            let descriptor = Path::new("/sys/class/hidraw")
                .join(&name)
                .join("device/report_descriptor");
            let Ok(file) = File::open(&descriptor) else {
                continue;
            };
            let mut bytes = Vec::new();
            if file
                .take(MAX_DESCRIPTOR_LEN)
                .read_to_end(&mut bytes)
                .is_err()
            {
                continue;
            }
            if bytes.windows(3).any(|w| w == FIDO_USAGE_PAGE) {
                return Ok(Some(Path::new("/dev").join(name)));
            }
        }
        Ok(None)
    }
}

impl HidTransport for Hidraw {
    fn write_report(&mut self, report: &[u8; REPORT_LEN]) -> io::Result<()> {
        // hidraw takes the report id first; FIDO devices use none (0).
        let mut out = [0u8; REPORT_LEN + 1];
        out[1..].copy_from_slice(report);
        self.file.write_all(&out)
    }

    fn read_report(&mut self, timeout: Duration) -> io::Result<Option<[u8; REPORT_LEN]>> {
        if !readable(&self.file, timeout)? {
            return Ok(None);
        }
        let mut report = [0u8; REPORT_LEN];
        let n = self.file.read(&mut report)?;
        if n != REPORT_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "short HID report",
            ));
        }
        Ok(Some(report))
    }
}

/// TEST SEAM (stand-in for the USB link): a `SOCK_SEQPACKET` connection carrying one CTAPHID
/// report per packet to a software authenticator.
#[derive(Debug)]
pub(crate) struct SeqpacketSeam {
    fd: OwnedFd,
}

impl SeqpacketSeam {
    /// Connects to the seam socket at `path`.
    pub(crate) fn connect(path: &Path) -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(io::Error::from)?;
        let address = UnixAddr::new(path).map_err(io::Error::from)?;
        connect(fd.as_raw_fd(), &address).map_err(io::Error::from)?;
        Ok(Self { fd })
    }
}

impl HidTransport for SeqpacketSeam {
    fn write_report(&mut self, report: &[u8; REPORT_LEN]) -> io::Result<()> {
        let n = nix::sys::socket::send(self.fd.as_raw_fd(), report, MsgFlags::MSG_NOSIGNAL)
            .map_err(io::Error::from)?;
        if n != REPORT_LEN {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short seam write"));
        }
        Ok(())
    }

    fn read_report(&mut self, timeout: Duration) -> io::Result<Option<[u8; REPORT_LEN]>> {
        if !readable(&self.fd, timeout)? {
            return Ok(None);
        }
        let mut report = [0u8; REPORT_LEN];
        let n = nix::sys::socket::recv(self.fd.as_raw_fd(), &mut report, MsgFlags::empty())
            .map_err(io::Error::from)?;
        match n {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the authenticator closed the seam",
            )),
            REPORT_LEN => Ok(Some(report)),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "short HID report",
            )),
        }
    }
}
