//! `samlgate demo`'s parts over real sockets (the browser walk-through is in e2e_browser.rs):
//! the in-memory SCIM API speaks what the provisioner sends, the dev IdP answers only the demo
//! gateway and answers logouts with a signed LogoutResponse, everything binds to loopback, and
//! nothing outside `src/demo` and the `demo` command reaches the demo code.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use samlgate::demo::{DemoPorts, start};
use serde_json::{Value, json};
use support::gateway::send;

fn any_ports() -> DemoPorts {
    DemoPorts {
        gateway: 0,
        admin: 0,
        idp: 0,
        dashboard: 0,
    }
}

async fn scim(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut b = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/scim+json");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let body = body.map(|v| v.to_string()).unwrap_or_default();
    let (resp, bytes) = send(b.body(Full::new(Bytes::from(body))).unwrap()).await;
    (
        resp.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn deflate_b64(xml: &str) -> String {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(xml.as_bytes()).unwrap();
    STANDARD.encode(enc.finish().unwrap())
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_scim_api_speaks_what_the_provisioner_sends() {
    let demo = start(any_ports()).await.unwrap();
    let users = format!("{}/Users", demo.scim_url);
    let token = Some(demo.scim_token.as_str());

    assert_eq!(scim("GET", &users, None, None).await.0, 401);
    assert_eq!(scim("GET", &users, Some("wrong"), None).await.0, 401);

    let filter = |name: &str| format!("{users}?filter={}", enc(&format!("userName eq \"{name}\"")));
    let (status, list) = scim("GET", &filter("DORA@example.com"), token, None).await;
    assert_eq!(status, 200);
    assert_eq!(list["totalResults"], 1, "{list}");
    assert_eq!(list["Resources"][0]["active"], true);
    let (_, list) = scim("GET", &filter("eve@example.com"), token, None).await;
    assert_eq!(list["Resources"][0]["active"], false);

    let new = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "kim@example.com", "name": {"givenName": "Kim", "familyName": "Lee"},
        "emails": [{"value": "kim@example.com", "primary": true}], "active": true,
        "roles": [{"value": "Viewer", "type": "permissionSet", "primary": true}],
        "entitlements": [{"value": "Demo", "type": "workspace"}]});
    let (status, created) = scim("POST", &users, token, Some(new.clone())).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let mut dup = new.clone();
    dup["userName"] = json!("KIM@example.com");
    let (status, err) = scim("POST", &users, token, Some(dup)).await;
    assert_eq!(
        (status, err["scimType"].as_str()),
        (409, Some("uniqueness"))
    );

    let (status, got) = scim("GET", &format!("{users}/{id}"), token, None).await;
    assert_eq!(
        (status, got["userName"].as_str()),
        (200, Some("kim@example.com"))
    );
    let mut changed = got.clone();
    changed["entitlements"] = json!([{"value": "Operations", "type": "workspace"}]);
    changed["id"] = json!("ignored");
    let (status, put) = scim("PUT", &format!("{users}/{id}"), token, Some(changed)).await;
    assert_eq!(status, 200);
    assert_eq!(put["id"], json!(id));
    assert_eq!(put["entitlements"][0]["value"], "Operations");
    assert_eq!(
        scim("GET", &format!("{users}/nope"), token, None).await.0,
        404
    );
    let bad = format!("{users}?filter={}", enc("emails co \"x\""));
    assert_eq!(scim("GET", &bad, token, None).await.0, 400);

    for url in [
        &demo.gateway_url,
        &demo.admin_url,
        &demo.idp_url,
        &demo.dashboard_url,
    ] {
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "{url} is not loopback"
        );
    }
    assert!(demo.instructions().contains("DEMO — not for production"));
    demo.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_idp_answers_only_the_demo_gateway() {
    let demo = start(any_ports()).await.unwrap();
    let request = |issuer: &str, acs: &str| {
        deflate_b64(&format!(
            r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_r1" Version="2.0" IssueInstant="2024-01-01T00:00:00Z" AssertionConsumerServiceURL="{acs}"><saml:Issuer>{issuer}</saml:Issuer></samlp:AuthnRequest>"#
        ))
    };
    let acs = format!("{}/saml/acs", demo.gateway_url);
    let sp = format!("{}/saml/metadata", demo.gateway_url);
    let sso = |req: String| {
        format!(
            "{}/sso?SAMLRequest={}&RelayState=rs",
            demo.idp_url,
            enc(&req)
        )
    };

    let (resp, body) = support::gateway::get(&sso(request(&sp, &acs)), &[]).await;
    assert_eq!(resp.status(), 200);
    let page = String::from_utf8_lossy(&body);
    assert!(page.contains("DEMO — not for production"));
    assert!(page.contains("value=\"_r1\"") && page.contains("value=\"rs\""));

    let (resp, _) =
        support::gateway::get(&sso(request("https://evil.example/sp", &acs)), &[]).await;
    assert_eq!(resp.status(), 400, "another SP's request must be refused");
    let (resp, _) =
        support::gateway::get(&sso(request(&sp, "https://evil.example/acs")), &[]).await;
    assert_eq!(resp.status(), 400, "another ACS must be refused");
    let (resp, _) = support::gateway::get(&format!("{}/sso", demo.idp_url), &[]).await;
    assert_eq!(resp.status(), 400);

    // The gateway trusts this IdP: its metadata is what the demo config names.
    let (resp, meta) = support::gateway::get(&format!("{}/metadata", demo.idp_url), &[]).await;
    assert_eq!(resp.status(), 200);
    assert!(String::from_utf8_lossy(&meta).contains("use=\"signing\""));

    // Single logout: a LogoutRequest is answered with a LogoutResponse, redirect-signed.
    let logout = deflate_b64(&format!(
        r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_lo1" Version="2.0" IssueInstant="2024-01-01T00:00:00Z"><saml:Issuer>{sp}</saml:Issuer><saml:NameID>kim@example.com</saml:NameID></samlp:LogoutRequest>"#
    ));
    let url = format!(
        "{}/slo?SAMLRequest={}&RelayState=back",
        demo.idp_url,
        enc(&logout)
    );
    let (resp, _) = support::gateway::get(&url, &[]).await;
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&format!("{}/saml/logout?SAMLResponse=", demo.gateway_url)));
    let parsed = url::Url::parse(&location).unwrap();
    let q = |k: &str| {
        parsed
            .query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(q("RelayState").as_deref(), Some("back"));
    assert!(q("SigAlg").unwrap().ends_with("rsa-sha256"));
    // The signature is the IdP's, over the query's octets as sent, up to `&Signature=`
    // (bindings §3.4.4.1).
    let meta = String::from_utf8_lossy(&meta);
    let cert_b64 = meta
        .split("<ds:X509Certificate>")
        .nth(1)
        .and_then(|rest| rest.split("</ds:X509Certificate>").next())
        .expect("a signing certificate in the IdP metadata");
    let cert = openssl::x509::X509::from_der(&STANDARD.decode(cert_b64.trim()).unwrap()).unwrap();
    let query = parsed.query().unwrap();
    let (signed, _) = query.split_once("&Signature=").unwrap();
    let signature = STANDARD.decode(q("Signature").unwrap()).unwrap();
    let idp_key = cert.public_key().unwrap();
    let mut verifier =
        openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &idp_key).unwrap();
    verifier.update(signed.as_bytes()).unwrap();
    assert!(
        verifier.verify(&signature).unwrap(),
        "bad signature over {signed}"
    );
    let raw = STANDARD.decode(q("SAMLResponse").unwrap()).unwrap();
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(&raw[..])
        .read_to_string(&mut xml)
        .unwrap();
    assert!(
        xml.contains("InResponseTo=\"_lo1\"") && xml.contains("status:Success"),
        "{xml}"
    );
    // Without a LogoutRequest: straight back to the gateway.
    let (resp, _) = support::gateway::get(&format!("{}/slo", demo.idp_url), &[]).await;
    assert_eq!(resp.status(), 302);
    demo.shutdown().await;
}

