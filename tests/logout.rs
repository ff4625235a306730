//! Single logout, black-box through the running gateway: SP-initiated (our signed
//! LogoutRequest out, the IdP's LogoutResponse back), IdP-initiated on both bindings (every
//! session of the NameID ends, a LogoutResponse redirect answers), and the refusals — unsigned,
//! wrong issuer, wrong key, expired, replayed, deflate bomb — each 4xx with no session ended.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{Duration, SecondsFormat, Utc};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::{Signer, Verifier};
use openssl::x509::X509;
use samlgate::demo::signer::{SignAlgorithm, TestIdp, new_id};
use support::dashboard::Dashboard;
use support::gateway::{self, Opts};
use support::sso::{Browser, IDP_ENTITY, Sso, decode_redirect};

const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const NS: &str = r#"xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion""#;

fn enc(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An HTTP-Redirect query (bindings §3.4.4.1), signed with `key_pem` when given.
fn redirect_query(param: &str, xml: &str, relay: Option<&str>, key_pem: Option<&str>) -> String {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(xml.as_bytes()).unwrap();
    redirect_query_raw(param, &e.finish().unwrap(), relay, key_pem)
}

fn redirect_query_raw(
    param: &str,
    deflated: &[u8],
    relay: Option<&str>,
    key_pem: Option<&str>,
) -> String {
    let mut q = format!("{param}={}", enc(&STANDARD.encode(deflated)));
    if let Some(r) = relay {
        q.push_str(&format!("&RelayState={}", enc(r)));
    }
    if let Some(pem) = key_pem {
        q.push_str(&format!("&SigAlg={}", enc(RSA_SHA256)));
        let key = PKey::private_key_from_pem(pem.as_bytes()).unwrap();
        let mut s = Signer::new(MessageDigest::sha256(), &key).unwrap();
        s.update(q.as_bytes()).unwrap();
        q.push_str(&format!(
            "&Signature={}",
            enc(&STANDARD.encode(s.sign_to_vec().unwrap()))
        ));
    }
    q
}

struct Req<'a> {
    issuer: &'a str,
    destination: String,
    name_id: &'a str,
    session_index: Option<&'a str>,
    issue_instant: String,
    not_on_or_after: Option<String>,
}

impl Req<'_> {
    fn xml(&self, id: &str, signature: Option<&str>) -> String {
        let mut x = format!(
            r#"<samlp:LogoutRequest {NS} ID="{id}" Version="2.0" IssueInstant="{}""#,
            self.issue_instant
        );
        // An empty destination leaves the attribute out.
        if !self.destination.is_empty() {
            x.push_str(&format!(r#" Destination="{}""#, self.destination));
        }
        if let Some(t) = &self.not_on_or_after {
            x.push_str(&format!(r#" NotOnOrAfter="{t}""#));
        }
        x.push_str(&format!("><saml:Issuer>{}</saml:Issuer>", self.issuer));
        x.push_str(signature.unwrap_or(""));
        x.push_str(&format!(
            r#"<saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">{}</saml:NameID>"#,
            self.name_id
        ));
        if let Some(si) = self.session_index {
            x.push_str(&format!("<samlp:SessionIndex>{si}</samlp:SessionIndex>"));
        }
        x.push_str("</samlp:LogoutRequest>");
        x
    }
}

fn slo_url(sso: &Sso) -> String {
    format!("{}/saml/logout", sso.gw.public_url)
}

fn alice(sso: &Sso) -> Req<'static> {
    Req {
        issuer: IDP_ENTITY,
        destination: slo_url(sso),
        name_id: "alice@example.com",
        session_index: None,
        issue_instant: now(),
        not_on_or_after: None,
    }
}

/// Logs `b` in with `session_index`; returns the session cookie header.
async fn login(sso: &Sso, b: &mut Browser, session_index: &str) -> String {
    let start = b.start_login(&sso.gw, "/").await;
    let mut spec = sso.spec(Some(&start.request_id));
    spec.session_index = Some(session_index.into());
    let (resp, _) = b
        .post_acs(&sso.gw, &sso.form_value(&spec), &start.relay_state)
        .await;
    assert_eq!(resp.status(), 303);
    b.cookie_header()
}

/// Whether `cookie` still names a session (an API client gets 401 without one).
async fn signed_in(sso: &Sso, cookie: &str) -> bool {
    let (resp, _) = gateway::get(
        &format!("{}/saml/userinfo", sso.gw.public_url),
        &[("cookie", cookie)],
    )
    .await;
    resp.status() == 200
}

async fn get_logout(sso: &Sso, query: &str) -> http::Response<()> {
    gateway::get(&format!("{}?{query}", slo_url(sso)), &[])
        .await
        .0
}

async fn post_logout(sso: &Sso, field: &str, value: &str) -> http::Response<()> {
    let body = format!("{field}={}&RelayState=abc", enc(value));
    let req = http::Request::post(slo_url(sso))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    gateway::send(req).await.0
}

fn inflate_param(location: &str, param: &str) -> String {
    let url = url::Url::parse(location).unwrap();
    let v = url.query_pairs().find(|(k, _)| k == param).unwrap().1;
    let raw = STANDARD.decode(v.as_bytes()).unwrap();
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(&raw[..])
        .read_to_string(&mut xml)
        .unwrap();
    xml
}

fn attr<'a>(xml: &'a str, name: &str) -> &'a str {
    let start = xml.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
    &xml[start..start + xml[start..].find('"').unwrap()]
}

