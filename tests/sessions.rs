//! Sessions: the cookie (forgery, truncation, rotation, fixation, flags), expiry with paused
//! time, two replicas on one Redis, and Redis going away and coming back.

mod session_support;

use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use samlgate::config::{Secret, StoreKind};
use samlgate::session::{Error, Read, SessionMetrics, SessionStore, Sessions};
use session_support::*;

async fn memory_sessions(https: bool) -> Sessions {
    Sessions::new(&memory_config(), https)
        .await
        .expect("sessions")
}

fn value_of(pair: &str) -> &str {
    pair.split_once('=').expect("pair").1
}

#[tokio::test]
async fn cookie_flags_follow_https() {
    let https = memory_sessions(true).await;
    assert_eq!(https.cookie_name(), "__Host-samlgate");
    let (_, set) = https
        .create(identity("ada@example.com", None), None)
        .await
        .expect("create");
    let s = set.to_str().expect("ascii");
    assert!(s.starts_with("__Host-samlgate="), "{s}");
    for attr in [
        "; Path=/",
        "; HttpOnly",
        "; SameSite=Lax",
        "; Secure",
        "; Max-Age=43200",
    ] {
        assert!(s.contains(attr), "{attr} missing in {s}");
    }
    assert!(
        !s.contains("Domain"),
        "__Host- cookies must not carry Domain: {s}"
    );
    let removal = https.removal_cookie();
    let r = removal.to_str().expect("ascii");
    assert!(
        r.starts_with("__Host-samlgate=;") && r.contains("Max-Age=0") && r.contains("; Secure"),
        "{r}"
    );

    let http = memory_sessions(false).await;
    assert_eq!(http.cookie_name(), "samlgate");
    let (_, set) = http
        .create(identity("ada@example.com", None), None)
        .await
        .expect("create");
    let s = set.to_str().expect("ascii");
    assert!(
        s.starts_with("samlgate=")
            && s.contains("; HttpOnly")
            && s.contains("; SameSite=Lax")
            && s.contains("; Path=/")
    );
    assert!(!s.contains("Secure"), "no Secure on plain http: {s}");
    // A valid cookie under the https name is not accepted by the http gateway and vice versa.
    let (_, set_https) = https
        .create(identity("ada@example.com", None), None)
        .await
        .expect("create");
    assert!(
        http.load(&headers_with(&cookie_pair(&set_https)))
            .await
            .expect("load")
            .is_none()
    );
}

#[tokio::test]
async fn valid_cookie_loads_among_other_cookies() {
    let sessions = memory_sessions(false).await;
    let (created, set) = sessions
        .create(identity("ada@example.com", Some("s1")), None)
        .await
        .expect("create");
    let pair = cookie_pair(&set);
    // 256-bit id + 256-bit tag, base64url.
    assert_eq!(value_of(&pair).len(), 86);
    let loaded = sessions
        .load(&headers_with(&format!(
            "theme=dark; samlgate=garbage; {pair}; other=1"
        )))
        .await
        .expect("load")
        .expect("session");
    assert_eq!(loaded.id, created.id);
    assert_eq!(*loaded.identity, *created.identity);
    assert_eq!(loaded.expires_at, created.expires_at);
    // Split over several Cookie headers (HTTP/2).
    let mut h = http::HeaderMap::new();
    h.append(http::header::COOKIE, "a=b".parse().expect("hv"));
    h.append(http::header::COOKIE, pair.parse().expect("hv"));
    assert!(sessions.load(&h).await.expect("load").is_some());
    // Debug never shows the raw id or the cookie value.
    let dbg = format!("{created:?}");
    assert!(
        !dbg.contains(value_of(&pair)) && !dbg.contains(&value_of(&pair)[..20]),
        "{dbg}"
    );
    assert!(dbg.contains(&created.id.fingerprint()));
    // No cookie at all.
    assert!(
        sessions
            .load(&http::HeaderMap::new())
            .await
            .expect("load")
            .is_none()
    );
}

