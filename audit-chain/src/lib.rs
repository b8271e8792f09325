//! Hash-chained audit logs (docs/AUDIT.md): the canonical JSON a record is hashed in, the
//! appending side ([`Sealer`]), signed checkpoints ([`checkpoint`]) and the streaming check
//! ([`ChainChecker`]) that finds the first edited, removed, reordered or inserted record.
//!
//! One implementation shared by the agent's audit log, the `hwsign audit verify` command and the
//! verifier's decision log. It is a crate of its own rather than a module of `hwsign-proto`
//! (wire format only) or of the verifier (which the agent must not link): it needs only
//! `serde_json`, `sha2`, `hex` and `p256`, which every one of its users links already.
#![forbid(unsafe_code)]

pub mod canonical;
mod check;
pub mod checkpoint;
mod seal;

pub use canonical::{CanonicalError, canonical_json};
pub use check::{Break, BreakKind, ChainChecker, CheckOptions, CheckReport};
pub use seal::{GENESIS_PREV, SealError, Sealer, record_hash};

/// The field holding a record's sequence number.
pub const SEQ: &str = "seq";
/// The field holding the hash of the previous record (hex).
pub const PREV: &str = "prev";
/// The field holding the record's own hash (hex); not part of what is hashed.
pub const HASH: &str = "hash";
/// Set to `true` on an export's stand-in for a record the filter left out.
pub const OMITTED: &str = "omitted";
