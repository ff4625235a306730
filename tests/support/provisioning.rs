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
