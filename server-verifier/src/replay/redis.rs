//! A replay cache shared by a fleet of verifiers, in Redis (a single node or a Redis Cluster).
//!
//! Each reservation is one Lua script (EVALSHA, falling back to EVAL when the node does not hold
//! it yet), so its steps happen atomically on the Redis side:
//! 1. `expires < now` → `expired`;
//! 2. the nonce key `hws:<len>:{<key id>}:n:<nonce>` holds an expiry not before `now` → `replayed`;
//! 3. the key's sorted set `hws:<len>:{<key id>}:live` (nonce → expiry), trimmed of entries
//!    before `now`, holds `per_key_limit` nonces or more → `over_quota`;
//! 4. otherwise the nonce key is set (`SET NX`) to its expiry with a time to live of the
//!    remaining window (`expires - now + 1` seconds), added to the sorted set (whose own time to
//!    live grows to the longest window), → `fresh`.
//!
//! Both keys of a reservation carry the `{key id}` hash tag, so they live in one Cluster slot;
//! the length prefix keeps `(key id, nonce)` pairs distinct whatever characters they hold. The
//! cluster client follows `MOVED` and `ASK` redirections.
//!
//! Connections are pooled (at most 32); every connect, read and write is bounded by a timeout
//! (1 s); a connection that failed is dropped, so the next reservation connects afresh: a
//! Redis that went away and came back is used again without a restart. Until then every
//! reservation answers [`ReplayError::Unavailable`] (the verifier fails closed, 503).
//!
//! The trait is synchronous: a reservation blocks its thread for one Redis round trip (bounded by
//! the response timeout), as a SQLite lookup does.
//!
//! # A Redis that came back empty
//! A Redis restarted without persistence (or flushed, or failed over to an empty node) forgets
//! the live nonces: every request accepted before is replayable until its window ends. Each new
//! connection therefore reads the sentinel key `hws:epoch` (a random value the first verifier to
//! connect creates with `SET NX`, no expiry). When it differs from (or lost) the value this
//! process saw before, the data set was lost: every reservation answers
//! [`ReplayError::Unavailable`] (503 `verifier_unavailable`) until the windows of the nonces that
//! may have been forgotten are over — the latest expiry this process reserved, and at least
//! [`RESTART_QUARANTINE_SECS`] (two default clock skews: a request's nonce lives at most its
//! date plus the skew, and its date may run the skew ahead). A Redis with `appendonly yes` keeps
//! the sentinel with the nonces across a restart, so it is served again at once. What this does
//! not see: a verifier process started after the loss (it never saw the old value), and, on a
//! Redis Cluster, the loss of a node other than the one holding `hws:epoch` — run every node of a
//! cluster with `appendonly yes` (docs/SCALING.md).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::{Client, Connection, ConnectionLike, ErrorKind, RedisError, Value};

use super::{Freshness, ReplayCache, ReplayError, Reservation};

/// How long connecting to a Redis node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one command may wait for its answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most connections one cache holds open (idle or in use).
const MAX_CONNECTIONS: usize = 32;
/// The longest a nonce is remembered (ten years): a window beyond it is remembered this long.
const MAX_WINDOW_SECS: i64 = 10 * 365 * 24 * 3600;

/// The sentinel key whose loss tells a Redis that forgot its data.
const EPOCH_KEY: &str = "hws:epoch";
/// The shortest refusal after Redis lost its data, seconds: twice the default clock skew.
pub const RESTART_QUARANTINE_SECS: i64 = 2 * 300;

/// The reservation script. KEYS: nonce key, live set; ARGV: nonce, expires, now, per-key limit.
const RESERVE_SCRIPT: &str = r"
local expires = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
if expires < now then return 'expired' end
local held = redis.call('GET', KEYS[1])
if held and tonumber(held) >= now then return 'replayed' end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[3])
if redis.call('ZCARD', KEYS[2]) >= limit then return 'over_quota' end
if held then redis.call('DEL', KEYS[1]) end
local ttl = expires - now + 1
if not redis.call('SET', KEYS[1], ARGV[2], 'EX', ttl, 'NX') then return 'replayed' end
redis.call('ZADD', KEYS[2], expires, ARGV[1])
if redis.call('TTL', KEYS[2]) < ttl then redis.call('EXPIRE', KEYS[2], ttl) end
return 'fresh'
";

