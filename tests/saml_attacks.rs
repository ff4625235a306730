//! The Signature / Parser / Protocol catalogue of SECURITY.md, one test per item, against
//! `Saml::verify` with responses from the development IdP. Every attack runs under both reduce
//! modes (PreDigest and samael's marking mode) and must be refused by both.

use std::io::Read as _;
use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::Duration as StdDuration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, TimeZone, Utc};
use samlgate::config::SignatureAlgorithm;
use samlgate::demo::signer::{
    DEFAULT_ACS_URL, DEFAULT_REQUEST_ID, DEFAULT_SP_ENTITY_ID, ResponseSpec, SignAlgorithm,
    SignMode, TestIdp, to_form_value,
};
use samlgate::saml::harden::HardenError;
use samlgate::saml::{
    Error, IdpMetadata, MetadataError, Policy, Reduce, Saml, SetupError, Verified,
};

#[path = "support/attacks.rs"]
mod attacks;
use attacks::{
    assertion, billion_laughs_dtd, element, evil_copy, replace_assertion, with_doctype,
    without_signature,
};

const IDP: &str = "https://idp.example.com/metadata";

fn idp() -> &'static TestIdp {
    static IDP_KEY: OnceLock<TestIdp> = OnceLock::new();
    IDP_KEY.get_or_init(|| TestIdp::generate(IDP).expect("idp"))
}

fn attacker() -> &'static TestIdp {
    static KEY: OnceLock<TestIdp> = OnceLock::new();
    KEY.get_or_init(|| TestIdp::generate(IDP).expect("attacker"))
}

/// The SP's own key pair (for encryption tests).
fn sp_keys() -> &'static TestIdp {
    static KEY: OnceLock<TestIdp> = OnceLock::new();
    KEY.get_or_init(|| TestIdp::generate("https://sp.example.com").expect("sp"))
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0)
        .single()
        .expect("time")
}

fn spec() -> ResponseSpec {
    ResponseSpec::at(now())
}

fn policy(reduce: Reduce) -> Policy {
    let mut p = Policy::new(DEFAULT_SP_ENTITY_ID, DEFAULT_ACS_URL);
    p.reduce = reduce;
    p
}

fn saml_with(p: Policy) -> Saml {
    let md = idp()
        .metadata_xml("https://idp.example.com/sso", None)
        .expect("md");
    let sp = sp_keys();
    Saml::new(
        p,
        IdpMetadata::parse(&md).expect("md parses"),
        Some(sp.key_pem().expect("key").as_bytes()),
        Some(sp.cert_pem().expect("cert").as_bytes()),
    )
    .expect("saml")
}

fn verify_with(p: Policy, xml: &str, pending: Option<&str>) -> Result<Verified, Error> {
    saml_with(p).verify(&to_form_value(xml), pending, now())
}

/// Verifies under both reduce modes; the verdicts must agree.
fn verify(xml: &str) -> Result<Verified, Error> {
    let a = verify_with(policy(Reduce::PreDigest), xml, Some(DEFAULT_REQUEST_ID));
    let b = verify_with(policy(Reduce::Marked), xml, Some(DEFAULT_REQUEST_ID));
    assert_eq!(
        a.is_ok(),
        b.is_ok(),
        "reduce modes disagree: {a:?} vs {b:?}"
    );
    a
}

#[track_caller]
fn accepted(xml: &str) -> Verified {
    match verify(xml) {
        Ok(v) => v,
        Err(e) => panic!("expected accept, got {e:?}"),
    }
}

#[track_caller]
fn rejected(xml: &str) -> Error {
    match verify(xml) {
        Ok(v) => panic!("expected reject, accepted {:?}", v.name_id),
        Err(e) => e,
    }
}

fn signed(spec: &ResponseSpec) -> String {
    idp().response_xml(spec).expect("sign")
}

// ---------------------------------------------------------------- positive controls

#[test]
fn accepts_assertion_signed() {
    let v = accepted(&signed(&spec()));
    assert_eq!(v.name_id, "alice@example.com");
    assert_eq!(v.identity.email.as_deref(), Some("alice@example.com"));
    assert_eq!(v.identity.first_name.as_deref(), Some("Alice"));
    assert_eq!(v.identity.last_name.as_deref(), Some("Liddell"));
    assert_eq!(
        *v.identity.groups,
        *samlgate::identity::groups(["staff", "dashboard-admins"])
    );
    assert_eq!(v.in_response_to.as_deref(), Some(DEFAULT_REQUEST_ID));
    assert!(v.replay_expires_at > now());
}

#[test]
fn accepts_response_signed() {
    accepted(&signed(&ResponseSpec {
        sign: SignMode::Response,
        ..spec()
    }));
}