/// Starts a gateway whose SP signs (a key pair written to sp_cert_file/sp_key_file).
async fn start_with_sp_key() -> (Sso, TestIdp, tempfile::TempDir) {
    let sp = TestIdp::generate("sp").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("sp.crt");
    let key = dir.path().join("sp.key");
    std::fs::write(&cert, sp.cert_pem().unwrap()).unwrap();
    std::fs::write(&key, sp.key_pem().unwrap()).unwrap();
    let saml = format!(
        "sp_cert_file = \"{}\"\nsp_key_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let sso = Sso::start(Opts {
        saml: &saml,
        server: "max_header_bytes = 262144",
        ..Opts::default()
    })
    .await;
    (sso, sp, dir)
}

/// The IdP's LogoutResponse to `location` (our LogoutRequest redirect), as a query.
fn idp_logout_response(sso: &Sso, location: &str, key_pem: Option<&str>, status: &str) -> String {
    let request = inflate_param(location, "SAMLRequest");
    let relay = decode_redirect(location).relay_state;
    let xml = format!(
        r#"<samlp:LogoutResponse {NS} ID="{}" Version="2.0" IssueInstant="{}" Destination="{}" InResponseTo="{}"><saml:Issuer>{IDP_ENTITY}</saml:Issuer><samlp:Status><samlp:StatusCode Value="{status}"/></samlp:Status></samlp:LogoutResponse>"#,
        new_id(),
        now(),
        slo_url(sso),
        attr(&request, "ID"),
    );
    redirect_query("SAMLResponse", &xml, Some(&relay), key_pem)
}

const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

#[tokio::test]
async fn sp_initiated_logout_round_trip_with_signed_request() {
    let (sso, sp, _dir) = start_with_sp_key().await;
    let idp_key = sso.idp.key_pem().unwrap();
    let mut b = Browser::new();
    let cookie = login(&sso, &mut b, "_s1").await;
    assert!(signed_in(&sso, &cookie).await);

    let (resp, _) = b.get(&slo_url(&sso)).await;
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("https://idp.test/slo?SAMLRequest="));
    // The session ended before the redirect.
    assert!(!signed_in(&sso, &cookie).await);
    let xml = inflate_param(&location, "SAMLRequest");
    assert!(xml.starts_with("<samlp:LogoutRequest"), "{xml}");
    assert!(xml.contains(">alice@example.com</saml:NameID>"), "{xml}");
    assert!(xml.contains("<samlp:SessionIndex>_s1</samlp:SessionIndex>"));
    assert!(xml.contains(&format!("<saml:Issuer>{}</saml:Issuer>", sso.entity_id())));
    assert_eq!(attr(&xml, "Destination"), "https://idp.test/slo");
    let id = attr(&xml, "ID");
    assert!(id.len() == 33 && id.starts_with('_'));
    // The query signature (bindings §3.4.4.1) verifies with the SP certificate.
    let query = location.split_once('?').unwrap().1;
    let (signed, signature) = query.split_once("&Signature=").unwrap();
    assert!(
        signed.contains("&RelayState=")
            && signed.ends_with(&format!("&SigAlg={}", enc(RSA_SHA256)))
    );
    let sig = STANDARD
        .decode(
            url::form_urlencoded::parse(format!("s={signature}").as_bytes())
                .next()
                .unwrap()
                .1
                .as_bytes(),
        )
        .unwrap();
    let cert = X509::from_pem(sp.cert_pem().unwrap().as_bytes()).unwrap();
    let key = cert.public_key().unwrap();
    let mut v = Verifier::new(MessageDigest::sha256(), &key).unwrap();
    v.update(signed.as_bytes()).unwrap();
    assert!(v.verify(&sig).unwrap());

    // The IdP's signed LogoutResponse lands on the signed-out page, once.
    let answer = idp_logout_response(&sso, &location, Some(&idp_key), SUCCESS);
    let (resp, body) = gateway::get(&format!("{}?{answer}", slo_url(&sso)), &[]).await;
    assert_eq!(resp.status(), 200);
    assert!(String::from_utf8_lossy(&body).contains("signed out"));
    assert_eq!(get_logout(&sso, &answer).await.status(), 403, "replay");
}

