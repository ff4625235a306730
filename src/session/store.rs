//! SessionStore: a byte store with a TTL (get, put, delete, set-if-absent, get-and-delete,
//! compare-and-delete) plus a set index, with one closed set of backends. Sessions themselves
//! are kept decoded ([`SessionRecord`]) so the hot path never parses a value it has seen.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Error;
use super::cookie::ID_LEN;
use super::memory::MemoryStore;
use super::metrics::SessionMetrics;
use super::redis::RedisStore;
use crate::config::{SessionConfig, StoreKind};
use crate::identity::Identity;

/// The store key of a session: SHA-256 of its id, so that reading the store (a Redis replica,
/// a backup) never yields a value a browser could present.
pub type SessionKey = [u8; ID_LEN];

/// What the store keeps for one session. Times are Unix milliseconds so that replicas agree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Who is signed in.
    #[serde(
        rename = "i",
        serialize_with = "ser_identity",
        deserialize_with = "de_identity"
    )]
    pub identity: Arc<Identity>,
    /// When the session was created.
    #[serde(rename = "c")]
    pub created_ms: u64,
    /// Absolute end: `lifetime` after creation, capped by the IdP's SessionNotOnOrAfter.
    #[serde(rename = "e")]
    pub expires_ms: u64,
    /// Sliding end: last refresh plus `idle_timeout`, never past `expires_ms`.
    #[serde(rename = "u")]
    pub idle_until_ms: u64,
}

fn ser_identity<S: Serializer>(identity: &Arc<Identity>, s: S) -> Result<S::Ok, S::Error> {
    identity.as_ref().serialize(s)
}

fn de_identity<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Identity>, D::Error> {
    Identity::deserialize(d).map(Arc::new)
}

impl SessionRecord {
    /// How long the store keeps it: until the earlier of both deadlines.
    pub fn ttl(&self, now_ms: u64) -> Duration {
        Duration::from_millis(
            self.idle_until_ms
                .min(self.expires_ms)
                .saturating_sub(now_ms),
        )
    }
}

/// The current wall-clock time. It follows tokio's clock, so tests that pause and advance
/// time see sessions expire; outside paused tests it is `SystemTime::now()`.
pub(crate) fn now() -> SystemTime {
    let tokio_now = tokio::time::Instant::now().into_std();
    let std_now = std::time::Instant::now();
    SystemTime::now() + tokio_now.saturating_duration_since(std_now)
}

/// Unix milliseconds of `t` (0 before the epoch).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The `SystemTime` of Unix milliseconds.
pub(crate) fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// How a session is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// The Redis store may answer from its in-process tier (the request path).
    Cached,
    /// From the store itself, bypassing the in-process tier: when an older copy there could
    /// decide wrongly (an idle deadline another replica has since pushed back).
    Fresh,
}

/// Latency and error instruments of one backend, looked up once.
#[derive(Clone, Debug)]
pub(crate) struct Instruments {
    pub(crate) latency: Histogram,
    pub(crate) errors: Counter,
}

impl Instruments {
    pub(crate) fn new(metrics: &SessionMetrics, backend: &'static str) -> Self {
        Self {
            latency: metrics.latency(backend),
            errors: metrics.errors(backend),
        }
    }
}

/// The session store: embedded (lost on restart, one process) or Redis (shared by replicas).
/// Clones share the same store.
#[derive(Clone, Debug)]
pub enum SessionStore {
    /// Embedded moka caches, bounded by `session.max_entries`.
    Memory(MemoryStore),
    /// Redis with a short in-process tier and pub/sub invalidation.
    Redis(RedisStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {{
        let start = std::time::Instant::now();
        let result = match $self {
            SessionStore::Memory($s) => $call.await,
            SessionStore::Redis($s) => $call.await,
        };
        let instruments = $self.instruments();
        instruments.latency.observe(start.elapsed().as_secs_f64());
        if result.is_err() {
            instruments.errors.inc();
        }
        result
    }};
}

impl SessionStore {
    /// The store `cfg` names; Redis connects lazily (start-up works while Redis is down).
    pub async fn from_config(cfg: &SessionConfig, metrics: &SessionMetrics) -> Result<Self, Error> {
        Ok(match cfg.store {
            StoreKind::Memory => Self::Memory(MemoryStore::new(cfg.max_entries, metrics)),
            StoreKind::Redis => Self::Redis(RedisStore::connect(cfg, metrics).await?),
        })
    }

