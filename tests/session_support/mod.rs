//! Shared by the session tests: configs, cookies, and Redis servers.
#![allow(dead_code)]

use std::time::Duration;

use rand::RngCore as _;
use samlgate::config::{Secret, SessionConfig, StoreKind};
use samlgate::identity::Identity;

#[path = "../support/local.rs"]
mod local;
#[allow(unused_imports)] // each test binary uses a different part
pub use local::{OwnRedis, free_port, localhost_cert, redis_cli};

pub const SECRET: &str = "0123456789abcdef0123456789abcdef-current";
pub const OLD_SECRET: &str = "0123456789abcdef0123456789abcdef-previous";
pub const OTHER_SECRET: &str = "0123456789abcdef0123456789abcdef-unknown!";

/// The shared Redis every Redis test uses; panics (fails the test) when it is not there.
pub const SHARED_REDIS: &str = "redis://127.0.0.1:6379/0";

pub fn require_shared_redis() -> String {
    let up = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:6379".parse().expect("addr"),
        Duration::from_secs(1),
    )
    .is_ok();
    assert!(
        up,
        "these tests need Redis on 127.0.0.1:6379 (redis-server --daemonize yes --port 6379 --save '' --appendonly no)"
    );
    SHARED_REDIS.to_string()
}

/// A key prefix no other test (or run) uses.
pub fn unique_prefix(test: &str) -> String {
    let mut b = [0u8; 6];
    rand::rng().fill_bytes(&mut b);
    let tag: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("samlgate-test:{test}:{tag}:")
}

pub fn config(store: StoreKind, redis_url: &str, prefix: &str) -> SessionConfig {
    SessionConfig {
        secret: Secret::new(SECRET),
        previous_secrets: vec![],
        cookie_name: "samlgate".into(),
        lifetime: Duration::from_secs(12 * 3600),
        idle_timeout: Duration::from_secs(3600),
        store,
        redis_url: Secret::new(redis_url),
        redis_ca_file: None,
        redis_key_prefix: prefix.to_string(),
        operation_timeout: Duration::from_millis(250),
        max_entries: 10_000,
        local_ttl: Duration::from_secs(5),
        audience: "https://sp.example.com/saml/metadata".into(),
    }
}

pub fn memory_config() -> SessionConfig {
    config(StoreKind::Memory, "redis://127.0.0.1:6379/0", "unused:")
}

pub fn identity(subject: &str, session_index: Option<&str>) -> Identity {
    Identity {
        subject: subject.into(),
        name_id_format: Some("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".into()),
        session_index: session_index.map(Into::into),
        email: Some(subject.into()),
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

/// `name=value` from a Set-Cookie header value.
pub fn cookie_pair(set_cookie: &http::HeaderValue) -> String {
    let s = set_cookie.to_str().expect("ascii");
    s.split(';').next().expect("pair").to_string()
}

/// A request header map carrying `cookie` as its Cookie header.
pub fn headers_with(cookie: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::COOKIE,
        http::HeaderValue::from_str(cookie).expect("cookie"),
    );
    h
}
