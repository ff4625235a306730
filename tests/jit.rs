//! Just-in-time provisioning, black-box through the running gateway against a fake SCIM 2.0
//! admin API on port 0: first login creates the account once with the default workspace and
//! permission set, returning users make no SCIM call, refusals are 403 pages, an admin API in
//! trouble is a 503 page with no session while existing sessions keep working, and a burst of
//! first logins across two replicas sharing Redis creates exactly one account.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::fake_scim::FakeScim;
use support::gateway::Opts;
use support::sso::{Browser, Sso, set_attribute, sets_session};

const TOKEN: &str = "scim-token-for-tests";

fn provisioning(scim: &FakeScim, extra: &str) -> String {
    format!(
        "[provisioning]\nurl = \"{}\"\ntoken = \"{TOKEN}\"\ntimeout = \"1s\"\ndefault_workspace = \"Production\"\ndefault_permission_set = \"Analyst\"\n{extra}\n\
         [[provisioning.rules]]\ngroup = \"marketing-admins\"\nworkspace = \"Marketing\"\npermission_set = \"Admin\"\n",
        scim.url()
    )
}

/// A fake SCIM API and a gateway provisioning into it, `options` added to `[provisioning]`.
async fn start_provisioning(options: &str) -> (FakeScim, Sso) {
    let scim = FakeScim::start(TOKEN).await;
    let extra = provisioning(&scim, options);
    let sso = Sso::start_extra(&extra).await;
    (scim, sso)
}

/// A fresh browser signs in as `name_id`, with `email` as the email attribute (none when
/// `None`; a NameID that is not an email then gets the persistent format).
async fn login_as(
    sso: &Sso,
    name_id: &str,
    email: Option<&str>,
) -> (http::Response<()>, bytes::Bytes) {
    let mut b = Browser::new();
    let start = b.start_login(&sso.gw, "/").await;
    let mut spec = sso.spec(Some(&start.request_id));
    spec.name_id = name_id.into();
    set_attribute(&mut spec, "email", email.as_slice());
    if !name_id.contains('@') {
        spec.name_id_format = Some("urn:oasis:names:tc:SAML:2.0:nameid-format:persistent".into());
    }
    b.post_acs(&sso.gw, &sso.form_value(&spec), &start.relay_state)
        .await
}

#[tokio::test]
async fn first_login_creates_the_account_once_and_headers_carry_it() {
    let (scim, sso) = start_provisioning("").await;
    let mut b = Browser::new();
    let (resp, _) = sso.login(&mut b, "/home").await;
    assert_eq!(resp.status(), 303);
    assert_eq!(scim.creates().len(), 1);
    let create = &scim.creates()[0];
    assert_eq!(create.header("authorization"), format!("Bearer {TOKEN}"));
    assert_eq!(create.body["userName"], "alice@example.com");
    assert_eq!(create.body["name"]["givenName"], "Alice");
    assert_eq!(create.body["emails"][0]["value"], "alice@example.com");
    assert_eq!(create.body["roles"][0]["value"], "Analyst");
    assert_eq!(create.body["entitlements"][0]["value"], "Production");
    let id = scim.user("alice@example.com").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let (resp, _) = b.get(&format!("{}/home", sso.gw.public_url)).await;
    assert_eq!(resp.status(), 200);
    let seen = sso.dash.last();
    assert_eq!(seen.headers["x-forwarded-user"], id.as_str());
    assert_eq!(seen.headers["x-forwarded-workspace"], "Production");
    assert_eq!(seen.headers["x-forwarded-permission-set"], "Analyst");

    // A second login of the same user (another browser) makes no SCIM call at all.
    scim.clear_requests();
    let mut other = Browser::new();
    let (resp, _) = sso.login(&mut other, "/").await;
    assert_eq!(resp.status(), 303);
    assert!(scim.requests().is_empty(), "{:?}", scim.requests());
}

#[tokio::test]
async fn rules_inactive_disabled_domain_and_missing_email() {
    let (scim, sso) = start_provisioning("allowed_domains = [\"example.com\"]").await;
    // Rule by group.
    let mut b = Browser::new();
    let start = b.start_login(&sso.gw, "/").await;
    let mut spec = sso.spec(Some(&start.request_id));
    set_attribute(&mut spec, "groups", &["marketing-admins"]);
    let (resp, _) = b
        .post_acs(&sso.gw, &sso.form_value(&spec), &start.relay_state)
        .await;
    assert_eq!(resp.status(), 303);
    let create = scim.creates().pop().unwrap();
    assert_eq!(create.body["roles"][0]["value"], "Admin");
    assert_eq!(create.body["entitlements"][0]["value"], "Marketing");

    // Inactive account.
    scim.add_user("bob@example.com", false);
    let refused = |name: &'static str, email: Option<&'static str>| {
        let sso = &sso;
        async move {
            let (resp, body) = login_as(sso, name, email).await;
            assert_eq!(resp.status(), 403, "{name}");
            assert!(!sets_session(&resp), "{name}");
            String::from_utf8_lossy(&body).to_string()
        }
    };
    let page = refused("bob@example.com", Some("bob@example.com")).await;
    assert!(
        page.to_lowercase().contains("deactivated") || page.to_lowercase().contains("inactive"),
        "{page}"
    );
    let page = refused("eve@evil.test", Some("eve@evil.test")).await;
    assert!(
        page.to_lowercase().contains("no dashboard account exists"),
        "{page}"
    );
    let page = refused("opaque-id-123", None).await;
    assert!(page.to_lowercase().contains("email"), "{page}");
    assert_eq!(
        scim.creates().len(),
        1,
        "no account is created for a refused login"
    );
    assert!(sso.dash.seen().is_empty());

    // Provisioning disabled: an unknown user is told the account does not exist.
    let (scim2, sso2) = start_provisioning("enabled = false").await;
    let mut b = Browser::new();
    let (resp, body) = sso2.login(&mut b, "/").await;
    assert_eq!(resp.status(), 403);
    assert!(
        String::from_utf8_lossy(&body)
            .to_lowercase()
            .contains("no dashboard account exists")
    );
    assert!(scim2.creates().is_empty());
}