/// `serve` must never reach the dev IdP: outside `src/demo/`, only `main.rs`'s `demo`
/// command names the demo module.
#[test]
fn nothing_but_the_demo_command_reaches_the_demo_code() {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    for f in files {
        let rel = f
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel.starts_with("demo/") || rel == "lib.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            if !(line.contains("demo::") || line.contains("demo::{")) {
                continue;
            }
            assert!(
                rel == "main.rs" && !line.contains("signer") && !line.contains("idp"),
                "src/{rel}:{}: only the demo command may use the demo module: {line}",
                n + 1
            );
        }
    }
    let main = std::fs::read_to_string(src.join("main.rs")).unwrap();
    let serve = main
        .split("fn serve(")
        .nth(1)
        .and_then(|rest| rest.split("\n}\n").next())
        .unwrap();
    assert!(
        !serve.contains("demo"),
        "serve() mentions the demo:\n{serve}"
    );
}

/// The value of `<input … name="{name}" value="…">` in a demo page.
fn input_value(html: &str, name: &str) -> String {
    let re = regex::Regex::new(&format!(r#"name="{name}" value="([^"]*)""#)).unwrap();
    let raw = &re
        .captures(html)
        .unwrap_or_else(|| panic!("no {name} in\n{html}"))[1];
    raw.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Signs in at the demo as `email` the way a browser would, without one: gateway → IdP form →
/// signed response → ACS. Returns the ACS answer's status and the browser's cookies.
async fn sign_in(
    demo: &samlgate::demo::Demo,
    email: &str,
    groups: &str,
) -> (u16, support::sso::Browser) {
    let mut browser = support::sso::Browser::new();
    let (resp, _) = browser.get(&format!("{}/", demo.gateway_url)).await;
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&format!("{}/sso?", demo.idp_url)));
    let (_, form) = support::gateway::get(&location, &[]).await;
    let form = String::from_utf8_lossy(&form).into_owned();
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("request_id", &input_value(&form, "request_id"))
        .append_pair("relay_state", &input_value(&form, "relay_state"))
        .append_pair("email", email)
        .append_pair("first_name", "Test")
        .append_pair("last_name", "User")
        .append_pair("groups", groups)
        .finish();
    let (resp, page) = send(
        Request::post(format!("{}/sso", demo.idp_url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let page = String::from_utf8_lossy(&page).into_owned();
    let acs_form: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("SAMLResponse", &input_value(&page, "SAMLResponse"))
        .append_pair("RelayState", &input_value(&page, "RelayState"))
        .finish();
    let (resp, _) = send(
        Request::post(format!("{}/saml/acs", demo.gateway_url))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", browser.cookie_header())
            .body(Full::new(Bytes::from(acs_form)))
            .unwrap(),
    )
    .await;
    browser.absorb(resp.headers());
    (resp.status().as_u16(), browser)
}

/// What the README's walk-through promises for the ready-made users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ready_made_users_behave_as_the_walk_through_says() {
    let demo = start(any_ports()).await.unwrap();
    let users = |d: &samlgate::demo::Demo| format!("{}/Users", d.scim_url);
    let count = |v: &Value| v["totalResults"].as_u64().unwrap();
    let (_, before) = scim("GET", &users(&demo), Some(&demo.scim_token), None).await;

    // Dora already has an account: signed in, nothing created, her workspace from the dashboard.
    let (status, mut browser) = sign_in(&demo, "dora@example.com", "admins").await;
    assert_eq!(status, 303);
    let (_, page) = browser.get(&format!("{}/", demo.gateway_url)).await;
    let page = String::from_utf8_lossy(&page);
    assert!(
        page.contains("X-Forwarded-Workspace</code></td><td><code>Demo<"),
        "{page}"
    );
    let (_, after) = scim("GET", &users(&demo), Some(&demo.scim_token), None).await;
    assert_eq!(count(&after), count(&before));

    // Eve is deactivated: 403, no session.
    let (status, browser) = sign_in(&demo, "eve@example.com", "").await;
    assert_eq!(status, 403);
    assert!(browser.get_cookie("samlgate").is_none());

    // A new admin gets Operations / Admin, and the account is created once.
    let (status, _) = sign_in(&demo, "new.admin@example.com", "admins, staff").await;
    assert_eq!(status, 303);
    let (_, after) = scim("GET", &users(&demo), Some(&demo.scim_token), None).await;
    assert_eq!(count(&after), count(&before) + 1);
    let created = after["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["userName"] == "new.admin@example.com")
        .unwrap();
    assert_eq!(created["entitlements"][0]["value"], "Operations");
    assert_eq!(created["roles"][0]["value"], "Admin");
    demo.shutdown().await;
}
