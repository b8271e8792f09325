//! The bounded in-memory replay cache of one verifier process (see the module above for its two
//! bounds).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

use super::{Freshness, ReplayCache, ReplayError, Reservation};

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

/// `<len(key_id)>:<key_id><nonce>`, built in one allocation when it fits a small stack buffer
/// (every HWS1 key id and nonce does).
fn entry_name(key_id: &str, nonce: &str) -> Arc<str> {
    use std::io::Write as _;
    let mut buffer = [0u8; 160];
    let mut cursor = std::io::Cursor::new(&mut buffer[..]);
    let written = write!(cursor, "{}:{key_id}{nonce}", key_id.len()).is_ok();
    let end = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
    match buffer.get(..end).map(std::str::from_utf8) {
        Some(Ok(text)) if written => Arc::from(text),
        _ => Arc::from(format!("{}:{key_id}{nonce}", key_id.len())),
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
        let entry = entry_name(r.key_id, r.nonce);
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
