//! Reading a request body once, under a size limit, hashing it on the way.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use http_body::Body;
use http_body_util::BodyExt;
use hwsign_proto::RejectCode;
use sha2::{Digest, Sha256};

use crate::rejection::Rejection;

fn too_large(limit: usize) -> Rejection {
    Rejection::new(
        RejectCode::BodyTooLarge,
        format!("the body exceeds {limit} bytes"),
    )
}

/// Refuses a request whose declared Content-Length is over `limit` before any byte is read.
pub(crate) fn check_content_length(headers: &HeaderMap, limit: usize) -> Result<(), Rejection> {
    for value in headers.get_all(CONTENT_LENGTH) {
        let declared = value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                Rejection::new(RejectCode::MalformedRequest, "invalid Content-Length")
            })?;
        if declared > limit as u64 {
            return Err(too_large(limit));
        }
    }
    Ok(())
}

/// A body read in full.
#[derive(Debug)]
pub(crate) struct ReadBody {
    pub(crate) bytes: Bytes,
    pub(crate) sha256: [u8; 32],
}

/// Reads `body` to its end, counting bytes as they arrive (a body without Content-Length, or
/// with a false one, is cut off at `limit` + 1 bytes) and hashing them. Trailers are dropped: the
/// signature does not cover them.
pub(crate) async fn read_bounded<B>(body: B, limit: usize) -> Result<ReadBody, Rejection>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut hasher = Sha256::new();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            tracing::debug!(%error, "request body failed");
            Rejection::new(RejectCode::MalformedRequest, "the body could not be read")
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(too_large(limit));
        }
        hasher.update(&data);
        chunks.push(data);
    }
    let bytes = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => {
            let mut joined = BytesMut::with_capacity(total);
            for chunk in &chunks {
                joined.extend_from_slice(chunk);
            }
            joined.freeze()
        }
    };
    Ok(ReadBody {
        bytes,
        sha256: hasher.finalize().into(),
    })
}
