//! Identity to the dashboard, black-box: spoofed identity headers in every spelling, public
//! paths, value encoding, the Grafana preset, the signed identity JWT against the JWKS, access
//! rules, browser-vs-API answers and forward-auth (`/saml/auth`) with trusted and untrusted
//! peers.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use percent_encoding::percent_decode_str;
use support::dashboard::Seen;
use support::fake_scim::FakeScim;
use support::gateway::{self, Opts, get, raw_get};
use support::sso::{Browser, Sso, set_attribute};

const JWT: &str = "[headers.jwt]\naudience = \"dashboard\"\n";

/// Identity headers a client plants, each value marked `SPOOF` so none can hide upstream.
const SPOOFS: &[&str] = &[
    "X-Forwarded-User: SPOOF-mallory",
    "x-forwarded-user: SPOOF-duplicate",
    "X-FORWARDED-EMAIL: SPOOF@evil.test",
    "x_forwarded_user: SPOOF-underscore",
    "X_Forwarded_Groups: SPOOF-admins",
    "X-Forwarded_Name: SPOOF Mallory",
    "x-forwarded-preferred-username: SPOOF",
    "X-Forwarded-Workspace: SPOOF-Production",
    "X-Forwarded-Permission-Set: SPOOF-Admin",
    "x-forwarded-permission_set: SPOOF-Admin",
    "X-Auth-Request-User: SPOOF",
    "X-Auth-Request-Email: SPOOF@evil.test",
    "x_auth_request_groups: SPOOF-admins",
    "X-Auth-Request-Access-Token: SPOOF",
    "X-WEBAUTH-USER: SPOOF",
    "X-WebAuth-Role: SPOOF-Admin",
    "x_webauth_email: SPOOF@evil.test",
    "X-Samlgate-Jwt-Assertion: SPOOF.eyJ.sig",
    "x_samlgate_jwt_assertion: SPOOF.eyJ.sig2",
    "X-SAMLGATE-JWT-ASSERTION: SPOOF.eyJ.sig3",
    "Remote-User: SPOOF",
    "remote_user: SPOOF",
];

/// A new browser signed in through the real SP-initiated flow as a user with these attributes.
async fn signed_in(sso: &Sso, email: &str, name: (&str, &str), groups: &[&str]) -> Browser {
    let mut b = Browser::new();
    let start = b.start_login(&sso.gw, "/").await;
    let mut spec = sso.spec(Some(&start.request_id));
    spec.name_id = email.into();
    spec.attributes = vec![
        ("email".into(), vec![email.into()]),
        ("firstName".into(), vec![name.0.into()]),
        ("lastName".into(), vec![name.1.into()]),
    ];
    set_attribute(&mut spec, "groups", groups);
    let value = sso.form_value(&spec);
    let (resp, _) = b.post_acs(&sso.gw, &value, &start.relay_state).await;
    assert_eq!(resp.status(), 303, "login failed");
    b
}

fn cookie_line(b: &Browser) -> String {
    format!("Cookie: {}", b.cookie_header())
}

/// Asserts no header the dashboard saw carries a planted value or an underscore spelling of an
/// identity header.
fn assert_clean(seen: &Seen) {
    for (name, value) in &seen.headers {
        let v = String::from_utf8_lossy(value.as_bytes());
        assert!(!v.contains("SPOOF"), "{name}: {v} reached the dashboard");
        assert!(
            !name.as_str().contains('_'),
            "{name} (underscore spelling) reached the dashboard"
        );
    }
}