#[tokio::test]
async fn forged_or_unsigned_logout_responses_are_refused() {
    let (sso, _sp, _dir) = start_with_sp_key().await;
    let attacker = TestIdp::generate(IDP_ENTITY).unwrap();
    let attacker_key = attacker.key_pem().unwrap();
    for key in [None, Some(attacker_key.as_str())] {
        let mut b = Browser::new();
        login(&sso, &mut b, "_s").await;
        let (resp, _) = b.get(&slo_url(&sso)).await;
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        let answer = idp_logout_response(&sso, &location, key, SUCCESS);
        let (resp, body) = gateway::get(&format!("{}?{answer}", slo_url(&sso)), &[]).await;
        assert_eq!(resp.status(), 403, "{key:?}");
        assert!(String::from_utf8_lossy(&body).contains("Sign-out refused"));
    }
    // A valid one for no pending logout of ours (unknown RelayState) is refused too.
    let mut b = Browser::new();
    login(&sso, &mut b, "_s").await;
    let (resp, _) = b.get(&slo_url(&sso)).await;
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let answer = idp_logout_response(&sso, &location, Some(&sso.idp.key_pem().unwrap()), SUCCESS);
    let relay = decode_redirect(&location).relay_state;
    let other = answer.replace(&enc(&relay), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(get_logout(&sso, &other).await.status(), 403);
}

#[tokio::test]
async fn sign_out_without_sp_key_or_session() {
    let sso = Sso::start(Opts::default()).await;
    // No session: the signed-out page.
    let (resp, _) = gateway::get(&slo_url(&sso), &[]).await;
    assert_eq!(resp.status(), 200);
    // With a session and no SP key: an unsigned LogoutRequest (no SigAlg/Signature).
    let mut b = Browser::new();
    let cookie = login(&sso, &mut b, "_s9").await;
    let (resp, _) = b.get(&slo_url(&sso)).await;
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap();
    assert!(!location.contains("Signature="));
    assert!(!signed_in(&sso, &cookie).await);
}

#[tokio::test]
async fn sign_out_with_an_idp_without_a_logout_endpoint_ends_the_local_session() {
    let sso = Sso::start_with_slo(Dashboard::start().await, Opts::default(), None).await;
    let mut b = Browser::new();
    let cookie = login(&sso, &mut b, "_g1").await;
    assert!(signed_in(&sso, &cookie).await);
    let (resp, body) = b.get(&slo_url(&sso)).await;
    // The signed-out page itself, no trip to an IdP that has no endpoint to go to.
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("location").is_none());
    assert!(String::from_utf8_lossy(&body).contains("You are signed out."));
    let cleared = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap().contains("Max-Age=0"));
    assert!(cleared, "the session cookie was not cleared");
    assert!(
        !signed_in(&sso, &cookie).await,
        "the session outlived sign-out"
    );
}

