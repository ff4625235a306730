//! MemoryStore: the embedded session store on moka caches, bounded by `session.max_entries`,
//! with a deadline per entry. Everything it holds is lost when the process restarts, and it is
//! not shared between replicas (use the Redis store for that).

use std::sync::Arc;
use std::time::Duration;

use moka::ops::compute::{CompResult, Op};
use moka::policy::{EvictionPolicy, Expiry};
use moka::sync::Cache;
use tokio::time::Instant;

use super::Error;
use super::metrics::SessionMetrics;
use super::store::{Instruments, SessionKey, SessionRecord, hex};

/// A value with the instant it stops existing.
trait Deadline {
    fn deadline(&self) -> Instant;
}

/// Per-entry expiry at the value's own deadline. Deadlines are tokio instants so that tests
/// with paused time see entries vanish; `get` also checks the deadline, which keeps that exact.
struct AtDeadline;

impl<K, V: Deadline> Expiry<K, V> for AtDeadline {
    fn expire_after_create(&self, _: &K, value: &V, _: std::time::Instant) -> Option<Duration> {
        Some(value.deadline().saturating_duration_since(Instant::now()))
    }

    fn expire_after_update(
        &self,
        _: &K,
        value: &V,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.deadline().saturating_duration_since(Instant::now()))
    }
}

#[derive(Clone)]
struct Blob {
    bytes: Arc<[u8]>,
    deadline: Instant,
}

impl Deadline for Blob {
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

#[derive(Clone)]
struct Members {
    /// Few members per key (one user's sessions): a boxed slice is the smallest set.
    set: Arc<[Box<str>]>,
    deadline: Instant,
}

impl Deadline for Members {
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

#[derive(Clone)]
struct Stored {
    record: SessionRecord,
    deadline: Instant,
}

impl Deadline for Stored {
    fn deadline(&self) -> Instant {
        self.deadline
    }
}

fn cache<K, V>(max_entries: u64) -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Deadline + Clone + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(max_entries)
        // LRU, not TinyLFU: a freshly created session must always be admitted.
        .eviction_policy(EvictionPolicy::lru())
        .expire_after(AtDeadline)
        .build()
}

/// The embedded store. Clones share the same caches.
#[derive(Clone)]
pub struct MemoryStore {
    sessions: Cache<SessionKey, Stored>,
    blobs: Cache<String, Blob>,
    indexes: Cache<String, Members>,
    pub(crate) instruments: Instruments,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.sessions.entry_count())
            .finish_non_exhaustive()
    }
}

fn live<V: Deadline>(v: V) -> Option<V> {
    (v.deadline() > Instant::now()).then_some(v)
}

impl MemoryStore {
    /// An empty store keeping at most `max_entries` sessions (least recently used go first),
    /// and as many other entries (pending logins, replay cache, locks, index sets).
    pub fn new(max_entries: u64, metrics: &SessionMetrics) -> Self {
        Self {
            sessions: cache(max_entries),
            blobs: cache(max_entries),
            indexes: cache(max_entries),
            instruments: Instruments::new(metrics, "memory"),
        }
    }