#[tokio::test]
async fn admin_api_trouble_gives_503_without_a_session_and_existing_sessions_keep_working() {
    let (scim, sso) = start_provisioning("").await;
    let mut alice = Browser::new();
    assert_eq!(sso.login(&mut alice, "/").await.0.status(), 303);

    let new_user_login = |who: &'static str| login_as(&sso, who, Some(who));
    scim.set_failure(Some(503));
    let (resp, body) = new_user_login("carol@example.com").await;
    assert_eq!(resp.status(), 503);
    assert!(!sets_session(&resp));
    assert!(String::from_utf8_lossy(&body).contains("try again"));
    scim.set_failure(None);
    scim.set_delay(Duration::from_millis(2500));
    let (resp, _) = new_user_login("dave@example.com").await;
    assert_eq!(resp.status(), 503);
    assert!(!sets_session(&resp));
    scim.set_delay(Duration::ZERO);
    scim.refuse_connections();
    let (resp, _) = new_user_login("erin@example.com").await;
    assert_eq!(resp.status(), 503);
    assert!(!sets_session(&resp));
    assert!(
        scim.creates()
            .iter()
            .all(|c| c.body["userName"] == "alice@example.com"),
        "nothing half-created"
    );
    // Alice's session is untouched by all of that.
    let (resp, _) = alice
        .get(&format!("{}/still-works", sso.gw.public_url))
        .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn burst_of_first_logins_across_two_replicas_creates_one_account() {
    let scim = FakeScim::start(TOKEN).await;
    scim.set_delay(Duration::from_millis(100));
    let extra = provisioning(&scim, "");
    let prefix = format!(
        "redis_key_prefix = \"jit-{}:\"\nstore = \"redis\"",
        rand::random::<u64>()
    );
    let sso = Sso::start(Opts {
        extra: &extra,
        session: &prefix,
        ..Opts::default()
    })
    .await;
    let b_gw = sso
        .replica(Opts {
            extra: &extra,
            session: &prefix,
            ..Opts::default()
        })
        .await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let gw = if i % 2 == 0 { &sso.gw } else { &b_gw };
        let mut b = Browser::new();
        let start = b.start_login(gw, "/").await;
        let value = sso.form_value(&sso.spec(Some(&start.request_id)));
        let acs = format!("{}/saml/acs", gw.public_url);
        tasks.push(tokio::spawn(async move {
            let body: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("SAMLResponse", &value)
                .append_pair("RelayState", &start.relay_state)
                .finish();
            let req = http::Request::post(acs)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("cookie", b.cookie_header())
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap();
            support::gateway::send(req).await.0.status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 303);
    }
    assert_eq!(
        scim.creates().len(),
        1,
        "exactly one account for a burst of 50 first logins"
    );
    assert_eq!(scim.users().len(), 1);
}

#[tokio::test]
async fn an_inactive_user_in_any_spelling_and_an_email_with_an_empty_domain_label_get_403() {
    let (scim, sso) = start_provisioning("allowed_domains = [\"*.corp.example.org\"]").await;
    // RFC 7643 §2.1: `Active` is `active`; false means no session.
    scim.set_lookup_answer(Some((
        200,
        serde_json::json!({"totalResults": 1, "Resources": [
            {"id": "u-k", "userName": "k1@eu.corp.example.org", "Active": false}]})
        .to_string(),
    )));
    let (resp, body) = login_as(
        &sso,
        "k1@eu.corp.example.org",
        Some("k1@eu.corp.example.org"),
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert!(!sets_session(&resp));
    assert!(
        String::from_utf8_lossy(&body)
            .to_lowercase()
            .contains("deactivated")
    );
    scim.set_lookup_answer(None);
    // An empty domain label is not an email: no admin-API call, no account.
    scim.clear_requests();
    let (resp, body) = login_as(&sso, "opaque-bob", Some("bob@.corp.example.org")).await;
    assert_eq!(resp.status(), 403);
    assert!(!sets_session(&resp));
    assert!(
        String::from_utf8_lossy(&body)
            .to_lowercase()
            .contains("email")
    );
    assert!(scim.requests().is_empty(), "{:?}", scim.requests());
    assert!(sso.dash.seen().is_empty());
}
