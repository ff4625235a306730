//! MemoryStore: the embedded session store on moka caches, bounded by `session.max_entries`,
//! with a deadline per entry. Everything it holds is lost when the process restarts, and it is
//! not shared between replicas (use the Redis store for that).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use moka::ops::compute::{CompResult, Op};
use moka::policy::{EvictionPolicy, Expiry};
use moka::sync::Cache;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

use super::Error;
use super::metrics::SessionMetrics;
use super::store::{Instruments, Read, SessionKey, SessionRecord, hex, session_key_from_hex};
use crate::keyhash::KeyHash;

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

/// The index entries of sessions: (the index's [`IndexId`], the session key), one ordered set
/// for all. It allocates nothing per entry and never doubles a table (a map of sets cost about
/// 350 bytes a session in RSS, this about 70). A session leaves it when it leaves the session
/// cache (expired, evicted or deleted), through the eviction listener.
type SessionIndex = Arc<std::sync::Mutex<BTreeSet<(IndexId, SessionKey)>>>;

/// An index name as 128 bits of its SHA-256.
type IndexId = [u8; 16];

fn index_id(index: &str) -> IndexId {
    let digest = Sha256::digest(index.as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One index entry: a few members (one user's sessions) and when the entry lapses.
struct Members {
    set: Vec<Box<str>>,
    deadline: Instant,
}

/// Index entries added by [`SessionStore::index_add`](super::SessionStore::index_add) other
/// than sessions': a plain map; entries lapse at their deadline when next touched.
type Indexes = Arc<std::sync::Mutex<std::collections::HashMap<Box<str>, Members>>>;

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

/// Most bytes the pending sign-ins and sign-outs of the memory store take (64 MiB): about
/// 200,000 sign-ins in progress with short return paths, 28,000 with the longest.
pub const MAX_PENDING_BYTES: u64 = 64 << 20;
/// What an entry costs beyond its key and value (moka's node, the `Arc`, the deadline),
/// roughly, for the weigher.
const ENTRY_OVERHEAD: usize = 128;

/// A bounded cache whose entries vanish at their own deadline.
fn cache<K, V>(max_entries: u64) -> moka::sync::CacheBuilder<K, V, Cache<K, V>>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Deadline + Clone + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(max_entries)
        // LRU, not TinyLFU: a freshly created session must always be admitted.
        .eviction_policy(EvictionPolicy::lru())
        .expire_after(AtDeadline)
}

/// The embedded store. Clones share the same caches.
#[derive(Clone)]
pub struct MemoryStore {
    sessions: Cache<SessionKey, Stored, KeyHash>,
    /// Pending sign-ins and sign-outs ([`super::is_pending_key`]): anyone can fill this one.
    pending: Cache<String, Blob>,
    /// Everything else: the replay cache, locks, and other keys.
    blobs: Cache<String, Blob>,
    indexes: Indexes,
    session_index: SessionIndex,
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
    /// pending sign-ins and sign-outs up to [`MAX_PENDING_BYTES`] (oldest go first), and
    /// `max_entries` other entries (replay cache, locks, index sets).
    pub fn new(max_entries: u64, metrics: &SessionMetrics) -> Self {
        Self::with_pending_bytes(max_entries, MAX_PENDING_BYTES, metrics)
    }

    /// The same, with pending sign-ins and sign-outs held to `pending_bytes` (their keys,
    /// values and bookkeeping) rather than [`MAX_PENDING_BYTES`].
    fn with_pending_bytes(max_entries: u64, pending_bytes: u64, metrics: &SessionMetrics) -> Self {
        let session_index: SessionIndex = Arc::default();
        let listener_index = session_index.clone();
        let evicted = metrics.evicted.clone();
        let warned = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sessions = cache(max_entries)
            .eviction_listener(move |key: Arc<SessionKey>, stored: Stored, cause| {
                use moka::notification::RemovalCause;
                if cause == RemovalCause::Size {
                    evicted.inc();
                    if !warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::warn!(
                            max_entries,
                            "the memory store is full: live sessions are being pushed out \
                             (least recently used first) and their users must sign in again; \
                             raise session.max_entries or use the Redis store \
                             (samlgate_sessions_evicted_total counts them)"
                        );
                    }
                }
                if cause != RemovalCause::Replaced {
                    let index = index_id(&super::subject_index(&stored.record.identity.subject));
                    lock(&listener_index).remove(&(index, *key));
                }
            })
            .build_with_hasher(KeyHash);
        Self {
            sessions,
            // Weighed in bytes: anyone can add one with a GET (with a return path of up to
            // 2 KiB), so a count would let a flood take gigabytes; past the cap, the oldest go.
            pending: cache(pending_bytes)
                .weigher(|key: &String, blob: &Blob| {
                    u32::try_from(key.len() + blob.bytes.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
                })
                .build(),
            blobs: cache(max_entries).build(),
            indexes: Arc::default(),
            session_index,
            instruments: Instruments::new(metrics, "memory"),
        }
    }

    /// Sessions currently held (moka's count is eventually consistent).
    pub fn session_count(&self) -> u64 {
        self.sessions.run_pending_tasks();
        self.sessions.entry_count()
    }

    /// The cache that holds `key`.
    fn cache_for(&self, key: &str) -> &Cache<String, Blob> {
        if super::is_pending_key(key) {
            &self.pending
        } else {
            &self.blobs
        }
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .cache_for(key)
            .get(key)
            .and_then(live)
            .map(|b| b.bytes.to_vec()))
    }

    pub(crate) async fn put(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Error> {
        self.cache_for(key).insert(
            key.to_string(),
            Blob {
                bytes: value.into(),
                deadline: Instant::now() + ttl,
            },
        );
        Ok(())
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<bool, Error> {
        Ok(self.cache_for(key).remove(key).and_then(live).is_some())
    }

    pub(crate) async fn set_nx(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, Error> {
        let now = Instant::now();
        let result = self
            .cache_for(key)
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
            .cache_for(key)
            .remove(key)
            .and_then(live)
            .map(|b| b.bytes.to_vec()))
    }

    pub(crate) async fn delete_if_eq(&self, key: &str, value: &[u8]) -> Result<bool, Error> {
        let now = Instant::now();
        let result = self
            .cache_for(key)
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
        let mut members = Vec::new();
        {
            let mut map = lock(&self.indexes);
            match map.get(index) {
                Some(m) if m.deadline > now => members.extend(m.set.iter().map(|x| x.to_string())),
                Some(_) => {
                    map.remove(index);
                }
                None => {}
            }
        }
        let id = index_id(index);
        let sessions = lock(&self.session_index)
            .range((id, [0; 32])..=(id, [0xff; 32]))
            .map(|(_, key)| hex(key))
            .collect::<Vec<_>>();
        for key in sessions {
            if !members.contains(&key) {
                members.push(key);
            }
        }
        Ok(members)
    }

    pub(crate) async fn index_remove(&self, index: &str, member: &str) -> Result<(), Error> {
        remove_member(&self.indexes, index, member);
        if let Some(key) = session_key_from_hex(member) {
            lock(&self.session_index).remove(&(index_id(index), key));
        }
        Ok(())
    }

    pub(crate) async fn get_session(
        &self,
        key: &SessionKey,
        _read: Read,
    ) -> Result<Option<SessionRecord>, Error> {
        match self.sessions.get(key) {
            Some(stored) if stored.deadline > Instant::now() => Ok(Some(stored.record)),
            // Past its deadline but not yet swept by moka's timer wheel: gone now, not only
            // refused (the eviction listener takes it out of the index too).
            Some(_) => {
                self.sessions.invalidate(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    pub(crate) async fn create_session(
        &self,
        key: &SessionKey,
        record: &SessionRecord,
        ttl: Duration,
        index: &str,
        // A session's index entry lives exactly as long as the session (the eviction listener
        // removes it); the index TTL, the session lifetime, would never cut it shorter.
        _index_ttl: Duration,
    ) -> Result<(), Error> {
        lock(&self.session_index).insert((index_id(index), *key));
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
            lock(&self.session_index).remove(&(index_id(index), *key));
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
    async fn pending_sign_ins_are_held_to_their_bytes_and_the_oldest_go() {
        // A flood of sign-in starts with long return paths: 1,000 of ~1.2 KiB against 100 kB.
        let store = MemoryStore::with_pending_bytes(10_000, 100_000, &SessionMetrics::default());
        store
            .set_nx("claim:response-1", b"1", Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let value = vec![b'x'; 1024];
        for i in 0..1_000 {
            store
                .put(&format!("login:{i:06}"), &value, Duration::from_secs(600))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        store.pending.run_pending_tasks();
        assert!(
            store.pending.weighted_size() <= 100_000,
            "{} bytes held",
            store.pending.weighted_size()
        );
        let held = (0..1_000)
            .filter(|i| store.pending.contains_key(&format!("login:{i:06}")))
            .count();
        assert!((50..=100).contains(&held), "{held} held");
        assert!(
            store.pending.contains_key("login:000999"),
            "the newest went"
        );
        assert!(
            !store.pending.contains_key("login:000000"),
            "the oldest stayed"
        );
        // The replay cache is out of the flood's reach.
        assert!(
            !store
                .set_nx("claim:response-1", b"1", Duration::from_secs(60))
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        );
    }

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
        let (short, long): (SessionKey, SessionKey) = ([1u8; 32], [2u8; 32]);
        let create = |key: SessionKey, ttl_ms: u64| {
            let (store, record, index) = (&store, &record, &index);
            async move {
                let ttl = Duration::from_millis(ttl_ms);
                store
                    .create_session(&key, record, ttl, index, Duration::from_secs(3600))
                    .await
                    .unwrap();
            }
        };
        create(short, 150).await;
        create(long, 3_600_000).await;
        assert_eq!(store.index_members(&index).await.unwrap().len(), 2);
        // moka's timer wheel expires entries on a ~1 s granularity.
        tokio::time::sleep(Duration::from_millis(2300)).await;
        store.sessions.run_pending_tasks();
        assert_eq!(store.index_members(&index).await.unwrap(), vec![hex(&long)]);
        // A member removed by name leaves; the session itself stays.
        store.index_remove(&index, &hex(&long)).await.unwrap();
        assert!(store.index_members(&index).await.unwrap().is_empty());
        assert!(
            store
                .get_session(&long, Read::Cached)
                .await
                .unwrap()
                .is_some()
        );
        create(long, 3_600_000).await;
        // Deleting the last session removes the index entry itself.
        store.delete_session(&long, None).await.unwrap();
        store.sessions.run_pending_tasks();
        assert!(store.index_members(&index).await.unwrap().is_empty());
        assert!(lock(&store.session_index).is_empty());
    }
}
