//! Session hot path: cookie verify + memory-store hit, a refused (forged) cookie, and the Redis
//! store's local-tier hit versus a Redis round trip. Redis benches need 127.0.0.1:6379.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use samlgate::config::{Secret, SessionConfig, StoreKind};
use samlgate::identity::Identity;
use samlgate::session::Sessions;

fn config(store: StoreKind, prefix: &str, local_ttl: Duration) -> SessionConfig {
    SessionConfig {
        secret: Secret::new("0123456789abcdef0123456789abcdef-bench"),
        previous_secrets: vec![Secret::new("0123456789abcdef0123456789abcdef-old")],
        cookie_name: "samlgate".into(),
        lifetime: Duration::from_secs(12 * 3600),
        idle_timeout: Duration::from_secs(3600),
        store,
        redis_url: Secret::new("redis://127.0.0.1:6379/0"),
        redis_ca_file: None,
        redis_key_prefix: prefix.into(),
        operation_timeout: Duration::from_millis(250),
        max_entries: 100_000,
        local_ttl,
        audience: "https://sp.example.com/saml/metadata".into(),
    }
}

fn identity() -> Identity {
    Identity {
        subject: "ada.lovelace@example.com".into(),
        name_id_format: Some("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".into()),
        session_index: Some("_be9967abd904ddcae3c0eb4189adbe3f71e327cf93".into()),
        email: Some("ada.lovelace@example.com".into()),
        first_name: Some("Ada".into()),
        last_name: Some("Lovelace".into()),
        groups: samlgate::identity::groups(["analysts", "marketing-admins"]),
        user_id: Some("2819c223-7f76-453a-919d-413861904646".into()),
        workspace: Some("Production".into()),
        permission_set: Some("Analyst".into()),
        name_qualifier: None,
        sp_name_qualifier: None,
    }
}

fn headers(set_cookie: &http::HeaderValue) -> http::HeaderMap {
    let pair = set_cookie
        .to_str()
        .ok()
        .and_then(|s| s.split(';').next())
        .unwrap_or_default()
        .to_string();
    let mut h = http::HeaderMap::new();
    let cookie = format!("_ga=GA1.2.3.4; theme=dark; {pair}");
    h.insert(
        http::header::COOKIE,
        http::HeaderValue::from_str(&cookie).unwrap_or(http::HeaderValue::from_static("")),
    );
    h
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));

    // Memory store.
    let mem = rt
        .block_on(Sessions::new(
            &config(StoreKind::Memory, "", Duration::ZERO),
            true,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, set) = rt
        .block_on(mem.create(identity(), None))
        .unwrap_or_else(|e| panic!("{e}"));
    let h = headers(&set);
    c.bench_function("memory: cookie verify + store hit (load)", |b| {
        b.iter(|| rt.block_on(mem.load(&h)).ok().flatten().is_some())
    });
    let mut forged = http::HeaderMap::new();
    forged.insert(
        http::header::COOKIE,
        http::HeaderValue::from_str(&format!("__Host-samlgate={}", "A".repeat(86)))
            .unwrap_or(http::HeaderValue::from_static("")),
    );
    c.bench_function("forged cookie refused (HMAC x2, no lookup)", |b| {
        b.iter(|| rt.block_on(mem.load(&forged)).ok().flatten().is_none())
    });

    // Redis store: in-process tier hit vs a Redis round trip.
    if std::net::TcpStream::connect("127.0.0.1:6379").is_err() {
        eprintln!("Redis not on 127.0.0.1:6379: Redis benches skipped");
        return;
    }
    let prefix = format!("samlgate-bench:{}:", std::process::id());
    let tiered = rt
        .block_on(Sessions::new(
            &config(StoreKind::Redis, &prefix, Duration::from_secs(5)),
            true,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let direct = rt
        .block_on(Sessions::new(
            &config(StoreKind::Redis, &prefix, Duration::ZERO),
            true,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, set) = rt
        .block_on(tiered.create(identity(), None))
        .unwrap_or_else(|e| panic!("{e}"));
    let h = headers(&set);
    c.bench_function("redis: load, local-tier hit", |b| {
        b.iter(|| rt.block_on(tiered.load(&h)).ok().flatten().is_some())
    });
    c.bench_function("redis: load, local-tier miss (GET + decode)", |b| {
        b.iter(|| rt.block_on(direct.load(&h)).ok().flatten().is_some())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = bench
}
criterion_main!(benches);
