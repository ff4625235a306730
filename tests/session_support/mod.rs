//! Shared by the session tests: configs, cookies, and Redis servers.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::RngCore as _;
use samlgate::config::{Secret, SessionConfig, StoreKind};
use samlgate::identity::Identity;

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
        redis_key_prefix: prefix.to_string(),
        operation_timeout: Duration::from_millis(250),
        max_entries: 10_000,
        local_ttl: Duration::from_secs(5),
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

/// A free TCP port on loopback (bind to 0, read, drop).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A redis-server of our own, killed on drop (never the shared one).
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    pub fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for these tests");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "own redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            port,
            child: Some(child),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A paused server must be thawed to die promptly on SIGKILL's heels.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
