//! Provisioner against a fake SCIM admin API on port 0 (and the real Redis on 127.0.0.1:6379
//! for the cross-replica lock): CONTRACT.md "Just-in-time provisioning over SCIM 2.0".

// The Redis session config of the session tests; it brings its own copy of support/local.rs.
#[allow(clippy::duplicate_mod)]
mod session_support;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use samlgate::config::{
    DomainPattern, Payload, ProvisioningConfig, ProvisioningMode, ProvisioningRule, StoreKind,
};
use samlgate::identity::Identity;
use samlgate::provision::{NotFoundReason, ProvisionError, Provisioner, Tuning, UnavailableReason};
use samlgate::session::Sessions;
use serde_json::json;
use session_support::{OwnRedis, free_port, require_shared_redis, unique_prefix};
use support::fake_scim::{FakeScim, Flavor};
use support::provisioning::person;

const TOKEN: &str = "test-token-5f1a";

fn config(scim: &FakeScim) -> ProvisioningConfig {
    support::provisioning::config(scim.url(), TOKEN, Duration::from_secs(2))
}

/// What `resolve` answers when the admin API (or the lock) is unavailable for `reason`.
fn unavailable<T>(reason: UnavailableReason) -> Result<T, ProvisionError> {
    Err(ProvisionError::Unavailable { reason })
}

fn provisioner(cfg: &ProvisioningConfig) -> Provisioner {
    Provisioner::new(cfg, None).expect("provisioner")
}

async fn redis() -> redis::aio::ConnectionManager {
    let client = redis::Client::open("redis://127.0.0.1:6379/0").expect("redis url");
    redis::aio::ConnectionManager::new(client)
        .await
        .expect("these tests need Redis on 127.0.0.1:6379 (redis-server --port 6379)")
}

#[tokio::test]
async fn new_user_is_created_once_with_the_defaults_in_the_scim_payload() {
    let scim = FakeScim::start(TOKEN).await;
    let p = provisioner(&config(&scim));

    let who = p
        .resolve(person("ann@example.com"))
        .await
        .expect("resolves");
    let stored = scim.user("ann@example.com").expect("created");
    assert_eq!(who.user_id.as_deref(), stored["id"].as_str());
    assert_eq!(who.workspace.as_deref(), Some("Production"));
    assert_eq!(who.permission_set.as_deref(), Some("Analyst"));

    let lookups = scim.lookups();
    assert_eq!(lookups.len(), 1);
    assert_eq!(
        lookups[0].filter.as_deref(),
        Some(r#"userName eq "ann@example.com""#)
    );
    assert!(
        lookups[0]
            .query
            .as_deref()
            .is_some_and(|q| q.contains("%22") && !q.contains('"') && !q.contains(' '))
    );
    assert_eq!(
        lookups[0].header("authorization"),
        format!("Bearer {TOKEN}")
    );
    assert_eq!(lookups[0].header("accept"), "application/scim+json");

    let creates = scim.creates();
    assert_eq!(creates.len(), 1);
    assert_eq!(creates[0].header("content-type"), "application/scim+json");
    assert_eq!(
        creates[0].header("authorization"),
        format!("Bearer {TOKEN}")
    );
    let body = &creates[0].body;
    assert_eq!(
        body["schemas"],
        json!(["urn:ietf:params:scim:schemas:core:2.0:User"])
    );
    assert_eq!(body["userName"], "ann@example.com");
    assert_eq!(body["externalId"], "nameid-ann@example.com");
    assert_eq!(
        body["name"],
        json!({"givenName": "Ann", "familyName": "Lee"})
    );
    assert_eq!(body["emails"][0]["value"], "ann@example.com");
    assert_eq!(body["emails"][0]["primary"], true);
    assert_eq!(body["active"], true);
    assert_eq!(
        body["roles"],
        json!([{"value": "Analyst", "type": "permissionSet", "primary": true}])
    );
    assert_eq!(
        body["entitlements"],
        json!([{"value": "Production", "type": "workspace"}])
    );

    // Returning within cache_ttl: no admin-API call at all.
    scim.clear_requests();
    let again = p.resolve(person("ANN@example.com")).await.expect("cached");
    assert_eq!(again.user_id, who.user_id);
    assert!(scim.requests().is_empty(), "{:?}", scim.requests());
}

#[tokio::test]
async fn braze_preset_sends_its_headers_and_body_and_reads_back_the_first_app_group() {
    let scim = FakeScim::start_flavor(TOKEN, Flavor::Braze).await;
    let mut cfg = config(&scim);
    cfg.payload = Payload::Braze {
        request_origin: "https://dash.example.com".into(),
        department: "marketing".into(),
    };
    let p = provisioner(&cfg);

    let who = p.resolve(person("bea@example.com")).await.expect("created");
    assert_eq!(who.workspace.as_deref(), Some("Production"));
    let creates = scim.creates();
    assert_eq!(creates.len(), 1);
    let c = &creates[0];
    assert_eq!(c.header("content-type"), "application/json");
    assert_eq!(c.header("x-request-origin"), "https://dash.example.com");
    assert_eq!(c.header("authorization"), format!("Bearer {TOKEN}"));
    assert_eq!(
        c.body,
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "bea@example.com",
            "name": {"givenName": "Ann", "familyName": "Lee"},
            "department": "marketing",
            "permissions": {"companyPermissions": [], "appGroup": [
                {"appGroupName": "Production", "appGroupPermissionSets": [{"appGroupPermissionSetName": "Analyst"}]}
            ]},
        })
    );
    assert_eq!(
        scim.lookups()[0].header("x-request-origin"),
        "https://dash.example.com"
    );

    scim.preload(json!({
        "userName": "old@example.com", "name": {"givenName": "O", "familyName": "L"}, "department": "finance",
        "permissions": {"companyPermissions": [], "appGroup": [
            {"appGroupName": "Finance", "appGroupPermissionSets": [{"appGroupPermissionSetName": "Viewer"}]},
            {"appGroupName": "Other", "appGroupPermissionSets": [{"appGroupPermissionSetName": "Admin"}]}
        ]}
    }));
    let old = p
        .resolve(person("old@example.com"))
        .await
        .expect("found (no active attribute means active)");
    assert_eq!(
        (old.workspace.as_deref(), old.permission_set.as_deref()),
        (Some("Finance"), Some("Viewer"))
    );
    assert_eq!(scim.creates().len(), 1);
}

