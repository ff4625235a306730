//! Criterion micro-benches of the per-request work on the authenticated hot path:
//! identity-header strip + inject, cookie stripping, path normalisation, and the identity JWT
//! (cached per session, as the gateway serves it, and signed afresh).
#![allow(clippy::unwrap_used)]

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use samlgate::config::Config;
use samlgate::headers::{IdentityHeaders, strip_cookies};
use samlgate::identity::Identity;

fn config() -> Config {
    let toml = concat!(
        "[server]\npublic_url=\"https://dash.example.com\"\n[upstream]\nurl=\"http://127.0.0.1:3000\"\n",
        "[saml]\nidp_metadata_file=\"",
        env!("CARGO_MANIFEST_DIR"),
        "/config/idp-metadata.xml\"\n[session]\nsecret=\"0123456789abcdef0123456789abcdef\"\n",
        "[headers.jwt]\naudience=\"dashboard\"\n"
    );
    Config::from_toml_str(toml, std::path::Path::new(".")).unwrap()
}

fn browser_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "dash.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120 Safari/537.36",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-US,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        (
            "cookie",
            "_ga=GA1.2.3; __Host-samlgate=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB; theme=dark",
        ),
        ("referer", "https://dash.example.com/reports"),
        ("x-forwarded-user", "spoofed"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

fn identity() -> Identity {
    Identity {
        subject: "alice@example.com".into(),
        email: Some("alice@example.com".into()),
        first_name: Some("Alice".into()),
        last_name: Some("Liddell".into()),
        groups: samlgate::identity::groups(["analysts", "marketing-admins", "everyone"]),
        user_id: Some("2819c223-7f76-453a-919d-413861904646".into()),
        workspace: Some("Production".into()),
        permission_set: Some("Analyst".into()),
        ..Identity::default()
    }
}

fn bench(c: &mut Criterion) {
    let cfg = config();
    let rules = IdentityHeaders::new(&cfg.headers).unwrap();
    let id = std::sync::Arc::new(identity());
    let base = browser_headers();
    c.bench_function("identity_header_values_computed", |b| {
        b.iter(|| rules.values(black_box(&id)))
    });
    // What the gateway does to a forwarded request's headers.
    let rewrite = |h: &mut http::HeaderMap| {
        rules.strip(h);
        strip_cookies(h, |n| n == "__Host-samlgate");
        rules.inject(h, black_box(&id));
    };
    c.bench_function("identity_headers_strip_inject_strip_cookie", |b| {
        b.iter_batched_ref(|| base.clone(), rewrite, criterion::BatchSize::SmallInput)
    });
    let signer = samlgate::jwt::Signer::new(cfg.headers.jwt.as_ref().unwrap()).unwrap();
    let sid = "0123456789abcdef";
    c.bench_function("identity_headers_plus_jwt_cached", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |h| {
                rewrite(h);
                let token = signer.token(black_box(sid), &id).unwrap();
                h.insert(signer.header_name().clone(), token);
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("jwt_token_cached", |b| {
        b.iter(|| signer.token(black_box(sid), &id).unwrap())
    });
    c.bench_function("jwt_sign_uncached", |b| {
        b.iter(|| {
            signer
                .sign(black_box(sid), &id, std::time::SystemTime::now())
                .unwrap()
        })
    });
    c.bench_function("normalize_path", |b| {
        b.iter(|| samlgate::access::normalize(black_box("/reports/2024/q3/summary")))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
