//! Nonce replay protection. A nonce is remembered per key for as long as the request that carried
//! it could still be accepted (its date plus the clock skew; a presigned URL's expiry); the
//! verifier reserves it before reading the body, so a second copy is refused at once.
//!
//! The in-memory cache is bounded twice. Per key: a key holding its quota of live nonces is
//! refused ([`Freshness::OverQuota`], `rate_limited`, 429) and nobody else is affected. Globally:
//! when the cache is full it first forgets nonces whose window has passed; if every remembered
//! nonce is still live it refuses the new request (the verifier answers `verifier_unavailable`,
//! 503) instead of forgetting a live nonce, because forgetting one would let its request be
//! replayed. Only requests with a valid signature reach the cache, so filling it takes registered
//! keys; size the capacity for the peak request rate times the window (e.g. 1,000 requests/s ×
//! 600 s = 600,000 entries, about 100 MB) and at least the per-key quota times the number of keys
//! that may be busy at once.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

use thiserror::Error;

/// What the cache answered about a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Freshness {
    /// First use within its window; it is now remembered.
    Fresh,
    /// Already used by this key within its window.
    Replayed,
    /// The key already holds its quota of live nonces; nothing was remembered.
    OverQuota,
    /// The entry would already be expired (`expires_unix < now_unix`); nothing was remembered.
    Expired,
}

/// One nonce to reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation<'a> {
    /// The key the nonce belongs to (for a delegated request: the device key).
    pub key_id: &'a str,
    /// The nonce.
    pub nonce: &'a str,
    /// Until when (inclusive, seconds since the epoch) the request could still be accepted, and so
    /// the nonce must be remembered.
    pub expires_unix: i64,
    /// The verifier's clock.
    pub now_unix: i64,
    /// The most live nonces `key_id` may hold at once.
    pub per_key_limit: usize,
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

/// Remembers `(key id, nonce)` pairs until they expire, at most a quota of live ones per key.
///
/// An implementation (in memory, Redis, ...) must perform every step of
/// [`ReplayCache::check_and_remember`] as one atomic operation: two concurrent calls for the same
/// pair must not both answer `Fresh`, and two concurrent calls for the same key must not together
/// exceed its quota.
pub trait ReplayCache: Send + Sync + std::fmt::Debug {
    /// Atomically, in this order:
    /// 1. if `expires_unix < now_unix`, remembers nothing and answers [`Freshness::Expired`];
    /// 2. if `(key_id, nonce)` is remembered with an expiry not before `now_unix`, answers
    ///    [`Freshness::Replayed`];
    /// 3. if `key_id` holds `per_key_limit` or more remembered pairs whose expiry is not before
    ///    `now_unix`, remembers nothing and answers [`Freshness::OverQuota`];
    /// 4. if the cache has no room without forgetting a live pair, answers an error;
    /// 5. otherwise remembers the pair until `expires_unix` (inclusive) and answers
    ///    [`Freshness::Fresh`].
    fn check_and_remember(&self, reservation: &Reservation<'_>) -> Result<Freshness, ReplayError>;
}

#[derive(Debug, Default)]
struct Entries {
    /// `<len(key_id)>:<key_id><nonce>` → (expiry, key id); the length prefix keeps every pair
    /// distinct.
    expiry: HashMap<Arc<str>, (i64, Arc<str>)>,
    /// Remembered pairs per key id (every one live after [`Entries::forget_expired`]).
    per_key: HashMap<Arc<str>, usize>,
    /// Expiry order, soonest first, to forget expired nonces without scanning.
    queue: BinaryHeap<Reverse<(i64, Arc<str>)>>,
}

impl Entries {
    fn forget_expired(&mut self, now_unix: i64) {
        while let Some(Reverse((expiry, _))) = self.queue.peek() {
            if *expiry >= now_unix {
                break;
            }
            let Some(Reverse((expiry, entry))) = self.queue.pop() else {
                break;
            };
            if self.expiry.get(&entry).map(|(e, _)| *e) != Some(expiry) {
                continue;
            }
            if let Some((_, key_id)) = self.expiry.remove(&entry)
                && let Some(count) = self.per_key.get_mut(&key_id)
            {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.per_key.remove(&key_id);
                }
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

    /// Nonces currently remembered for `key_id` (live or not yet swept).
    pub fn len_for(&self, key_id: &str) -> usize {
        self.entries
            .lock()
            .map_or(0, |e| e.per_key.get(key_id).copied().unwrap_or(0))
    }
}

impl ReplayCache for MemoryReplayCache {
    fn check_and_remember(&self, r: &Reservation<'_>) -> Result<Freshness, ReplayError> {
        if r.expires_unix < r.now_unix {
            return Ok(Freshness::Expired);
        }
        let mut entries = self.entries.lock().map_err(|_| ReplayError::Poisoned)?;
        entries.forget_expired(r.now_unix);
        let entry: Arc<str> = Arc::from(format!("{}:{}{}", r.key_id.len(), r.key_id, r.nonce));
        if let Some((expiry, _)) = entries.expiry.get(&entry)
            && *expiry >= r.now_unix
        {
            return Ok(Freshness::Replayed);
        }
        let held = entries.per_key.get(r.key_id).copied().unwrap_or(0);
        if held >= r.per_key_limit {
            return Ok(Freshness::OverQuota);
        }
        if entries.expiry.len() >= self.capacity {
            return Err(ReplayError::Full {
                capacity: self.capacity,
            });
        }
        let key_id: Arc<str> = match entries.per_key.get_key_value(r.key_id) {
            Some((existing, _)) => Arc::clone(existing),
            None => Arc::from(r.key_id),
        };
        *entries.per_key.entry(Arc::clone(&key_id)).or_insert(0) += 1;
        entries
            .expiry
            .insert(Arc::clone(&entry), (r.expires_unix, key_id));
        entries.queue.push(Reverse((r.expires_unix, entry)));
        Ok(Freshness::Fresh)
    }
}
