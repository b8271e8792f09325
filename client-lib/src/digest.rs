//! The body hash, computed on the client's side: the agent signs the hash the client reports and
//! never sees the body, so large bodies are hashed here in chunks instead of being sent or copied.

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::ClientError;

/// Chunk size of streaming hashing: large enough that syscalls do not dominate, small enough to
/// keep memory flat for any body size.
const CHUNK: usize = 64 * 1024;

/// The SHA-256 of a request body.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BodyDigest([u8; 32]);

impl BodyDigest {
    /// The digest of an in-memory body.
    pub fn of_bytes(body: &[u8]) -> Self {
        Self(Sha256::digest(body).into())
    }

    /// The digest of the empty body.
    pub fn empty() -> Self {
        Self::of_bytes(&[])
    }

    /// From a digest computed elsewhere.
    pub fn from_bytes(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, as `X-Hws-Content-Sha256` carries it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for BodyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BodyDigest").field(&self.to_hex()).finish()
    }
}

impl fmt::Display for BodyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Hashes everything `reader` yields, in fixed-size chunks; memory use does not grow with the
/// body. Returns the digest and the number of bytes read (useful for `Content-Length`).
pub async fn body_sha256_from_reader<R>(mut reader: R) -> Result<(BodyDigest, u64), ClientError>
where
    R: AsyncRead + Unpin,
{
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    let mut total: u64 = 0;
    loop {
        let read = reader.read(&mut buffer).await.map_err(ClientError::Body)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        total = total.saturating_add(read as u64);
    }
    Ok((BodyDigest(hasher.finalize().into()), total))
}

/// Hashes the file at `path` in chunks. The file must not change between hashing and sending:
/// the verifier hashes what it receives and refuses a mismatch (`body_hash_mismatch`).
pub async fn body_sha256_of_file(path: impl AsRef<Path>) -> Result<(BodyDigest, u64), ClientError> {
    let file = tokio::fs::File::open(path.as_ref())
        .await
        .map_err(ClientError::Body)?;
    body_sha256_from_reader(file).await
}