#[test]
fn accepts_both_signed() {
    accepted(&signed(&ResponseSpec {
        sign: SignMode::Both,
        ..spec()
    }));
}

#[test]
fn accepts_encrypted_signed_assertion_in_unsigned_response() {
    let s = ResponseSpec {
        encrypt_to_pem: Some(sp_keys().cert_pem().expect("pem")),
        ..spec()
    };
    let xml = signed(&s);
    assert!(xml.contains("EncryptedAssertion"));
    assert_eq!(accepted(&xml).name_id, "alice@example.com");
}

#[test]
fn accepts_signed_response_with_encrypted_unsigned_assertion() {
    let s = ResponseSpec {
        sign: SignMode::Response,
        encrypt_to_pem: Some(sp_keys().cert_pem().expect("pem")),
        ..spec()
    };
    accepted(&signed(&s));
}

#[test]
fn rejects_unsigned_response_with_encrypted_unsigned_assertion() {
    let s = ResponseSpec {
        sign: SignMode::None,
        encrypt_to_pem: Some(sp_keys().cert_pem().expect("pem")),
        ..spec()
    };
    assert_eq!(rejected(&signed(&s)), Error::Unsigned);
}

#[test]
fn tampered_ciphertext_gives_one_generic_error() {
    let s = ResponseSpec {
        encrypt_to_pem: Some(sp_keys().cert_pem().expect("pem")),
        ..spec()
    };
    let xml = signed(&s);
    // Flip a character of the content ciphertext (the last CipherValue).
    let pos = xml.rfind("<xenc:CipherValue>").expect("cv") + "<xenc:CipherValue>".len() + 30;
    let c = &xml[pos..=pos];
    let flipped = if c == "A" { "B" } else { "A" };
    let bad = format!("{}{}{}", &xml[..pos], flipped, &xml[pos + 1..]);
    assert!(matches!(
        rejected(&bad),
        Error::Decryption | Error::Structure(_) | Error::Signature
    ));
    // The wrapped key itself: always the same error.
    let pos = xml.find("<xenc:CipherValue>").expect("cv") + "<xenc:CipherValue>".len() + 10;
    let c = &xml[pos..=pos];
    let flipped = if c == "A" { "B" } else { "A" };
    let bad = format!("{}{}{}", &xml[..pos], flipped, &xml[pos + 1..]);
    assert_eq!(rejected(&bad), Error::Decryption);
}

// ---------------------------------------------------------------- signature

#[test]
fn xsw1_signed_response_inside_evil_response_signature() {
    let s = attacks::xsw_spec(1, spec());
    let evil = attacks::xsw(1, &signed(&s), &s);
    assert!(matches!(rejected(&evil), Error::Structure(_)));
}

#[test]
fn xsw2_signed_response_before_evil_signature() {
    let s = attacks::xsw_spec(2, spec());
    let evil = attacks::xsw(2, &signed(&s), &s);
    assert!(matches!(rejected(&evil), Error::Structure(_)));
}

#[test]
fn xsw3_evil_assertion_before_signed_one() {
    let s = attacks::xsw_spec(3, spec());
    let evil = attacks::xsw(3, &signed(&s), &s);
    assert_eq!(
        rejected(&evil),
        Error::Structure(HardenError::AssertionCount { found: 2 })
    );
}

#[test]
fn xsw4_signed_assertion_inside_evil_assertion() {
    let s = attacks::xsw_spec(4, spec());
    let evil = attacks::xsw(4, &signed(&s), &s);
    assert!(matches!(rejected(&evil), Error::Structure(_)));
}

#[test]
fn xsw5_signature_in_evil_assertion_original_appended() {
    let s = attacks::xsw_spec(5, spec());
    let evil = attacks::xsw(5, &signed(&s), &s);
    assert!(matches!(rejected(&evil), Error::Structure(_)));
}

#[test]
fn xsw6_original_inside_signature_of_evil_assertion() {
    let s = attacks::xsw_spec(6, spec());
    let evil = attacks::xsw(6, &signed(&s), &s);
    assert!(matches!(rejected(&evil), Error::Structure(_)));
}

#[test]
fn xsw7_signed_assertion_in_extensions() {
    let s = attacks::xsw_spec(7, spec());
    let evil = attacks::xsw(7, &signed(&s), &s);
    assert!(matches!(rejected(&evil), Error::Structure(_)));
}

#[test]
fn xsw8_original_in_ds_object() {
    let s = attacks::xsw_spec(8, spec());
    let evil = attacks::xsw(8, &signed(&s), &s);
    assert!(matches!(rejected(&evil), Error::Structure(_)));
}

