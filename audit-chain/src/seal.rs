//! The appending side: numbers each record, links it to the previous one and hashes it.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::canonical::{CanonicalError, canonical_json};
use crate::checkpoint::{self, CheckpointSigner};
use crate::{HASH, PREV, SEQ};

/// The `prev` of a chain's first record: 64 zeros.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of a record: SHA-256 over the canonical JSON of the record without its `hash` field.
pub fn record_hash(record: &Map<String, Value>) -> Result<[u8; 32], CanonicalError> {
    let bytes = if record.contains_key(HASH) {
        let mut without = record.clone();
        without.remove(HASH);
        canonical_json(&Value::Object(without))?
    } else {
        canonical_json(&Value::Object(record.clone()))?
    };
    Ok(Sha256::digest(&bytes).into())
}

/// A record could not be sealed, or a chain could not be resumed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The record holds a value with no canonical form.
    #[error("the record has no canonical form")]
    Canonical(#[source] CanonicalError),
    /// The chain's last record is not a sealed record (unparsable, no `seq`, or a hash that does
    /// not match): the chain cannot be continued from it.
    #[error("the last record of the chain is not a sealed record")]
    Unsealed,
    /// The checkpoint could not be signed.
    #[error("the checkpoint could not be signed")]
    Sign(#[source] checkpoint::CheckpointError),
}

/// The head of a chain being appended to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealer {
    next_seq: u64,
    head: [u8; 32],
}

impl Sealer {
    /// A new chain: the first record has `seq` 0 and `prev` [`GENESIS_PREV`].
    pub fn genesis() -> Self {
        Self {
            next_seq: 0,
            head: [0; 32],
        }
    }

    /// Continues the chain whose last sealed record is `line` (one JSON object; its `hash` must
    /// match its content).
    pub fn resume(line: &[u8]) -> Result<Self, SealError> {
        let Ok(Value::Object(record)) = serde_json::from_slice::<Value>(line) else {
            return Err(SealError::Unsealed);
        };
        let seq = record
            .get(SEQ)
            .and_then(Value::as_u64)
            .ok_or(SealError::Unsealed)?;
        let hash = record_hash(&record).map_err(|_| SealError::Unsealed)?;
        let claimed = record.get(HASH).and_then(Value::as_str);
        if claimed != Some(hex::encode(hash).as_str()) {
            return Err(SealError::Unsealed);
        }
        Ok(Self {
            next_seq: seq.saturating_add(1),
            head: hash,
        })
    }

    /// The `seq` the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The hash of the last record sealed (zeros before the first).
    pub fn head(&self) -> [u8; 32] {
        self.head
    }

    /// Seals `record`: sets `seq`, `prev` and `hash`, advances the head and returns the record's
    /// line (its canonical JSON without `hash`, then the `hash` member appended last, and a
    /// newline). Fields named `seq`, `prev` or `hash` in `record`
    /// are replaced.
    pub fn seal(&mut self, record: Map<String, Value>) -> Result<Vec<u8>, SealError> {
        self.seal_with(record, |_| Ok(()))
    }

    /// Seals a checkpoint record (`kind` `checkpoint`), signed by `signer` over its canonical
    /// JSON without `hash` and `sig` (docs/AUDIT.md).
    pub fn seal_checkpoint(
        &mut self,
        record: Map<String, Value>,
        signer: &CheckpointSigner,
    ) -> Result<Vec<u8>, SealError> {
        self.seal_with(record, |record| {
            signer.sign(record).map_err(SealError::Sign)
        })
    }

    fn seal_with(
        &mut self,
        mut record: Map<String, Value>,
        finish: impl FnOnce(&mut Map<String, Value>) -> Result<(), SealError>,
    ) -> Result<Vec<u8>, SealError> {
        record.remove(HASH);
        record.insert(SEQ.to_owned(), Value::from(self.next_seq));
        record.insert(PREV.to_owned(), Value::from(hex::encode(self.head)));
        finish(&mut record)?;
        // One serialization: the canonical bytes are hashed, then written with the `hash` member
        // appended last (checkers re-serialize without it; docs/AUDIT.md).
        let mut line = canonical_json(&Value::Object(record)).map_err(SealError::Canonical)?;
        let hash: [u8; 32] = Sha256::digest(&line).into();
        line.pop();
        line.extend_from_slice(b",\"");
        line.extend_from_slice(HASH.as_bytes());
        line.extend_from_slice(b"\":\"");
        line.extend_from_slice(hex::encode(hash).as_bytes());
        line.extend_from_slice(b"\"}\n");
        self.next_seq = self.next_seq.saturating_add(1);
        self.head = hash;
        Ok(line)
    }
}
