//! SAML SP, black-box through the running gateway: the SP-initiated round trip, the browser
//! and API paths without a session, IdP-initiated logins, replay, login CSRF, open redirects,
//! session fixation, logout, and the SECURITY.md catalogue sent to the real ACS — each attack
//! answered 4xx, with no session cookie, and nothing reaching the dashboard.
#![allow(clippy::unwrap_used)]

mod support;

use samlgate::demo::signer::{SignAlgorithm, SignMode};
use support::gateway::Opts;
use support::sso::{Browser, Sso, decode_redirect, sets_session};

#[tokio::test]
async fn sp_initiated_round_trip_reaches_the_dashboard_with_identity() {
    let sso = Sso::start(Opts::default()).await;
    let mut b = Browser::new();
    // A browser on a protected page is sent straight to the IdP.
    let (resp, _) = b
        .get(&format!("{}/reports/q3?tab=1", sso.gw.public_url))
        .await;
    assert_eq!(resp.status(), 302);
    let start = decode_redirect(resp.headers()["location"].to_str().unwrap());
    assert!(
        start
            .location
            .starts_with("https://idp.test/sso?SAMLRequest=")
    );
    // Our own AuthnRequest ID: "_" + 32 hex digits (128 bits, S14), to our ACS.
    assert_eq!(start.request_id.len(), 33);
    assert!(
        start.request_id.starts_with('_')
            && start.request_id[1..].bytes().all(|c| c.is_ascii_hexdigit())
    );
    assert!(
        start
            .authn_request
            .contains(&format!("AssertionConsumerServiceURL=\"{}\"", sso.acs()))
    );
    // The binding cookie is short-lived and scoped to the ACS.
    let binding = binding_cookie(&resp);
    assert!(
        binding.contains("Path=/saml/acs") && binding.contains("HttpOnly"),
        "{binding}"
    );

    let value = sso.form_value(&sso.spec(Some(&start.request_id)));
    let (resp, _) = b.post_acs(&sso.gw, &value, &start.relay_state).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/reports/q3?tab=1");
    let session_cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("samlgate="))
        .unwrap();
    for flag in ["HttpOnly", "Path=/", "SameSite=Lax"] {
        assert!(session_cookie.contains(flag), "{session_cookie}");
    }
    assert!(
        !b.cookies
            .iter()
            .any(|(k, _)| k.starts_with("samlgate_login_")),
        "the login-binding cookie outlived the login: {:?}",
        b.cookies
    );

    // The session works, identity headers arrive, spoofed ones and our cookie do not.
    let req = http::Request::get(format!("{}/reports/q3", sso.gw.public_url))
        .header("cookie", format!("{}; theme=dark", b.cookie_header()))
        .header("x-forwarded-user", "mallory")
        .header("X_Forwarded_Email", "mallory@evil.test")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let (resp, _) = support::gateway::send(req).await;
    assert_eq!(resp.status(), 200);
    let seen = sso.dash.last();
    assert_eq!(seen.headers["x-forwarded-user"], "alice@example.com");
    assert_eq!(seen.headers["x-forwarded-email"], "alice@example.com");
    assert_eq!(seen.headers["x-forwarded-name"], "Alice Liddell");
    assert_eq!(seen.headers["x-forwarded-groups"], "staff,dashboard-admins");
    assert_eq!(seen.headers.get_all("x-forwarded-user").iter().count(), 1);
    assert!(seen.headers.get("x_forwarded_email").is_none());
    assert_eq!(seen.headers["cookie"], "theme=dark");
    // userinfo for SPAs.
    let (resp, body) = b.get(&format!("{}/saml/userinfo", sso.gw.public_url)).await;
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["email"], "alice@example.com");
    assert_eq!(json["groups"][1], "dashboard-admins");
}

/// The login-binding cookie a `/saml/login` answer sets.
fn binding_cookie(resp: &http::Response<()>) -> String {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| {
            c.strip_prefix("__Host-")
                .unwrap_or(c)
                .starts_with("samlgate_login_")
        })
        .expect("a login-binding cookie")
}

