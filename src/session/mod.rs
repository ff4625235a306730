//! Sessions: who is signed in and until when, the cookie that names the session, pending
//! logins, the assertion replay cache and a cross-replica lock — all kept in a
//! [`SessionStore`] (embedded moka by default, Redis when replicas share).
//!
//! A request's cookie is verified (HMAC, constant time) before the store is asked, so a
//! forged, garbled or truncated cookie never costs a lookup, and an id is only ever one this
//! gateway generated and stored (no fixation: the client cannot choose it). A session ends at
//! the first of: `lifetime` after login, the IdP's SessionNotOnOrAfter, `idle_timeout` after
//! its last refresh. The idle deadline slides at most once per [`Sessions::refresh_interval`],
//! so a busy user costs a store write per interval, not per request. Every deadline is also
//! the store entry's TTL: an expired session is gone, not merely refused.

mod cookie;
mod memory;
mod metrics;
mod redis;
mod store;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::SessionConfig;
use crate::identity::Identity;
use cookie::{CookieCodec, ID_LEN};

pub use memory::MemoryStore;
pub use metrics::{BackendLabels, SessionMetrics};
pub use redis::RedisStore;
pub(crate) use store::hex;
pub use store::{Read, SessionKey, SessionRecord, SessionStore};

/// Why a store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreFault {
    /// No answer within `session.operation_timeout`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or the connection failed.
    #[error(transparent)]
    Redis(#[from] ::redis::RedisError),
}

/// What can go wrong with sessions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store is down or slower than `session.operation_timeout`: the app answers 503.
    #[error("session store ({backend}) unavailable during {operation}")]
    Unavailable {
        /// `redis` (the memory store never fails).
        backend: &'static str,
        /// The store operation that failed.
        operation: &'static str,
        /// Timeout or Redis error.
        #[source]
        fault: StoreFault,
    },
    /// `session.redis_url` is not a URL the redis client accepts (the URL is never echoed).
    #[error("session.redis_url is not usable")]
    InvalidRedisUrl {
        /// The client's complaint.
        #[source]
        source: ::redis::RedisError,
    },
    /// `session.redis_ca_file` could not be read.
    #[error("session.redis_ca_file {}: {reason}", path.display())]
    RedisCaFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// A value could not be serialised.
    #[error("session value could not be encoded")]
    Encode {
        /// serde_json's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// `create` was asked for a session whose IdP deadline (SessionNotOnOrAfter) has passed.
    #[error("the IdP's SessionNotOnOrAfter has already passed")]
    AlreadyExpired,
}

impl Error {
    /// Whether this is a store outage (503) rather than a bug or a refused login.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// A session id: 256 random bits. Its `Debug` prints a fingerprint, never the id.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId {
    raw: [u8; ID_LEN],
    key: SessionKey,
}

impl SessionId {
    fn from_raw(raw: [u8; ID_LEN]) -> Self {
        let key: SessionKey = Sha256::digest(raw).into();
        Self { raw, key }
    }

    fn random() -> Self {
        let mut raw = [0u8; ID_LEN];
        rand::rng().fill_bytes(&mut raw);
        Self::from_raw(raw)
    }

    /// The store key (SHA-256 of the id).
    pub fn key(&self) -> &SessionKey {
        &self.key
    }

    /// A short, non-secret name for logs and the JWT `sid` claim: the first 16 hex digits of
    /// the store key. It cannot be turned back into a cookie.
    pub fn fingerprint(&self) -> String {
        store::hex(&self.key[..8])
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionId({})", self.fingerprint())
    }
}

/// A signed-in session, as loaded or created.
#[derive(Clone, Debug)]
pub struct Session {
    /// Which session (Debug prints a fingerprint only).
    pub id: SessionId,
    /// Who is signed in.
    pub identity: Arc<Identity>,
    /// When the user logged in.
    pub created_at: SystemTime,
    /// Absolute end (lifetime, capped by the IdP's SessionNotOnOrAfter).
    pub expires_at: SystemTime,
    /// When it ends if the user stays idle.
    pub idle_expires_at: SystemTime,
}

impl Session {
    fn from_record(id: SessionId, record: &SessionRecord) -> Self {
        Self {
            id,
            identity: record.identity.clone(),
            created_at: store::from_unix_ms(record.created_ms),
            expires_at: store::from_unix_ms(record.expires_ms),
            idle_expires_at: store::from_unix_ms(record.idle_until_ms),
        }
    }
}