#[test]
fn xsw9_original_in_unknown_wrapper() {
    let s = attacks::xsw_spec(9, spec());
    let evil = attacks::xsw(9, &signed(&s), &s);
    assert!(matches!(rejected(&evil), Error::Structure(_)));
}

#[test]
fn xsw10_original_in_advice_of_evil_assertion_with_same_id() {
    let s = attacks::xsw_spec(10, spec());
    let evil = attacks::xsw(10, &signed(&s), &s);
    assert!(matches!(rejected(&evil), Error::Structure(_)));
}

#[test]
fn whole_signed_response_wrapped_in_evil_response() {
    let s = ResponseSpec {
        sign: SignMode::Response,
        ..spec()
    };
    let orig = signed(&s);
    let body = samlgate::demo::signer::strip_xml_declaration(&orig).to_string();
    let evil_spec = ResponseSpec {
        name_id: "admin@evil.test".into(),
        sign: SignMode::None,
        ..spec()
    };
    let evil = signed(&evil_spec).replacen(
        "</saml:Issuer>",
        &format!("</saml:Issuer><samlp:Extensions>{body}</samlp:Extensions>"),
        1,
    );
    assert!(matches!(rejected(&evil), Error::Structure(_)));
}

#[test]
fn duplicate_ids() {
    let s = spec();
    let orig = signed(&s);
    let a = assertion(&orig);
    let e = without_signature(&a).replace("alice@example.com", "admin@evil.test");
    let evil = orig.replacen(
        "</saml:Issuer>",
        &format!("</saml:Issuer><samlp:Extensions>{e}</samlp:Extensions>"),
        1,
    );
    assert!(matches!(
        rejected(&evil),
        Error::Structure(HardenError::DuplicateId | HardenError::AssertionMisplaced)
    ));
}

#[test]
fn two_assertions_one_signed() {
    let s = spec();
    let orig = signed(&s);
    let a = assertion(&orig);
    let evil = replace_assertion(
        &orig,
        &format!("{a}{}", evil_copy(&a, "_second", &s.assertion_id)),
    );
    assert_eq!(
        rejected(&evil),
        Error::Structure(HardenError::AssertionCount { found: 2 })
    );
}

#[test]
fn signature_removed() {
    assert_eq!(
        rejected(&without_signature(&signed(&spec()))),
        Error::Unsigned
    );
    assert_eq!(
        rejected(&signed(&ResponseSpec {
            sign: SignMode::None,
            ..spec()
        })),
        Error::Unsigned
    );
}

#[test]
fn name_id_changed_after_signing() {
    let xml = signed(&spec()).replace(
        ">alice@example.com</saml:NameID>",
        ">admin@example.com</saml:NameID>",
    );
    assert_eq!(rejected(&xml), Error::Signature);
    let xml = signed(&ResponseSpec {
        sign: SignMode::Response,
        ..spec()
    })
    .replace(
        ">alice@example.com</saml:NameID>",
        ">admin@example.com</saml:NameID>",
    );
    assert_eq!(rejected(&xml), Error::Signature);
}

#[test]
fn attribute_changed_after_signing() {
    let xml = signed(&spec()).replace(">staff<", ">superusers<");
    assert_eq!(rejected(&xml), Error::Signature);
}

#[test]
fn attacker_key_with_cert_in_key_info() {
    let xml = attacker()
        .response_xml(&ResponseSpec {
            sign: SignMode::Both,
            ..spec()
        })
        .expect("sign");
    assert!(xml.contains("<ds:X509Certificate>"));
    assert_eq!(rejected(&xml), Error::Signature);
}

#[test]
fn rsa_sha1_refused_unless_listed() {
    let xml = signed(&ResponseSpec {
        algorithm: SignAlgorithm::RsaSha1,
        ..spec()
    });
    assert_eq!(rejected(&xml), Error::Structure(HardenError::Algorithm));
    let mut p = policy(Reduce::PreDigest);
    p.allowed_algorithms.push(SignatureAlgorithm::RsaSha1);
    verify_with(p, &xml, Some(DEFAULT_REQUEST_ID)).expect("accepted when rsa-sha1 is listed");
}

/// A loopback listener that must see no connection.
struct Canary(TcpListener);

impl Canary {
    fn new() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        Self(l)
    }
    fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/canary",
            self.0.local_addr().expect("addr").port()
        )
    }
    #[track_caller]
    fn assert_untouched(&self) {
        std::thread::sleep(StdDuration::from_millis(50));
        match self.0.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok((mut s, _)) => {
                let mut buf = [0u8; 256];
                let n = s.read(&mut buf).unwrap_or(0);
                panic!(
                    "canary was contacted: {:?}",
                    String::from_utf8_lossy(&buf[..n])
                );
            }
            Err(e) => panic!("canary error {e}"),
        }
    }
}