#[tokio::test]
async fn api_clients_get_401_json_and_metadata_is_served() {
    let sso = Sso::start(Opts::default()).await;
    for accept in ["application/json", "*/*"] {
        let (resp, body) = support::gateway::get(
            &format!("{}/api/data", sso.gw.public_url),
            &[("accept", accept)],
        )
        .await;
        assert_eq!(resp.status(), 401);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            json["login_url"]
                .as_str()
                .unwrap()
                .ends_with("/saml/login?return_to=%2Fapi%2Fdata")
        );
    }
    let (resp, _) = support::gateway::get(
        &format!("{}/page", sso.gw.public_url),
        &[
            ("accept", "text/html"),
            ("x-requested-with", "XMLHttpRequest"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 401);
    let (resp, body) =
        support::gateway::get(&format!("{}/saml/metadata", sso.gw.public_url), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/samlmetadata+xml"
    );
    let xml = String::from_utf8_lossy(&body);
    assert!(xml.contains(&format!("entityID=\"{}\"", sso.entity_id())));
    assert!(xml.contains(&sso.acs()));
    assert!(sso.dash.seen().is_empty());
}

#[tokio::test]
async fn https_public_url_gives_host_prefixed_secure_cookies() {
    // The gateway itself is plain HTTP here; only what browsers are told (public_url) is https.
    let dash = support::dashboard::Dashboard::start().await;
    let idp = samlgate::demo::signer::TestIdp::generate(support::sso::IDP_ENTITY).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("idp.xml");
    std::fs::write(
        &meta,
        idp.metadata_xml("https://idp.test/sso", None).unwrap(),
    )
    .unwrap();
    let toml = support::gateway::toml(
        "https://dash.test",
        &dash.url(),
        Opts {
            metadata: Some(meta.to_str().unwrap()),
            ..Opts::default()
        },
    );
    let gw = support::gateway::start_toml(&toml).await;
    // The login-binding cookie must survive the IdP's cross-site POST (SameSite=None; Secure),
    // and no sibling subdomain may plant one (`__Host-`, which needs Path=/ and no Domain).
    let (resp, _) = support::gateway::get(&format!("{}/saml/login", gw.public_url), &[]).await;
    let binding = binding_cookie(&resp);
    assert!(binding.starts_with("__Host-samlgate_login_"), "{binding}");
    for flag in ["SameSite=None", "Secure", "HttpOnly", "Path=/;"] {
        assert!(binding.contains(flag), "{binding}");
    }
    assert!(!binding.contains("Domain"), "{binding}");
    let mut b = Browser::new();
    let start = b.start_login(&gw, "/").await;
    let spec = samlgate::demo::signer::ResponseSpec {
        destination: Some("https://dash.test/saml/acs".into()),
        recipient: Some("https://dash.test/saml/acs".into()),
        audiences: vec!["https://dash.test/saml/metadata".into()],
        in_response_to: Some(start.request_id.clone()),
        ..Default::default()
    };
    let (resp, _) = b
        .post_acs(
            &gw,
            &idp.response_form_value(&spec).unwrap(),
            &start.relay_state,
        )
        .await;
    assert_eq!(resp.status(), 303);
    let sc: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session = sc
        .iter()
        .find(|c| c.starts_with("__Host-samlgate="))
        .unwrap_or_else(|| panic!("{sc:?}"));
    assert!(
        session.contains("Secure") && session.contains("Path=/") && !session.contains("Domain"),
        "{session}"
    );
    // The binding cookie is deleted with the attributes it was set with (else it stays).
    let cleared = sc
        .iter()
        .find(|c| c.starts_with("__Host-samlgate_login_"))
        .unwrap_or_else(|| panic!("{sc:?}"));
    for flag in ["Max-Age=0", "Path=/;", "Secure"] {
        assert!(cleared.contains(flag), "{cleared}");
    }
    // Sent to every path now, it is never forwarded; nor is the session cookie.
    let session_pair = session.split(';').next().unwrap();
    let cookie = format!(
        "Cookie: {session_pair}; __Host-samlgate_login_abc=1; samlgate_login_x=2; theme=dark"
    );
    let (status, _) = support::gateway::raw_get(gw.addr, "/reports", &[&cookie]).await;
    assert_eq!(status, 200);
    assert_eq!(dash.last().headers["cookie"], "theme=dark");
}

#[tokio::test]
async fn open_redirects_are_replaced_by_root() {
    let sso = Sso::start(Opts::default()).await;
    for evil in [
        "https://evil.test",
        "//evil.test",
        "///evil.test",
        "/\\evil.test",
        "/%5cevil.test",
        "http:evil.test",
        "javascript:alert(1)",
        "/%2f%2fevil.test",
        "\t//evil.test",
    ] {
        let mut b = Browser::new();
        let start = b.start_login(&sso.gw, evil).await;
        let value = sso.form_value(&sso.spec(Some(&start.request_id)));
        let (resp, _) = b.post_acs(&sso.gw, &value, &start.relay_state).await;
        assert_eq!(resp.status(), 303, "{evil}");
        assert_eq!(resp.headers()["location"], "/", "{evil:?}");
    }
}

#[tokio::test]
async fn idp_initiated_login_only_when_allowed_and_relay_state_only_as_local_path() {
    // Off (the default): an unsolicited response is refused.
    let sso = Sso::start(Opts::default()).await;
    let mut b = Browser::new();
    let (resp, _) = b
        .post_acs(&sso.gw, &sso.form_value(&sso.spec(None)), "/reports")
        .await;
    assert_eq!(resp.status(), 403);
    assert!(!sets_session(&resp));
    // On: accepted once; RelayState lands only when it is a same-origin path.
    let sso = Sso::start(Opts {
        saml: "allow_idp_initiated = true",
        ..Opts::default()
    })
    .await;
    let (resp, _) = b
        .post_acs(&sso.gw, &sso.form_value(&sso.spec(None)), "/reports")
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/reports");
    assert!(sets_session(&resp));
    let (resp, _) = b
        .post_acs(
            &sso.gw,
            &sso.form_value(&sso.spec(None)),
            "https://evil.test/",
        )
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/");
    // Even when unsolicited logins are allowed, an InResponseTo must match this browser's request.
    let mut b2 = Browser::new();
    let (resp, _) = b2
        .post_acs(
            &sso.gw,
            &sso.form_value(&sso.spec(Some("_00000000000000000000000000000000"))),
            "",
        )
        .await;
    assert_eq!(resp.status(), 403);
    assert!(!sets_session(&resp));
}

/// A fresh unsolicited response, accepted once (303): the form value to replay.
async fn accepted_unsolicited_response(sso: &Sso) -> String {
    let value = sso.form_value(&sso.spec(None));
    let (resp, _) = Browser::new().post_acs(&sso.gw, &value, "").await;
    assert_eq!(resp.status(), 303);
    value
}

#[tokio::test]
async fn replayed_responses_are_refused() {
    let sso = Sso::start(Opts {
        saml: "allow_idp_initiated = true",
        ..Opts::default()
    })
    .await;
    let value = accepted_unsolicited_response(&sso).await;
    let (resp, body) = Browser::new().post_acs(&sso.gw, &value, "").await;
    assert_eq!(resp.status(), 403);
    assert!(String::from_utf8_lossy(&body).contains("already used"));
    assert!(!sets_session(&resp));
    // SP-initiated: the same response posted again with its RelayState.
    let mut b = Browser::new();
    let start = b.start_login(&sso.gw, "/").await;
    let value = sso.form_value(&sso.spec(Some(&start.request_id)));
    let mut replayer = b.clone();
    let (resp, _) = b.post_acs(&sso.gw, &value, &start.relay_state).await;
    assert_eq!(resp.status(), 303);
    let (resp, _) = replayer.post_acs(&sso.gw, &value, &start.relay_state).await;
    assert_eq!(resp.status(), 403);
    assert!(!sets_session(&resp));
    assert!(sso.dash.seen().is_empty());
}

/// The replay cache outlives a flood of sign-in starts: anyone can make the gateway keep a
/// pending login (one unauthenticated GET each), and with the memory store bounded by
/// `session.max_entries`, those must not push out what only a verified response writes. A
/// response accepted before 20 times `max_entries` sign-in starts is still refused after them.
#[tokio::test]
async fn a_flood_of_sign_in_starts_does_not_evict_the_replay_cache() {
    let sso = Sso::start(Opts {
        saml: "allow_idp_initiated = true",
        session: "max_entries = 50",
        ..Opts::default()
    })
    .await;
    let value = accepted_unsolicited_response(&sso).await;
    for i in 0..1000 {
        let (resp, _) = Browser::new()
            .get(&format!("{}/private/{i}", sso.gw.public_url))
            .await;
        assert_eq!(resp.status(), 302, "sign-in start {i}");
    }
    let (resp, body) = Browser::new().post_acs(&sso.gw, &value, "").await;
    assert_eq!(
        resp.status(),
        403,
        "replayed after the flood: {}",
        String::from_utf8_lossy(&body)
    );
    assert!(String::from_utf8_lossy(&body).contains("already used"));
    assert!(!sets_session(&resp));
}

#[tokio::test]
async fn login_csrf_a_response_for_another_browsers_login_is_refused() {
    let sso = Sso::start(Opts::default()).await;
    let mut victim = Browser::new();
    let mut attacker = Browser::new();
    // The attacker starts a login and gets a valid response for it...
    let start = attacker.start_login(&sso.gw, "/").await;
    let value = sso.form_value(&sso.spec(Some(&start.request_id)));
    // ...and makes the victim's browser post it (no binding cookie there).
    let (resp, body) = victim.post_acs(&sso.gw, &value, &start.relay_state).await;
    assert_eq!(resp.status(), 403);
    assert!(String::from_utf8_lossy(&body).contains("another browser"));
    assert!(!sets_session(&resp));
    // A response to another request of the same browser is refused too (InResponseTo).
    let mut b = Browser::new();
    let first = b.start_login(&sso.gw, "/").await;
    let second = b.start_login(&sso.gw, "/").await;
    let value = sso.form_value(&sso.spec(Some(&first.request_id)));
    let (resp, _) = b.post_acs(&sso.gw, &value, &second.relay_state).await;
    assert_eq!(resp.status(), 403);
    assert!(!sets_session(&resp));
}

#[tokio::test]
async fn parallel_logins_in_two_tabs_both_work() {
    let sso = Sso::start(Opts::default()).await;
    let mut b = Browser::new();
    let one = b.start_login(&sso.gw, "/one").await;
    let two = b.start_login(&sso.gw, "/two").await;
    let (resp, _) = b
        .post_acs(
            &sso.gw,
            &sso.form_value(&sso.spec(Some(&two.request_id))),
            &two.relay_state,
        )
        .await;
    assert_eq!(resp.headers()["location"], "/two");
    let (resp, _) = b
        .post_acs(
            &sso.gw,
            &sso.form_value(&sso.spec(Some(&one.request_id))),
            &one.relay_state,
        )
        .await;
    assert_eq!(resp.headers()["location"], "/one");
}

#[tokio::test]
async fn planted_session_cookies_are_never_adopted_and_logout_ends_the_session() {
    let sso = Sso::start(Opts::default()).await;
    let mut b = Browser::new();
    b.cookies
        .push(("samlgate".into(), "planted-by-attacker".into()));
    let (resp, _) = b.get(&format!("{}/x", sso.gw.public_url)).await;
    assert_eq!(
        resp.status(),
        302,
        "a planted cookie must not count as a session"
    );
    let (resp, _) = sso.login(&mut b, "/x").await;
    assert_eq!(resp.status(), 303);
    let issued = b.get_cookie("samlgate").unwrap();
    assert_ne!(issued, "planted-by-attacker");
    let (resp, _) = b.get(&format!("{}/x", sso.gw.public_url)).await;
    assert_eq!(resp.status(), 200);
    let stolen = b.clone();
    // The IdP has an SLO endpoint: the session ends and the browser goes there (tests/logout.rs
    // covers the single-logout exchange itself).
    let (resp, _) = b.get(&format!("{}/saml/logout", sso.gw.public_url)).await;
    assert_eq!(resp.status(), 302);
    assert!(
        resp.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("https://idp.test/slo?SAMLRequest=")
    );
    // The old cookie (kept by an attacker) no longer works.
    let mut stolen = stolen;
    let (resp, _) = stolen.get(&format!("{}/x", sso.gw.public_url)).await;
    assert_eq!(resp.status(), 302);
}

/// Sends a prepared attack to the ACS under a valid pending login of this browser and asserts
/// the refusal: 4xx, no session cookie, the dashboard saw nothing.
async fn assert_refused(sso: &Sso, name: &str, make: impl Fn(&Sso, &str) -> String) {
    let mut b = Browser::new();
    let start = b.start_login(&sso.gw, "/").await;
    let value = make(sso, &start.request_id);
    match b.try_post_acs(&sso.gw, &value, &start.relay_state).await {
        Some((resp, _)) => {
            assert!(
                resp.status().is_client_error(),
                "{name}: status {}",
                resp.status()
            );
            assert!(!sets_session(&resp), "{name}: a session cookie was set");
        }
        // Closing the connection refuses only a body over saml.max_response_bytes (256 KiB).
        None => assert!(
            value.len() > 262_144,
            "{name}: the connection closed on a {}-byte response",
            value.len()
        ),
    }
    assert!(b.get_cookie("samlgate").is_none(), "{name}");
    // Whatever the browser now holds does not open the dashboard.
    let (resp, _) = b.get(&format!("{}/reports", sso.gw.public_url)).await;
    assert_eq!(resp.status(), 302, "{name}: not sent back to the IdP");
    assert!(
        sso.dash.seen().is_empty(),
        "{name}: the dashboard saw a request"
    );
}

#[tokio::test]
async fn our_endpoints_answer_a_wrong_method_with_405_and_allow() {
    let sso = Sso::start(Opts::default()).await;
    for (method, path, allow) in [
        ("POST", "/saml/login", "GET"),
        ("GET", "/saml/acs", "POST"),
        ("PUT", "/saml/logout", "GET, POST"),
        ("DELETE", "/saml/metadata", "GET, HEAD"),
        ("POST", "/saml/userinfo", "GET"),
    ] {
        let (resp, _) = support::gateway::send(
            http::Request::builder()
                .method(method)
                .uri(format!("{}{path}", sso.gw.public_url))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await;
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(resp.headers()["allow"], allow, "{method} {path}");
    }
}

#[tokio::test]
async fn an_acs_form_over_max_response_bytes_is_a_refused_sign_in() {
    let sso = Sso::start(Opts {
        saml: "max_response_bytes = 1024",
        ..Opts::default()
    })
    .await;
    let mut b = Browser::new();
    let start = b.start_login(&sso.gw, "/").await;
    // Just over the cap (1 KiB, plus 16 KiB for the rest of the form), so that the gateway has
    // read it all when it answers.
    let value = "A".repeat(1024 + 16 * 1024 + 1);
    let (resp, body) = b.post_acs(&sso.gw, &value, &start.relay_state).await;
    assert_eq!(resp.status(), 403);
    assert!(!sets_session(&resp));
    assert!(String::from_utf8_lossy(&body).contains("larger than this service accepts"));
}

fn b64(xml: &str) -> String {
    samlgate::demo::signer::to_form_value(xml)
}

/// XSW1–XSW10 (SECURITY.md) posted to the live ACS, each under a valid pending login: every one
/// is refused with no session and nothing reaching the dashboard. The genuine responses they
/// are made from, signed both ways, sign a user in (the control).
#[tokio::test]
async fn signature_wrapping_vectors_are_refused_at_the_acs() {
    use support::attacks;
    let sso = Sso::start(Opts::default()).await;
    for n in attacks::XSW_ALL {
        assert_refused(&sso, &format!("XSW{n}"), |s, id| {
            let spec = attacks::xsw_spec(n, s.spec(Some(id)));
            let orig = s.idp.response_xml(&spec).unwrap();
            b64(&attacks::xsw(n, &orig, &spec))
        })
        .await;
    }
    for n in [1, 3] {
        let mut b = Browser::new();
        let start = b.start_login(&sso.gw, "/").await;
        let spec = attacks::xsw_spec(n, sso.spec(Some(&start.request_id)));
        let (resp, _) = b
            .post_acs(&sso.gw, &sso.form_value(&spec), &start.relay_state)
            .await;
        assert!(sets_session(&resp), "control {n}: status {}", resp.status());
    }
}

/// The genuine signed response XML for this pending login, with the spec it was made from.
fn genuine(s: &Sso, id: &str) -> (String, samlgate::demo::signer::ResponseSpec) {
    let spec = s.spec(Some(id));
    (s.idp.response_xml(&spec).unwrap(), spec)
}

/// The rest of SECURITY.md's signature and parser catalogue, posted to the live ACS (the
/// function-level twins are in `saml_attacks`): each is refused with no session and nothing at
/// the dashboard, and the SSRF/XXE canary records no connection.
#[tokio::test]
async fn signature_and_parser_attacks_are_refused_at_the_acs() {
    use support::attacks::{assertion, billion_laughs_dtd, with_doctype, without_signature};
    let sso = Sso::start(Opts::default()).await;
    let canary = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    canary.set_nonblocking(true).unwrap();
    let url = format!(
        "http://127.0.0.1:{}/canary",
        canary.local_addr().unwrap().port()
    );
    let exc_c14n = r#"<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>"#;
    let to_canary = url.clone();
    let retrieval = url.clone();
    let xxe = url.clone();
    let param = url.clone();
    let cases: Vec<(&str, Make)> = vec![
        (
            "duplicate IDs",
            Box::new(|s, id| {
                let (x, _) = genuine(s, id);
                let e = without_signature(&assertion(&x))
                    .replace("alice@example.com", "admin@evil.test");
                b64(&x.replacen(
                    "</saml:Issuer>",
                    &format!("</saml:Issuer><samlp:Extensions>{e}</samlp:Extensions>"),
                    1,
                ))
            }),
        ),
        (
            "Reference URI to http",
            Box::new(move |s, id| {
                let (x, sp) = genuine(s, id);
                b64(&x.replace(
                    &format!(r##"URI="#{}""##, sp.assertion_id),
                    &format!(r#"URI="{to_canary}""#),
                ))
            }),
        ),
        (
            "Reference URI to a file",
            Box::new(|s, id| {
                let (x, sp) = genuine(s, id);
                b64(&x.replace(
                    &format!(r##"URI="#{}""##, sp.assertion_id),
                    r#"URI="file:///etc/passwd""#,
                ))
            }),
        ),
        (
            "RetrievalMethod in KeyInfo",
            Box::new(move |s, id| {
                let (x, _) = genuine(s, id);
                b64(&x.replacen(
                    "<ds:X509Data>",
                    &format!(r#"<ds:RetrievalMethod URI="{retrieval}" Type="http://www.w3.org/2000/09/xmldsig#X509Data"/><ds:X509Data>"#),
                    1,
                ))
            }),
        ),
        (
            "XSLT transform",
            Box::new(move |s, id| {
                let (x, _) = genuine(s, id);
                b64(&x.replacen(
                    exc_c14n,
                    r#"<ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xslt-19991116"><xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0"><xsl:template match="/"><xsl:copy-of select="document('file:///etc/passwd')"/></xsl:template></xsl:stylesheet></ds:Transform>"#,
                    1,
                ))
            }),
        ),
        (
            "XPath transform",
            Box::new(move |s, id| {
                let (x, _) = genuine(s, id);
                b64(&x.replacen(
                    exc_c14n,
                    r#"<ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116"><ds:XPath>not(ancestor-or-self::saml:Attribute)</ds:XPath></ds:Transform>"#,
                    1,
                ))
            }),
        ),
        (
            "CDATA in NameID",
            Box::new(|s, id| {
                let mut sp = s.spec(Some(id));
                sp.name_id = "alice@example.com.evil.test".into();
                b64(&s.idp.response_xml(&sp).unwrap().replace(
                    "alice@example.com.evil.test</saml:NameID>",
                    "alice@example.com<![CDATA[]]>.evil.test</saml:NameID>",
                ))
            }),
        ),
        (
            "XXE over http",
            Box::new(move |s, id| {
                let (x, _) = genuine(s, id);
                let x = x.replace(">alice@example.com</saml:NameID>", ">&xxe;</saml:NameID>");
                b64(&with_doctype(
                    &x,
                    &format!(r#"<!DOCTYPE r [<!ENTITY xxe SYSTEM "{xxe}">]>"#),
                ))
            }),
        ),
        (
            "parameter entity over http",
            Box::new(move |s, id| {
                let (x, _) = genuine(s, id);
                b64(&with_doctype(
                    &x,
                    &format!(r#"<!DOCTYPE r [<!ENTITY % p SYSTEM "{param}"> %p;]>"#),
                ))
            }),
        ),
        (
            "billion laughs",
            Box::new(|s, id| {
                let dtd = billion_laughs_dtd();
                let (x, _) = genuine(s, id);
                let x = x.replace(">alice@example.com</saml:NameID>", ">&l9;</saml:NameID>");
                b64(&with_doctype(&x, &dtd))
            }),
        ),
        (
            "multiple roots",
            Box::new(|s, id| {
                let (a, _) = genuine(s, id);
                let (b, _) = genuine(s, id);
                b64(&format!(
                    "{a}{}",
                    samlgate::demo::signer::strip_xml_declaration(&b)
                ))
            }),
        ),
        (
            "deep nesting",
            Box::new(|s, id| {
                let depth = 20_000;
                let nest = format!("{}{}", "<x>".repeat(depth), "</x>".repeat(depth));
                let (x, _) = genuine(s, id);
                b64(&x.replace(
                    "</samlp:Response>",
                    &format!("<samlp:Extensions>{nest}</samlp:Extensions></samlp:Response>"),
                ))
            }),
        ),
    ];
    for (name, make) in &cases {
        assert_refused(&sso, name, make).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    match canary.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("the canary was contacted from {peer}"),
        Err(e) => panic!("canary: {e}"),
    }
    // The control: the same gateway still signs the genuine response in.
    let mut b = Browser::new();
    let (resp, _) = sso.login(&mut b, "/").await;
    assert!(sets_session(&resp), "control: status {}", resp.status());
}

type Make = Box<dyn Fn(&Sso, &str) -> String>;

/// A case whose response is the genuine one for the pending login, changed by `change`
/// before signing.
fn tweak(change: impl Fn(&mut samlgate::demo::signer::ResponseSpec) + 'static) -> Make {
    Box::new(move |s, id| {
        let mut sp = s.spec(Some(id));
        change(&mut sp);
        s.form_value(&sp)
    })
}

#[tokio::test]
async fn the_attack_catalogue_is_refused_at_the_acs() {
    let sso = Sso::start(Opts::default()).await;
    let now = chrono::Utc::now();
    let cases: Vec<(&str, Make)> = vec![
        ("unsigned", tweak(|sp| sp.sign = SignMode::None)),
        (
            "rsa-sha1 not allowed",
            tweak(|sp| sp.algorithm = SignAlgorithm::RsaSha1),
        ),
        (
            "NameID changed after signing",
            Box::new(|s, id| {
                b64(&s.idp.response_xml(&s.spec(Some(id))).unwrap().replacen(
                    "alice@example.com</saml:NameID>",
                    "admin@example.com</saml:NameID>",
                    1,
                ))
            }),
        ),
        (
            "attribute changed after signing",
            Box::new(|s, id| {
                b64(&s
                    .idp
                    .response_xml(&s.spec(Some(id)))
                    .unwrap()
                    .replace("dashboard-admins", "superusers"))
            }),
        ),
        (
            "signature removed",
            Box::new(|s, id| {
                let x = s.idp.response_xml(&s.spec(Some(id))).unwrap();
                let a = x.find("<ds:Signature").unwrap();
                let e = x.find("</ds:Signature>").unwrap() + 15;
                b64(&format!("{}{}", &x[..a], &x[e..]))
            }),
        ),
        (
            "signed by another key",
            Box::new(|s, id| {
                let other =
                    samlgate::demo::signer::TestIdp::generate(support::sso::IDP_ENTITY).unwrap();
                other.response_form_value(&s.spec(Some(id))).unwrap()
            }),
        ),
        (
            "second unsigned assertion (XSW)",
            Box::new(|s, id| {
                let x = s.idp.response_xml(&s.spec(Some(id))).unwrap();
                let a = x.find("<saml:Assertion").unwrap();
                let evil = x[a..].replace("alice@example.com", "admin@example.com");
                let end = evil.find("</saml:Assertion>").unwrap() + 17;
                b64(&format!("{}{}{}", &x[..a], &evil[..end], &x[a..]))
            }),
        ),
        (
            "wrapped in an evil Response",
            Box::new(|s, id| {
                let x = s.idp.response_xml(&s.spec(Some(id))).unwrap();
                b64(&format!(
                    "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"_evil\" Version=\"2.0\" IssueInstant=\"{}\"><samlp:Extensions>{x}</samlp:Extensions></samlp:Response>",
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ))
            }),
        ),
        (
            // Signed for alice@example.com.evil.test, then a comment inserted: exclusive C14N
            // drops comments, so the signature still holds; only the markup check refuses it.
            "comment in NameID",
            Box::new(|s, id| {
                let mut sp = s.spec(Some(id));
                sp.name_id = "alice@example.com.evil.test".into();
                b64(&s.idp.response_xml(&sp).unwrap().replacen(
                    "alice@example.com.evil.test</saml:NameID>",
                    "alice@example.com<!---->.evil.test</saml:NameID>",
                    1,
                ))
            }),
        ),
        (
            "DOCTYPE / XXE",
            Box::new(|s, id| {
                let x = s.idp.response_xml(&s.spec(Some(id))).unwrap();
                b64(&format!(
                    "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{}",
                    samlgate::demo::signer::strip_xml_declaration(&x)
                ))
            }),
        ),
        (
            "junk after the root",
            Box::new(|s, id| {
                b64(&format!(
                    "{}<junk/>",
                    s.idp.response_xml(&s.spec(Some(id))).unwrap()
                ))
            }),
        ),
        (
            "processing instruction",
            Box::new(|s, id| {
                b64(&s.idp.response_xml(&s.spec(Some(id))).unwrap().replacen(
                    "<saml:Issuer>",
                    "<?evil x?><saml:Issuer>",
                    1,
                ))
            }),
        ),
        ("not base64", Box::new(|_, _| "%%%not-base64%%%".into())),
        (
            "wrong audience",
            tweak(|sp| sp.audiences = vec!["https://other.test".into()]),
        ),
        ("missing audience", tweak(|sp| sp.audiences = vec![])),
        (
            "wrong recipient",
            tweak(|sp| sp.recipient = Some("https://other.test/acs".into())),
        ),
        (
            "wrong destination",
            tweak(|sp| sp.destination = Some("https://other.test/acs".into())),
        ),
        (
            "signed response without destination",
            tweak(|sp| {
                sp.destination = None;
                sp.sign = SignMode::Response;
            }),
        ),
        (
            "wrong issuer",
            tweak(|sp| sp.issuer = Some("https://evil.test".into())),
        ),
        (
            "expired conditions",
            tweak(move |sp| sp.not_on_or_after = Some(now - chrono::Duration::seconds(91))),
        ),
        (
            "conditions not yet valid",
            tweak(move |sp| sp.not_before = Some(now + chrono::Duration::seconds(120))),
        ),
        (
            "subject confirmation expired",
            tweak(move |sp| {
                sp.subject_not_on_or_after = Some(now - chrono::Duration::seconds(120))
            }),
        ),
        (
            "issued in the future",
            tweak(move |sp| sp.issue_instant = now + chrono::Duration::seconds(300)),
        ),
        (
            "issued too long ago",
            Box::new(move |s, id| {
                let mut sp =
                    samlgate::demo::signer::ResponseSpec::at(now - chrono::Duration::minutes(20));
                sp.destination = Some(s.acs());
                sp.recipient = Some(s.acs());
                sp.audiences = vec![s.entity_id()];
                sp.in_response_to = Some(id.into());
                sp.subject_not_on_or_after = Some(now + chrono::Duration::minutes(5));
                sp.not_on_or_after = Some(now + chrono::Duration::minutes(5));
                s.form_value(&sp)
            }),
        ),
        (
            "non-success status",
            tweak(|sp| sp.status = "urn:oasis:names:tc:SAML:2.0:status:Requester".into()),
        ),
        ("no AuthnStatement", tweak(|sp| sp.authn_statement = false)),
        ("no Conditions", tweak(|sp| sp.conditions = false)),
        (
            "InResponseTo of another request",
            Box::new(|s, _| s.form_value(&s.spec(Some("_ffffffffffffffffffffffffffffffff")))),
        ),
        (
            "unsolicited while IdP-initiated is off",
            Box::new(|s, _| s.form_value(&s.spec(None))),
        ),
        (
            "duplicate attribute names",
            Box::new(|s, id| {
                let mut sp = s.spec(Some(id));
                sp.attributes
                    .push(("email".into(), vec!["admin@example.com".into()]));
                s.form_value(&sp)
            }),
        ),
        (
            "5 MB response",
            Box::new(|s, id| {
                let mut sp = s.spec(Some(id));
                sp.attributes
                    .push(("blob".into(), vec!["x".repeat(5 << 20)]));
                s.form_value(&sp)
            }),
        ),
    ];
    for (name, make) in &cases {
        assert_refused(&sso, name, make).await;
    }
}

#[tokio::test]
async fn accepted_inside_clock_skew() {
    let sso = Sso::start(Opts::default()).await;
    let now = chrono::Utc::now();
    let mut b = Browser::new();
    let start = b.start_login(&sso.gw, "/").await;
    let mut sp = sso.spec(Some(&start.request_id));
    // Expired 60 s ago and issued 60 s in the future: inside the default 90 s skew.
    sp.not_on_or_after = Some(now - chrono::Duration::seconds(60));
    sp.issue_instant = now + chrono::Duration::seconds(60);
    let (resp, _) = b
        .post_acs(&sso.gw, &sso.form_value(&sp), &start.relay_state)
        .await;
    assert_eq!(resp.status(), 303);
}