/// Where the cache connects.
#[derive(Clone)]
enum Target {
    Single(Client),
    Cluster(ClusterClient),
}

enum Conn {
    Single(Connection),
    Cluster(Box<ClusterConnection>),
}

impl Conn {
    fn as_dyn(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Self::Single(c) => c,
            Self::Cluster(c) => c.as_mut(),
        }
    }
}

#[derive(Default)]
struct Pool {
    idle: Vec<Conn>,
    /// Connections open, idle or lent out.
    open: usize,
}

/// A [`ReplayCache`] in Redis, shared by every verifier that uses the same Redis.
pub struct RedisReplayCache {
    target: Target,
    /// A description without credentials, for logs.
    describe: String,
    pool: Mutex<Pool>,
    returned: Condvar,
    script_sha: String,
    /// The value of `hws:epoch` last seen (`None`: not connected yet).
    epoch: Mutex<Option<String>>,
    /// Redis lost its data; the next reservation sets `quarantine_until` on its clock.
    lost: AtomicBool,
    /// Until when (unix seconds, inclusive) reservations are refused after a data loss.
    quarantine_until: AtomicI64,
    /// The latest expiry of a nonce this process reserved.
    max_expires: AtomicI64,
}

impl std::fmt::Debug for RedisReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisReplayCache")
            .field("target", &self.describe)
            .finish_non_exhaustive()
    }
}

fn unavailable(error: RedisError) -> ReplayError {
    ReplayError::Unavailable(Box::new(error))
}

fn invalid(what: &str) -> ReplayError {
    ReplayError::InvalidUrl(what.to_owned())
}

/// Splits `redis+cluster://[userinfo@]h1:p1,h2:p2,...[/]` into one `redis://` URL per node.
fn cluster_nodes(url: &str) -> Result<Vec<String>, ReplayError> {
    let rest = url
        .strip_prefix("redis+cluster://")
        .ok_or_else(|| invalid("a cluster URL starts with redis+cluster://"))?;
    let rest = rest.trim_end_matches('/');
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), rest),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("redis://{userinfo}{h}"))
        .collect();
    if nodes.is_empty() || nodes.len() > 64 || hosts.contains('/') || hosts.contains('?') {
        return Err(invalid(
            "a cluster URL lists 1 to 64 host:port nodes and nothing else",
        ));
    }
    Ok(nodes)
}

/// The hash-tagged keys of one reservation.
fn keys_for(key_id: &str, nonce: &str) -> (String, String) {
    let tag = format!("hws:{}:{{{key_id}}}", key_id.len());
    (format!("{tag}:n:{nonce}"), format!("{tag}:live"))
}

/// Eviction policies that may forget a key with a time to live before it expires.
fn evicts_live_keys(policy: &str) -> bool {
    policy.starts_with("allkeys-") || policy.starts_with("volatile-")
}

impl RedisReplayCache {
    /// A cache on the Redis named by `url` (`redis://…` or `redis+cluster://…`, see
    /// [`super::open_replay_cache`]). Nothing is connected until the first reservation.
    pub fn open(url: &str) -> Result<Self, ReplayError> {
        let (target, describe) = if url.starts_with("redis+cluster://") {
            let nodes = cluster_nodes(url)?;
            let describe = format!("Redis Cluster ({} seed nodes)", nodes.len());
            let client = ClusterClient::builder(nodes)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .retries(2)
                .min_retry_wait(10)
                .max_retry_wait(200)
                .build()
                .map_err(|_| invalid("a cluster node is not a valid host:port"))?;
            (Target::Cluster(client), describe)
        } else {
            let client = Client::open(url).map_err(|_| invalid("not a valid redis:// URL"))?;
            let info = client.get_connection_info();
            let describe = format!("Redis {}", info.addr);
            (Target::Single(client), describe)
        };
        Ok(Self {
            target,
            describe,
            pool: Mutex::new(Pool::default()),
            returned: Condvar::new(),
            script_sha: redis::Script::new(RESERVE_SCRIPT).get_hash().to_owned(),
            epoch: Mutex::new(None),
            lost: AtomicBool::new(false),
            quarantine_until: AtomicI64::new(i64::MIN),
            max_expires: AtomicI64::new(i64::MIN),
        })
    }