#[test]
fn reference_uri_http_and_file() {
    let canary = Canary::new();
    let s = spec();
    let xml = signed(&s);
    let evil = xml.replace(
        &format!(r##"URI="#{}""##, s.assertion_id),
        &format!(r#"URI="{}""#, canary.url()),
    );
    assert!(matches!(
        rejected(&evil),
        Error::Structure(HardenError::SignatureReference(_))
    ));
    let evil = xml.replace(
        &format!(r##"URI="#{}""##, s.assertion_id),
        r#"URI="file:///etc/passwd""#,
    );
    assert!(matches!(
        rejected(&evil),
        Error::Structure(HardenError::SignatureReference(_))
    ));
    // A RetrievalMethod in KeyInfo pointing at the canary.
    let evil = xml.replacen(
        "<ds:X509Data>",
        &format!(r#"<ds:RetrievalMethod URI="{}" Type="http://www.w3.org/2000/09/xmldsig#X509Data"/><ds:X509Data>"#, canary.url()),
        1,
    );
    assert_eq!(rejected(&evil), Error::Structure(HardenError::Indirection));
    canary.assert_untouched();
}

#[test]
fn xslt_and_xpath_transforms() {
    let xml = signed(&spec());
    let xslt = xml.replacen(
        r#"<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>"#,
        r#"<ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xslt-19991116"><xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0"><xsl:template match="/"><xsl:copy-of select="document('file:///etc/passwd')"/></xsl:template></xsl:stylesheet></ds:Transform>"#,
        1,
    );
    assert_eq!(rejected(&xslt), Error::Structure(HardenError::Transform));
    let xpath = xml.replacen(
        r#"<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>"#,
        r#"<ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116"><ds:XPath>not(ancestor-or-self::saml:Attribute)</ds:XPath></ds:Transform>"#,
        1,
    );
    assert_eq!(rejected(&xpath), Error::Structure(HardenError::Transform));
    let with_comments = xml.replacen(
        r#"<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>"#,
        r#"<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#WithComments"/>"#,
        1,
    );
    assert_eq!(
        rejected(&with_comments),
        Error::Structure(HardenError::Transform)
    );
}

// ---------------------------------------------------------------- parser

fn signed_for_truncation() -> String {
    signed(&ResponseSpec {
        name_id: "alice@example.com.evil.test".into(),
        ..spec()
    })
}

#[test]
fn comment_in_name_id() {
    let xml = signed_for_truncation().replace(
        "alice@example.com.evil.test</saml:NameID>",
        "alice@example.com<!---->.evil.test</saml:NameID>",
    );
    assert_eq!(
        rejected(&xml),
        Error::Structure(HardenError::MarkupInText { element: "NameID" })
    );
}

#[test]
fn comment_in_attribute_value() {
    let xml = signed(&spec()).replace(
        ">alice@example.com</saml:AttributeValue>",
        ">alice@example.com<!-- x --></saml:AttributeValue>",
    );
    assert_eq!(
        rejected(&xml),
        Error::Structure(HardenError::MarkupInText {
            element: "AttributeValue"
        })
    );
}

#[test]
fn processing_instruction_in_name_id() {
    let xml = signed_for_truncation().replace(
        "alice@example.com.evil.test</saml:NameID>",
        "alice@example.com<?x y?>.evil.test</saml:NameID>",
    );
    let e = rejected(&xml);
    assert!(
        matches!(
            e,
            Error::Structure(HardenError::ProcessingInstruction | HardenError::MarkupInText { .. })
        ),
        "{e:?}"
    );
    // A PI anywhere else is refused too.
    let xml = signed(&spec()).replacen("<samlp:Status>", "<?evil x?><samlp:Status>", 1);
    assert_eq!(
        rejected(&xml),
        Error::Structure(HardenError::ProcessingInstruction)
    );
}

#[test]
fn cdata_in_name_id() {
    let xml = signed_for_truncation().replace(
        "alice@example.com.evil.test</saml:NameID>",
        "alice@example.com<![CDATA[]]>.evil.test</saml:NameID>",
    );
    assert_eq!(
        rejected(&xml),
        Error::Structure(HardenError::MarkupInText { element: "NameID" })
    );
}

#[test]
fn xxe_file_and_http() {
    let canary = Canary::new();
    let xml = signed(&spec()).replace(">alice@example.com</saml:NameID>", ">&xxe;</saml:NameID>");
    let file = with_doctype(
        &xml,
        r#"<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>"#,
    );
    assert_eq!(rejected(&file), Error::Structure(HardenError::Dtd));
    let http = with_doctype(
        &xml,
        &format!(r#"<!DOCTYPE r [<!ENTITY xxe SYSTEM "{}">]>"#, canary.url()),
    );
    assert_eq!(rejected(&http), Error::Structure(HardenError::Dtd));
    let param = with_doctype(
        &xml,
        &format!(
            r#"<!DOCTYPE r [<!ENTITY % p SYSTEM "{}"> %p;]>"#,
            canary.url()
        ),
    );
    assert_eq!(rejected(&param), Error::Structure(HardenError::Dtd));
    canary.assert_untouched();
}

#[test]
fn billion_laughs() {
    let dtd = billion_laughs_dtd();
    let xml = signed(&spec()).replace(">alice@example.com</saml:NameID>", ">&l9;</saml:NameID>");
    assert_eq!(
        rejected(&with_doctype(&xml, &dtd)),
        Error::Structure(HardenError::Dtd)
    );
}

#[test]
fn any_doctype() {
    let xml = with_doctype(&signed(&spec()), "<!DOCTYPE samlp:Response>");
    assert_eq!(rejected(&xml), Error::Structure(HardenError::Dtd));
}

#[test]
fn junk_after_root() {
    let xml = format!("{}<junk/>", signed(&spec()));
    assert!(matches!(
        rejected(&xml),
        Error::Structure(HardenError::Malformed(_))
    ));
    let xml = format!("{}trailing text", signed(&spec()));
    assert!(matches!(
        rejected(&xml),
        Error::Structure(HardenError::Malformed(_))
    ));
}

#[test]
fn multiple_roots() {
    let a = signed(&spec());
    let b = samlgate::demo::signer::strip_xml_declaration(&signed(&spec())).to_string();
    assert!(matches!(
        rejected(&format!("{a}{b}")),
        Error::Structure(HardenError::Malformed(_))
    ));
}

#[test]
fn five_megabyte_response() {
    let xml = signed(&spec()).replace(
        "</samlp:Response>",
        &format!("<!--{}--></samlp:Response>", "x".repeat(5 * 1024 * 1024)),
    );
    assert!(matches!(rejected(&xml), Error::TooLarge { .. }));
    // Even when the form cap is raised, the decoded cap holds.
    let mut p = policy(Reduce::PreDigest);
    p.max_response_bytes = 64 * 1024 * 1024;
    let e = verify_with(p, &xml, Some(DEFAULT_REQUEST_ID)).expect_err("too large");
    assert!(matches!(e, Error::Structure(HardenError::TooLarge { .. })));
}

#[test]
fn deep_nesting() {
    let depth = 20_000;
    let nest = format!("{}{}", "<x>".repeat(depth), "</x>".repeat(depth));
    let xml = signed(&spec()).replace(
        "</samlp:Response>",
        &format!("<samlp:Extensions>{nest}</samlp:Extensions></samlp:Response>"),
    );
    let e = rejected(&xml);
    assert!(
        matches!(
            e,
            Error::Structure(
                HardenError::TooDeep { .. }
                    | HardenError::TooManyElements { .. }
                    | HardenError::Malformed(_)
            )
        ),
        "{e:?}"
    );
}

#[test]
fn many_attribute_values_are_capped() {
    let s = ResponseSpec {
        attributes: vec![(
            "groups".into(),
            (0..6000).map(|i| format!("g{i}")).collect(),
        )],
        ..spec()
    };
    let mut p = policy(Reduce::PreDigest);
    p.max_response_bytes = 2 * 1024 * 1024;
    p.limits.max_decoded_bytes = 2 * 1024 * 1024;
    let e = verify_with(p, &signed(&s), Some(DEFAULT_REQUEST_ID)).expect_err("capped");
    assert!(matches!(
        e,
        Error::Structure(HardenError::TooManyAttributeValues { .. })
    ));
}

#[test]
fn non_utf8_encoding_declaration() {
    let body = signed(&spec());
    let xml = format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1"?>{}"#,
        samlgate::demo::signer::strip_xml_declaration(&body)
    );
    assert_eq!(rejected(&xml), Error::Structure(HardenError::Encoding));
}

#[test]
fn base64_with_line_breaks_is_accepted() {
    let xml = signed(&spec());
    let b64 = STANDARD.encode(xml.as_bytes());
    let wrapped: Vec<String> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let saml = saml_with(policy(Reduce::PreDigest));
    saml.verify(&wrapped.join("\r\n"), Some(DEFAULT_REQUEST_ID), now())
        .expect("wrapped base64");
}

// ---------------------------------------------------------------- protocol

#[test]
fn replay_is_the_apps_job_but_ids_are_reported() {
    let s = spec();
    let v = accepted(&signed(&s));
    assert_eq!(v.response_id, s.response_id);
    assert_eq!(v.assertion_id, s.assertion_id);
    // Deadline: the earliest of the NotOnOrAfters (5 min) plus the skew.
    assert_eq!(
        v.replay_expires_at,
        now() + Duration::minutes(5) + Duration::seconds(90)
    );
}

#[test]
fn in_response_to_of_another_request() {
    let xml = signed(&spec());
    let e = verify_with(policy(Reduce::PreDigest), &xml, Some("_another")).expect_err("mismatch");
    assert_eq!(e, Error::InResponseTo);
    let e = verify_with(policy(Reduce::PreDigest), &xml, None).expect_err("no pending");
    assert_eq!(e, Error::InResponseTo);
    // Only the SubjectConfirmationData names another request.
    let xml = signed(&spec()).replacen(
        &format!(r#"InResponseTo="{DEFAULT_REQUEST_ID}" NotOnOrAfter"#),
        r#"InResponseTo="_other" NotOnOrAfter"#,
        1,
    );
    assert!(rejected(&xml) == Error::InResponseTo || rejected(&xml) == Error::Signature);
}

#[test]
fn unsolicited_when_off_and_on() {
    let xml = signed(&ResponseSpec {
        in_response_to: None,
        ..spec()
    });
    assert_eq!(rejected(&xml), Error::Unsolicited);
    let mut p = policy(Reduce::PreDigest);
    p.allow_idp_initiated = true;
    let v = verify_with(p.clone(), &xml, None).expect("idp-initiated allowed");
    assert_eq!(v.in_response_to, None);
    // Even with IdP-initiated on, a present InResponseTo must match.
    let xml = signed(&spec());
    assert_eq!(
        verify_with(p, &xml, None).expect_err("irt without pending"),
        Error::InResponseTo
    );
}

#[test]
fn unsolicited_assertion_wrapped_in_an_unsigned_solicited_response_is_unsolicited() {
    // A signed IdP-initiated assertion (no InResponseTo in its SubjectConfirmationData) in an
    // unsigned Response whose InResponseTo names the attacker's own pending request.
    let xml = signed(&ResponseSpec {
        in_response_to: None,
        ..spec()
    });
    let wrapped = xml.replacen(
        "<samlp:Response ",
        &format!("<samlp:Response InResponseTo=\"{DEFAULT_REQUEST_ID}\" "),
        1,
    );
    assert_ne!(wrapped, xml, "the Response root was not found");
    assert_eq!(rejected(&wrapped), Error::Unsolicited);
    // With IdP-initiated logins allowed it is one, not an answer to the pending request.
    let mut p = policy(Reduce::PreDigest);
    p.allow_idp_initiated = true;
    let v = verify_with(p, &wrapped, Some(DEFAULT_REQUEST_ID)).expect("idp-initiated allowed");
    assert_eq!(v.in_response_to, None);
    // A signed Response that answers the request still does.
    let v = accepted(&signed(&ResponseSpec {
        sign: SignMode::Response,
        ..spec()
    }));
    assert_eq!(v.in_response_to.as_deref(), Some(DEFAULT_REQUEST_ID));
}

#[test]
fn wrong_or_missing_audience() {
    assert_eq!(
        rejected(&signed(&ResponseSpec {
            audiences: vec!["https://other.example.com".into()],
            ..spec()
        })),
        Error::Audience
    );
    assert_eq!(
        rejected(&signed(&ResponseSpec {
            audiences: vec![],
            ..spec()
        })),
        Error::Audience
    );
    assert_eq!(
        rejected(&signed(&ResponseSpec {
            conditions: false,
            ..spec()
        })),
        Error::MissingConditions
    );
}

#[test]
fn wrong_or_missing_recipient() {
    assert_eq!(
        rejected(&signed(&ResponseSpec {
            recipient: Some("https://evil.test/acs".into()),
            ..spec()
        })),
        Error::Recipient
    );
    assert_eq!(
        rejected(&signed(&ResponseSpec {
            recipient: None,
            ..spec()
        })),
        Error::Recipient
    );
}

#[test]
fn wrong_or_missing_destination() {
    assert_eq!(
        rejected(&signed(&ResponseSpec {
            destination: Some("https://evil.test/acs".into()),
            ..spec()
        })),
        Error::Destination
    );
    let s = ResponseSpec {
        destination: None,
        sign: SignMode::Response,
        ..spec()
    };
    assert_eq!(rejected(&signed(&s)), Error::Destination);
    // An unsigned Response may omit it (SAML bindings §3.5.5.2 only requires it when signed).
    accepted(&signed(&ResponseSpec {
        destination: None,
        ..spec()
    }));
}

#[test]
fn wrong_issuer() {
    assert_eq!(
        rejected(&signed(&ResponseSpec {
            issuer: Some("https://evil.test".into()),
            ..spec()
        })),
        Error::Issuer
    );
}

#[test]
fn non_success_status() {
    let s = ResponseSpec {
        status: "urn:oasis:names:tc:SAML:2.0:status:Responder".into(),
        sign: SignMode::Both,
        ..spec()
    };
    assert!(matches!(rejected(&signed(&s)), Error::Status { .. }));
}

fn skew() -> Duration {
    Duration::seconds(90)
}

#[test]
fn conditions_not_on_or_after_at_the_skew_edge() {
    let edge = now() - skew();
    accepted(&signed(&ResponseSpec {
        not_on_or_after: Some(edge + Duration::seconds(1)),
        ..spec()
    }));
    assert_eq!(
        rejected(&signed(&ResponseSpec {
            not_on_or_after: Some(edge),
            ..spec()
        })),
        Error::Expired
    );
    assert_eq!(
        rejected(&signed(&ResponseSpec {
            not_on_or_after: Some(edge - Duration::seconds(1)),
            ..spec()
        })),
        Error::Expired
    );
}

#[test]
fn conditions_not_before_at_the_skew_edge() {
    let edge = now() + skew();
    accepted(&signed(&ResponseSpec {
        not_before: Some(edge),
        ..spec()
    }));
    assert_eq!(
        rejected(&signed(&ResponseSpec {
            not_before: Some(edge + Duration::seconds(1)),
            ..spec()
        })),
        Error::NotYetValid
    );
}

#[test]
fn subject_confirmation_not_on_or_after_at_the_skew_edge() {
    let edge = now() - skew();
    accepted(&signed(&ResponseSpec {
        subject_not_on_or_after: Some(edge + Duration::seconds(1)),
        ..spec()
    }));
    assert_eq!(
        rejected(&signed(&ResponseSpec {
            subject_not_on_or_after: Some(edge),
            ..spec()
        })),
        Error::SubjectExpired
    );
    assert_eq!(
        rejected(&signed(&ResponseSpec {
            subject_not_on_or_after: None,
            ..spec()
        })),
        Error::SubjectExpired
    );
}

#[test]
fn issue_instant_too_old_or_in_the_future() {
    let oldest = now() - Duration::minutes(5) - skew();
    accepted(&signed(&ResponseSpec {
        issue_instant: oldest,
        ..spec()
    }));
    assert_eq!(
        rejected(&signed(&ResponseSpec {
            issue_instant: oldest - Duration::seconds(1),
            ..spec()
        })),
        Error::IssuedTooLongAgo
    );
    let latest = now() + skew();
    accepted(&signed(&ResponseSpec {
        issue_instant: latest,
        ..spec()
    }));
    assert_eq!(
        rejected(&signed(&ResponseSpec {
            issue_instant: latest + Duration::seconds(1),
            ..spec()
        })),
        Error::IssuedInFuture
    );
}

#[test]
fn missing_authn_statement() {
    assert_eq!(
        rejected(&signed(&ResponseSpec {
            authn_statement: false,
            ..spec()
        })),
        Error::MissingAuthnStatement
    );
}

#[test]
fn session_not_on_or_after() {
    let v = accepted(&signed(&ResponseSpec {
        session_not_on_or_after: Some(now() + Duration::hours(8)),
        ..spec()
    }));
    assert_eq!(v.session_not_on_or_after, Some(now() + Duration::hours(8)));
    let s = ResponseSpec {
        session_not_on_or_after: Some(now() - Duration::hours(1)),
        ..spec()
    };
    assert_eq!(rejected(&signed(&s)), Error::SessionEnded);
}

#[test]
fn duplicate_attribute_names() {
    let mut s = spec();
    s.attributes.push(("groups".into(), vec!["admins".into()]));
    assert_eq!(rejected(&signed(&s)), Error::DuplicateAttribute);
}

#[test]
fn identity_mapping() {
    let s = ResponseSpec {
        name_id: "bob@example.org".into(),
        name_id_format: Some("urn:oasis:names:tc:SAML:2.0:nameid-format:persistent".into()),
        attributes: vec![(
            "groups".into(),
            vec!["a".into(), "b".into(), "a".into(), "".into()],
        )],
        ..spec()
    };
    let v = accepted(&signed(&s));
    assert_eq!(v.identity.email.as_deref(), Some("bob@example.org"));
    assert_eq!(*v.identity.groups, *samlgate::identity::groups(["a", "b"]));
    let s = ResponseSpec {
        name_id: "opaque-123".into(),
        name_id_format: None,
        attributes: vec![],
        ..spec()
    };
    assert_eq!(accepted(&signed(&s)).identity.email, None);
}

// ---------------------------------------------------------------- setup, login, metadata

#[test]
fn metadata_without_signing_key_is_refused() {
    let md = idp()
        .metadata_xml("https://idp.example.com/sso", None)
        .expect("md")
        .replace(r#"use="signing""#, r#"use="encryption""#);
    assert!(matches!(
        IdpMetadata::parse(&md),
        Err(MetadataError::NoSigningCertificate)
    ));
    let mut parsed = IdpMetadata::parse(
        &idp()
            .metadata_xml("https://idp.example.com/sso", None)
            .expect("md"),
    )
    .expect("md");
    parsed.signing_certs.clear();
    assert!(matches!(
        Saml::new(policy(Reduce::PreDigest), parsed, None, None),
        Err(SetupError::Metadata(_))
    ));
}

#[test]
fn key_rollover_accepts_every_signing_certificate() {
    let md = idp()
        .metadata_xml("https://idp.example.com/sso", None)
        .expect("md");
    let second = attacker()
        .metadata_xml("https://idp.example.com/sso", None)
        .expect("md");
    let kd = |m: &str| m[element(m, "<md:KeyDescriptor", "</md:KeyDescriptor>")].to_string();
    let both = md.replacen(
        "<md:KeyDescriptor",
        &format!("{}<md:KeyDescriptor", kd(&second)),
        1,
    );
    let parsed = IdpMetadata::parse(&both).expect("md");
    assert_eq!(parsed.signing_certs.len(), 2);
    let saml = Saml::new(policy(Reduce::PreDigest), parsed, None, None).expect("saml");
    for signer in [idp(), attacker()] {
        let xml = signer.response_xml(&spec()).expect("sign");
        saml.verify(&to_form_value(&xml), Some(DEFAULT_REQUEST_ID), now())
            .expect("rolled-over key");
    }
}

#[test]
fn login_request_redirect() {
    use flate2::read::DeflateDecoder;
    let saml = saml_with(policy(Reduce::PreDigest));
    let req = saml.login_request("relay-123").expect("login");
    assert_eq!(req.request_id.len(), 33);
    assert!(
        req.request_id.starts_with('_')
            && req.request_id[1..].chars().all(|c| c.is_ascii_hexdigit())
    );
    let url = url::Url::parse(&req.redirect_url).expect("url");
    assert!(
        req.redirect_url
            .starts_with("https://idp.example.com/sso?SAMLRequest=")
    );
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q.get("RelayState").map(String::as_str), Some("relay-123"));
    let deflated = STANDARD.decode(&q["SAMLRequest"]).expect("b64");
    let mut xml = String::new();
    DeflateDecoder::new(&deflated[..])
        .read_to_string(&mut xml)
        .expect("inflate");
    assert!(xml.contains(&format!(r#"ID="{}""#, req.request_id)));
    assert!(xml.contains(DEFAULT_ACS_URL));
    // Signed per bindings §3.4.4.1 with the SP key.
    assert_eq!(
        q.get("SigAlg").map(String::as_str),
        Some("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256")
    );
    let query = url.query().expect("query");
    let signed_part = &query[..query.find("&Signature=").expect("sig")];
    let sig = STANDARD.decode(&q["Signature"]).expect("sig b64");
    let cert =
        openssl::x509::X509::from_pem(sp_keys().cert_pem().expect("pem").as_bytes()).expect("cert");
    let key = cert.public_key().expect("pk");
    let mut v = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &key)
        .expect("verifier");
    v.update(signed_part.as_bytes()).expect("update");
    assert!(v.verify(&sig).expect("verify"));
    // Two requests never share an ID.
    assert_ne!(
        saml.login_request("").expect("login").request_id,
        req.request_id
    );
}

#[test]
fn sp_metadata() {
    let saml = saml_with(policy(Reduce::PreDigest));
    let md = saml.metadata_xml();
    let doc = roxmltree::Document::parse(&md).expect("well-formed");
    assert_eq!(
        doc.root_element().attribute("entityID"),
        Some(DEFAULT_SP_ENTITY_ID)
    );
    assert!(md.contains(r#"use="signing""#) && md.contains(r#"use="encryption""#));
    assert!(md.contains(DEFAULT_ACS_URL));
    assert!(!md.contains("aes192") && !md.contains("aes256-cbc\"/>\n      <md:EncryptionMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#rsa-1_5"));
}

#[test]
fn saml_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Saml>();
    assert_send_sync::<Verified>();
    assert_send_sync::<Error>();
}