#[tokio::test]
async fn forged_truncated_and_garbled_cookies_are_refused() {
    let sessions = memory_sessions(false).await;
    let (_, set) = sessions
        .create(identity("ada@example.com", None), None)
        .await
        .expect("create");
    let pair = cookie_pair(&set);
    let value = value_of(&pair).to_string();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let raw = b64.decode(&value).expect("b64");

    let mut forged_tag = raw.clone();
    forged_tag[63] ^= 1;
    let mut other_id = raw.clone();
    other_id[0] ^= 1;
    let mut garbled = value.clone().into_bytes();
    garbled[40] = if garbled[40] == b'A' { b'B' } else { b'A' };
    let bad = [
        value[..85].to_string(),
        value[..43].to_string(),
        format!("{value}A"),
        b64.encode(&forged_tag),
        b64.encode(&other_id),
        String::from_utf8(garbled).expect("utf8"),
        // A character outside base64url ('+'), always a change.
        format!("+{}", &value[1..]),
        "A".repeat(86),
        String::new(),
        b64.encode([0u8; 64]),
    ];
    for v in bad {
        assert_ne!(v, value, "a refused cookie equal to the real one");
        let got = sessions
            .load(&headers_with(&format!("samlgate={v}")))
            .await
            .expect("load");
        assert!(got.is_none(), "refused cookie accepted: {v}");
    }
    assert!(
        sessions
            .load(&headers_with(&pair))
            .await
            .expect("load")
            .is_some()
    );
}

#[tokio::test]
async fn forged_cookie_never_reaches_the_store() {
    // A Redis store pointed at a port where nothing listens: any lookup would be Unavailable.
    let port = free_port();
    let mut cfg = config(
        StoreKind::Redis,
        &format!("redis://127.0.0.1:{port}/0"),
        "x:",
    );
    cfg.operation_timeout = Duration::from_millis(100);
    let sessions = Sessions::new(&cfg, false).await.expect("lazy connect");
    let forged = format!("samlgate={}", "A".repeat(86));
    assert!(
        sessions
            .load(&headers_with(&forged))
            .await
            .expect("no lookup")
            .is_none()
    );
    assert!(
        sessions
            .load(&headers_with("samlgate=short"))
            .await
            .expect("no lookup")
            .is_none()
    );
    // Whereas a correctly signed cookie does ask the store.
    let signer = memory_sessions(false).await;
    let (_, set) = signer
        .create(identity("ada@example.com", None), None)
        .await
        .expect("create");
    let err = sessions
        .load(&headers_with(&cookie_pair(&set)))
        .await
        .expect_err("store asked");
    assert!(err.is_unavailable(), "{err}");
}

#[tokio::test]
async fn a_cookie_is_refused_by_another_deployment_sharing_secret_and_store() {
    // Two apps behind one IdP, set up with the same secret and one store: the IdP assigned the
    // user to app A only, so A's cookie must not open app B.
    let cfg = memory_config();
    let metrics = SessionMetrics::default();
    let store = SessionStore::from_config(&cfg, &metrics)
        .await
        .expect("store");
    let a = Sessions::with_store(&cfg, false, store.clone(), metrics.clone());
    let (_, set) = a
        .create(identity("ada@example.com", None), None)
        .await
        .expect("create");
    let cookie = headers_with(&cookie_pair(&set));
    let mut other = memory_config();
    other.audience = "https://reports.example.com/saml/metadata".into();
    let b = Sessions::with_store(&other, false, store.clone(), metrics.clone());
    assert!(b.load(&cookie).await.expect("load").is_none());
    // Another replica of A (same entity ID) takes it.
    let a2 = Sessions::with_store(&cfg, false, store, metrics);
    assert!(a2.load(&cookie).await.expect("load").is_some());
}

#[tokio::test]
async fn sessions_pushed_out_of_a_full_memory_store_are_counted() {
    let mut cfg = memory_config();
    cfg.max_entries = 3;
    let sessions = Sessions::new(&cfg, false).await.expect("sessions");
    for n in 0..10 {
        sessions
            .create(identity(&format!("user{n}@example.com"), None), None)
            .await
            .expect("create");
    }
    let SessionStore::Memory(m) = sessions.store() else {
        panic!("memory")
    };
    assert!(m.session_count() <= 3, "{} held", m.session_count());
    assert_eq!(sessions.metrics().evicted.get(), 10 - m.session_count());
}