/// A login sent to the IdP and not yet answered, keyed by its RelayState token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogin {
    /// The AuthnRequest ID the response must answer (InResponseTo).
    pub request_id: String,
    /// Same-origin path to land on afterwards.
    pub return_to: String,
    /// Hash of the browser-binding cookie value.
    pub binding: String,
}

/// A LogoutRequest we sent to the IdP and whose LogoutResponse has not arrived, keyed by
/// its RelayState token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogout {
    /// The LogoutRequest ID the LogoutResponse must answer (InResponseTo).
    pub request_id: String,
}

/// Proof of holding a lock; give it back to [`Sessions::unlock`].
#[derive(Clone, PartialEq, Eq)]
pub struct LockToken(String);

impl std::fmt::Debug for LockToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockToken(..)")
    }
}

/// Characters of a RelayState token: base64url of 32 random bytes.
const TOKEN_LEN: usize = 43;

/// The key space of pending sign-ins (`login:<token>`).
const LOGIN_SPACE: &str = "login";
/// The key space of pending sign-outs (`logout:<token>`).
const LOGOUT_SPACE: &str = "logout";

/// Whether `key` is a pending sign-in or sign-out: the entries anyone can make the gateway
/// keep, one per unauthenticated request. The memory store keeps them in a cache of their
/// own, so that a flood of them can push out only their own kind, never the replay cache or
/// a lock, which only a verified response or a signed-in user makes.
pub(crate) fn is_pending_key(key: &str) -> bool {
    key.split_once(':')
        .is_some_and(|(space, _)| space == LOGIN_SPACE || space == LOGOUT_SPACE)
}

pub(crate) fn random_token<const N: usize>() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn digest_hex(label: &str, value: &str) -> String {
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    h.update([0]);
    h.update(value.as_bytes());
    store::hex(&h.finalize())
}

/// Sessions over a [`SessionStore`]: cheap to clone (one `Arc`).
#[derive(Clone, Debug)]
pub struct Sessions {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: SessionStore,
    cookie: CookieCodec,
    lifetime: Duration,
    idle_timeout: Duration,
    refresh_interval: Duration,
    metrics: SessionMetrics,
}

impl Sessions {
    /// Builds the store `cfg` names (Redis: connects lazily, reconnects by itself, starts the
    /// invalidation listener). `public_https` selects `Secure` and the `__Host-` prefix.
    pub async fn new(cfg: &SessionConfig, public_https: bool) -> Result<Sessions, Error> {
        let metrics = SessionMetrics::default();
        let store = SessionStore::from_config(cfg, &metrics).await?;
        Ok(Self::with_store(cfg, public_https, store, metrics))
    }

    /// Sessions over an existing store (tests, benches); `metrics` should be the ones the
    /// store was built with.
    pub fn with_store(
        cfg: &SessionConfig,
        public_https: bool,
        store: SessionStore,
        metrics: SessionMetrics,
    ) -> Sessions {
        let cookie = CookieCodec::new(
            &cfg.cookie_name,
            &cfg.secret,
            &cfg.previous_secrets,
            &cfg.audience,
            public_https,
        );
        Sessions {
            inner: Arc::new(Inner {
                store,
                cookie,
                lifetime: cfg.lifetime,
                idle_timeout: cfg.idle_timeout,
                refresh_interval: (cfg.idle_timeout / 10).min(Duration::from_secs(60)),
                metrics,
            }),
        }
    }