#[tokio::test]
async fn template_payload_is_filled_with_json_escaping_and_read_back_from_its_places() {
    let scim = FakeScim::start(TOKEN).await;
    let mut cfg = config(&scim);
    cfg.payload = Payload::Template {
        path: "custom.json".into(),
        text: r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"{{email}}",
                  "name":{"givenName":"{{ first_name }}","familyName":"{{last_name}}"},
                  "urn:acme:2.0:User":{"team":"{{workspace}}","level":"{{permission_set}}","idpGroups":"{{groups}}"}}"#
            .into(),
    };
    let p = provisioner(&cfg);
    let mut id = person("tom@example.com");
    id.first_name = Some(r#"To"m\"#.into());
    id.groups = samlgate::identity::groups(["a", "b\"c"]);
    p.resolve(id).await.expect("created");
    let body = &scim.creates()[0].body;
    assert_eq!(body["userName"], "tom@example.com");
    assert_eq!(body["name"]["givenName"], r#"To"m\"#);
    assert_eq!(
        body["urn:acme:2.0:User"],
        json!({"team": "Production", "level": "Analyst", "idpGroups": "a,b\"c"})
    );

    scim.preload(json!({"userName": "kim@example.com", "urn:acme:2.0:User": {"team": "Ops", "level": "Admin"}}));
    let kim = p.resolve(person("kim@example.com")).await.expect("found");
    assert_eq!(
        (kim.workspace.as_deref(), kim.permission_set.as_deref()),
        (Some("Ops"), Some("Admin"))
    );
}

#[tokio::test]
async fn existing_user_is_found_case_insensitively_and_read_back_then_cached() {
    let scim = FakeScim::start(TOKEN).await;
    let id = scim.preload(json!({
        "userName": "Zoe@Example.COM", "active": true,
        "roles": [{"value": "Other", "type": "other"}, {"value": "Editor", "type": "permissionSet", "primary": true}],
        "entitlements": [{"value": "Staging", "type": "workspace"}],
    }));
    let p = provisioner(&config(&scim));
    let who = p.resolve(person("zoe@example.com")).await.expect("found");
    assert_eq!(who.user_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        (who.workspace.as_deref(), who.permission_set.as_deref()),
        (Some("Staging"), Some("Editor"))
    );
    assert!(scim.creates().is_empty());
    scim.clear_requests();
    p.resolve(person("zoe@example.com")).await.expect("cached");
    assert!(scim.requests().is_empty());
}

#[tokio::test]
async fn first_matching_rule_by_group_chooses_workspace_and_permission_set() {
    let scim = FakeScim::start(TOKEN).await;
    let mut cfg = config(&scim);
    cfg.rules = vec![
        ProvisioningRule {
            group: "marketing-admins".into(),
            workspace: "Marketing".into(),
            permission_set: "Admin".into(),
        },
        ProvisioningRule {
            group: "staff".into(),
            workspace: "Staff".into(),
            permission_set: "Viewer".into(),
        },
    ];
    let p = provisioner(&cfg);
    let mut id = person("mia@example.com");
    id.groups = samlgate::identity::groups(["staff", "marketing-admins"]);
    let who = p.resolve(id).await.expect("created");
    assert_eq!(
        (who.workspace.as_deref(), who.permission_set.as_deref()),
        (Some("Marketing"), Some("Admin"))
    );
    let body = &scim.creates()[0].body;
    assert_eq!(body["roles"][0]["value"], "Admin");
    assert_eq!(body["entitlements"][0]["value"], "Marketing");
}

#[tokio::test]
async fn inactive_user_is_refused_briefly_not_created() {
    let scim = FakeScim::start(TOKEN).await;
    scim.add_user("ina@example.com", false);
    let tuning = Tuning {
        refusal_ttl: Duration::from_millis(300),
        ..Tuning::default()
    };
    let p = Provisioner::with_tuning(&config(&scim), None, tuning).expect("provisioner");
    assert_eq!(
        p.resolve(person("ina@example.com")).await,
        Err(ProvisionError::Inactive)
    );
    assert!(scim.creates().is_empty());
    // Reactivated: the refusal is remembered only for a moment.
    scim.set_active("ina@example.com", true);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(p.resolve(person("ina@example.com")).await.is_ok());
}

#[tokio::test]
async fn domain_not_allowed_and_disabled_refuse_unknown_users_but_admit_existing_ones() {
    let scim = FakeScim::start(TOKEN).await;
    scim.add_user("old@elsewhere.org", true);
    let mut cfg = config(&scim);
    cfg.allowed_domains = vec![DomainPattern::parse("*.example.com").expect("pattern")];
    let p = provisioner(&cfg);
    assert_eq!(
        p.resolve(person("eve@elsewhere.org")).await,
        Err(ProvisionError::NotFound {
            reason: NotFoundReason::DomainNotAllowed
        })
    );
    assert!(p.resolve(person("old@elsewhere.org")).await.is_ok());
    assert!(p.resolve(person("sub@eu.example.com")).await.is_ok());
    assert!(p.resolve(person("apex@example.com")).await.is_ok());
    assert_eq!(scim.creates().len(), 2);

    let mut cfg = config(&scim);
    cfg.enabled = false;
    let p = provisioner(&cfg);
    let refused = p.resolve(person("new@example.com")).await;
    assert_eq!(
        refused,
        Err(ProvisionError::NotFound {
            reason: NotFoundReason::Disabled
        })
    );
    assert!(
        refused
            .err()
            .is_some_and(|e| e.to_string().contains("administrator"))
    );
    assert!(p.resolve(person("old@elsewhere.org")).await.is_ok());
    assert_eq!(scim.creates().len(), 2);
}

#[tokio::test]
async fn no_email_is_refused_without_a_call_and_an_email_nameid_is_used() {
    let scim = FakeScim::start(TOKEN).await;
    let p = provisioner(&config(&scim));
    let nobody = Identity {
        subject: "opaque-1234".into(),
        ..Identity::default()
    };
    assert_eq!(p.resolve(nobody).await, Err(ProvisionError::NoEmail));
    assert!(scim.requests().is_empty());

    let by_nameid = Identity {
        subject: "nid@example.com".into(),
        ..Identity::default()
    };
    let who = p.resolve(by_nameid).await.expect("NameID is an email");
    assert_eq!(who.email.as_deref(), Some("nid@example.com"));
    assert_eq!(scim.creates()[0].body["userName"], "nid@example.com");
}

#[tokio::test]
async fn server_errors_are_retried_then_unavailable_fast_with_nothing_created() {
    let scim = FakeScim::start(TOKEN).await;
    scim.set_failure(Some(503));
    let p = provisioner(&config(&scim));
    let t = Instant::now();
    let e = p.resolve(person("x@example.com")).await;
    assert_eq!(
        e,
        unavailable(UnavailableReason::ServerError { status: 503 })
    );
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(scim.lookups().len(), 3, "one lookup and two retries");
    assert!(scim.creates().is_empty());
    // Recovery: not cached as a refusal.
    scim.set_failure(None);
    assert!(p.resolve(person("x@example.com")).await.is_ok());
}

#[tokio::test]
async fn a_slow_admin_api_is_unavailable_after_the_timeout() {
    let scim = FakeScim::start(TOKEN).await;
    scim.set_delay(Duration::from_secs(3));
    let mut cfg = config(&scim);
    cfg.timeout = Duration::from_millis(300);
    let p = provisioner(&cfg);
    let t = Instant::now();
    let e = p.resolve(person("slow@example.com")).await;
    assert_eq!(e, unavailable(UnavailableReason::Timeout));
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert!(scim.creates().is_empty());
    assert!(e.err().is_some_and(|e| !e.to_string().contains(TOKEN)));
}

#[tokio::test]
async fn refused_connections_are_unavailable_quickly() {
    let scim = FakeScim::start(TOKEN).await;
    let p = provisioner(&config(&scim));
    // A pooled keep-alive connection exists; refusing closes it too.
    p.resolve(person("before@example.com")).await.expect("up");
    scim.refuse_connections();
    let t = Instant::now();
    let e = p.resolve(person("r@example.com")).await;
    assert_eq!(e, unavailable(UnavailableReason::Unreachable));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[tokio::test]
async fn wrong_token_is_unavailable_and_the_token_never_shows() {
    let scim = FakeScim::start("another-token").await;
    let p = provisioner(&config(&scim));
    let e = p.resolve(person("t@example.com")).await.expect_err("401");
    assert_eq!(
        e,
        ProvisionError::Unavailable {
            reason: UnavailableReason::Refused { status: 401 }
        }
    );
    assert!(!e.to_string().contains(TOKEN) && !format!("{e:?}").contains(TOKEN));
    assert!(!format!("{p:?}").contains(TOKEN));
}

#[tokio::test]
async fn circuit_breaker_makes_the_next_failure_fast() {
    let scim = FakeScim::start(TOKEN).await;
    scim.set_failure(Some(500));
    let tuning = Tuning {
        breaker_threshold: 2,
        breaker_cooldown: Duration::from_millis(500),
        ..Tuning::default()
    };
    let p = Provisioner::with_tuning(&config(&scim), None, tuning).expect("provisioner");
    for who in ["a@example.com", "b@example.com"] {
        assert!(matches!(
            p.resolve(person(who)).await,
            Err(ProvisionError::Unavailable { .. })
        ));
    }
    scim.clear_requests();
    let t = Instant::now();
    assert_eq!(
        p.resolve(person("c@example.com")).await,
        unavailable(UnavailableReason::CircuitOpen)
    );
    assert!(t.elapsed() < Duration::from_millis(50));
    assert!(scim.requests().is_empty(), "an open breaker makes no call");
    // After the cool-down the admin API is tried again, and success closes the breaker.
    scim.set_failure(None);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(p.resolve(person("c@example.com")).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_first_logins_make_one_lookup_and_one_create() {
    let scim = FakeScim::start(TOKEN).await;
    scim.set_delay(Duration::from_millis(100));
    let p = provisioner(&config(&scim));
    let logins: Vec<_> = (0..50)
        .map(|i| {
            let p = p.clone();
            let email = if i % 2 == 0 {
                "burst@example.com"
            } else {
                "Burst@Example.com"
            };
            tokio::spawn(async move { p.resolve(person(email)).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for l in logins {
        ids.insert(l.await.expect("task").expect("resolves").user_id);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(scim.lookups().len(), 1);
    assert_eq!(scim.creates().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_first_logins_across_two_replicas_sharing_redis_make_one_create() {
    let scim = Arc::new(FakeScim::start(TOKEN).await);
    scim.set_delay(Duration::from_millis(50));
    let prefix = unique_prefix("two-replicas");
    // Each replica has its own sessions on the one Redis, as two gateways would.
    let store = session_support::config(StoreKind::Redis, &require_shared_redis(), &prefix);
    let replica = || async {
        let sessions = Sessions::new(&store, false)
            .await
            .expect("sessions on Redis");
        Provisioner::new(&config(&scim), Some(sessions)).expect("provisioner")
    };
    let (a, b) = (replica().await, replica().await);
    let logins: Vec<_> = (0..50)
        .map(|i| {
            let p = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { p.resolve(person("replica@example.com")).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for l in logins {
        ids.insert(l.await.expect("task").expect("resolves").user_id);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(
        scim.creates().len(),
        1,
        "exactly one account across replicas"
    );
    assert_eq!(scim.lookups().len(), 2, "one lookup per replica");
    assert_eq!(scim.users().len(), 1);
    // The lock is released (compare-and-delete), not left to expire.
    let mut conn = redis().await;
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_shared_store_down_a_new_user_is_unavailable_and_the_admin_api_sees_nothing() {
    let scim = FakeScim::start(TOKEN).await;
    let mut redis = OwnRedis::start(free_port());
    let store = session_support::config(StoreKind::Redis, &redis.url(), "lock-outage:");
    let sessions = Sessions::new(&store, false)
        .await
        .expect("sessions on Redis");
    let p = Provisioner::new(&config(&scim), Some(sessions)).expect("provisioner");
    p.resolve(person("before@example.com"))
        .await
        .expect("provisioned while the store is up");
    redis.stop();
    let t = Instant::now();
    let e = p.resolve(person("during@example.com")).await;
    assert_eq!(e, unavailable(UnavailableReason::Lock));
    // Bounded by the store's operation timeout (250 ms here), not the lock's TTL.
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(scim.lookups().len(), 1, "only the login before the outage");
    assert_eq!(scim.creates().len(), 1, "only the login before the outage");
}

#[tokio::test]
async fn a_conflict_on_create_is_answered_by_one_more_lookup() {
    let scim = FakeScim::start(TOKEN).await;
    scim.conflict_on_next_create();
    let p = provisioner(&config(&scim));
    let who = p
        .resolve(person("race@example.com"))
        .await
        .expect("found after 409");
    assert_eq!(
        who.user_id.as_deref(),
        scim.user("race@example.com").expect("stored")["id"].as_str()
    );
    assert_eq!(scim.creates().len(), 1);
    assert_eq!(scim.lookups().len(), 2);
    assert_eq!(scim.users().len(), 1);
}

#[tokio::test]
async fn braze_conflict_without_scim_type_is_answered_by_a_lookup() {
    let scim = FakeScim::start_flavor(TOKEN, Flavor::Braze).await;
    scim.conflict_on_next_create();
    let mut cfg = config(&scim);
    cfg.payload = Payload::Braze {
        request_origin: "https://d.example.com".into(),
        department: "bi".into(),
    };
    let who = provisioner(&cfg)
        .resolve(person("race@example.com"))
        .await
        .expect("found after 409");
    assert_eq!(who.workspace.as_deref(), Some("Production"));
    assert_eq!((scim.creates().len(), scim.lookups().len()), (1, 2));
}

/// Braze's update on login (PUT, no PATCH): the rule's workspace becomes the first appGroup
/// entry, replacing the old first one; the user's other workspaces stay.
#[tokio::test]
async fn braze_sync_puts_the_rule_workspace_first_and_keeps_the_others() {
    let scim = FakeScim::start_flavor(TOKEN, Flavor::Braze).await;
    let app_group = |ws: &str, ps: &str| json!({"appGroupName": ws, "appGroupPermissionSets": [{"appGroupPermissionSetName": ps}]});
    let id = scim.preload(json!({
        "userName": "sam@example.com",
        "name": {"givenName": "Sam", "familyName": "Lee"},
        "permissions": {"companyPermissions": [], "appGroup": [
            app_group("Production", "Analyst"),
            app_group("Side", "Viewer"),
        ]},
    }));
    let mut cfg = config(&scim);
    cfg.payload = Payload::Braze {
        request_origin: "https://d.example.com".into(),
        department: "bi".into(),
    };
    cfg.mode = ProvisioningMode::SyncOnLogin;
    cfg.rules = vec![ProvisioningRule {
        group: "ops".into(),
        workspace: "Ops".into(),
        permission_set: "Admin".into(),
    }];
    let mut sam = person("sam@example.com");
    sam.groups = samlgate::identity::groups(["ops"]);
    let who = provisioner(&cfg).resolve(sam).await.expect("synced");
    assert_eq!(who.workspace.as_deref(), Some("Ops"));
    let puts = scim.replaces();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].path, format!("/scim/v2/Users/{id}"));
    assert_eq!(
        puts[0].body["permissions"]["appGroup"],
        json!([app_group("Ops", "Admin"), app_group("Side", "Viewer")])
    );
}

#[tokio::test]
async fn filter_value_escapes_quotes_and_backslashes() {
    let scim = FakeScim::start(TOKEN).await;
    let p = provisioner(&config(&scim));
    let odd = r#"o"d\d@example.com"#;
    p.resolve(person(odd)).await.expect("created");
    let l = &scim.lookups()[0];
    assert_eq!(
        l.filter.as_deref(),
        Some(r#"userName eq "o\"d\\d@example.com""#)
    );
    assert!(
        l.query
            .as_deref()
            .is_some_and(|q| q.contains("%5C%22") && q.contains("%5C%5C"))
    );
    // Another replica (no shared cache) finds it through the escaped filter.
    let fresh = provisioner(&config(&scim));
    fresh.resolve(person(odd)).await.expect("found");
    assert_eq!(scim.creates().len(), 1);
}

#[tokio::test]
async fn sync_on_login_puts_rule_values_only_for_users_a_rule_covers() {
    let scim = FakeScim::start(TOKEN).await;
    let covered = scim.preload(json!({
        "userName": "sam@example.com", "active": true, "name": {"givenName": "Sam", "familyName": "Old"},
        "emails": [{"value": "sam@example.com", "primary": true}],
        "roles": [{"value": "Analyst", "type": "permissionSet", "primary": true}, {"value": "keep", "type": "other"}],
        "entitlements": [{"value": "Production", "type": "workspace"}],
    }));
    scim.add_user("free@example.com", true);
    let mut cfg = config(&scim);
    cfg.mode = ProvisioningMode::SyncOnLogin;
    cfg.rules = vec![ProvisioningRule {
        group: "ops".into(),
        workspace: "Ops".into(),
        permission_set: "Admin".into(),
    }];
    let p = provisioner(&cfg);

    let mut sam = person("sam@example.com");
    sam.first_name = Some("Sam".into());
    sam.last_name = Some("New".into());
    sam.groups = samlgate::identity::groups(["ops"]);
    let who = p.resolve(sam).await.expect("found and synced");
    assert_eq!(
        (who.workspace.as_deref(), who.permission_set.as_deref()),
        (Some("Ops"), Some("Admin"))
    );
    let puts = scim.replaces();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].path, format!("/scim/v2/Users/{covered}"));
    let stored = scim.user("sam@example.com").expect("stored");
    assert_eq!(stored["name"]["familyName"], "New");
    assert_eq!(
        stored["entitlements"],
        json!([{"value": "Ops", "type": "workspace"}])
    );
    assert!(
        stored["roles"]
            .as_array()
            .is_some_and(|r| r.contains(&json!({"value": "keep", "type": "other"})))
    );
    assert!(stored["roles"].as_array().is_some_and(|r| {
        r.contains(&json!({"value": "Admin", "type": "permissionSet", "primary": true}))
    }));

    // Not covered by a rule: left alone.
    p.resolve(person("free@example.com")).await.expect("found");
    assert_eq!(scim.replaces().len(), 1);
    // Already in sync (a fresh replica, no cache): no PUT.
    let mut sam = person("sam@example.com");
    sam.first_name = Some("Sam".into());
    sam.last_name = Some("New".into());
    sam.groups = samlgate::identity::groups(["ops"]);
    provisioner(&cfg).resolve(sam).await.expect("found");
    assert_eq!(scim.replaces().len(), 1);
}

#[tokio::test]
async fn outcomes_and_latency_are_exported() {
    let scim = FakeScim::start(TOKEN).await;
    let p = provisioner(&config(&scim));
    let mut registry = Registry::default();
    p.register_metrics(&mut registry);
    p.resolve(person("m@example.com")).await.expect("created");
    p.resolve(person("m@example.com")).await.expect("cached");
    let _ = p.resolve(Identity::default()).await;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    for line in [
        r#"samlgate_provisioning_total{outcome="created"} 1"#,
        r#"samlgate_provisioning_total{outcome="cached"} 1"#,
        r#"samlgate_provisioning_total{outcome="no_email"} 1"#,
        r#"samlgate_provisioning_admin_api_duration_seconds_count{op="create"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in:\n{text}");
    }
}

/// Resolves `email` with a fresh provisioner (no cache) against `scim`.
async fn fresh_resolve(scim: &FakeScim, email: &str) -> Result<Identity, ProvisionError> {
    provisioner(&config(scim)).resolve(person(email)).await
}

/// A ListResponse holding `resources`, as raw text.
fn list_response(resources: serde_json::Value) -> String {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
           "totalResults": resources.as_array().map_or(0, Vec::len), "Resources": resources})
    .to_string()
}

/// RFC 7643 §2.1: attribute names are case-insensitive, and `active` is read fail-closed.
#[tokio::test]
async fn active_fails_closed_in_any_spelling_and_value() {
    let scim = FakeScim::start(TOKEN).await;
    let (logs, _guard) = support::provisioning::capture_logs();
    let refused = [
        ("Active", json!(false)),
        ("ACTIVE", json!("False")),
        ("active", json!(0)),
        ("active", json!("nein-7c1")),
        ("active", json!({"value": true})),
        ("active", json!([true])),
        ("active", json!(2)),
    ];
    for (key, value) in refused {
        let mut user = json!({"id": "u-k", "userName": "k1@example.com"});
        user[key] = value.clone();
        scim.set_lookup_answer(Some((200, list_response(json!([user])))));
        assert_eq!(
            fresh_resolve(&scim, "k1@example.com").await,
            Err(ProvisionError::Inactive),
            "{key}: {value}"
        );
    }
    // Two spellings, one of them not active: inactive.
    scim.set_lookup_answer(Some((
        200,
        list_response(
            json!([{"id": "u-k", "userName": "k1@example.com", "active": true, "Active": false}]),
        ),
    )));
    assert_eq!(
        fresh_resolve(&scim, "k1@example.com").await,
        Err(ProvisionError::Inactive)
    );
    // What an unreadable value logs: its JSON type and the id, never the value.
    let warned = logs.lines_with(&["WARN", "u-k", "treating the user as inactive"]);
    assert_eq!(warned.len(), 4, "{}", logs.text());
    assert!(warned.iter().any(|l| l.contains("string")), "{warned:?}");
    assert!(warned.iter().any(|l| l.contains("object")), "{warned:?}");
    assert!(!logs.text().contains("nein-7c1"), "{}", logs.text());

    for value in [json!(true), json!("TRUE"), json!(1), json!(null)] {
        scim.set_lookup_answer(Some((
            200,
            list_response(
                json!([{"id": "u-k", "userName": "k1@example.com", "active": value.clone()}]),
            ),
        )));
        let who = fresh_resolve(&scim, "k1@example.com").await;
        assert_eq!(
            who.map(|w| w.user_id),
            Ok(Some("u-k".into())),
            "active: {value}"
        );
    }
    assert!(scim.creates().is_empty());
}

#[tokio::test]
async fn a_list_and_a_user_in_another_spelling_are_read_alike() {
    let scim = FakeScim::start(TOKEN).await;
    scim.set_lookup_answer(Some((
        200,
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalresults": 1,
               "resources": [{"ID": "u-r", "username": "R1@example.com", "ACTIVE": true,
                              "Name": {"GIVENNAME": "R", "familyname": "One"},
                              "Roles": [{"Value": "Editor", "Type": "permissionSet", "Primary": true}],
                              "ENTITLEMENTS": [{"VALUE": "Staging", "TYPE": "workspace"}]}]})
        .to_string(),
    )));
    let who = fresh_resolve(&scim, "r1@example.com").await.expect("found");
    assert_eq!(who.user_id.as_deref(), Some("u-r"));
    assert_eq!(
        (who.workspace.as_deref(), who.permission_set.as_deref()),
        (Some("Staging"), Some("Editor"))
    );
    assert!(scim.creates().is_empty(), "found, so not created");
    // Inactive under that spelling too.
    scim.set_lookup_answer(Some((
        200,
        json!({"resources": [{"id": "u-r", "USERNAME": "r1@example.com", "Active": "false"}]})
            .to_string(),
    )));
    assert_eq!(
        fresh_resolve(&scim, "r1@example.com").await,
        Err(ProvisionError::Inactive)
    );
    assert!(scim.creates().is_empty());
}

#[tokio::test]
async fn of_several_case_variants_the_exact_one_is_taken_and_else_none() {
    let scim = FakeScim::start(TOKEN).await;
    scim.preload(json!({"userName": "H2@example.com", "active": false}));
    let lower = scim.preload(json!({"userName": "h2@example.com", "active": true}));
    let (logs, _guard) = support::provisioning::capture_logs();
    let who = fresh_resolve(&scim, "h2@example.com").await.expect("found");
    assert_eq!(who.user_id.as_deref(), Some(lower.as_str()));
    assert_eq!(
        fresh_resolve(&scim, "H2@example.com").await,
        Err(ProvisionError::Inactive)
    );
    // Neither is spelled as asked: no guess, no create.
    assert_eq!(
        fresh_resolve(&scim, "h2@EXAMPLE.com").await,
        unavailable(UnavailableReason::BadResponse)
    );
    assert!(scim.creates().is_empty());
    assert_eq!(
        logs.lines_with(&["WARN", "h2@EXAMPLE.com", "refusing to guess"])
            .len(),
        1,
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn an_oversized_answer_is_a_bad_response_not_retried() {
    let scim = FakeScim::start(TOKEN).await;
    let (logs, _guard) = support::provisioning::capture_logs();
    let padding = "x".repeat((1 << 20) + 1);
    scim.set_lookup_answer(Some((
        200,
        list_response(json!([{"id": "u-big", "userName": "big@example.com", "padding": padding}])),
    )));
    assert_eq!(
        fresh_resolve(&scim, "big@example.com").await,
        unavailable(UnavailableReason::BadResponse)
    );
    assert_eq!(scim.lookups().len(), 1, "not retried as transient");
    assert!(scim.creates().is_empty());
    assert_eq!(
        logs.lines_with(&["WARN", "big@example.com", "too large"])
            .len(),
        1,
        "{}",
        logs.text()
    );
    assert!(
        logs.lines_with(&["reason=\"unreachable\""]).is_empty(),
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn a_create_answered_without_an_id_is_looked_up_once_and_used() {
    let scim = FakeScim::start(TOKEN).await;
    scim.create_without_id_next();
    let who = fresh_resolve(&scim, "noid@example.com")
        .await
        .expect("found after the create");
    let stored = scim.user("noid@example.com").expect("created");
    assert_eq!(who.user_id.as_deref(), stored["id"].as_str());
    assert_eq!(who.workspace.as_deref(), Some("Production"));
    assert_eq!((scim.creates().len(), scim.lookups().len()), (1, 2));
}

#[tokio::test]
async fn a_create_that_times_out_is_looked_up_once_and_used() {
    let scim = FakeScim::start(TOKEN).await;
    scim.set_create_answer_delay(Duration::from_secs(3));
    let mut cfg = config(&scim);
    cfg.timeout = Duration::from_millis(300);
    let t = Instant::now();
    let who = provisioner(&cfg)
        .resolve(person("late@example.com"))
        .await
        .expect("found after the create timed out");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    let stored = scim.user("late@example.com").expect("created");
    assert_eq!(who.user_id.as_deref(), stored["id"].as_str());
    assert_eq!((scim.creates().len(), scim.lookups().len()), (1, 2));
}

fn braze_config(scim: &FakeScim) -> ProvisioningConfig {
    let mut cfg = config(scim);
    cfg.payload = Payload::Braze {
        request_origin: "https://dash.example.com".into(),
        department: "bi".into(),
    };
    cfg
}

/// CONTRACT.md: Braze requests carry `Content-Type: application/json`, the bodiless GET too.
#[tokio::test]
async fn braze_lookups_carry_content_type_too() {
    let scim = FakeScim::start_flavor(TOKEN, Flavor::Braze).await;
    scim.add_user("known@example.com", true);
    let p = provisioner(&braze_config(&scim));
    p.resolve(person("known@example.com")).await.expect("found");
    p.resolve(person("new@example.com")).await.expect("created");
    let requests = scim.requests();
    assert_eq!(requests.len(), 3, "two lookups and a create");
    for r in &requests {
        assert_eq!(r.header("content-type"), "application/json", "{}", r.method);
        assert_eq!(r.header("x-request-origin"), "https://dash.example.com");
    }
}

/// Braze requires givenName and familyName: a part the IdP did not send is the email's local part.
#[tokio::test]
async fn braze_create_fills_missing_names_with_the_local_part() {
    let scim = FakeScim::start_flavor(TOKEN, Flavor::Braze).await;
    let p = provisioner(&braze_config(&scim));
    let mut nameless = person("no.name@example.com");
    nameless.first_name = None;
    nameless.last_name = None;
    p.resolve(nameless).await.expect("created");
    let mut half = person("half@example.com");
    half.last_name = Some(" ".into());
    p.resolve(half).await.expect("created");

    let creates = scim.creates();
    assert_eq!(
        creates[0].body["name"],
        json!({"givenName": "no.name", "familyName": "no.name"})
    );
    assert_eq!(
        creates[1].body["name"],
        json!({"givenName": "Ann", "familyName": "half"})
    );
    assert_eq!(scim.users().len(), 2);
}

#[tokio::test]
async fn an_email_domain_with_an_empty_label_is_not_an_email() {
    let scim = FakeScim::start(TOKEN).await;
    let mut cfg = config(&scim);
    cfg.allowed_domains = vec![DomainPattern::parse("*.corp.example.org").expect("pattern")];
    let p = provisioner(&cfg);
    for bad in [
        "bob@.corp.example.org",
        "bob@eu..corp.example.org",
        "bob@eu.corp.example.org.",
    ] {
        assert_eq!(
            p.resolve(person(bad)).await,
            Err(ProvisionError::NoEmail),
            "{bad}"
        );
    }
    assert!(scim.requests().is_empty(), "{:?}", scim.requests());
    p.resolve(person("bob@eu.corp.example.org"))
        .await
        .expect("a real subdomain");
}

#[tokio::test]
async fn a_refused_token_is_logged_as_an_error_and_never_shown() {
    let scim = FakeScim::start("another-token").await;
    let (logs, _guard) = support::provisioning::capture_logs();
    assert_eq!(
        fresh_resolve(&scim, "t@example.com").await,
        unavailable(UnavailableReason::Refused { status: 401 })
    );
    let scim2 = FakeScim::start(TOKEN).await;
    scim2.set_failure(Some(403));
    assert_eq!(
        fresh_resolve(&scim2, "t@example.com").await,
        unavailable(UnavailableReason::Refused { status: 403 })
    );
    for status in ["HTTP 401", "HTTP 403"] {
        assert_eq!(
            logs.lines_with(&["ERROR", "refused samlgate's bearer token", status])
                .len(),
            1,
            "{}",
            logs.text()
        );
    }
    assert!(!logs.text().contains(TOKEN) && !logs.text().contains("another-token"));
}
