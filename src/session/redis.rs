//! RedisStore: the session store shared by replicas, on an auto-reconnecting Redis connection,
//! with a short in-process tier for sessions and pub/sub invalidation of that tier.
//!
//! Invariants:
//! - every value is written together with its TTL (`SET … PX`, or one Lua script), so nothing
//!   outlives its deadline, even if this process dies mid-operation;
//! - every operation is bounded by `session.operation_timeout`; past it the caller gets
//!   [`Error::Unavailable`] and the connection manager keeps reconnecting in the background;
//! - an error reply (Redis is up and refused the command, `OOM` say) fails the operation but
//!   is not an outage; `READONLY` (a primary demoted behind the same address) replaces the
//!   connection;
//! - the in-process tier answers only while this replica is subscribed to the invalidation
//!   channel, and is emptied whenever the subscription is (re)established, so a logout on any
//!   replica is honoured here as soon as its message arrives; should a message be lost in a
//!   half-open connection, `local_ttl` bounds the staleness.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures_util::StreamExt as _;
use moka::sync::Cache;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ErrorKind, RedisError, RedisResult, Script, ServerErrorKind};
use tokio::time::Instant;

use super::metrics::SessionMetrics;
use super::store::{
    Instruments, Read, SessionKey, SessionRecord, hex, now, session_key_from_hex, unix_ms,
};
use super::{Error, StoreFault};
use crate::config::SessionConfig;
use crate::keyhash::KeyHash;

/// Compare-and-delete (lock release): delete KEYS[1] only while it holds ARGV[1].
const DELETE_IF_EQ: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// The Lua function every index write goes through. An index is a sorted set of members
/// scored by the Unix millisecond at which each stops counting (its session's end): members
/// whose score has passed are dropped at each write and never returned, so the index of a user
/// who signs in daily does not keep one dead member per session that simply expired. The set
/// itself lives as long as its longest member. An index written by an earlier version (a plain
/// set) is converted first, its members keeping the set's remaining time.
macro_rules! index_add_lua {
    () => {
        r"
local function index_add(key, member, member_until, ttl, now)
  if redis.call('TYPE', key).ok == 'set' then
    local left = redis.call('PTTL', key)
    local old = redis.call('SMEMBERS', key)
    redis.call('DEL', key)
    for _, m in ipairs(old) do
      redis.call('ZADD', key, now + math.max(left, 0), m)
    end
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  redis.call('ZADD', key, member_until, member)
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end
"
    };
}

/// Adds ARGV[1] to index KEYS[1] for ARGV[2] ms; ARGV[3] is now (Unix ms).
const INDEX_ADD: &str = concat!(
    index_add_lua!(),
    "local ttl, now = tonumber(ARGV[2]), tonumber(ARGV[3])\n",
    "index_add(KEYS[1], ARGV[1], now + ttl, ttl, now)\n",
    "return 1"
);

/// Create a session and index it, atomically: SET KEYS[1] ARGV[1] PX ARGV[2], then add member
/// ARGV[3] to index KEYS[2], counting until the session's absolute end ARGV[6] (Unix ms; idle
/// refreshes may keep it alive that long), the index living at least ARGV[4] ms; ARGV[5] is
/// now (Unix ms).
const CREATE_SESSION: &str = concat!(
    index_add_lua!(),
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n",
    "index_add(KEYS[2], ARGV[3], tonumber(ARGV[6]), tonumber(ARGV[4]), tonumber(ARGV[5]))\n",
    "return 1"
);

/// The members of index KEYS[1] that still count at ARGV[1] (Unix ms).
const INDEX_MEMBERS: &str = r"
if redis.call('TYPE', KEYS[1]).ok == 'set' then
  return redis.call('SMEMBERS', KEYS[1])
end
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')";

/// Removes ARGV[1] from index KEYS[1] (either kind).
const INDEX_REMOVE: &str = r"
if redis.call('TYPE', KEYS[1]).ok == 'set' then
  return redis.call('SREM', KEYS[1], ARGV[1])
end
return redis.call('ZREM', KEYS[1], ARGV[1])";