#[tokio::test]
async fn secret_rotation_previous_verify_unknown_refused() {
    let mut cfg = memory_config();
    cfg.secret = Secret::new(OLD_SECRET);
    let metrics = SessionMetrics::default();
    let store = SessionStore::from_config(&cfg, &metrics)
        .await
        .expect("store");
    let old = Sessions::with_store(&cfg, false, store.clone(), metrics.clone());
    let (_, set) = old
        .create(identity("ada@example.com", None), None)
        .await
        .expect("create");
    let pair = cookie_pair(&set);

    let mut rotated = memory_config();
    rotated.secret = Secret::new(SECRET);
    rotated.previous_secrets = vec![Secret::new(OLD_SECRET)];
    let now = Sessions::with_store(&rotated, false, store.clone(), metrics.clone());
    assert!(
        now.load(&headers_with(&pair))
            .await
            .expect("load")
            .is_some(),
        "previous secret must still verify"
    );
    // New cookies are signed with the current secret: the old-only gateway refuses them.
    let (_, set_new) = now
        .create(identity("ada@example.com", None), None)
        .await
        .expect("create");
    assert!(
        old.load(&headers_with(&cookie_pair(&set_new)))
            .await
            .expect("load")
            .is_none()
    );

    let mut dropped = memory_config();
    dropped.secret = Secret::new(OTHER_SECRET);
    dropped.previous_secrets = vec![Secret::new(SECRET)];
    let later = Sessions::with_store(&dropped, false, store, metrics);
    assert!(
        later
            .load(&headers_with(&pair))
            .await
            .expect("load")
            .is_none(),
        "a secret no longer listed verified"
    );
    assert!(
        later
            .load(&headers_with(&cookie_pair(&set_new)))
            .await
            .expect("load")
            .is_some()
    );
}

#[tokio::test]
async fn planted_ids_are_never_adopted() {
    // An attacker with a validly signed cookie for an id this store never issued (here: minted
    // by another store with the same secret) gets no session...
    let victim = memory_sessions(false).await;
    let elsewhere = memory_sessions(false).await;
    let (_, planted) = elsewhere
        .create(identity("mallory@example.com", None), None)
        .await
        .expect("create");
    let planted = cookie_pair(&planted);
    assert!(
        victim
            .load(&headers_with(&planted))
            .await
            .expect("load")
            .is_none()
    );
    // ...and a login never reuses whatever cookie the browser carried: the id is always new.
    let (s1, set1) = victim
        .create(identity("ada@example.com", None), None)
        .await
        .expect("create");
    let (s2, set2) = victim
        .create(identity("ada@example.com", None), None)
        .await
        .expect("create");
    assert_ne!(s1.id, s2.id);
    assert_ne!(cookie_pair(&set1), planted);
    assert_ne!(cookie_pair(&set1), cookie_pair(&set2));
}

/// Sessions the memory store holds.
fn held(sessions: &Sessions) -> u64 {
    let samlgate::session::SessionStore::Memory(m) = sessions.store() else {
        panic!("a memory store")
    };
    m.session_count()
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_slides_then_expires_and_is_removed() {
    let mut cfg = memory_config();
    cfg.lifetime = Duration::from_secs(3600);
    cfg.idle_timeout = Duration::from_secs(600);
    let sessions = Sessions::new(&cfg, false).await.expect("sessions");
    assert_eq!(sessions.refresh_interval(), Duration::from_secs(60));
    let (s, set) = sessions
        .create(identity("ada@example.com", None), None)
        .await
        .expect("create");
    let h = headers_with(&cookie_pair(&set));
    // Active every 9 minutes: the idle deadline slides.
    for _ in 0..4 {
        tokio::time::advance(Duration::from_secs(9 * 60)).await;
        let got = sessions
            .load(&h)
            .await
            .expect("load")
            .expect("still active");
        assert!(got.idle_expires_at > s.idle_expires_at);
    }
    // Within the refresh interval, no new deadline (no store write per request).
    let a = sessions.load(&h).await.expect("load").expect("session");
    tokio::time::advance(Duration::from_secs(30)).await;
    let b = sessions.load(&h).await.expect("load").expect("session");
    assert_eq!(a.idle_expires_at, b.idle_expires_at);
    // Idle 11 minutes: gone, and gone from the store too (moka's own expiry runs on the real
    // clock, which has not moved: only the load's delete can empty it).
    assert_eq!(held(&sessions), 1);
    tokio::time::advance(Duration::from_secs(11 * 60)).await;
    assert!(sessions.load(&h).await.expect("load").is_none());
    assert_eq!(
        held(&sessions),
        0,
        "the expired session is still in the store"
    );
}

#[tokio::test(start_paused = true)]
async fn absolute_lifetime_ends_an_active_session() {
    let mut cfg = memory_config();
    cfg.lifetime = Duration::from_secs(30 * 60);
    cfg.idle_timeout = Duration::from_secs(20 * 60);
    let sessions = Sessions::new(&cfg, false).await.expect("sessions");
    let (s, set) = sessions
        .create(identity("ada@example.com", None), None)
        .await
        .expect("create");
    assert_eq!(
        s.expires_at.duration_since(s.created_at).expect("order"),
        Duration::from_secs(1800)
    );
    let h = headers_with(&cookie_pair(&set));
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(5 * 60)).await;
        assert!(sessions.load(&h).await.expect("load").is_some());
    }
    assert_eq!(held(&sessions), 1);
    tokio::time::advance(Duration::from_secs(5 * 60 + 1)).await;
    assert!(
        sessions.load(&h).await.expect("load").is_none(),
        "outlived its lifetime"
    );
    assert_eq!(
        held(&sessions),
        0,
        "the expired session is still in the store"
    );
}