/// Every header of the dashboard's request whose folded name is `name`.
fn values(seen: &Seen, name: &str) -> Vec<String> {
    seen.headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream_with_or_without_a_session() {
    let sso = Sso::start_extra(JWT).await;
    let addr = sso.gw.addr;

    // No session, public path: forwarded, but without any planted identity.
    let (status, _) = raw_get(addr, "/static/app.js", SPOOFS).await;
    assert_eq!(status, 200);
    assert_clean(&sso.dash.last());
    assert!(sso.dash.last().headers.get("x-forwarded-user").is_none());

    // No session, protected path: never forwarded at all.
    let before = sso.dash.seen().len();
    let (status, _) = raw_get(addr, "/reports", SPOOFS).await;
    assert_eq!(status, 401);
    assert_eq!(sso.dash.seen().len(), before);

    // With a session: exactly our values, one of each.
    let b = signed_in(&sso, "alice@example.com", ("Alice", "Liddell"), &["staff"]).await;
    let cookie = cookie_line(&b);
    let mut lines: Vec<&str> = SPOOFS.to_vec();
    lines.push(&cookie);
    let (status, _) = raw_get(addr, "/reports", &lines).await;
    assert_eq!(status, 200);
    let seen = sso.dash.last();
    assert_clean(&seen);
    assert_eq!(values(&seen, "x-forwarded-user"), ["alice@example.com"]);
    assert_eq!(values(&seen, "x-forwarded-email"), ["alice@example.com"]);
    assert_eq!(values(&seen, "x-forwarded-groups"), ["staff"]);
    assert_eq!(values(&seen, "x-samlgate-jwt-assertion").len(), 1);
    for h in [
        "x-auth-request-user",
        "x-webauth-user",
        "remote-user",
        "x-forwarded-preferred-username",
    ] {
        assert!(seen.headers.get(h).is_none(), "{h} reached the dashboard");
    }
    assert!(
        seen.headers.get("cookie").is_none(),
        "session cookie leaked"
    );

    // With a session, public path: still no identity at all (neither ours nor planted).
    let (status, _) = raw_get(addr, "/static/app.js", &lines).await;
    assert_eq!(status, 200);
    let seen = sso.dash.last();
    assert_clean(&seen);
    for h in [
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x-samlgate-jwt-assertion",
    ] {
        assert!(seen.headers.get(h).is_none(), "{h} on a public path");
    }
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream_over_http2() {
    // HTTP/2 (prior knowledge): a browser sends each cookie as its own `cookie` header
    // (RFC 9113 §8.2.3), and header names arrive lower-case.
    let sso = Sso::start_extra(JWT).await;
    let b = signed_in(&sso, "alice@example.com", ("Alice", "Liddell"), &["staff"]).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let mut req = http::Request::get(format!("{}/reports", sso.gw.public_url));
    for line in SPOOFS {
        let (name, value) = line.split_once(": ").unwrap();
        req = req.header(name.to_ascii_lowercase(), value);
    }
    req = req
        .header("cookie", "theme=dark")
        .header("cookie", b.cookie_header())
        .header("cookie", "lang=en")
        .header("forwarded", "for=6.6.6.6")
        .header("x-forwarded-prefix", "/evil");
    let resp = client
        .request(
            req.body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let seen = sso.dash.last();
    assert_clean(&seen);
    assert_eq!(values(&seen, "x-forwarded-user"), ["alice@example.com"]);
    assert_eq!(values(&seen, "x-forwarded-groups"), ["staff"]);
    assert_eq!(values(&seen, "x-samlgate-jwt-assertion").len(), 1);
    // The cookies reach an HTTP/1.1 dashboard joined into one header, without ours.
    assert_eq!(values(&seen, "cookie"), ["theme=dark; lang=en"]);
    for h in ["forwarded", "x-forwarded-prefix"] {
        assert!(seen.headers.get(h).is_none(), "{h} reached the dashboard");
    }
}

#[tokio::test]
async fn connection_cannot_name_away_the_headers_the_gateway_sets() {
    // RFC 9110 §7.6.1 makes a proxy drop the headers `Connection` names; done after the
    // identity was set, that would let a user remove their own groups or permission set (or
    // the whole identity) on the way to the dashboard (Traefik's CVE-2024-45410).
    let sso = Sso::start_extra(JWT).await;
    let b = signed_in(&sso, "alice@example.com", ("Alice", "Liddell"), &["staff"]).await;
    let cookie = cookie_line(&b);
    let connection = "Connection: keep-alive, X-Forwarded-User, x-forwarded-email, \
                      X-Forwarded-Name, X-Forwarded-Groups, X-Forwarded-Workspace, \
                      X-Forwarded-Permission-Set, X-Samlgate-Jwt-Assertion, X-Forwarded-For, \
                      X-Forwarded-Proto, X-Forwarded-Host, X-Private";
    let (status, _) = raw_get(
        sso.gw.addr,
        "/reports",
        &[&cookie, connection, "X-Private: hop"],
    )
    .await;
    assert_eq!(status, 200);
    let seen = sso.dash.last();
    assert_eq!(values(&seen, "x-forwarded-user"), ["alice@example.com"]);
    assert_eq!(values(&seen, "x-forwarded-email"), ["alice@example.com"]);
    assert_eq!(values(&seen, "x-forwarded-name"), ["Alice Liddell"]);
    assert_eq!(values(&seen, "x-forwarded-groups"), ["staff"]);
    assert_eq!(values(&seen, "x-samlgate-jwt-assertion").len(), 1);
    for h in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"] {
        assert_eq!(values(&seen, h).len(), 1, "{h}");
    }
    // The client's own header it named is still dropped, as the RFC asks.
    assert!(seen.headers.get("x-private").is_none());
}

#[tokio::test]
async fn a_signed_in_path_cannot_climb_above_the_dashboards_base_path() {
    // Access rules see `/console`; the dashboard would get `/dash/../console`, which it may
    // well resolve to `/console`, outside the base path samlgate was put in front of.
    let sso = Sso::start(Opts {
        base_path: "/dash",
        ..Opts::default()
    })
    .await;
    let b = signed_in(&sso, "alice@example.com", ("Alice", "Liddell"), &[]).await;
    let cookie = cookie_line(&b);
    for path in [
        "/../console",
        "/reports/../../console",
        "/%2e%2e/console",
        "/%252e%252e/console",
        "/reports/..%5c..%5cconsole",
        "/..;/console",
    ] {
        let (status, _) = raw_get(sso.gw.addr, path, &[&cookie]).await;
        assert_eq!(status, 400, "{path}");
    }
    assert!(sso.dash.seen().is_empty(), "{:?}", sso.dash.last().uri);
    // The same session reaches a plain path under the base.
    let (status, _) = raw_get(sso.gw.addr, "/reports?q=1", &[&cookie]).await;
    assert_eq!(status, 200);
    assert_eq!(sso.dash.last().uri, "/dash/reports?q=1");
}

#[tokio::test]
async fn groups_with_commas_and_non_ascii_values_round_trip_as_documented() {
    let sso = Sso::start(Opts::default()).await;
    let groups = ["R&D, Europe", "Zoë's team", "100%", "plain"];
    let mut b = signed_in(&sso, "jose@example.com", ("José", "Müller"), &groups).await;
    let (resp, _) = b.get(&format!("{}/reports", sso.gw.public_url)).await;
    assert_eq!(resp.status(), 200);
    let seen = sso.dash.last();
    let raw = seen.headers["x-forwarded-groups"].to_str().unwrap();
    assert_eq!(raw, "R&D%2C Europe,Zo%C3%AB's team,100%25,plain");
    // The dashboard side: split on ',', then percent-decode each part (documented rule).
    let decoded: Vec<String> = raw
        .split(',')
        .map(|g| percent_decode_str(g).decode_utf8().unwrap().into_owned())
        .collect();
    assert_eq!(decoded, groups);
    let name = seen.headers["x-forwarded-name"].to_str().unwrap();
    assert_eq!(
        percent_decode_str(name).decode_utf8().unwrap(),
        "José Müller"
    );
}

#[tokio::test]
async fn grafana_preset_sends_x_webauth_headers_with_the_permission_set_as_role() {
    let scim = FakeScim::start("scim-token").await;
    let extra = format!(
        "[provisioning]\nurl = \"{}\"\ntoken = \"scim-token\"\ndefault_workspace = \"Production\"\ndefault_permission_set = \"Editor\"\n[headers]\npreset = \"grafana\"\n",
        scim.url()
    );
    let sso = Sso::start_extra(&extra).await;
    let b = signed_in(
        &sso,
        "gina@example.com",
        ("Gina", "Graf"),
        &["viewers", "ops"],
    )
    .await;
    let id = scim.user("gina@example.com").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cookie = cookie_line(&b);
    let (status, _) = raw_get(
        sso.gw.addr,
        "/d/home",
        &[&cookie, "X-WEBAUTH-USER: SPOOF", "x_webauth_role: SPOOF"],
    )
    .await;
    assert_eq!(status, 200);
    let seen = sso.dash.last();
    assert_clean(&seen);
    assert_eq!(values(&seen, "x-webauth-user"), [id.as_str()]);
    assert_eq!(values(&seen, "x-webauth-email"), ["gina@example.com"]);
    assert_eq!(values(&seen, "x-webauth-name"), ["Gina Graf"]);
    assert_eq!(values(&seen, "x-webauth-groups"), ["viewers,ops"]);
    assert_eq!(values(&seen, "x-webauth-role"), ["Editor"]);
    assert!(seen.headers.get("x-forwarded-user").is_none());
}

/// Writes a SEC1 EC P-256 key and returns its path.
fn write_key(dir: &std::path::Path) -> String {
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    let key = openssl::ec::EcKey::generate(&group).unwrap();
    let path = dir.join("jwt-key.pem");
    std::fs::write(&path, key.private_key_to_pem().unwrap()).unwrap();
    path.display().to_string()
}

async fn jwks(sso: &Sso) -> JwkSet {
    let (resp, body) = get(
        &format!("{}/.well-known/samlgate/jwks.json", sso.gw.public_url),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    serde_json::from_slice(&body).unwrap()
}

fn verify(token: &str, set: &JwkSet, issuer: &str) -> serde_json::Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    let kid = header.kid.expect("kid in the JWT header");
    let jwk = set.find(&kid).expect("kid published in the JWKS");
    let mut v = Validation::new(Algorithm::ES256);
    v.leeway = 0;
    v.set_audience(&["dashboard"]);
    v.set_issuer(&[issuer]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<serde_json::Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &v)
        .unwrap_or_else(|e| panic!("JWT does not verify: {e}"))
        .claims
}

#[tokio::test]
async fn identity_jwt_verifies_against_the_jwks_has_the_claims_and_expires() {
    let dir = tempfile::tempdir().unwrap();
    let key = write_key(dir.path());
    let extra = format!("[headers.jwt]\nkey_file = \"{key}\"\naudience = \"dashboard\"\n");
    let sso = Sso::start_extra(&extra).await;
    let set = jwks(&sso).await;
    assert_eq!(set.keys.len(), 1);
    let mut b = signed_in(
        &sso,
        "alice@example.com",
        ("Alice", "Liddell"),
        &["staff", "dashboard-admins"],
    )
    .await;
    let (resp, _) = b.get(&format!("{}/reports", sso.gw.public_url)).await;
    assert_eq!(resp.status(), 200);
    let token = sso.dash.last().headers["x-samlgate-jwt-assertion"]
        .to_str()
        .unwrap()
        .to_string();
    let claims = verify(&token, &set, &sso.gw.public_url);
    assert_eq!(claims["sub"], "alice@example.com");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["name"], "Alice Liddell");
    assert_eq!(
        claims["groups"],
        serde_json::json!(["staff", "dashboard-admins"])
    );
    assert_eq!(claims["aud"], "dashboard");
    assert_eq!(claims["iss"], sso.gw.public_url.as_str());
    assert_eq!(claims["sid"].as_str().unwrap().len(), 16);
    assert!(claims["jti"].as_str().unwrap().len() >= 16);
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert!(exp > iat && exp - iat <= 300, "iat {iat} exp {exp}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(iat <= now + 1 && exp > now);
    // No session id in the token.
    let cookie = b.get_cookie("samlgate").unwrap();
    assert!(!token.contains(&cookie));

    // The next request reuses the token (cached per session, well inside its lifetime).
    b.get(&format!("{}/reports/2", sso.gw.public_url)).await;
    assert_eq!(
        sso.dash.last().headers["x-samlgate-jwt-assertion"],
        token.as_str()
    );

    // /saml/auth carries it too.
    let (resp, _) = get(
        &format!("{}/saml/auth", sso.gw.public_url),
        &[("cookie", &b.cookie_header())],
    )
    .await;
    assert_eq!(resp.status(), 202);
    let fa = resp.headers()["x-samlgate-jwt-assertion"].to_str().unwrap();
    verify(fa, &set, &sso.gw.public_url);

    // Expiry: a token issued 6 minutes ago by the same key is refused by the verifier.
    let cfg = sso_jwt_config(&key, &sso.gw.public_url);
    let signer = samlgate::jwt::Signer::new(&cfg).unwrap();
    let old = signer
        .sign(
            "0123456789abcdef",
            &samlgate::identity::Identity {
                subject: "alice@example.com".into(),
                ..Default::default()
            },
            SystemTime::now() - Duration::from_secs(360),
        )
        .unwrap();
    let header = jsonwebtoken::decode_header(&old).unwrap();
    let jwk = set.find(header.kid.as_deref().unwrap()).unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.leeway = 0;
    v.set_audience(&["dashboard"]);
    let err =
        jsonwebtoken::decode::<serde_json::Value>(&old, &DecodingKey::from_jwk(jwk).unwrap(), &v)
            .unwrap_err();
    assert_eq!(
        *err.kind(),
        jsonwebtoken::errors::ErrorKind::ExpiredSignature
    );
}

fn sso_jwt_config(key: &str, public_url: &str) -> samlgate::config::JwtConfig {
    let toml = gateway::base_toml(
        public_url,
        "http://127.0.0.1:1",
        &format!("[headers.jwt]\nkey_file = \"{key}\"\n"),
    );
    samlgate::config::Config::from_toml_str(&toml, std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{e}"))
        .headers
        .jwt
        .unwrap()
}

#[tokio::test]
async fn jwks_is_404_without_headers_jwt_and_no_jwt_is_sent() {
    let sso = Sso::start(Opts::default()).await;
    let (resp, _) = get(
        &format!("{}/.well-known/samlgate/jwks.json", sso.gw.public_url),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 404);
    let mut b = Browser::new();
    sso.login(&mut b, "/").await;
    b.get(&format!("{}/x", sso.gw.public_url)).await;
    assert!(
        sso.dash
            .last()
            .headers
            .get("x-samlgate-jwt-assertion")
            .is_none()
    );
    // Nor a client's forgery of it: a dashboard that verifies assertions may still read it.
    let cookie = cookie_line(&b);
    let (status, _) = raw_get(
        sso.gw.addr,
        "/x",
        &[&cookie, "X-Samlgate-Jwt-Assertion: SPOOF.eyJ.sig"],
    )
    .await;
    assert_eq!(status, 200);
    assert_clean(&sso.dash.last());
}

const RULES: &str = r#"[access]
allowed_domains = ["example.com"]
[[access.rules]]
path_prefix = "/admin"
allowed_groups = ["dashboard-admins"]
[[access.rules]]
path_prefix = "/reports"
methods = ["POST", "DELETE"]
allowed_groups = ["editors"]
"#;

#[tokio::test]
async fn access_rules_by_group_domain_path_and_method_answer_403_naming_what_is_missing() {
    let sso = Sso::start_extra(RULES).await;
    let base = sso.gw.public_url.clone();
    let mut staff = signed_in(&sso, "sam@example.com", ("Sam", "S"), &["staff"]).await;
    let before = sso.dash.seen().len();
    for path in [
        "/admin",
        "/admin/users?x=1",
        "/%61dmin/users",
        "/reports/../admin",
    ] {
        let (resp, body) = staff.get(&format!("{base}{path}")).await;
        assert_eq!(resp.status(), 403, "{path}");
        let page = String::from_utf8_lossy(&body);
        assert!(page.contains("dashboard-admins"), "{path}: {page}");
    }
    assert_eq!(
        sso.dash.seen().len(),
        before,
        "the dashboard saw a denied request"
    );
    // The method rule: GET /reports passes, POST needs "editors".
    let (resp, _) = staff.get(&format!("{base}/reports")).await;
    assert_eq!(resp.status(), 200);
    let (resp, body) = gateway::send(
        http::Request::post(format!("{base}/reports/1"))
            .header("cookie", staff.cookie_header())
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert!(String::from_utf8_lossy(&body).contains("editors"));
    assert_eq!(sso.dash.last().method, http::Method::GET);

    // A member of the admin group passes; a foreign domain passes nowhere.
    let mut admin = signed_in(&sso, "ada@example.com", ("Ada", "A"), &["dashboard-admins"]).await;
    let (resp, _) = admin.get(&format!("{base}/admin/users")).await;
    assert_eq!(resp.status(), 200);
    let mut outsider = signed_in(&sso, "eve@other.test", ("Eve", "E"), &["dashboard-admins"]).await;
    let before = sso.dash.seen().len();
    let (resp, body) = outsider.get(&format!("{base}/reports")).await;
    assert_eq!(resp.status(), 403);
    assert!(String::from_utf8_lossy(&body).contains("email domain"));
    assert_eq!(sso.dash.seen().len(), before);
}

#[tokio::test]
async fn api_clients_get_401_json_and_browsers_a_redirect() {
    let sso = Sso::start(Opts::default()).await;
    let url = format!("{}/api/data?x=1", sso.gw.public_url);
    for headers in [
        vec![("accept", "application/json")],
        vec![("accept", "*/*")],
        vec![],
        vec![
            ("accept", "text/html"),
            ("x-requested-with", "XMLHttpRequest"),
        ],
        // Names text/html only to refuse it (RFC 9110 §12.4.2).
        vec![("accept", "application/json, text/html;q=0")],
        vec![("accept", "application/json, text/html; q=0.0")],
    ] {
        let (resp, body) = get(&url, &headers).await;
        assert_eq!(resp.status(), 401, "{headers:?}");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let login = json["login_url"].as_str().unwrap();
        assert!(
            login.ends_with("/saml/login?return_to=%2Fapi%2Fdata%3Fx%3D1"),
            "{login}"
        );
        assert_eq!(resp.headers()["x-auth-request-redirect"], login);
    }
    let (resp, _) = get(
        &url,
        &[("accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8")],
    )
    .await;
    assert_eq!(resp.status(), 302);
    assert!(
        resp.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("https://idp.test/sso?SAMLRequest=")
    );
    // A browser's form post without a session is sent to sign in too (CONTRACT: a browser,
    // by its Accept, whatever the method).
    let (resp, _) = gateway::send(
        http::Request::post(&url)
            .header("accept", "text/html")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"a=1")))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 302);
    assert!(sso.dash.seen().is_empty());
}

#[tokio::test]
async fn forward_auth_from_a_trusted_proxy_answers_202_401_403() {
    let extra = format!("{RULES}{JWT}");
    let sso = Sso::start(Opts {
        server: "trusted_proxies = [\"127.0.0.0/8\"]",
        extra: &extra,
        ..Opts::default()
    })
    .await;
    let auth = format!("{}/saml/auth", sso.gw.public_url);

    // No session: 401, the login URL (from the original URI) in the body and a header.
    let (resp, body) = get(&auth, &[("x-original-uri", "/admin/x?y=1")]).await;
    assert_eq!(resp.status(), 401);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let login = json["login_url"].as_str().unwrap();
    assert!(login.ends_with("return_to=%2Fadmin%2Fx%3Fy%3D1"), "{login}");
    assert_eq!(resp.headers()["x-auth-request-redirect"], login);
    // `rd` picks the landing path, same-origin only.
    for (rd, want) in [
        ("/back?z=1".to_string(), "return_to=%2Fback%3Fz%3D1"),
        (format!("{}/full", sso.gw.public_url), "return_to=%2Ffull"),
        ("https://evil.test/x".to_string(), "return_to=%2F"),
        ("//evil.test".to_string(), "return_to=%2F"),
    ] {
        let q: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
        let (resp, _) = get(&format!("{auth}?rd={q}"), &[]).await;
        assert_eq!(resp.status(), 401);
        let redirect = resp.headers()["x-auth-request-redirect"].to_str().unwrap();
        assert!(redirect.ends_with(want), "{rd} -> {redirect}");
    }
    // Traefik (`?redirect=1`) and Envoy pass our answer to the client: a browser gets 302.
    let html = ("accept", "text/html");
    let (resp, _) = get(
        &format!("{auth}?redirect=1"),
        &[
            html,
            ("x-forwarded-uri", "/reports"),
            ("x-forwarded-method", "GET"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 302);
    assert!(
        resp.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with("/saml/login?return_to=%2Freports")
    );
    let (resp, _) = get(&format!("{auth}/reports?x=1"), &[html]).await;
    assert_eq!(resp.status(), 302);
    assert!(
        resp.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with("return_to=%2Freports%3Fx%3D1")
    );
    let (resp, _) = get(
        &format!("{auth}/reports"),
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(resp.status(), 401);
    // nginx cannot take a 3xx from auth_request: a browser there still gets 401.
    let (resp, _) = get(&auth, &[html, ("x-original-uri", "/reports")]).await;
    assert_eq!(resp.status(), 401);

    let b = signed_in(&sso, "sam@example.com", ("Sam", "Smith"), &["staff"]).await;
    let cookie = b.cookie_header();
    let c = ("cookie", cookie.as_str());
    // Allowed: 202 with X-Auth-Request-* and the JWT.
    let (resp, _) = get(&auth, &[c, ("x-original-uri", "/reports/q3")]).await;
    assert_eq!(resp.status(), 202);
    let h = resp.headers();
    assert_eq!(h["x-auth-request-user"], "sam@example.com");
    assert_eq!(h["x-auth-request-email"], "sam@example.com");
    assert_eq!(h["x-auth-request-name"], "Sam Smith");
    assert_eq!(h["x-auth-request-groups"], "staff");
    assert!(h.contains_key("x-samlgate-jwt-assertion"));
    // Denied by path (nginx and Traefik spellings) and by method.
    for headers in [
        vec![c, ("x-original-uri", "/admin")],
        vec![
            c,
            ("x-forwarded-uri", "/admin/users"),
            ("x-forwarded-method", "GET"),
        ],
        vec![
            c,
            ("x-original-uri", "/reports/1"),
            ("x-original-method", "POST"),
        ],
        vec![
            c,
            ("x-forwarded-uri", "/reports/1"),
            ("x-forwarded-method", "DELETE"),
        ],
        // nginx's X-Original-URI wins over a client's X-Forwarded-Uri passed through.
        vec![c, ("x-original-uri", "/admin"), ("x-forwarded-uri", "/")],
        // An absolute URI (a client's absolute-form request line) is checked by its path.
        vec![c, ("x-original-uri", "https://dash.example.com/admin")],
    ] {
        let (resp, body) = get(&auth, &headers).await;
        assert_eq!(resp.status(), 403, "{headers:?}");
        let page = String::from_utf8_lossy(&body);
        assert!(page.contains("dashboard-admins") || page.contains("editors"));
    }
    // Envoy ext_authz (path_prefix = /saml/auth): 200 to allow, original method and path.
    let (resp, _) = get(&format!("{auth}/reports/q3?tab=2"), &[c]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-auth-request-user"], "sam@example.com");
    let (resp, _) = get(&format!("{auth}/admin"), &[c]).await;
    assert_eq!(resp.status(), 403);
    let (resp, _) = gateway::send(
        http::Request::post(format!("{auth}/reports/1"))
            .header("cookie", &cookie)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 403);
    // Two X-Original-URI values are ambiguous: refused.
    let (status, _) = raw_get(
        sso.gw.addr,
        "/saml/auth",
        &[
            &format!("Cookie: {cookie}"),
            "X-Original-URI: /reports",
            "X-Original-URI: /admin",
        ],
    )
    .await;
    assert_eq!(status, 400);
    // An original URI or method that is not one is refused, not checked as `GET /`.
    for headers in [
        vec![c, ("x-original-uri", "admin")],
        vec![c, ("x-original-uri", "%2Fadmin")],
        vec![c, ("x-forwarded-uri", "")],
        vec![
            c,
            ("x-original-uri", "/reports"),
            ("x-original-method", "G T"),
        ],
    ] {
        let (resp, _) = get(&auth, &headers).await;
        assert_eq!(resp.status(), 400, "{headers:?}");
    }
    // Nor is one with raw bytes over 0x7f (nginx passes a request line's on in $request_uri),
    // in either header: read as absent, `/admin/...` would be judged as `/`.
    for header in ["X-Original-URI", "X-Forwarded-Uri"] {
        let head = format!(
            "GET /saml/auth HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: {cookie}\r\n{header}: /admin/users?x="
        );
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(b"\xff\r\n\r\n");
        let (status, _) = gateway::raw_request(sso.gw.addr, &bytes).await;
        assert_eq!(status, 400, "{header}");
    }
    assert!(sso.dash.seen().is_empty(), "forward-auth never proxies");
}

#[tokio::test]
async fn forward_auth_ignores_original_uri_headers_from_untrusted_peers() {
    let sso = Sso::start_extra(RULES).await;
    let auth = format!("{}/saml/auth", sso.gw.public_url);
    let (resp, _) = get(&auth, &[("x-forwarded-uri", "/admin/x")]).await;
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers()["x-auth-request-redirect"]
            .to_str()
            .unwrap()
            .ends_with("return_to=%2F")
    );
    let mut b = signed_in(&sso, "sam@example.com", ("Sam", "Smith"), &["staff"]).await;
    let cookie = b.cookie_header();
    // The rules are applied to `GET /`, which this user may see: the header is not believed.
    for headers in [
        vec![("cookie", cookie.as_str()), ("x-forwarded-uri", "/admin")],
        vec![("cookie", cookie.as_str()), ("x-original-uri", "/admin")],
        vec![
            ("cookie", cookie.as_str()),
            ("x-original-uri", "/reports"),
            ("x-original-method", "POST"),
        ],
    ] {
        let (resp, _) = get(&auth, &headers).await;
        assert_eq!(resp.status(), 202, "{headers:?}");
    }
    let (resp, _) = get(&format!("{auth}/admin"), &[("cookie", cookie.as_str())]).await;
    assert_eq!(resp.status(), 200);
    // The same user is refused /admin when asking the gateway itself.
    let (resp, _) = b.get(&format!("{}/admin", sso.gw.public_url)).await;
    assert_eq!(resp.status(), 403);
}