#[tokio::test]
async fn idp_initiated_redirect_logout_ends_every_session_of_the_name_id() {
    let sso = Sso::start(Opts::default()).await;
    let (mut b1, mut b2, mut bob) = (Browser::new(), Browser::new(), Browser::new());
    let c1 = login(&sso, &mut b1, "_a1").await;
    let c2 = login(&sso, &mut b2, "_a2").await;
    // Someone else's session survives.
    let start = bob.start_login(&sso.gw, "/").await;
    let mut spec = sso.spec(Some(&start.request_id));
    spec.name_id = "bob@example.com".into();
    spec.attributes = vec![("email".into(), vec!["bob@example.com".into()])];
    bob.post_acs(&sso.gw, &sso.form_value(&spec), &start.relay_state)
        .await;
    let c3 = bob.cookie_header();
    assert!(signed_in(&sso, &c1).await && signed_in(&sso, &c2).await && signed_in(&sso, &c3).await);

    let id = new_id();
    let q = alice_logout_query(&sso, &id);
    let (location, xml) = logout_answer(&sso, &q, &id).await;
    assert!(xml.contains(SUCCESS), "{xml}");
    assert_eq!(decode_redirect_relay(&location), "idp-state");
    assert!(!signed_in(&sso, &c1).await);
    assert!(!signed_in(&sso, &c2).await);
    assert!(signed_in(&sso, &c3).await);
    // The same request again is refused (acted on once).
    assert_eq!(get_logout(&sso, &q).await.status(), 403);
}

/// A qualified persistent NameID (Shibboleth, ADFS) is named in our LogoutRequest exactly as
/// the IdP sent it: value, Format, NameQualifier and SPNameQualifier (SAML core §2.2.2).
#[tokio::test]
async fn sp_initiated_logout_names_a_qualified_name_id_as_the_idp_did() {
    let sso = Sso::start(Opts::default()).await;
    let mut b = Browser::new();
    let start = b.start_login(&sso.gw, "/").await;
    let mut spec = sso.spec(Some(&start.request_id));
    spec.name_id = "AAdzZWNyZXQx".into();
    spec.name_id_format = Some("urn:oasis:names:tc:SAML:2.0:nameid-format:persistent".into());
    spec.name_qualifiers = Some((IDP_ENTITY.into(), sso.entity_id()));
    spec.attributes = vec![("email".into(), vec!["alice@example.com".into()])];
    let (resp, _) = b
        .post_acs(&sso.gw, &sso.form_value(&spec), &start.relay_state)
        .await;
    assert_eq!(resp.status(), 303);
    let (resp, _) = b.get(&slo_url(&sso)).await;
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let xml = inflate_param(&location, "SAMLRequest");
    let name_id = &xml[xml.find("<saml:NameID").unwrap()..xml.find("</saml:NameID>").unwrap()];
    assert_eq!(attr(name_id, "NameQualifier"), IDP_ENTITY, "{xml}");
    assert_eq!(attr(name_id, "SPNameQualifier"), sso.entity_id(), "{xml}");
    assert_eq!(
        attr(name_id, "Format"),
        "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
    );
    assert!(name_id.ends_with(">AAdzZWNyZXQx"), "{xml}");
}

/// With the session store down, nothing can be ended, but the IdP's logout chain must go on:
/// it gets a LogoutResponse saying so (PartialLogout), not our 503 page.
#[tokio::test]
async fn idp_initiated_logout_with_the_store_down_answers_partial_logout() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let session = format!(
        "store = \"redis\"\nredis_url = \"redis://127.0.0.1:{closed}/0\"\noperation_timeout = \"100ms\""
    );
    let sso = Sso::start(Opts {
        session: &session,
        ..Opts::default()
    })
    .await;
    let id = new_id();
    let q = alice_logout_query(&sso, &id);
    let (location, xml) = logout_answer(&sso, &q, &id).await;
    assert!(
        xml.contains("urn:oasis:names:tc:SAML:2.0:status:PartialLogout"),
        "{xml}"
    );
    assert!(!xml.contains(SUCCESS), "{xml}");
    assert_eq!(decode_redirect_relay(&location), "idp-state");
}

/// Signing out while the session store is down cannot end the session: the user is told
/// they are still signed in (503) and the cookie is kept, rather than a page that lets them
/// think they are out.
#[tokio::test]
async fn sign_out_with_the_store_down_says_the_session_stays() {
    let mut redis = support::local::OwnRedis::start(support::local::free_port());
    let session = format!(
        "store = \"redis\"\nredis_url = \"{}\"\noperation_timeout = \"100ms\"",
        redis.url()
    );
    let sso = Sso::start(Opts {
        session: &session,
        ..Opts::default()
    })
    .await;
    let mut b = Browser::new();
    let cookie = login(&sso, &mut b, "_down").await;
    assert!(signed_in(&sso, &cookie).await);
    redis.stop();
    let (resp, body) = gateway::get(
        &format!("{}/saml/logout", sso.gw.public_url),
        &[("cookie", cookie.as_str())],
    )
    .await;
    assert_eq!(resp.status(), 503);
    let page = String::from_utf8_lossy(&body);
    assert!(page.contains("still signed in"), "{page}");
    assert!(
        resp.headers().get("set-cookie").is_none(),
        "the cookie was cleared"
    );
}