#[tokio::test(start_paused = true)]
async fn idp_session_not_on_or_after_caps_the_session() {
    let sessions = memory_sessions(false).await;
    let base = sessions
        .create(identity("a@example.com", None), None)
        .await
        .expect("create")
        .0
        .created_at;
    let cap = base + Duration::from_secs(300);
    let (s, set) = sessions
        .create(identity("ada@example.com", None), Some(cap))
        .await
        .expect("create");
    assert!(s.expires_at <= cap && s.idle_expires_at <= cap);
    assert!(
        set.to_str().expect("ascii").contains("Max-Age=300"),
        "{set:?}"
    );
    let h = headers_with(&cookie_pair(&set));
    tokio::time::advance(Duration::from_secs(290)).await;
    assert!(sessions.load(&h).await.expect("load").is_some());
    tokio::time::advance(Duration::from_secs(20)).await;
    assert!(sessions.load(&h).await.expect("load").is_none());
    let past = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
    assert!(matches!(
        sessions
            .create(identity("ada@example.com", None), Some(past))
            .await,
        Err(Error::AlreadyExpired)
    ));
}

#[tokio::test(start_paused = true)]
async fn destroy_clears_cookie_and_session() {
    let sessions = memory_sessions(true).await;
    let (s, set) = sessions
        .create(identity("ada@example.com", None), None)
        .await
        .expect("create");
    let h = headers_with(&cookie_pair(&set));
    let removal = sessions.destroy(&s).await.expect("destroy");
    assert!(removal.to_str().expect("ascii").contains("Max-Age=0"));
    assert!(sessions.load(&h).await.expect("load").is_none());
    assert_eq!(sessions.metrics().created.get(), 1);
    assert_eq!(sessions.metrics().destroyed.get(), 1);
    let mut registry = prometheus_client::registry::Registry::default();
    sessions.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(text.contains("samlgate_sessions_created_total 1"), "{text}");
    assert!(
        text.contains("samlgate_session_store_duration_seconds_bucket{le="),
        "{text}"
    );
    assert!(text.contains("backend=\"memory\""), "{text}");
}

// ---------------------------------------------------------------- Redis: two replicas

