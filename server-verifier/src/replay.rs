//! Nonce replay protection. A nonce is remembered per key until the request that carried it could
//! no longer be accepted anyway (its date plus the clock skew; a presigned URL's expiry).
//!
//! The in-memory cache is bounded. When it is full it first forgets nonces whose window has
//! passed; if every remembered nonce is still live it refuses the new request (the verifier
//! answers `verifier_unavailable`, 503) instead of forgetting a live nonce, because forgetting
//! one would let its request be replayed. Only requests with a valid signature reach the cache,
//! so filling it takes a registered key; size the capacity for the peak request rate times the
//! window (e.g. 1,000 requests/s × 600 s = 600,000 entries, about 100 MB).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

use thiserror::Error;

/// Whether a nonce was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// First use within its window; it is now remembered.
    Fresh,
    /// Already used by this key within its window.
    Replayed,
}

/// Why the replay cache cannot answer. The verifier fails closed on every variant.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// Every slot holds a nonce that is still live.
    #[error("replay cache full ({capacity} live nonces)")]
    Full {
        /// The configured capacity.
        capacity: usize,
    },
    /// A lock was poisoned by a panic elsewhere.
    #[error("replay cache lock poisoned")]
    Poisoned,
    /// An external cache (e.g. Redis) could not be reached.
    #[error("replay cache unavailable: {0}")]
    Unavailable(String),
}

/// Remembers `(key id, nonce)` pairs until they expire.
pub trait ReplayCache: Send + Sync + std::fmt::Debug {
    /// Atomically: if `(key_id, nonce)` is remembered and its expiry is not before `now_unix`,
    /// answers [`Freshness::Replayed`]; otherwise remembers it until `expires_unix` (inclusive)
    /// and answers [`Freshness::Fresh`].
    fn check_and_remember(
        &self,
        key_id: &str,
        nonce: &str,
        expires_unix: i64,
        now_unix: i64,
    ) -> Result<Freshness, ReplayError>;
}

#[derive(Debug, Default)]
struct Entries {
    /// `<len(key_id)>:<key_id><nonce>` → expiry; the length prefix keeps every pair distinct.
    expiry: HashMap<Arc<str>, i64>,
    /// Expiry order, soonest first, to forget expired nonces without scanning.
    queue: BinaryHeap<Reverse<(i64, Arc<str>)>>,
}

impl Entries {
    fn forget_expired(&mut self, now_unix: i64) {
        while let Some(Reverse((expiry, _))) = self.queue.peek() {
            if *expiry >= now_unix {
                break;
            }
            if let Some(Reverse((expiry, entry))) = self.queue.pop()
                && self.expiry.get(&entry) == Some(&expiry)
            {
                self.expiry.remove(&entry);
            }
        }
    }
}

/// A bounded in-memory [`ReplayCache`] for one verifier process.
#[derive(Debug)]
pub struct MemoryReplayCache {
    capacity: usize,
    entries: Mutex<Entries>,
}

impl MemoryReplayCache {
    /// A cache remembering at most `capacity` live nonces.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(Entries::default()),
        }
    }

    /// Nonces currently remembered (live or not yet swept).
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.expiry.len())
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound given to [`MemoryReplayCache::new`].
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl ReplayCache for MemoryReplayCache {
    fn check_and_remember(
        &self,
        key_id: &str,
        nonce: &str,
        expires_unix: i64,
        now_unix: i64,
    ) -> Result<Freshness, ReplayError> {
        let mut entries = self.entries.lock().map_err(|_| ReplayError::Poisoned)?;
        entries.forget_expired(now_unix);
        let entry: Arc<str> = Arc::from(format!("{}:{key_id}{nonce}", key_id.len()));
        if let Some(expiry) = entries.expiry.get(&entry)
            && *expiry >= now_unix
        {
            return Ok(Freshness::Replayed);
        }
        if entries.expiry.len() >= self.capacity {
            return Err(ReplayError::Full {
                capacity: self.capacity,
            });
        }
        entries.expiry.insert(Arc::clone(&entry), expires_unix);
        entries.queue.push(Reverse((expires_unix, entry)));
        Ok(Freshness::Fresh)
    }
}
