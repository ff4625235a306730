//! Resident memory per session in the memory store: creates N sessions (default 1,000,000)
//! with a realistic identity and prints the RSS growth per session.
//! `cargo run --release --example session_rss [N]`

use std::time::Duration;

use samlgate::config::{Secret, SessionConfig, StoreKind};
use samlgate::identity::Identity;
use samlgate::session::Sessions;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let cfg = SessionConfig {
        secret: Secret::new("0123456789abcdef0123456789abcdef-rss"),
        previous_secrets: vec![],
        cookie_name: "samlgate".into(),
        lifetime: Duration::from_secs(12 * 3600),
        idle_timeout: Duration::from_secs(3600),
        store: StoreKind::Memory,
        redis_url: Secret::new(""),
        redis_ca_file: None,
        redis_key_prefix: String::new(),
        operation_timeout: Duration::from_millis(250),
        max_entries: n + 1,
        local_ttl: Duration::ZERO,
        audience: "https://sp.example.com/saml/metadata".into(),
    };
    let sessions = Sessions::new(&cfg, true)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let before = rss_bytes();
    for i in 0..n {
        let identity = if std::env::var_os("MINIMAL").is_some() {
            Identity {
                subject: format!("user{i:07}@example.com").into(),
                ..Identity::default()
            }
        } else {
            Identity {
                subject: format!("user{i:07}@example.com").into(),
                name_id_format: Some(
                    "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".into(),
                ),
                session_index: Some(format!("_{i:040x}").into()),
                email: Some(format!("user{i:07}@example.com").into()),
                first_name: Some("Ada".into()),
                last_name: Some("Lovelace".into()),
                groups: samlgate::identity::groups(["analysts", "marketing-admins"]),
                user_id: Some(format!("2819c223-7f76-453a-919d-{i:012}").into()),
                workspace: Some("Production".into()),
                permission_set: Some("Analyst".into()),
                name_qualifier: None,
                sp_name_qualifier: None,
            }
        };
        sessions
            .create(identity, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let samlgate::session::SessionStore::Memory(m) = sessions.store() else {
        unreachable!("memory store")
    };
    let count = m.session_count();
    let after = rss_bytes();
    let per = (after.saturating_sub(before)) as f64 / count.max(1) as f64;
    println!(
        "sessions={count} rss_before={}MiB rss_after={}MiB bytes_per_session={per:.0} (includes the NameID index entry)",
        before >> 20,
        after >> 20
    );
}