/// Deletes session KEYS[1], publishes its member ARGV[1] on channel ARGV[2], then removes
/// the member from index KEYS[2] (when given), atomically; returns how many keys were deleted.
/// The invalidation goes out before the index step, so that even if that step failed (a key
/// of another type), other replicas still drop their copy.
const DELETE_SESSION: &str = r"
local deleted = redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[1])
if #KEYS == 2 then
  if redis.call('TYPE', KEYS[2]).ok == 'set' then
    redis.call('SREM', KEYS[2], ARGV[1])
  else
    redis.call('ZREM', KEYS[2], ARGV[1])
  end
end
return deleted";

/// How often the pub/sub connection is pinged to find a half-open connection.
const PUBSUB_PING_EVERY: Duration = Duration::from_secs(1);
/// How long `connect` waits for the first subscription before it lets start-up continue.
const FIRST_SUBSCRIBE_WAIT: Duration = Duration::from_secs(1);
/// Refusals (error replies) are logged at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);
/// The connection is replaced at most this often when Redis says it is a read-only replica.
const REPLACE_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// Aborts the pub/sub listener when the last clone of the store goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Inner {
    /// The connection; replaced when the node behind it turns out to be a read-only replica.
    manager: Arc<RwLock<ConnectionManager>>,
    client: Client,
    manager_cfg: ConnectionManagerConfig,
    /// Connection replacements after `READONLY`, at most one per [`REPLACE_AT_MOST_EVERY`].
    replacing: Throttle,
    /// Refusal log lines, at most one per [`REFUSAL_LOG_EVERY`].
    refusal_log: Throttle,
    prefix: String,
    channel: String,
    op_timeout: Duration,
    /// `None` when `local_ttl` is zero.
    local: Option<Cache<SessionKey, SessionRecord, KeyHash>>,
    /// True while the listener is subscribed; the local tier answers only then.
    subscribed: Arc<AtomicBool>,
    /// Bumped on every subscription change; a value fetched across a change is not cached.
    generation: Arc<AtomicU64>,
    /// Last known state, for one log line per change.
    healthy: AtomicBool,
    metrics: SessionMetrics,
    delete_if_eq: Script,
    index_add: Script,
    index_members: Script,
    index_remove: Script,
    create_session: Script,
    delete_session: Script,
    _listener: AbortOnDrop,
}