    fn pool(&self) -> Result<MutexGuard<'_, Pool>, ReplayError> {
        self.pool.lock().map_err(|_| ReplayError::Poisoned)
    }

    /// An idle connection, a new one, or (all `MAX_CONNECTIONS` (32) in use) the next one returned
    /// within `RESPONSE_TIMEOUT` (1 s).
    fn take(&self) -> Result<Conn, ReplayError> {
        let deadline = Instant::now() + RESPONSE_TIMEOUT;
        let mut pool = self.pool()?;
        loop {
            if let Some(conn) = pool.idle.pop() {
                return Ok(conn);
            }
            if pool.open < MAX_CONNECTIONS {
                pool.open += 1;
                drop(pool);
                let conn = self.connect();
                if conn.is_err() {
                    self.release(None);
                }
                return conn;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReplayError::Unavailable(
                    format!("all {MAX_CONNECTIONS} Redis connections stayed busy").into(),
                ));
            }
            pool = self
                .returned
                .wait_timeout(pool, left)
                .map_err(|_| ReplayError::Poisoned)?
                .0;
        }
    }

    /// Gives a connection back (`None`: it failed and is dropped).
    fn release(&self, conn: Option<Conn>) {
        if let Ok(mut pool) = self.pool.lock() {
            match conn {
                Some(conn) => pool.idle.push(conn),
                None => pool.open = pool.open.saturating_sub(1),
            }
        }
        self.returned.notify_one();
    }

    fn connect(&self) -> Result<Conn, ReplayError> {
        let mut conn = match &self.target {
            Target::Single(client) => {
                let conn = client
                    .get_connection_with_timeout(CONNECT_TIMEOUT)
                    .map_err(unavailable)?;
                conn.set_read_timeout(Some(RESPONSE_TIMEOUT))
                    .map_err(unavailable)?;
                conn.set_write_timeout(Some(RESPONSE_TIMEOUT))
                    .map_err(unavailable)?;
                Conn::Single(conn)
            }
            Target::Cluster(client) => {
                Conn::Cluster(Box::new(client.get_connection().map_err(unavailable)?))
            }
        };
        self.check_eviction_policy(&mut conn)?;
        self.check_epoch(&mut conn)?;
        Ok(conn)
    }

    /// Reads (creating it if absent) the sentinel `hws:epoch`; a value other than the one seen
    /// before means Redis lost its data: reservations are refused for a window (module docs).
    fn check_epoch(&self, conn: &mut Conn) -> Result<(), ReplayError> {
        let mut fresh = [0u8; 16];
        getrandom::fill(&mut fresh)
            .map_err(|e| ReplayError::Unavailable(format!("random generator: {e}").into()))?;
        let candidate = hex::encode(fresh);
        let _: Value = redis::cmd("SET")
            .arg(EPOCH_KEY)
            .arg(&candidate)
            .arg("NX")
            .query(conn.as_dyn())
            .map_err(unavailable)?;
        let current: Option<String> = redis::cmd("GET")
            .arg(EPOCH_KEY)
            .query(conn.as_dyn())
            .map_err(unavailable)?;
        let current = current.ok_or_else(|| {
            ReplayError::Unavailable("the Redis sentinel key vanished as it was set".into())
        })?;
        let mut seen = self.epoch.lock().map_err(|_| ReplayError::Poisoned)?;
        if let Some(before) = seen.as_deref()
            && before != current
        {
            self.lost.store(true, Ordering::SeqCst);
            tracing::error!(
                target = %self.describe,
                "Redis lost its data (restarted without persistence, flushed or failed over): \
                 live nonces may be forgotten, refusing requests until their windows are over; \
                 run Redis with appendonly yes"
            );
        }
        *seen = Some(current);
        Ok(())
    }

    /// Refuses a Redis that may evict live nonces (they would become replayable). A Redis whose
    /// `CONFIG` command is disabled (some managed services) is trusted with a warning.
    fn check_eviction_policy(&self, conn: &mut Conn) -> Result<(), ReplayError> {
        let answer: Result<Vec<String>, RedisError> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query(conn.as_dyn());
        match answer {
            Ok(pair) => match pair.get(1) {
                Some(policy) if evicts_live_keys(policy) => {
                    tracing::error!(
                        target = %self.describe,
                        policy,
                        "Redis may evict live nonces; set maxmemory-policy noeviction"
                    );
                    Err(ReplayError::Unavailable(
                        format!(
                            "Redis maxmemory-policy {policy} may evict live nonces \
                             (noeviction is required)"
                        )
                        .into(),
                    ))
                }
                _ => Ok(()),
            },
            Err(error) if error.kind() == ErrorKind::IoError || error.is_timeout() => {
                Err(unavailable(error))
            }
            Err(error) => {
                tracing::warn!(
                    target = %self.describe,
                    %error,
                    "cannot read Redis maxmemory-policy; make sure it is noeviction"
                );
                Ok(())
            }
        }
    }

    fn run_script(&self, conn: &mut Conn, r: &Reservation<'_>) -> Result<String, RedisError> {
        let (nonce_key, live_key) = keys_for(r.key_id, r.nonce);
        let expires = r
            .expires_unix
            .min(r.now_unix.saturating_add(MAX_WINDOW_SECS));
        let limit = u64::try_from(r.per_key_limit).unwrap_or(u64::MAX);
        let mut invoke = |command: &str, script: &str| {
            redis::cmd(command)
                .arg(script)
                .arg(2)
                .arg(&nonce_key)
                .arg(&live_key)
                .arg(r.nonce)
                .arg(expires)
                .arg(r.now_unix)
                .arg(limit)
                .query::<Value>(conn.as_dyn())
        };
        // EVALSHA first; a node that does not hold the script yet gets it with EVAL (routed by
        // the same key, so it reaches the same node).
        let answer = match invoke("EVALSHA", &self.script_sha) {
            Err(error) if error.kind() == ErrorKind::NoScriptError => {
                invoke("EVAL", RESERVE_SCRIPT)
            }
            other => other,
        }?;
        redis::from_redis_value(&answer)
    }
}