/// Alice's LogoutRequest `id` from the IdP (HTTP-Redirect, signed, RelayState "idp-state").
fn alice_logout_query(sso: &Sso, id: &str) -> String {
    redirect_query(
        "SAMLRequest",
        &alice(sso).xml(id, None),
        Some("idp-state"),
        Some(&sso.idp.key_pem().unwrap()),
    )
}

/// Sends the IdP's LogoutRequest `query` (ID `id`) and returns where we send the browser back
/// and our LogoutResponse's XML, which must answer `id`.
async fn logout_answer(sso: &Sso, query: &str, id: &str) -> (String, String) {
    let resp = get_logout(sso, query).await;
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("https://idp.test/slo?SAMLResponse="));
    let xml = inflate_param(&location, "SAMLResponse");
    assert_eq!(attr(&xml, "InResponseTo"), id);
    (location, xml)
}

fn decode_redirect_relay(location: &str) -> String {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "RelayState")
        .unwrap()
        .1
        .into_owned()
}

#[tokio::test]
async fn idp_initiated_post_logout_with_xml_signature_and_session_index() {
    let sso = Sso::start(Opts::default()).await;
    let (mut b1, mut b2) = (Browser::new(), Browser::new());
    let c1 = login(&sso, &mut b1, "_p1").await;
    let c2 = login(&sso, &mut b2, "_p2").await;
    let id = new_id();
    let req = Req {
        session_index: Some("_p1"),
        ..alice(&sso)
    };
    let template = sso
        .idp
        .signature_template(&id, SignAlgorithm::RsaSha256)
        .unwrap();
    let signed = sso
        .idp
        .sign_document(&req.xml(&id, Some(&template)))
        .unwrap();
    let resp = post_logout(&sso, "SAMLRequest", &STANDARD.encode(signed)).await;
    assert_eq!(resp.status(), 302);
    let xml = inflate_param(resp.headers()["location"].to_str().unwrap(), "SAMLResponse");
    assert_eq!(attr(&xml, "InResponseTo"), id);
    // Only the session with that SessionIndex ended (SAML core §3.7.1).
    assert!(!signed_in(&sso, &c1).await);
    assert!(signed_in(&sso, &c2).await);

    // Unsigned POST: refused.
    let id = new_id();
    let resp = post_logout(
        &sso,
        "SAMLRequest",
        &STANDARD.encode(alice(&sso).xml(&id, None)),
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert!(signed_in(&sso, &c2).await);
}

/// A LogoutRequest may hide its NameID in an EncryptedID (core §3.7.1): decrypted with the SP
/// key it ends the user's sessions; encrypted to another key, or with no SP key configured, it
/// is refused and ends nothing.
#[tokio::test]
async fn idp_initiated_logout_with_an_encrypted_name_id() {
    let name_id = r#"<saml:NameID xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress">alice@example.com</saml:NameID>"#;
    // A signed POST LogoutRequest for alice whose NameID is encrypted to `to`.
    let request = |sso: &Sso, to: &TestIdp| {
        let id = new_id();
        let template = sso
            .idp
            .signature_template(&id, SignAlgorithm::RsaSha256)
            .unwrap();
        let plain = alice(sso).xml(&id, Some(&template));
        let start = plain.find("<saml:NameID").unwrap();
        let end = plain.find("</saml:NameID>").unwrap() + "</saml:NameID>".len();
        let encrypted =
            samlgate::demo::signer::encrypted_id(name_id, &to.cert_pem().unwrap()).unwrap();
        let xml = format!("{}{encrypted}{}", &plain[..start], &plain[end..]);
        assert!(!xml.contains("alice@example.com"), "{xml}");
        STANDARD.encode(sso.idp.sign_document(&xml).unwrap())
    };
    let (sso, sp, _dir) = start_with_sp_key().await;
    let mut b = Browser::new();
    let cookie = login(&sso, &mut b, "_e1").await;
    let stranger = TestIdp::generate("stranger").unwrap();
    let resp = post_logout(&sso, "SAMLRequest", &request(&sso, &stranger)).await;
    assert_eq!(resp.status(), 403);
    assert!(
        signed_in(&sso, &cookie).await,
        "refused, yet the session ended"
    );
    let resp = post_logout(&sso, "SAMLRequest", &request(&sso, &sp)).await;
    assert_eq!(resp.status(), 302);
    assert!(
        !signed_in(&sso, &cookie).await,
        "the session outlived the logout"
    );

    // Without an SP key the EncryptedID cannot be read: refused.
    let keyless = Sso::start(Opts::default()).await;
    let mut b = Browser::new();
    let cookie = login(&keyless, &mut b, "_e2").await;
    let resp = post_logout(&keyless, "SAMLRequest", &request(&keyless, &sp)).await;
    assert_eq!(resp.status(), 403);
    assert!(signed_in(&keyless, &cookie).await);
}

#[tokio::test]
async fn bad_idp_logout_requests_are_refused_and_end_nothing() {
    let (sso, _sp, _dir) = start_with_sp_key().await;
    let mut b = Browser::new();
    let cookie = login(&sso, &mut b, "_x").await;
    let key = sso.idp.key_pem().unwrap();
    let attacker = TestIdp::generate(IDP_ENTITY).unwrap().key_pem().unwrap();
    let old = (Utc::now() - Duration::minutes(30)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let past = (Utc::now() - Duration::minutes(3)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let cases: Vec<(&str, String)> = vec![
        (
            "unsigned",
            redirect_query("SAMLRequest", &alice(&sso).xml(&new_id(), None), None, None),
        ),
        (
            "wrong issuer",
            redirect_query(
                "SAMLRequest",
                &Req {
                    issuer: "https://evil.test",
                    ..alice(&sso)
                }
                .xml(&new_id(), None),
                None,
                Some(&key),
            ),
        ),
        (
            "wrong key",
            redirect_query(
                "SAMLRequest",
                &alice(&sso).xml(&new_id(), None),
                None,
                Some(&attacker),
            ),
        ),
        (
            "wrong destination",
            redirect_query(
                "SAMLRequest",
                &Req {
                    destination: "https://other.test/slo".into(),
                    ..alice(&sso)
                }
                .xml(&new_id(), None),
                None,
                Some(&key),
            ),
        ),
        (
            // Signed messages must name where they were sent (bindings §3.4.5.2).
            "no destination",
            redirect_query(
                "SAMLRequest",
                &Req {
                    destination: String::new(),
                    ..alice(&sso)
                }
                .xml(&new_id(), None),
                None,
                Some(&key),
            ),
        ),
        (
            "expired NotOnOrAfter",
            redirect_query(
                "SAMLRequest",
                &Req {
                    not_on_or_after: Some(past),
                    ..alice(&sso)
                }
                .xml(&new_id(), None),
                None,
                Some(&key),
            ),
        ),
        (
            "old IssueInstant",
            redirect_query(
                "SAMLRequest",
                &Req {
                    issue_instant: old,
                    ..alice(&sso)
                }
                .xml(&new_id(), None),
                None,
                Some(&key),
            ),
        ),
        (
            "tampered after signing",
            redirect_query(
                "SAMLRequest",
                &alice(&sso).xml(&new_id(), None),
                Some("x"),
                Some(&key),
            )
            .replace("RelayState=x", "RelayState=y"),
        ),
        (
            "doctype",
            redirect_query(
                "SAMLRequest",
                &format!(
                    "<!DOCTYPE x [<!ENTITY a \"b\">]>{}",
                    alice(&sso).xml(&new_id(), None)
                ),
                None,
                Some(&key),
            ),
        ),
    ];
    for (name, q) in &cases {
        let resp = get_logout(&sso, q).await;
        assert_eq!(resp.status(), 403, "{name}");
        assert!(signed_in(&sso, &cookie).await, "{name} ended a session");
    }

    // A deflate bomb (32 MB of spaces, ~32 KB deflated), even signed, fails fast.
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![b' '; 1024 * 1024];
    e.write_all(b"<samlp:LogoutRequest ").unwrap();
    for _ in 0..32 {
        e.write_all(&chunk).unwrap();
    }
    let bomb = e.finish().unwrap();
    let q = redirect_query_raw("SAMLRequest", &bomb, None, Some(&key));
    let started = std::time::Instant::now();
    let resp = get_logout(&sso, &q).await;
    assert_eq!(
        resp.status(),
        403,
        "refused by the inflate cap, not the server"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert!(signed_in(&sso, &cookie).await);
}