/// The Redis store. Clones share one connection manager, tier and listener.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
    pub(crate) instruments: Instruments,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry a password.
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("subscribed", &self.inner.subscribed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn millis(ttl: Duration) -> u64 {
    // PX must be positive.
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStore {
    /// Opens `session.redis_url` (`redis://`, or `rediss://` trusting `session.redis_ca_file`
    /// or else the system's roots; password and database in the URL) without waiting for
    /// Redis to answer: operations fail with [`Error::Unavailable`] until it does. Starts the
    /// invalidation listener and waits briefly for its first subscription.
    pub async fn connect(cfg: &SessionConfig, metrics: &SessionMetrics) -> Result<Self, Error> {
        let client = match &cfg.redis_ca_file {
            None => Client::open(cfg.redis_url.expose()),
            Some(path) => {
                let root_cert = std::fs::read(path).map_err(|e| Error::RedisCaFile {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let certs = ::redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                };
                Client::build_with_tls(cfg.redis_url.expose(), certs)
            }
        }
        .map_err(|source| Error::InvalidRedisUrl { source })?;
        let op_timeout = cfg.operation_timeout;
        let connect_timeout = op_timeout.max(Duration::from_secs(1));
        let manager_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(op_timeout))
            // Few, short retries: a failed reconnect surfaces quickly and the next operation
            // starts a new one, so recovery follows Redis's return within about a second.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_cfg.clone())
            .map_err(|source| Error::InvalidRedisUrl { source })?;
        let manager = Arc::new(RwLock::new(manager));
        let local = (!cfg.local_ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(cfg.max_entries)
                .time_to_live(cfg.local_ttl)
                .build_with_hasher(KeyHash)
        });
        let subscribed = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let channel = format!("{}invalidate", cfg.redis_key_prefix);
        let listener = tokio::spawn(listen(
            client.clone(),
            manager.clone(),
            channel.clone(),
            local.clone(),
            subscribed.clone(),
            generation.clone(),
            connect_timeout,
        ));
        let store = Self {
            inner: Arc::new(Inner {
                manager,
                client,
                manager_cfg,
                replacing: Throttle::new(),
                refusal_log: Throttle::new(),
                prefix: cfg.redis_key_prefix.clone(),
                channel,
                op_timeout,
                local,
                subscribed,
                generation,
                healthy: AtomicBool::new(true),
                metrics: metrics.clone(),
                delete_if_eq: Script::new(DELETE_IF_EQ),
                index_add: Script::new(INDEX_ADD),
                index_members: Script::new(INDEX_MEMBERS),
                index_remove: Script::new(INDEX_REMOVE),
                create_session: Script::new(CREATE_SESSION),
                delete_session: Script::new(DELETE_SESSION),
                _listener: AbortOnDrop(listener),
            }),
            instruments: Instruments::new(metrics, "redis"),
        };
        let waited = tokio::time::Instant::now();
        while !store.is_subscribed() && waited.elapsed() < FIRST_SUBSCRIBE_WAIT {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(store)
    }

    /// Whether the invalidation listener is subscribed (the in-process tier is in use).
    pub fn is_subscribed(&self) -> bool {
        self.inner.subscribed.load(Ordering::Acquire)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    fn session_key(&self, key: &SessionKey) -> String {
        format!("{}s:{}", self.inner.prefix, hex(key))
    }

    /// Runs one Redis round trip within the operation timeout, and logs state changes.
    async fn bounded<T>(
        &self,
        operation: &'static str,
        fut: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, Error> {
        let fault = match tokio::time::timeout(self.inner.op_timeout, fut).await {
            Ok(Ok(value)) => {
                if !self.inner.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!(backend = "redis", "session store answers again");
                }
                return Ok(value);
            }
            Ok(Err(e)) if is_refusal(&e) => {
                // Redis is up and said no: not an outage (reads may well go on working).
                self.refused(operation, &e);
                StoreFault::Redis(e)
            }
            Ok(Err(e)) => self.unavailable(operation, StoreFault::Redis(e)),
            Err(_) => self.unavailable(operation, StoreFault::Timeout(self.inner.op_timeout)),
        };
        Err(Error::Unavailable {
            backend: "redis",
            operation,
            fault,
        })
    }

    /// Logs the start of an outage (once per state change) and passes its fault on.
    fn unavailable(&self, operation: &'static str, fault: StoreFault) -> StoreFault {
        if self.inner.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                backend = "redis",
                operation,
                error = %fault,
                "session store unavailable; requests that need it get 503 until it answers"
            );
        }
        fault
    }

    /// An error reply: logged at most once per [`REFUSAL_LOG_EVERY`]; `READONLY` (the node
    /// was demoted to a replica in a failover behind a DNS name or proxy) replaces the
    /// connection, which the connection manager would keep otherwise.
    fn refused(&self, operation: &'static str, e: &RedisError) {
        self.inner.metrics.store_refusals.inc();
        if self.inner.refusal_log.allow(REFUSAL_LOG_EVERY) {
            tracing::warn!(
                backend = "redis",
                operation,
                error = %e,
                "session store refuses commands; requests that need them get 503 (logged at most once a minute)"
            );
        }
        if e.kind() != ErrorKind::Server(ServerErrorKind::ReadOnly)
            || !self.inner.replacing.allow(REPLACE_AT_MOST_EVERY)
        {
            return;
        }
        match ConnectionManager::new_lazy_with_config(
            self.inner.client.clone(),
            self.inner.manager_cfg.clone(),
        ) {
            Ok(fresh) => {
                *self
                    .inner
                    .manager
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = fresh;
                tracing::warn!(
                    backend = "redis",
                    "Redis answered READONLY (a replica): reconnecting to find the primary"
                );
            }
            Err(e) => tracing::warn!(backend = "redis", error = %e, "cannot reconnect to Redis"),
        }
    }

    fn con(&self) -> ConnectionManager {
        current(&self.inner.manager)
    }

    /// Keeps a record read from Redis in the local tier, unless an invalidation (or a
    /// resubscription) came in since `generation` was read before the read: the record may then
    /// be one a logout on another replica has just destroyed.
    fn remember(&self, key: &SessionKey, record: &SessionRecord, generation: u64) {
        if let Some(local) = &self.inner.local
            && self.is_subscribed()
            && self.inner.generation.load(Ordering::Acquire) == generation
        {
            local.insert(*key, record.clone());
            // The listener bumps the generation, then invalidates: an invalidation that came in
            // between the check above and the insert is seen here, or removes the insert itself.
            if self.inner.generation.load(Ordering::Acquire) != generation {
                local.invalidate(key);
            }
        }
    }

    fn forget(&self, key: &SessionKey) {
        if let Some(local) = &self.inner.local {
            local.invalidate(key);
        }
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let mut con = self.con();
        let cmd = redis::cmd("GET").arg(self.key(key)).clone();
        self.bounded("get", cmd.query_async(&mut con)).await
    }

    pub(crate) async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Error> {
        let mut con = self.con();
        let cmd = redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("PX")
            .arg(millis(ttl))
            .clone();
        self.bounded("put", cmd.query_async(&mut con)).await
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<bool, Error> {
        let mut con = self.con();
        let cmd = redis::cmd("DEL").arg(self.key(key)).clone();
        let n: u64 = self.bounded("delete", cmd.query_async(&mut con)).await?;
        Ok(n > 0)
    }

    pub(crate) async fn set_nx(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, Error> {
        let mut con = self.con();
        let cmd = redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .clone();
        let ok: Option<String> = self.bounded("set_nx", cmd.query_async(&mut con)).await?;
        Ok(ok.is_some())
    }

    pub(crate) async fn getdel(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let mut con = self.con();
        // GETDEL (Redis 6.2+) is atomic: of two replicas racing, one gets the value.
        let cmd = redis::cmd("GETDEL").arg(self.key(key)).clone();
        self.bounded("getdel", cmd.query_async(&mut con)).await
    }

    pub(crate) async fn delete_if_eq(&self, key: &str, value: &[u8]) -> Result<bool, Error> {
        let mut con = self.con();
        let mut invocation = self.inner.delete_if_eq.key(self.key(key));
        invocation.arg(value);
        let n: u64 = self
            .bounded("delete_if_eq", invocation.invoke_async(&mut con))
            .await?;
        Ok(n > 0)
    }

    pub(crate) async fn index_add(
        &self,
        index: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), Error> {
        let mut con = self.con();
        let mut invocation = self.inner.index_add.key(self.key(index));
        invocation.arg(member).arg(millis(ttl)).arg(unix_ms(now()));
        let _: u64 = self
            .bounded("index_add", invocation.invoke_async(&mut con))
            .await?;
        Ok(())
    }

    pub(crate) async fn index_members(&self, index: &str) -> Result<Vec<String>, Error> {
        let mut con = self.con();
        let mut invocation = self.inner.index_members.key(self.key(index));
        invocation.arg(unix_ms(now()));
        self.bounded("index_members", invocation.invoke_async(&mut con))
            .await
    }

    pub(crate) async fn index_remove(&self, index: &str, member: &str) -> Result<(), Error> {
        let mut con = self.con();
        let mut invocation = self.inner.index_remove.key(self.key(index));
        invocation.arg(member);
        let _: u64 = self
            .bounded("index_remove", invocation.invoke_async(&mut con))
            .await?;
        Ok(())
    }

    pub(crate) async fn get_session(
        &self,
        key: &SessionKey,
        read: Read,
    ) -> Result<Option<SessionRecord>, Error> {
        if let Some(local) = &self.inner.local
            && read == Read::Cached
            && self.is_subscribed()
        {
            if let Some(record) = local.get(key) {
                self.inner.metrics.local_hits.inc();
                return Ok(Some(record));
            }
            self.inner.metrics.local_misses.inc();
        }
        let generation = self.inner.generation.load(Ordering::Acquire);
        let mut con = self.con();
        let cmd = redis::cmd("GET").arg(self.session_key(key)).clone();
        let bytes: Option<Vec<u8>> = self
            .bounded("get_session", cmd.query_async(&mut con))
            .await?;
        let Some(bytes) = bytes else {
            self.forget(key);
            return Ok(None);
        };
        match serde_json::from_slice::<SessionRecord>(&bytes) {
            Ok(record) => {
                self.remember(key, &record, generation);
                Ok(Some(record))
            }
            Err(e) => {
                // A value we cannot read is no session; the TTL removes it.
                tracing::warn!(backend = "redis", error = %e, "undecodable session record ignored");
                Ok(None)
            }
        }
    }

    pub(crate) async fn create_session(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        ttl: Duration,
        index: &str,
        index_ttl: Duration,
    ) -> Result<(), Error> {
        let generation = self.inner.generation.load(Ordering::Acquire);
        let value = serde_json::to_vec(record).map_err(|source| Error::Encode { source })?;
        let mut con = self.con();
        let mut invocation = self.inner.create_session.key(self.session_key(key));
        invocation
            .key(self.key(index))
            .arg(value)
            .arg(millis(ttl))
            .arg(hex(key))
            .arg(millis(index_ttl))
            .arg(unix_ms(now()))
            .arg(record.expires_ms);
        let _: u64 = self
            .bounded("create_session", invocation.invoke_async(&mut con))
            .await?;
        self.remember(key, record, generation);
        Ok(())
    }

    pub(crate) async fn refresh_session(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let generation = self.inner.generation.load(Ordering::Acquire);
        let value = serde_json::to_vec(record).map_err(|source| Error::Encode { source })?;
        let mut con = self.con();
        // XX: only while it exists, so a refresh racing a logout never resurrects the session.
        let cmd = redis::cmd("SET")
            .arg(self.session_key(key))
            .arg(value)
            .arg("XX")
            .arg("PX")
            .arg(millis(ttl))
            .clone();
        let ok: Option<String> = self
            .bounded("refresh_session", cmd.query_async(&mut con))
            .await?;
        if ok.is_some() {
            self.remember(key, record, generation);
        } else {
            self.forget(key);
        }
        Ok(ok.is_some())
    }

    pub(crate) async fn delete_session(
        &self,
        key: &SessionKey,
        index: Option<&str>,
    ) -> Result<bool, Error> {
        self.forget(key);
        let mut invocation = self.inner.delete_session.key(self.session_key(key));
        if let Some(index) = index {
            invocation.key(self.key(index));
        }
        invocation.arg(hex(key)).arg(&self.inner.channel);
        let mut con = self.con();
        let deleted: u64 = self
            .bounded("delete_session", invocation.invoke_async(&mut con))
            .await?;
        // Again, in case a concurrent load cached it between our first eviction and the DEL.
        self.forget(key);
        Ok(deleted > 0)
    }

    pub(crate) async fn ping(&self) -> Result<(), Error> {
        let mut con = self.con();
        let cmd = redis::cmd("PING").clone();
        let _: String = self.bounded("ping", cmd.query_async(&mut con)).await?;
        Ok(())
    }
}

/// The connection in use now (it is replaced after a `READONLY`).
fn current(manager: &RwLock<ConnectionManager>) -> ConnectionManager {
    manager
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// At most one `true` per interval: for logging and reconnecting that must not follow every
/// request.
struct Throttle(Mutex<Option<Instant>>);

impl Throttle {
    fn new() -> Self {
        Self(Mutex::new(None))
    }

    /// True, and the interval restarts, when `every` has passed since the last `true`.
    fn allow(&self, every: Duration) -> bool {
        let now = Instant::now();
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| now < at + every) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// Whether Redis answered with an error reply (it is up, and refused this command) rather
/// than not answering, or answering that it cannot serve yet (loading, no primary).
fn is_refusal(e: &RedisError) -> bool {
    match e.kind() {
        ErrorKind::Extension => true,
        ErrorKind::Server(kind) => !matches!(
            kind,
            ServerErrorKind::BusyLoading
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::TryAgain
        ),
        _ => false,
    }
}

/// Redis's `maxmemory-policy` when Redis may evict what samlgate wrote: a memory limit is set
/// and the policy is not `noeviction`. `None` otherwise, and when Redis does not say (managed
/// Redis services often refuse `CONFIG`).
async fn evicting_policy(con: &mut ConnectionManager) -> Option<String> {
    let config = |name: &'static str| redis::cmd("CONFIG").arg("GET").arg(name).clone();
    let limit: Vec<String> = config("maxmemory").query_async(con).await.ok()?;
    if limit.get(1).is_none_or(|bytes| bytes == "0") {
        return None;
    }
    let policy: Vec<String> = config("maxmemory-policy").query_async(con).await.ok()?;
    policy.get(1).filter(|p| *p != "noeviction").cloned()
}

/// The invalidation listener: a dedicated pub/sub connection, resubscribed after every loss.
/// Each message names a session key to evict from the in-process tier. On every
/// (re)subscription it also asks whether that Redis may evict keys.
async fn listen(
    client: Client,
    manager: Arc<RwLock<ConnectionManager>>,
    channel: String,
    local: Option<Cache<SessionKey, SessionRecord, KeyHash>>,
    subscribed: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
    connect_timeout: Duration,
) {
    let clear = || {
        if let Some(local) = &local {
            local.invalidate_all();
        }
    };
    let mut backoff = Duration::from_millis(50);
    let mut warned_policy = None;
    loop {
        let connected = tokio::time::timeout(connect_timeout, async {
            let (mut sink, stream) = client.get_async_pubsub().await?.split();
            sink.subscribe(&channel).await?;
            RedisResult::Ok((sink, stream))
        })
        .await;
        if let Ok(Ok((mut sink, mut stream))) = connected {
            backoff = Duration::from_millis(50);
            // Messages sent while we were not subscribed are lost: start from empty.
            generation.fetch_add(1, Ordering::AcqRel);
            clear();
            subscribed.store(true, Ordering::Release);
            tracing::info!(
                channel,
                "session invalidation listener subscribed: the local tier is in use"
            );
            // Once per (re)connection: the Redis that answers now may be another one.
            let mut con = current(&manager);
            if let Ok(Some(policy)) =
                tokio::time::timeout(connect_timeout, evicting_policy(&mut con)).await
                && warned_policy.as_ref() != Some(&policy)
            {
                tracing::warn!(
                    maxmemory_policy = %policy,
                    "Redis evicts keys when its maxmemory is reached: under memory pressure it may \
                     drop sessions and replay-cache entries (every key samlgate writes has a TTL, \
                     so volatile-* policies may pick them too); use maxmemory-policy noeviction"
                );
                warned_policy = Some(policy);
            }
            let mut ping = tokio::time::interval(PUBSUB_PING_EVERY);
            ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    msg = stream.next() => {
                        let Some(msg) = msg else { break };
                        // First the generation, so that a read in flight does not cache what
                        // this message destroys (see `remember`), then the entry itself.
                        generation.fetch_add(1, Ordering::AcqRel);
                        if let (Some(local), Ok(text)) = (&local, std::str::from_utf8(msg.get_payload_bytes()))
                            && let Some(key) = session_key_from_hex(text)
                        {
                            local.invalidate(&key);
                        }
                    }
                    _ = ping.tick() => {
                        let answered = tokio::time::timeout(connect_timeout, sink.ping::<redis::Value>()).await;
                        if !matches!(answered, Ok(Ok(_))) {
                            break;
                        }
                    }
                }
            }
            subscribed.store(false, Ordering::Release);
            generation.fetch_add(1, Ordering::AcqRel);
            clear();
            tracing::warn!(
                channel,
                "session invalidation listener lost its subscription: every session is read \
                 from Redis until it is back"
            );
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