impl ReplayCache for RedisReplayCache {
    fn check_and_remember(&self, r: &Reservation<'_>) -> Result<Freshness, ReplayError> {
        if r.expires_unix < r.now_unix {
            return Ok(Freshness::Expired);
        }
        let mut conn = self.take()?;
        // After `take`: a connection made now has checked the sentinel.
        if self.lost.swap(false, Ordering::SeqCst) {
            let until = self
                .max_expires
                .load(Ordering::SeqCst)
                .max(r.now_unix.saturating_add(RESTART_QUARANTINE_SECS));
            self.quarantine_until.fetch_max(until, Ordering::SeqCst);
        }
        if r.now_unix <= self.quarantine_until.load(Ordering::SeqCst) {
            self.release(Some(conn));
            return Err(ReplayError::Unavailable(
                "Redis lost its data (restarted without persistence); refusing until the \
                 windows of the nonces it forgot are over"
                    .into(),
            ));
        }
        match self.run_script(&mut conn, r) {
            Ok(answer) => {
                self.release(Some(conn));
                match answer.as_str() {
                    "fresh" => {
                        self.max_expires.fetch_max(r.expires_unix, Ordering::SeqCst);
                        Ok(Freshness::Fresh)
                    }
                    "replayed" => Ok(Freshness::Replayed),
                    "over_quota" => Ok(Freshness::OverQuota),
                    "expired" => Ok(Freshness::Expired),
                    other => Err(ReplayError::Unavailable(
                        format!("unexpected answer {other:?} from the reservation script").into(),
                    )),
                }
            }
            Err(error) => {
                // Dropped, not returned: the next reservation connects afresh.
                self.release(None);
                tracing::error!(target = %self.describe, %error, "Redis reservation failed");
                Err(unavailable(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_hash_tag_and_stay_distinct() {
        let (a_nonce, a_live) = keys_for("a", "b}:n:c");
        let (b_nonce, _) = keys_for("a}:n:b", "c");
        assert_ne!(a_nonce, b_nonce);
        assert!(a_nonce.contains("{a}") && a_live.contains("{a}"));
    }

    #[test]
    fn cluster_urls_list_their_nodes() -> Result<(), ReplayError> {
        assert_eq!(
            cluster_nodes("redis+cluster://u:p@127.0.0.1:7000,127.0.0.1:7001/")?,
            vec!["redis://u:p@127.0.0.1:7000", "redis://u:p@127.0.0.1:7001"]
        );
        assert!(cluster_nodes("redis+cluster://").is_err());
        assert!(cluster_nodes("redis+cluster://h:1/0").is_err());
        Ok(())
    }

    #[test]
    fn evicting_policies_are_recognised() {
        assert!(evicts_live_keys("allkeys-lru"));
        assert!(evicts_live_keys("volatile-ttl"));
        assert!(!evicts_live_keys("noeviction"));
    }
}
