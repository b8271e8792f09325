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

//!
//! A fleet of verifiers shares one cache in Redis ([`RedisReplayCache`], cargo feature `redis`):
//! one Lua script per reservation does every step atomically, single node or Redis Cluster.
//! [`open_replay_cache`] opens either from a URL.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::sync::Arc;

use thiserror::Error;

#[cfg(feature = "redis")]
pub use self::redis::{RESTART_QUARANTINE_SECS, RedisReplayCache};
pub use memory::MemoryReplayCache;

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
    /// An external cache (e.g. Redis) could not be reached or did not answer in time.
    #[error("replay cache unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The replay cache URL is not one this build can open.
    #[error("invalid replay cache URL: {0}")]
    InvalidUrl(String),
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

/// Opens the replay cache named by `url`:
/// - `memory`: a [`MemoryReplayCache`] of `capacity` live nonces, for one verifier process;
/// - `redis://[user:password@]host:port[/db]`: a [`RedisReplayCache`] on one Redis node;
/// - `redis+cluster://[user:password@]host1:port1,host2:port2,...`: a [`RedisReplayCache`] on a
///   Redis Cluster, reached through any of the listed nodes.
///
/// Redis is bounded by its own `maxmemory` (with `maxmemory-policy noeviction`; an evicting
/// policy is refused, it would forget live nonces), not by `capacity`. Redis URLs need the cargo
/// feature `redis`. Nothing is connected yet: a Redis that is down answers
/// [`ReplayError::Unavailable`] per reservation until it is back.
pub fn open_replay_cache(url: &str, capacity: usize) -> Result<Arc<dyn ReplayCache>, ReplayError> {
    if url == "memory" || url == "memory:" {
        return Ok(Arc::new(MemoryReplayCache::new(capacity)));
    }
    if url.starts_with("redis://") || url.starts_with("redis+cluster://") {
        #[cfg(feature = "redis")]
        return Ok(Arc::new(RedisReplayCache::open(url)?));
        #[cfg(not(feature = "redis"))]
        return Err(ReplayError::InvalidUrl(
            "redis:// replay caches need the `redis` cargo feature".into(),
        ));
    }
    Err(ReplayError::InvalidUrl(
        "expected memory, redis://HOST:PORT or redis+cluster://HOST:PORT,HOST:PORT,...".into(),
    ))
}
