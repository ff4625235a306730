//! Provisioning fixtures shared by `provision` (against the fake SCIM API) and
//! `scim_interop` (against a real SCIM server): a create-only config and a person.
#![allow(dead_code)]

use std::time::Duration;

use samlgate::config::{Payload, ProvisioningConfig, ProvisioningMode, Secret};
use samlgate::identity::Identity;

/// Create-only SCIM provisioning against `url` with bearer `token`, defaults Production /
/// Analyst, no rules and no domain limits.
pub fn config(url: String, token: &str, timeout: Duration) -> ProvisioningConfig {
    ProvisioningConfig {
        enabled: true,
        url,
        token: Secret::new(token),
        timeout,
        payload: Payload::Scim,
        default_workspace: "Production".into(),
        default_permission_set: "Analyst".into(),
        allowed_domains: vec![],
        rules: vec![],
        cache_ttl: Duration::from_secs(600),
        mode: ProvisioningMode::CreateOnly,
    }
}

/// Ann Lee with `email`; her NameID is `nameid-<email>`.
pub fn person(email: &str) -> Identity {
    Identity {
        subject: format!("nameid-{email}").into(),
        email: Some(email.into()),
        first_name: Some("Ann".into()),
        last_name: Some("Lee".into()),
        ..Identity::default()
    }
}

/// Log lines captured on this thread (a `#[tokio::test]`'s runtime is current-thread, so the
/// provisioner's spawned tasks log here too), as the fmt layer writes them, without ANSI colours.
#[derive(Clone, Default)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// The lines that contain every one of `needles`.
    pub fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
            .collect()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Captures every event logged on this thread until the guard is dropped.
pub fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .without_time()
        .with_max_level(tracing::Level::TRACE)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}
