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

/// One index entry: a few members (one user's sessions) and when the entry lapses.
struct Members {
    set: Vec<Box<str>>,
    deadline: Instant,
}

/// The index: a plain map, not a second cache entry per session (moka's per-entry overhead
/// doubled the memory of a session). Members that are sessions leave it when the session
/// leaves the session cache (expired, evicted or deleted), through the eviction listener;
/// other entries lapse at their deadline when next touched.
type Indexes = Arc<std::sync::Mutex<std::collections::HashMap<Box<str>, Members>>>;

fn lock(
    indexes: &Indexes,
) -> std::sync::MutexGuard<'_, std::collections::HashMap<Box<str>, Members>> {
    indexes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    indexes: Indexes,
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
        let indexes: Indexes = Arc::default();
        let listener_indexes = indexes.clone();
        let sessions = Cache::builder()
            .max_capacity(max_entries)
            // LRU, not TinyLFU: a freshly created session must always be admitted.
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(AtDeadline)
            .eviction_listener(move |key: Arc<SessionKey>, stored: Stored, cause| {
                if cause != moka::notification::RemovalCause::Replaced {
                    let index = super::subject_index(&stored.record.identity.subject);
                    remove_member(&listener_indexes, &index, &hex(&key[..]));
                }
            })
            .build();
        Self {
            sessions,
            blobs: cache(max_entries),
            indexes,
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
        let mut map = lock(&self.indexes);
        let entry = map.entry(index.into()).or_insert_with(|| Members {
            set: Vec::new(),
            deadline: now,
        });
        if entry.deadline <= now {
            entry.set.clear();
        }
        if !entry.set.iter().any(|x| &**x == member) {
            entry.set.push(member.into());
        }
        entry.deadline = entry.deadline.max(now + ttl);
        Ok(())
    }

    pub(crate) async fn index_members(&self, index: &str) -> Result<Vec<String>, Error> {
        let now = Instant::now();
        let mut map = lock(&self.indexes);
        match map.get(index) {
            Some(m) if m.deadline > now => Ok(m.set.iter().map(|x| x.to_string()).collect()),
            Some(_) => {
                map.remove(index);
                Ok(Vec::new())
            }
            None => Ok(Vec::new()),
        }
    }

    pub(crate) async fn index_remove(&self, index: &str, member: &str) -> Result<(), Error> {
        remove_member(&self.indexes, index, member);
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

/// Removes `member` from `index`, and the entry when it is left empty or has lapsed.
fn remove_member(indexes: &Indexes, index: &str, member: &str) {
    let now = Instant::now();
    let mut map = lock(indexes);
    if let Some(m) = map.get_mut(index) {
        m.set.retain(|x| &**x != member);
        if m.set.is_empty() || m.deadline <= now {
            map.remove(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[tokio::test]
    async fn an_expired_session_leaves_the_index() {
        let store = MemoryStore::new(100, &SessionMetrics::default());
        let record = SessionRecord {
            identity: Arc::new(Identity {
                subject: "alice@example.com".into(),
                ..Identity::default()
            }),
            created_ms: 0,
            expires_ms: u64::MAX,
            idle_until_ms: u64::MAX,
        };
        let index = super::super::subject_index("alice@example.com");
        let (short, long) = ([1u8; 32], [2u8; 32]);
        store
            .create_session(
                &short,
                &record,
                Duration::from_millis(150),
                &index,
                Duration::from_secs(3600),
            )
            .await
            .unwrap();
        store
            .create_session(
                &long,
                &record,
                Duration::from_secs(3600),
                &index,
                Duration::from_secs(3600),
            )
            .await
            .unwrap();
        assert_eq!(store.index_members(&index).await.unwrap().len(), 2);
        // moka's timer wheel expires entries on a ~1 s granularity.
        tokio::time::sleep(Duration::from_millis(2300)).await;
        store.sessions.run_pending_tasks();
        assert_eq!(store.index_members(&index).await.unwrap(), vec![hex(&long)]);
        // Deleting the last session removes the index entry itself.
        store.delete_session(&long, None).await.unwrap();
        store.sessions.run_pending_tasks();
        assert!(store.index_members(&index).await.unwrap().is_empty());
        assert!(lock(&store.indexes).is_empty());
    }
}