    /// `memory` or `redis` (the metrics label).
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }

    fn instruments(&self) -> &Instruments {
        match self {
            Self::Memory(s) => &s.instruments,
            Self::Redis(s) => &s.instruments,
        }
    }

    /// The value at `key`, if present and not expired.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        dispatch!(self, s => s.get(key))
    }

    /// Stores `value` at `key` for `ttl` (one command: value and TTL together).
    pub async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Error> {
        dispatch!(self, s => s.put(key, value, ttl))
    }

    /// Removes `key`; true when something was removed.
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        dispatch!(self, s => s.delete(key))
    }

    /// Stores `value` at `key` for `ttl` only when `key` is absent; true when stored.
    pub async fn set_nx(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, Error> {
        dispatch!(self, s => s.set_nx(key, value, ttl))
    }

    /// Removes `key` and returns what it held, atomically (single use).
    pub async fn getdel(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        dispatch!(self, s => s.getdel(key))
    }

    /// Removes `key` only while it holds `value`, atomically (lock release); true when removed.
    pub async fn delete_if_eq(&self, key: &str, value: &[u8]) -> Result<bool, Error> {
        dispatch!(self, s => s.delete_if_eq(key, value))
    }

    /// Adds `member` to the set at `index`, which then lives at least `ttl`.
    pub async fn index_add(&self, index: &str, member: &str, ttl: Duration) -> Result<(), Error> {
        dispatch!(self, s => s.index_add(index, member, ttl))
    }

    /// The members of the set at `index` (empty when absent).
    pub async fn index_members(&self, index: &str) -> Result<Vec<String>, Error> {
        dispatch!(self, s => s.index_members(index))
    }

    /// Removes `member` from the set at `index`.
    pub async fn index_remove(&self, index: &str, member: &str) -> Result<(), Error> {
        dispatch!(self, s => s.index_remove(index, member))
    }

    /// The session at `key`, read as `read` says.
    pub async fn get_session(
        &self,
        key: &SessionKey,
        read: Read,
    ) -> Result<Option<SessionRecord>, Error> {
        dispatch!(self, s => s.get_session(key, read))
    }

    /// Stores a new session for `ttl` and adds its key (hex) to the set at `index`.
    pub async fn create_session(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        ttl: Duration,
        index: &str,
        index_ttl: Duration,
    ) -> Result<(), Error> {
        dispatch!(self, s => s.create_session(key, record, ttl, index, index_ttl))
    }

    /// Replaces a session that still exists (never resurrects a destroyed one); true when it
    /// existed.
    pub async fn refresh_session(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<bool, Error> {
        dispatch!(self, s => s.refresh_session(key, record, ttl))
    }

    /// Removes a session everywhere (Redis: every replica's in-process tier too, through
    /// pub/sub) and its key from the set at `index`; true when it existed.
    pub async fn delete_session(
        &self,
        key: &SessionKey,
        index: Option<&str>,
    ) -> Result<bool, Error> {
        dispatch!(self, s => s.delete_session(key, index))
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> Result<(), Error> {
        dispatch!(self, s => s.ping())
    }
}

/// Lower-case hex of bytes. It makes every request's id, so it is written into a byte buffer:
/// pushing `char`s one at a time took twice the instructions (callgrind).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = vec![0u8; bytes.len() * 2];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    // Hex digits are ASCII, so this is always `Ok`.
    String::from_utf8(out).unwrap_or_default()
}

/// The session key whose hex is `s`.
pub(crate) fn session_key_from_hex(s: &str) -> Option<SessionKey> {
    let bytes = s.as_bytes();
    if bytes.len() != ID_LEN * 2 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut key = [0u8; ID_LEN];
    for (i, k) in key.iter_mut().enumerate() {
        *k = (nibble(bytes[2 * i])? << 4) | nibble(bytes[2 * i + 1])?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_two_digits_per_byte() {
        let bytes: Vec<u8> = (0..=255).collect();
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&bytes), expected);
        assert_eq!(hex(&[]), "");
        let key = [0xab; 32];
        assert_eq!(session_key_from_hex(&hex(&key)), Some(key));
    }
}
