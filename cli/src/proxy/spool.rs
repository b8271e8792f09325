//! A caller's request body, read in full before it is signed (the signature covers its hash):
//! hashed while it arrives, held in memory up to a threshold and in an unnamed temp file beyond
//! it, and refused past the bound.

use std::io;

use bytes::Bytes;
use http_body_util::BodyExt;
use hwsign_client::BodyDigest;
use hyper::body::Incoming;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};

use crate::http_send::{FileBody, SendBody, bytes_body};

/// Why a body could not be spooled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpoolError {
    /// Larger than the bound.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(u64),
    /// The caller's connection failed while sending it.
    #[error("reading the request body")]
    Read(#[source] hyper::Error),
    /// The temp file failed.
    #[error("spooling the request body to a temp file")]
    File(#[source] io::Error),
}

/// A body, read and hashed.
#[derive(Debug)]
pub(crate) struct Spooled {
    /// Its SHA-256.
    pub digest: BodyDigest,
    /// Its length.
    pub length: u64,
    data: Data,
}

#[derive(Debug)]
enum Data {
    Memory(Vec<Bytes>),
    File(tokio::fs::File),
}

impl Spooled {
    /// The body to send, the same bytes that were hashed.
    pub(crate) async fn into_body(self) -> Result<SendBody, SpoolError> {
        match self.data {
            Data::Memory(chunks) => {
                let mut all = Vec::with_capacity(usize::try_from(self.length).unwrap_or(0));
                for chunk in chunks {
                    all.extend_from_slice(&chunk);
                }
                Ok(bytes_body(all))
            }
            Data::File(mut file) => {
                file.rewind().await.map_err(SpoolError::File)?;
                Ok(BodyExt::boxed(FileBody::new(file, self.length)))
            }
        }
    }
}

/// Reads `body` to its end: at most `max` bytes, in memory up to `memory` bytes.
pub(crate) async fn spool(
    mut body: Incoming,
    max: u64,
    memory: usize,
) -> Result<Spooled, SpoolError> {
    let mut hasher = Sha256::new();
    let mut length: u64 = 0;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut file: Option<tokio::fs::File> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(SpoolError::Read)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers are not forwarded
        };
        length = length.saturating_add(data.len() as u64);
        if length > max {
            return Err(SpoolError::TooLarge(max));
        }
        hasher.update(&data);
        match file.as_mut() {
            Some(file) => file.write_all(&data).await.map_err(SpoolError::File)?,
            None if length > memory as u64 => {
                let std_file = tempfile::tempfile().map_err(SpoolError::File)?;
                let mut spill = tokio::fs::File::from_std(std_file);
                for chunk in chunks.drain(..) {
                    spill.write_all(&chunk).await.map_err(SpoolError::File)?;
                }
                spill.write_all(&data).await.map_err(SpoolError::File)?;
                file = Some(spill);
            }
            None => chunks.push(data),
        }
    }
    let data = match file {
        Some(mut file) => {
            file.flush().await.map_err(SpoolError::File)?;
            Data::File(file)
        }
        None => Data::Memory(chunks),
    };
    Ok(Spooled {
        digest: BodyDigest::from_bytes(hasher.finalize().into()),
        length,
        data,
    })
}