    /// Sessions currently held (moka's count is eventually consistent).
    pub fn session_count(&self) -> u64 {
        self.sessions.run_pending_tasks();
        self.sessions.entry_count()
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.blobs.get(key).and_then(live).map(|b| b.bytes.to_vec()))
    }

    pub(crate) async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Error> {
        self.blobs.insert(
            key.to_string(),
            Blob {
                bytes: value.into(),
                deadline: Instant::now() + ttl,
            },
        );
        Ok(())
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<bool, Error> {
        Ok(self.blobs.remove(key).and_then(live).is_some())
    }

    pub(crate) async fn set_nx(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, Error> {
        let now = Instant::now();
        let result =
            self.blobs
                .entry(key.to_string())
                .and_compute_with(|existing| match existing {
                    Some(e) if e.value().deadline > now => Op::Nop,
                    _ => Op::Put(Blob {
                        bytes: value.into(),
                        deadline: now + ttl,
                    }),
                });
        Ok(matches!(
            result,
            CompResult::Inserted(_) | CompResult::ReplacedWith(_)
        ))
    }

    pub(crate) async fn getdel(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .blobs
            .remove(key)
            .and_then(live)
            .map(|b| b.bytes.to_vec()))
    }

    pub(crate) async fn delete_if_eq(&self, key: &str, value: &[u8]) -> Result<bool, Error> {
        let now = Instant::now();
        let result =
            self.blobs
                .entry(key.to_string())
                .and_compute_with(|existing| match existing {
                    Some(e) if e.value().deadline > now && &*e.value().bytes == value => Op::Remove,
                    _ => Op::Nop,
                });
        Ok(matches!(result, CompResult::Removed(_)))
    }

    pub(crate) async fn index_add(
        &self,
        index: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), Error> {
        let now = Instant::now();
        self.indexes
            .entry(index.to_string())
            .and_upsert_with(
                |existing| match existing.map(|e| e.into_value()).and_then(live) {
                    Some(m) if m.set.iter().any(|x| &**x == member) => Members {
                        set: m.set,
                        deadline: m.deadline.max(now + ttl),
                    },
                    Some(m) => Members {
                        set: m.set.iter().cloned().chain([member.into()]).collect(),
                        deadline: m.deadline.max(now + ttl),
                    },
                    None => Members {
                        set: Arc::from([Box::<str>::from(member)]),
                        deadline: now + ttl,
                    },
                },
            );
        Ok(())
    }

    pub(crate) async fn index_members(&self, index: &str) -> Result<Vec<String>, Error> {
        Ok(self
            .indexes
            .get(index)
            .and_then(live)
            .map(|m| m.set.iter().map(|x| x.to_string()).collect())
            .unwrap_or_default())
    }

    pub(crate) async fn index_remove(&self, index: &str, member: &str) -> Result<(), Error> {
        let now = Instant::now();
        self.indexes
            .entry(index.to_string())
            .and_compute_with(|existing| {
                let Some(m) = existing.map(|e| e.into_value()) else {
                    return Op::Nop;
                };
                if m.deadline <= now {
                    return Op::Remove;
                }
                if !m.set.iter().any(|x| &**x == member) {
                    return Op::Nop;
                }
                let set: Arc<[Box<str>]> =
                    m.set.iter().filter(|x| &***x != member).cloned().collect();
                if set.is_empty() {
                    Op::Remove
                } else {
                    Op::Put(Members {
                        set,
                        deadline: m.deadline,
                    })
                }
            });
        Ok(())
    }

    pub(crate) async fn get_session(
        &self,
        key: &SessionKey,
        _fresh: bool,
    ) -> Result<Option<SessionRecord>, Error> {
        Ok(self.sessions.get(key).and_then(live).map(|e| e.record))
    }

    pub(crate) async fn create_session(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        ttl: Duration,
        index: &str,
        index_ttl: Duration,
    ) -> Result<(), Error> {
        self.index_add(index, &hex(key), index_ttl).await?;
        self.sessions.insert(
            *key,
            Stored {
                record: record.clone(),
                deadline: Instant::now() + ttl,
            },
        );
        Ok(())
    }

    pub(crate) async fn refresh_session(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let now = Instant::now();
        let result = self
            .sessions
            .entry(*key)
            .and_compute_with(|existing| match existing {
                Some(e) if e.value().deadline > now => Op::Put(Stored {
                    record: record.clone(),
                    deadline: now + ttl,
                }),
                _ => Op::Nop,
            });
        Ok(matches!(result, CompResult::ReplacedWith(_)))
    }

    pub(crate) async fn delete_session(
        &self,
        key: &SessionKey,
        index: Option<&str>,
    ) -> Result<bool, Error> {
        let existed = self.sessions.remove(key).and_then(live).is_some();
        if let Some(index) = index {
            self.index_remove(index, &hex(key)).await?;
        }
        Ok(existed)
    }

    pub(crate) async fn ping(&self) -> Result<(), Error> {
        Ok(())
    }
}