async fn replicas(test: &str) -> (Sessions, Sessions) {
    let url = require_shared_redis();
    let cfg = config(StoreKind::Redis, &url, &unique_prefix(test));
    let a = Sessions::new(&cfg, true).await.expect("replica A");
    let b = Sessions::new(&cfg, true).await.expect("replica B");
    for s in [&a, &b] {
        let samlgate::session::SessionStore::Redis(r) = s.store() else {
            panic!("redis")
        };
        assert!(r.is_subscribed(), "invalidation listener not subscribed");
    }
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_replicas_share_sessions_and_logout_is_instant() {
    let (a, b) = replicas("replicas").await;
    let (s, set) = a
        .create(identity("ada@example.com", Some("s1")), None)
        .await
        .expect("create on A");
    let h = headers_with(&cookie_pair(&set));
    let on_b = b
        .load(&h)
        .await
        .expect("load on B")
        .expect("B sees A's session");
    assert_eq!(*on_b.identity, *s.identity);
    // A serves it from its in-process tier now.
    let hits = a.metrics().local_hits.get();
    assert!(a.load(&h).await.expect("load").is_some());
    assert!(a.load(&h).await.expect("load").is_some());
    assert!(
        a.metrics().local_hits.get() >= hits + 2,
        "A's local tier not used"
    );
    // Logout on B: A refuses within 100 ms although it held the session locally.
    b.destroy(&on_b).await.expect("destroy on B");
    let start = Instant::now();
    loop {
        if a.load(&h).await.expect("load").is_none() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "A still accepts the session after 100 ms"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!("logout reached replica A after {:?}", start.elapsed());
    assert!(b.load(&h).await.expect("load").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_idp_logout_on_one_replica_reaches_the_other() {
    let (a, b) = replicas("replicas-slo").await;
    let (_, set) = a
        .create(identity("ada@example.com", Some("s9")), None)
        .await
        .expect("create");
    let h = headers_with(&cookie_pair(&set));
    assert!(a.load(&h).await.expect("load").is_some());
    assert_eq!(
        b.destroy_by_subject("ada@example.com", Some("s9"))
            .await
            .expect("slo"),
        1
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(a.load(&h).await.expect("load").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_pending_login_and_replay_cache_span_replicas() {
    let (a, b) = replicas("replicas-login").await;
    let pending = samlgate::session::PendingLogin {
        request_id: "_req".into(),
        return_to: "/".into(),
        binding: "h".into(),
    };
    let token = a
        .begin_login(pending.clone(), Duration::from_secs(60))
        .await
        .expect("begin on A");
    assert_eq!(
        b.take_login(&token).await.expect("take on B"),
        Some(pending)
    );
    assert_eq!(a.take_login(&token).await.expect("take again on A"), None);
    assert_eq!(b.take_login(&token).await.expect("take again on B"), None);
    assert!(
        a.claim_once("_assertion-77", Duration::from_secs(60))
            .await
            .expect("claim on A")
    );
    assert!(
        !b.claim_once("_assertion-77", Duration::from_secs(60))
            .await
            .expect("replay on B")
    );
    let lock = a
        .try_lock("provision:ada", Duration::from_secs(5))
        .await
        .expect("lock")
        .expect("free");
    assert!(
        b.try_lock("provision:ada", Duration::from_secs(5))
            .await
            .expect("lock")
            .is_none()
    );
    a.unlock("provision:ada", lock).await.expect("unlock");
    assert!(
        b.try_lock("provision:ada", Duration::from_secs(5))
            .await
            .expect("lock")
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_idle_refresh_on_one_replica_is_seen_by_the_other() {
    // Replica A caches the session; B refreshes its idle deadline; A must not refuse it when
    // its cached (older) deadline passes.
    let url = require_shared_redis();
    let mut cfg = config(StoreKind::Redis, &url, &unique_prefix("refresh"));
    cfg.idle_timeout = Duration::from_secs(2);
    cfg.local_ttl = Duration::from_secs(60);
    let a = Sessions::new(&cfg, false).await.expect("A");
    let b = Sessions::new(&cfg, false).await.expect("B");
    assert_eq!(a.refresh_interval(), Duration::from_millis(200));
    let (_, set) = a
        .create(identity("ada@example.com", None), None)
        .await
        .expect("create");
    let h = headers_with(&cookie_pair(&set));
    assert!(a.load(&h).await.expect("load").is_some());
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            b.load(&h).await.expect("load on B").is_some(),
            "B lost an active session"
        );
    }
    assert!(
        a.load(&h).await.expect("load on A").is_some(),
        "A refused a session B kept alive"
    );
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert!(
        a.load(&h).await.expect("load").is_none(),
        "idle session outlived idle_timeout"
    );
}

// ---------------------------------------------------------------- Redis: trouble

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_bounded_and_recovers_without_restart() {
    let mut redis = OwnRedis::start(free_port());
    let cfg = config(StoreKind::Redis, &redis.url(), "trouble:");
    let sessions = Sessions::new(&cfg, false).await.expect("sessions");
    assert!(sessions.ready().await);
    let (_, set) = sessions
        .create(identity("ada@example.com", None), None)
        .await
        .expect("create");
    let h = headers_with(&cookie_pair(&set));
    assert!(sessions.load(&h).await.expect("load").is_some());

    redis.stop();
    // The in-process tier may answer until the listener notices the lost connection (a few ms
    // after the kill); from then on, everything that needs Redis fails fast.
    let samlgate::session::SessionStore::Redis(r) = sessions.store() else {
        panic!("redis")
    };
    let noticed = Instant::now();
    while r.is_subscribed() {
        assert!(
            noticed.elapsed() < Duration::from_secs(3),
            "listener did not notice the outage"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("listener noticed the outage after {:?}", noticed.elapsed());
    // Every operation now fails fast with Unavailable (bounded by operation_timeout: 250 ms).
    for _ in 0..3 {
        let start = Instant::now();
        let err = sessions
            .create(identity("bob@example.com", None), None)
            .await
            .expect_err("down");
        assert!(err.is_unavailable(), "{err}");
        assert!(
            start.elapsed() < Duration::from_millis(600),
            "create took {:?}",
            start.elapsed()
        );
        let start = Instant::now();
        let err = sessions.load(&h).await.expect_err("down");
        assert!(err.is_unavailable(), "{err}");
        assert!(
            start.elapsed() < Duration::from_millis(600),
            "load took {:?}",
            start.elapsed()
        );
        let start = Instant::now();
        assert!(!sessions.ready().await);
        assert!(start.elapsed() < Duration::from_millis(600));
        let err = sessions
            .take_login("x".repeat(43).as_str())
            .await
            .expect_err("down");
        assert!(err.is_unavailable());
    }
    assert!(
        sessions
            .metrics()
            .store_errors
            .get_or_create(&samlgate::session::BackendLabels { backend: "redis" })
            .get()
            > 0
    );

    // Back on the same port (empty: no persistence): the same instance recovers by itself.
    let _redis = OwnRedis::start(redis.port);
    let start = Instant::now();
    loop {
        if sessions.ready().await {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no recovery after Redis returned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("recovered {:?} after Redis returned", start.elapsed());
    let (_, set) = sessions
        .create(identity("ada@example.com", None), None)
        .await
        .expect("create after recovery");
    let h2 = headers_with(&cookie_pair(&set));
    assert!(
        sessions
            .load(&h2)
            .await
            .expect("load after recovery")
            .is_some()
    );
    // The old session died with the unpersisted Redis: refused, not an error.
    assert!(sessions.load(&h).await.expect("load").is_none());
    // The invalidation listener resubscribed too.
    let start = Instant::now();
    while !r.is_subscribed() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "listener did not resubscribe"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_up_is_not_fatal() {
    let port = free_port();
    let cfg = config(
        StoreKind::Redis,
        &format!("redis://127.0.0.1:{port}/0"),
        "late:",
    );
    let sessions = Sessions::new(&cfg, false)
        .await
        .expect("start without Redis");
    assert!(!sessions.ready().await);
    let _redis = OwnRedis::start(port);
    let start = Instant::now();
    while !sessions.ready().await {
        assert!(start.elapsed() < Duration::from_secs(10), "no recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sessions
            .create(identity("ada@example.com", None), None)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn invalid_redis_url_is_an_error_without_echo() {
    let cfg = config(StoreKind::Redis, "redis://:hunter2@[::1", "x:");
    let err = Sessions::new(&cfg, false).await.expect_err("invalid");
    assert!(!format!("{err} {err:?}").contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_that_hangs_is_cut_off_at_the_operation_timeout() {
    let redis = OwnRedis::start(free_port());
    let cfg = config(StoreKind::Redis, &redis.url(), "hang:");
    let sessions = Sessions::new(&cfg, false).await.expect("sessions");
    let (_, set) = sessions
        .create(identity("ada@example.com", None), None)
        .await
        .expect("create");
    let h = headers_with(&cookie_pair(&set));
    let store = sessions.store().clone();
    redis.pause();
    for _ in 0..3 {
        let start = Instant::now();
        let err = store
            .get_session(&[1u8; 32], Read::Fresh)
            .await
            .expect_err("hung");
        let took = start.elapsed();
        assert!(err.is_unavailable(), "{err}");
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(500),
            "took {took:?}"
        );
        let start = Instant::now();
        assert!(!sessions.ready().await);
        assert!(start.elapsed() < Duration::from_millis(500));
    }
    redis.resume();
    let start = Instant::now();
    while !sessions.ready().await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no recovery after SIGCONT"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sessions.load(&h).await.expect("load").is_some(),
        "session survives a stall"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_urls_are_accepted_and_tls_failures_are_unavailable() {
    // The shared Redis speaks plain TCP, so the TLS handshake fails: that must be a clean
    // Unavailable (no panic about crypto providers, no hang).
    require_shared_redis();
    let cfg = config(
        StoreKind::Redis,
        "rediss://127.0.0.1:6379/0",
        &unique_prefix("tls"),
    );
    let sessions = Sessions::new(&cfg, true).await.expect("rediss:// accepted");
    let start = Instant::now();
    assert!(!sessions.ready().await);
    assert!(start.elapsed() < Duration::from_millis(600));
}

/// The Redis index of a user's sessions keeps only live ones: a user who signs in daily and
/// never signs out must not grow it by one dead member per session (an IdP-initiated logout
/// walks every member). An index written by an earlier version (a plain set) still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_session_index_drops_sessions_that_expired() {
    let url = require_shared_redis();
    let prefix = unique_prefix("index-growth");
    let cfg = config(StoreKind::Redis, &url, &prefix);
    let store = SessionStore::from_config(&cfg, &SessionMetrics::default())
        .await
        .expect("store");
    let now_ms = || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64
    };
    // A session that ends `ms` from now (its absolute end is what the index goes by).
    let record = |n: u8, ms: u64| samlgate::session::SessionRecord {
        identity: std::sync::Arc::new(identity("ada@example.com", Some(&format!("s{n}")))),
        created_ms: now_ms(),
        expires_ms: now_ms() + ms,
        idle_until_ms: now_ms() + ms,
    };
    let hex = |k: &[u8; 32]| k.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let long = Duration::from_secs(60);
    for n in 0..5u8 {
        store
            .create_session(
                &[n; 32],
                &record(n, 100),
                Duration::from_millis(100),
                "ix",
                long,
            )
            .await
            .expect("create");
    }
    // One whose idle deadline (its key's TTL) is near but whose absolute end is not: idle
    // refreshes may keep it alive that long, so it stays indexed.
    store
        .create_session(
            &[7; 32],
            &record(7, 60_000),
            Duration::from_millis(100),
            "ix",
            long,
        )
        .await
        .expect("create");
    tokio::time::sleep(Duration::from_millis(200)).await;
    store
        .create_session(&[9; 32], &record(9, 60_000), long, "ix", long)
        .await
        .expect("create");
    let mut members = store.index_members("ix").await.expect("members");
    members.sort();
    assert_eq!(members, vec![hex(&[7; 32]), hex(&[9; 32])]);
    let mut con = redis::aio::ConnectionManager::new(redis::Client::open(url).expect("url"))
        .await
        .expect("redis");
    let held: u64 = redis::cmd("ZCARD")
        .arg(format!("{prefix}ix"))
        .query_async(&mut con)
        .await
        .expect("zcard");
    assert_eq!(held, 2, "expired members are still stored");

    // An index left by an earlier version: a plain set with a TTL.
    let legacy = format!("{prefix}old-ix");
    let _: () = redis::pipe()
        .cmd("SADD")
        .arg(&legacy)
        .arg(hex(&[1; 32]))
        .ignore()
        .cmd("PEXPIRE")
        .arg(&legacy)
        .arg(60_000)
        .ignore()
        .query_async(&mut con)
        .await
        .expect("legacy index");
    assert_eq!(
        store.index_members("old-ix").await.expect("members"),
        vec![hex(&[1; 32])]
    );
    store
        .create_session(&[2; 32], &record(2, 60_000), long, "old-ix", long)
        .await
        .expect("create on a legacy index");
    let mut members = store.index_members("old-ix").await.expect("members");
    members.sort();
    assert_eq!(members, vec![hex(&[1; 32]), hex(&[2; 32])]);
    store
        .delete_session(&[1; 32], Some("old-ix"))
        .await
        .expect("delete");
    assert_eq!(
        store.index_members("old-ix").await.expect("members"),
        vec![hex(&[2; 32])]
    );
}

/// A TCP forwarder to Redis on `port` that, while `delay` is set, holds Redis's replies on
/// every connection but the pub/sub one by 150 ms (within the tests' 250 ms operation
/// timeout): a read in flight while invalidations already arrive.
async fn delaying_forwarder(
    port: u16,
    delay: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u16 {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let own = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(node) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                continue;
            };
            let (mut client_rx, mut client_tx) = client.into_split();
            let (mut node_rx, mut node_tx) = node.into_split();
            let subscriber = std::sync::Arc::new(AtomicBool::new(false));
            let seen = subscriber.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = client_rx.read(&mut buf).await {
                    if n == 0 || node_tx.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    if buf[..n]
                        .windows(9)
                        .any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE"))
                    {
                        seen.store(true, SeqCst);
                    }
                }
            });
            let delay = delay.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = node_rx.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if delay.load(SeqCst) && !subscriber.load(SeqCst) {
                        tokio::time::sleep(Duration::from_millis(150)).await;
                    }
                    if client_tx.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    own
}

/// A logout on replica A while replica B's read of the same session is in flight: B's
/// listener drops the (not yet cached) entry first, then B's read returns the record as it
/// was. B must not keep that record in its local tier, or it would accept the logged-out
/// session for up to `local_ttl`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_in_flight_during_a_logout_elsewhere_is_not_cached() {
    let url = require_shared_redis();
    let redis_port: u16 = url
        .trim_start_matches("redis://127.0.0.1:")
        .split('/')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a redis://127.0.0.1:<port> URL");
    let prefix = unique_prefix("inflight");
    let a = Sessions::new(&config(StoreKind::Redis, &url, &prefix), false)
        .await
        .expect("A");
    let delay = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = delaying_forwarder(redis_port, delay.clone()).await;
    let b = Sessions::new(
        &config(
            StoreKind::Redis,
            &format!("redis://127.0.0.1:{port}/0"),
            &prefix,
        ),
        false,
    )
    .await
    .expect("B");
    let start = Instant::now();
    while !b.ready().await {
        assert!(start.elapsed() < Duration::from_secs(5), "B not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (session, set) = a
        .create(identity("ada@example.com", Some("race")), None)
        .await
        .expect("create on A");
    let h = headers_with(&cookie_pair(&set));

    delay.store(true, std::sync::atomic::Ordering::SeqCst);
    let b2 = b.clone();
    let h2 = h.clone();
    let in_flight = tokio::spawn(async move { b2.load(&h2).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.destroy(&session).await.expect("destroy on A");
    // The read that started before the logout saw the session (the race this test is about:
    // were it refused or timed out, there would be nothing to cache)...
    let seen = in_flight
        .await
        .expect("join")
        .expect("the delayed read answers in time");
    assert!(seen.is_some(), "the read in flight did not see the session");
    delay.store(false, std::sync::atomic::Ordering::SeqCst);
    // ...but B must not serve it from its local tier afterwards.
    assert!(
        b.load(&h).await.expect("load on B").is_none(),
        "B cached a session A had destroyed"
    );
}

/// A TCP forwarder on 127.0.0.1 that sends each new connection to the port in `target`, as a
/// DNS name or a proxy in front of a primary does: connections made before a switch stay on
/// the old node.
async fn forwarder(target: std::sync::Arc<std::sync::atomic::AtomicU16>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let to = target.load(std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut node) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut node).await;
                }
            });
        }
    });
    port
}

/// A failover behind one address (a DNS name or a proxy, as managed Redis services give):
/// the old primary, now a replica, answers every write with READONLY on the connection that
/// stays open to it. The store then reconnects and finds the new primary, instead of refusing
/// writes until that connection happens to drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_behind_one_address_writes_reach_the_new_primary() {
    let old = OwnRedis::start(free_port());
    let new = OwnRedis::start(free_port());
    let target = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(old.port));
    let port = forwarder(target.clone()).await;
    let cfg = config(
        StoreKind::Redis,
        &format!("redis://127.0.0.1:{port}/0"),
        &unique_prefix("failover"),
    );
    let sessions = Sessions::new(&cfg, false).await.expect("sessions");
    let pending = samlgate::session::PendingLogin {
        request_id: "_req".into(),
        return_to: "/".into(),
        binding: "h".into(),
    };
    sessions
        .begin_login(pending.clone(), Duration::from_secs(60))
        .await
        .expect("a write before the failover");
    // The failover: the old primary follows the new one; the address now leads there.
    redis_cli(old.port, &["REPLICAOF", "127.0.0.1", &new.port.to_string()]);
    target.store(new.port, std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    let mut refused = 0;
    let token = loop {
        match sessions
            .begin_login(pending.clone(), Duration::from_secs(60))
            .await
        {
            Ok(token) => break token,
            Err(e) => {
                assert!(e.is_unavailable(), "{e}");
                refused += 1;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "writes still refused 5 s after the failover ({refused} tries)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        refused >= 1,
        "the old connection was never refused: no failover seen"
    );
    let key = format!("{}login:{token}", cfg.redis_key_prefix);
    assert_eq!(redis_cli(new.port, &["EXISTS", &key]), "1");
}
