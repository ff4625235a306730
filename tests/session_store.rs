//! One conformance suite, run against both session stores: the memory store with paused time,
//! and Redis with real (short) TTLs: the shared one, and one of the test's own that speaks only
//! TLS and wants a password (`rediss://`, `session.redis_ca_file`, database 3).

mod session_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use samlgate::config::StoreKind;
use samlgate::session::{
    PendingLogin, Read, SessionMetrics, SessionRecord, SessionStore, Sessions,
};
use session_support::*;

/// The whole suite. `unit` is the shortest TTL used; `sleep` is tokio's, which paused time
/// turns into an instant advance (memory) and which really waits on Redis.
async fn conformance(
    store: SessionStore,
    cfg: &samlgate::config::SessionConfig,
    metrics: SessionMetrics,
) {
    let unit = Duration::from_secs(1);
    let wait_past = |n: u32| tokio::time::sleep(unit * n + Duration::from_millis(300));

    // put / get / delete
    store.put("k1", b"v1", unit * 30).await.expect("put");
    assert_eq!(store.get("k1").await.expect("get"), Some(b"v1".to_vec()));
    assert_eq!(store.get("absent").await.expect("get"), None);
    store.put("k1", b"v1b", unit * 30).await.expect("overwrite");
    assert_eq!(store.get("k1").await.expect("get"), Some(b"v1b".to_vec()));
    assert!(store.delete("k1").await.expect("delete"));
    assert!(!store.delete("k1").await.expect("delete again"));
    assert_eq!(store.get("k1").await.expect("get"), None);

    // set_nx
    assert!(store.set_nx("nx", b"a", unit).await.expect("set_nx"));
    assert!(!store.set_nx("nx", b"b", unit).await.expect("set_nx again"));
    assert_eq!(store.get("nx").await.expect("get"), Some(b"a".to_vec()));

    // getdel: single use
    store.put("gd", b"once", unit * 30).await.expect("put");
    assert_eq!(
        store.getdel("gd").await.expect("getdel"),
        Some(b"once".to_vec())
    );
    assert_eq!(store.getdel("gd").await.expect("getdel again"), None);

    // compare-and-delete
    store.put("cd", b"mine", unit * 30).await.expect("put");
    assert!(!store.delete_if_eq("cd", b"theirs").await.expect("cad"));
    assert_eq!(store.get("cd").await.expect("get"), Some(b"mine".to_vec()));
    assert!(store.delete_if_eq("cd", b"mine").await.expect("cad"));
    assert_eq!(store.get("cd").await.expect("get"), None);

    // index
    store.index_add("ix", "a", unit).await.expect("add");
    store.index_add("ix", "b", unit * 30).await.expect("add");
    store
        .index_add("ix", "b", unit * 30)
        .await
        .expect("add twice");
    let members: BTreeSet<String> = store
        .index_members("ix")
        .await
        .expect("members")
        .into_iter()
        .collect();
    assert_eq!(members, BTreeSet::from(["a".to_string(), "b".to_string()]));
    store.index_remove("ix", "a").await.expect("remove");
    assert_eq!(
        store.index_members("ix").await.expect("members"),
        vec!["b".to_string()]
    );
    assert!(
        store
            .index_members("absent-ix")
            .await
            .expect("members")
            .is_empty()
    );
    store.index_add("ix-short", "x", unit).await.expect("add");

    // sessions
    let key = [7u8; 32];
    let record = SessionRecord {
        identity: Arc::new(identity("ada@example.com", Some("idx-1"))),
        created_ms: 1,
        expires_ms: u64::MAX / 2,
        idle_until_ms: u64::MAX / 2,
    };
    assert_eq!(
        store.get_session(&key, Read::Cached).await.expect("get"),
        None
    );
    assert!(
        !store
            .refresh_session(&key, &record, unit)
            .await
            .expect("refresh absent")
    );
    assert_eq!(
        store.get_session(&key, Read::Fresh).await.expect("get"),
        None,
        "refresh must not resurrect"
    );
    store
        .create_session(&key, &record, unit * 30, "ix-s", unit * 30)
        .await
        .expect("create");
    assert_eq!(
        store.get_session(&key, Read::Cached).await.expect("get"),
        Some(record.clone())
    );
    assert_eq!(
        store
            .get_session(&key, Read::Fresh)
            .await
            .expect("get fresh"),
        Some(record.clone())
    );
    assert_eq!(
        store.index_members("ix-s").await.expect("members"),
        vec![samlgate_hex(&key)]
    );
    let newer = SessionRecord {
        idle_until_ms: 42,
        ..record.clone()
    };
    assert!(
        store
            .refresh_session(&key, &newer, unit * 30)
            .await
            .expect("refresh")
    );
    assert_eq!(
        store.get_session(&key, Read::Cached).await.expect("get"),
        Some(newer)
    );
    assert!(
        store
            .delete_session(&key, Some("ix-s"))
            .await
            .expect("delete")
    );
    assert!(
        !store
            .delete_session(&key, Some("ix-s"))
            .await
            .expect("delete again")
    );
    assert_eq!(
        store.get_session(&key, Read::Cached).await.expect("get"),
        None
    );
    assert!(
        store
            .index_members("ix-s")
            .await
            .expect("members")
            .is_empty()
    );
    let short = [8u8; 32];
    store
        .create_session(&short, &record, unit, "ix-s2", unit * 30)
        .await
        .expect("create");

    // expiry: every TTL above that was `unit` is gone after it
    store.put("exp", b"x", unit).await.expect("put");
    wait_past(1).await;
    assert_eq!(
        store.get("exp").await.expect("get"),
        None,
        "value outlived its TTL"
    );
    assert_eq!(
        store.get("nx").await.expect("get"),
        None,
        "set_nx value outlived its TTL"
    );
    assert!(
        store
            .set_nx("nx", b"c", unit)
            .await
            .expect("set_nx after expiry")
    );
    assert_eq!(
        store.get_session(&short, Read::Fresh).await.expect("get"),
        None,
        "session outlived its TTL"
    );
    assert_eq!(
        store.get_session(&short, Read::Cached).await.expect("get"),
        None,
        "session outlived its TTL"
    );
    assert!(
        store
            .index_members("ix-short")
            .await
            .expect("members")
            .is_empty(),
        "index outlived its TTL"
    );
    assert_eq!(
        store.index_members("ix").await.expect("members"),
        vec!["b".to_string()],
        "index TTL is the longest"
    );
    assert!(store.ping().await.is_ok());

    // --- the same semantics through Sessions ---
    let sessions = Sessions::with_store(cfg, false, store.clone(), metrics);

    // claim_once
    assert!(
        sessions
            .claim_once("assertion-1", unit)
            .await
            .expect("claim")
    );
    assert!(
        !sessions
            .claim_once("assertion-1", unit)
            .await
            .expect("claim again")
    );
    assert!(
        sessions
            .claim_once("assertion-2", unit)
            .await
            .expect("other key")
    );
    wait_past(1).await;
    assert!(
        sessions
            .claim_once("assertion-1", unit)
            .await
            .expect("claim after ttl")
    );

    // pending login: single use, expires, garbage refused
    let pending = PendingLogin {
        request_id: "_a1b2".into(),
        return_to: "/reports?q=1".into(),
        binding: "c2hhMjU2".into(),
    };
    let token = sessions
        .begin_login(pending.clone(), unit * 30)
        .await
        .expect("begin");
    assert!(
        token.len() >= 43
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let other = sessions
        .begin_login(pending.clone(), unit * 30)
        .await
        .expect("begin");
    assert_ne!(token, other);
    assert_eq!(
        sessions.take_login(&token).await.expect("take"),
        Some(pending.clone())
    );
    assert_eq!(sessions.take_login(&token).await.expect("take again"), None);
    assert_eq!(sessions.take_login("").await.expect("empty"), None);
    assert_eq!(
        sessions
            .take_login("../../etc/passwd")
            .await
            .expect("garbage"),
        None
    );
    let short_token = sessions
        .begin_login(pending.clone(), unit)
        .await
        .expect("begin");
    wait_past(1).await;
    assert_eq!(
        sessions
            .take_login(&short_token)
            .await
            .expect("take expired"),
        None
    );

    // index + destroy_by_subject
    let (a1, c_a1) = sessions
        .create(identity("ada@example.com", Some("s1")), None)
        .await
        .expect("create");
    let (_a2, c_a2) = sessions
        .create(identity("ada@example.com", Some("s2")), None)
        .await
        .expect("create");
    let (_b, c_b) = sessions
        .create(identity("bob@example.com", Some("s1")), None)
        .await
        .expect("create");
    let load = |c: &http::HeaderValue| {
        let h = headers_with(&cookie_pair(c));
        let s = sessions.clone();
        async move { s.load(&h).await.expect("load") }
    };
    assert_eq!(
        &*load(&c_a1).await.expect("a1").identity.subject,
        "ada@example.com"
    );
    assert_eq!(a1.identity.session_index.as_deref(), Some("s1"));
    assert_eq!(
        sessions
            .destroy_by_subject("ada@example.com", Some("s1"))
            .await
            .expect("slo"),
        1
    );
    assert!(
        load(&c_a1).await.is_none(),
        "session s1 survived IdP logout"
    );
    assert!(load(&c_a2).await.is_some(), "session s2 was not named");
    assert_eq!(
        sessions
            .destroy_by_subject("ada@example.com", Some("nope"))
            .await
            .expect("slo"),
        0
    );
    assert_eq!(
        sessions
            .destroy_by_subject("ada@example.com", None)
            .await
            .expect("slo all"),
        1
    );
    assert!(load(&c_a2).await.is_none());
    assert!(
        load(&c_b).await.is_some(),
        "another subject's session was ended"
    );
    assert_eq!(
        sessions
            .destroy_by_subject("nobody@example.com", None)
            .await
            .expect("slo"),
        0
    );

    // locks: exclusive, released only by the holder's token, expire
    let t1 = sessions
        .try_lock("user:ada", unit * 30)
        .await
        .expect("lock")
        .expect("free");
    assert!(
        sessions
            .try_lock("user:ada", unit * 30)
            .await
            .expect("lock")
            .is_none(),
        "lock not exclusive"
    );
    let t_other = sessions
        .try_lock("user:bob", unit * 30)
        .await
        .expect("lock")
        .expect("other name free");
    sessions
        .unlock("user:ada", t_other.clone())
        .await
        .expect("unlock with a foreign token");
    assert!(
        sessions
            .try_lock("user:ada", unit * 30)
            .await
            .expect("lock")
            .is_none(),
        "foreign token released the lock"
    );
    sessions.unlock("user:ada", t1).await.expect("unlock");
    let t2 = sessions
        .try_lock("user:ada", unit)
        .await
        .expect("lock")
        .expect("free after unlock");
    wait_past(1).await;
    let t3 = sessions
        .try_lock("user:ada", unit * 30)
        .await
        .expect("lock")
        .expect("free after ttl");
    sessions.unlock("user:ada", t2).await.expect("stale unlock");
    assert!(
        sessions
            .try_lock("user:ada", unit * 30)
            .await
            .expect("lock")
            .is_none(),
        "stale token released a newer lock"
    );
    sessions.unlock("user:ada", t3).await.expect("unlock");
    sessions.unlock("user:bob", t_other).await.expect("unlock");
    assert!(sessions.ready().await);
}

fn samlgate_hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(start_paused = true)]
async fn memory_store_conforms() {
    let cfg = memory_config();
    let metrics = SessionMetrics::default();
    let store = SessionStore::from_config(&cfg, &metrics)
        .await
        .expect("store");
    assert_eq!(store.backend(), "memory");
    conformance(store, &cfg, metrics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_conforms() {
    let url = require_shared_redis();
    let cfg = config(StoreKind::Redis, &url, &unique_prefix("conformance"));
    let metrics = SessionMetrics::default();
    let store = SessionStore::from_config(&cfg, &metrics)
        .await
        .expect("store");
    assert_eq!(store.backend(), "redis");
    conformance(store, &cfg, metrics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_without_local_tier_conforms() {
    let url = require_shared_redis();
    let mut cfg = config(
        StoreKind::Redis,
        &url,
        &unique_prefix("conformance-nolocal"),
    );
    cfg.local_ttl = Duration::ZERO;
    let metrics = SessionMetrics::default();
    let store = SessionStore::from_config(&cfg, &metrics)
        .await
        .expect("store");
    conformance(store, &cfg, metrics).await;
}

/// `redis-cli` over TLS against the test's own Redis: the keys under `prefix` in `db`.
fn keys_in_db(port: u16, ca: &std::path::Path, password: &str, db: u8, prefix: &str) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(ca)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-a", password])
        .args([
            "--no-auth-warning",
            "-n",
            &db.to_string(),
            "--scan",
            "--pattern",
        ])
        .arg(format!("{prefix}*"))
        .output()
        .expect("redis-cli must be installed for these tests");
    assert!(out.status.success(), "redis-cli: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TLS-only Redis of the test's own with password `tls-test-pw`: its certificate (which is
/// its own CA) in a temporary directory, and its port.
fn tls_redis() -> (tempfile::TempDir, std::path::PathBuf, u16, OwnRedis) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, _) = localhost_cert(dir.path());
    let port = free_port();
    let redis = OwnRedis::start_tls(port, &cert, &key, "tls-test-pw");
    (dir, cert, port, redis)
}

/// The Redis store over TLS (`rediss://` trusting `session.redis_ca_file`), with a password
/// and a database other than 0 in the URL: the whole suite passes over it, and the keys are
/// in that database and no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_over_tls_with_password_and_database_conforms() {
    let (_dir, cert, port, _redis) = tls_redis();
    let prefix = unique_prefix("tls");
    let url = format!("rediss://:tls-test-pw@127.0.0.1:{port}/3");
    let mut cfg = config(StoreKind::Redis, &url, &prefix);
    cfg.redis_ca_file = Some(cert.clone());
    let metrics = SessionMetrics::default();
    let store = SessionStore::from_config(&cfg, &metrics)
        .await
        .expect("store");
    store
        .put("where", b"db 3", Duration::from_secs(30))
        .await
        .expect("put over TLS");
    assert_eq!(
        store.get("where").await.expect("get over TLS"),
        Some(b"db 3".to_vec())
    );
    assert_eq!(
        keys_in_db(port, &cert, "tls-test-pw", 3, &prefix).trim(),
        format!("{prefix}where")
    );
    assert_eq!(
        keys_in_db(port, &cert, "tls-test-pw", 0, &prefix).trim(),
        ""
    );
    conformance(store, &cfg, metrics).await;
}

/// A TLS Redis whose CA is not trusted, whose password is wrong, or that is asked in plain
/// text, is unavailable (a 503 for the request), promptly; with all right it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_redis_is_refused_without_its_ca_or_with_a_wrong_password() {
    let (_dir, cert, port, _redis) = tls_redis();
    let prefix = unique_prefix("tls-refused");
    let good = format!("rediss://:tls-test-pw@127.0.0.1:{port}/0");
    let wrong_pw = format!("rediss://:not-the-pw@127.0.0.1:{port}/0");
    let plain = format!("redis://:tls-test-pw@127.0.0.1:{port}/0");
    for (url, ca, works) in [
        (&good, None, false), // the system's roots do not know the test's CA
        (&wrong_pw, Some(&cert), false),
        (&plain, None, false), // a TLS-only port does not answer plain text
        (&good, Some(&cert), true),
    ] {
        let mut cfg = config(StoreKind::Redis, url, &prefix);
        cfg.redis_ca_file = ca.cloned();
        let sessions = Sessions::new(&cfg, false).await.expect("lazy connect");
        let started = std::time::Instant::now();
        assert_eq!(
            sessions.ready().await,
            works,
            "CA given: {}, URL {}",
            ca.is_some(),
            url.replace("tls-test-pw", "***")
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