    /// Adds the session metrics to `registry`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        self.inner.metrics.register(registry);
    }

    /// The metrics (shared with the registry once registered).
    pub fn metrics(&self) -> &SessionMetrics {
        &self.inner.metrics
    }

    /// The store underneath.
    pub fn store(&self) -> &SessionStore {
        &self.inner.store
    }

    /// The session cookie's name: `__Host-<cookie_name>` on https, else `<cookie_name>`.
    pub fn cookie_name(&self) -> &str {
        self.inner.cookie.name()
    }

    /// How often, at most, a session's idle deadline is pushed back (a store write).
    pub fn refresh_interval(&self) -> Duration {
        self.inner.refresh_interval
    }

    /// The session named by a valid cookie among all `Cookie` headers, if it exists and has
    /// not expired. Cookies whose HMAC does not verify are ignored without a store lookup.
    pub async fn load(&self, headers: &http::HeaderMap) -> Result<Option<Session>, Error> {
        for raw in self.inner.cookie.verified_ids(headers) {
            if let Some(session) = self.load_id(SessionId::from_raw(raw)).await? {
                return Ok(Some(session));
            }
        }
        Ok(None)
    }

    async fn load_id(&self, id: SessionId) -> Result<Option<Session>, Error> {
        let store = &self.inner.store;
        let now = store::unix_ms(store::now());
        let Some(mut record) = store.get_session(&id.key, Read::Cached).await? else {
            return Ok(None);
        };
        if now >= record.idle_until_ms && now < record.expires_ms {
            // The in-process tier may hold an older idle deadline than another replica wrote.
            let Some(fresh) = store.get_session(&id.key, Read::Fresh).await? else {
                return Ok(None);
            };
            record = fresh;
        }
        if now >= record.expires_ms || now >= record.idle_until_ms {
            let index = subject_index(&record.identity.subject);
            if store.delete_session(&id.key, Some(&index)).await? {
                self.inner.metrics.destroyed.inc();
            }
            return Ok(None);
        }
        let idle_ms = millis(self.inner.idle_timeout);
        let last_refresh = record.idle_until_ms.saturating_sub(idle_ms);
        if record.idle_until_ms < record.expires_ms
            && now.saturating_sub(last_refresh) >= millis(self.inner.refresh_interval)
        {
            let refreshed = SessionRecord {
                idle_until_ms: now.saturating_add(idle_ms).min(record.expires_ms),
                ..record.clone()
            };
            match store
                .refresh_session(&id.key, &refreshed, refreshed.ttl(now))
                .await
            {
                Ok(true) => record = refreshed,
                // Destroyed meanwhile (logout elsewhere): no session.
                Ok(false) => return Ok(None),
                // The session is valid; failing to extend it only shortens it. The store's
                // state change is logged by the store.
                Err(_) => {}
            }
        }
        Ok(Some(Session::from_record(id, &record)))
    }

    /// Creates a session for `identity` with a fresh random id, and the `Set-Cookie` value
    /// that carries it. `idp_not_on_or_after` (SessionNotOnOrAfter) caps its lifetime.
    pub async fn create(
        &self,
        identity: Identity,
        idp_not_on_or_after: Option<SystemTime>,
    ) -> Result<(Session, http::HeaderValue), Error> {
        let now_t = store::now();
        let now = store::unix_ms(now_t);
        let mut expires = now.saturating_add(millis(self.inner.lifetime));
        if let Some(cap) = idp_not_on_or_after {
            expires = expires.min(store::unix_ms(cap));
        }
        if expires <= now {
            return Err(Error::AlreadyExpired);
        }
        let record = SessionRecord {
            identity: Arc::new(identity.interned()),
            created_ms: now,
            expires_ms: expires,
            idle_until_ms: now
                .saturating_add(millis(self.inner.idle_timeout))
                .min(expires),
        };
        let id = SessionId::random();
        let index = subject_index(&record.identity.subject);
        self.inner
            .store
            .create_session(
                &id.key,
                &record,
                record.ttl(now),
                &index,
                self.inner.lifetime,
            )
            .await?;
        self.inner.metrics.created.inc();
        let max_age = (expires - now).div_ceil(1000);
        let set_cookie = self.inner.cookie.set_cookie(&id.raw, max_age);
        Ok((Session::from_record(id, &record), set_cookie))
    }

    /// Ends `session` everywhere (other replicas drop their cached copy through pub/sub) and
    /// returns the `Set-Cookie` value that clears the cookie.
    pub async fn destroy(&self, session: &Session) -> Result<http::HeaderValue, Error> {
        let index = subject_index(&session.identity.subject);
        if self
            .inner
            .store
            .delete_session(&session.id.key, Some(&index))
            .await?
        {
            self.inner.metrics.destroyed.inc();
        }
        Ok(self.removal_cookie())
    }

    /// IdP-initiated logout: ends every session of NameID `name_id` (only those with
    /// `session_index` when given, SAML core §3.7.1). Returns how many ended.
    pub async fn destroy_by_subject(
        &self,
        name_id: &str,
        session_index: Option<&str>,
    ) -> Result<usize, Error> {
        let store = &self.inner.store;
        let index = subject_index(name_id);
        let mut ended = 0;
        for member in store.index_members(&index).await? {
            let Some(key) = store::session_key_from_hex(&member) else {
                store.index_remove(&index, &member).await?;
                continue;
            };
            let Some(record) = store.get_session(&key, Read::Fresh).await? else {
                store.index_remove(&index, &member).await?;
                continue;
            };
            if *record.identity.subject != *name_id
                || session_index
                    .is_some_and(|si| record.identity.session_index.as_deref() != Some(si))
            {
                continue;
            }
            if store.delete_session(&key, Some(&index)).await? {
                self.inner.metrics.destroyed.inc();
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// Keeps `pending` for `ttl` under a new random RelayState token (256 bits, base64url).
    pub async fn begin_login(&self, pending: PendingLogin, ttl: Duration) -> Result<String, Error> {
        self.begin(LOGIN_SPACE, &pending, ttl).await
    }

    /// The pending login of `token`, removed as it is read: a second call gets `None`, on any
    /// replica. Tokens of the wrong shape are refused without a lookup.
    pub async fn take_login(&self, token: &str) -> Result<Option<PendingLogin>, Error> {
        self.take(LOGIN_SPACE, token).await
    }

    /// Keeps `pending` for `ttl` under a new random RelayState token, like
    /// [`Sessions::begin_login`] but in its own key space.
    pub async fn begin_logout(
        &self,
        pending: PendingLogout,
        ttl: Duration,
    ) -> Result<String, Error> {
        self.begin(LOGOUT_SPACE, &pending, ttl).await
    }

    /// The pending logout of `token`, removed as it is read (single use, any replica).
    pub async fn take_logout(&self, token: &str) -> Result<Option<PendingLogout>, Error> {
        self.take(LOGOUT_SPACE, token).await
    }

    /// Keeps `value` under `<space>:<new token>` for `ttl` and returns the token.
    async fn begin<T: Serialize>(
        &self,
        space: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<String, Error> {
        let token = random_token::<32>();
        let bytes = serde_json::to_vec(value).map_err(|source| Error::Encode { source })?;
        self.inner
            .store
            .put(&format!("{space}:{token}"), &bytes, ttl)
            .await?;
        Ok(token)
    }

    /// The value under `<space>:<token>`, removed as it is read; a malformed token is refused
    /// without a lookup.
    async fn take<T: serde::de::DeserializeOwned>(
        &self,
        space: &str,
        token: &str,
    ) -> Result<Option<T>, Error> {
        if !well_formed_token(token) {
            return Ok(None);
        }
        let Some(bytes) = self.inner.store.getdel(&format!("{space}:{token}")).await? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice(&bytes).ok())
    }

    /// The replay cache: true the first time `key` is claimed within `ttl`, false after, on
    /// any replica.
    pub async fn claim_once(&self, key: &str, ttl: Duration) -> Result<bool, Error> {
        self.inner
            .store
            .set_nx(&format!("once:{}", digest_hex("once", key)), b"1", ttl)
            .await
    }

    /// Gives back a claim of [`Sessions::claim_once`], so that the same key can be claimed
    /// again (the message it stood for was not fully acted on and may be retried).
    pub async fn release_claim(&self, key: &str) -> Result<(), Error> {
        self.inner
            .store
            .delete(&format!("once:{}", digest_hex("once", key)))
            .await
            .map(|_| ())
    }

    /// Takes the lock `name` for at most `ttl` unless someone (any replica) holds it.
    pub async fn try_lock(&self, name: &str, ttl: Duration) -> Result<Option<LockToken>, Error> {
        let token = random_token::<16>();
        let key = format!("lock:{}", digest_hex("lock", name));
        Ok(self
            .inner
            .store
            .set_nx(&key, token.as_bytes(), ttl)
            .await?
            .then_some(LockToken(token)))
    }

    /// Releases the lock `name` if `token` still holds it (a lock that expired and was taken
    /// by someone else is left alone).
    pub async fn unlock(&self, name: &str, token: LockToken) -> Result<(), Error> {
        let key = format!("lock:{}", digest_hex("lock", name));
        self.inner
            .store
            .delete_if_eq(&key, token.0.as_bytes())
            .await?;
        Ok(())
    }

    /// Whether the store answers within the operation timeout (for `/readyz`).
    pub async fn ready(&self) -> bool {
        self.inner.store.ping().await.is_ok()
    }

    /// `Set-Cookie` value that removes the session cookie.
    pub fn removal_cookie(&self) -> http::HeaderValue {
        self.inner.cookie.removal()
    }
}

/// A RelayState token of the shape `random_token::<32>` makes.
fn well_formed_token(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The index key of a NameID's sessions: hashed (NameIDs are arbitrary strings) to 128 bits,
/// which keeps keys short; a collision would only make `destroy_by_subject` look at another
/// subject's sessions, which it skips because it compares the NameID.
fn subject_index(name_id: &str) -> String {
    let mut digest = digest_hex("subject", name_id);
    digest.truncate(32);
    format!("idx:{digest}")
}
