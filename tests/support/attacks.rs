//! Attack builders of SECURITY.md's catalogue shared by `saml_attacks` (which sends them to
//! `Saml::verify`) and `login` (which posts them to the live ACS): the XML Signature Wrapping
//! vectors XSW1–XSW10, built from a genuine signed response, and the DTD attacks.
#![allow(dead_code)]

use samlgate::demo::signer::{ResponseSpec, SignMode};

/// Byte range of the first element starting with `open` through its matching `close`.
pub fn element(xml: &str, open: &str, close: &str) -> std::ops::Range<usize> {
    let start = xml.find(open).expect("open tag");
    let end = xml[start..].find(close).expect("close tag") + start + close.len();
    start..end
}

pub fn assertion(xml: &str) -> String {
    xml[element(xml, "<saml:Assertion", "</saml:Assertion>")].to_string()
}

pub fn signature(xml: &str) -> String {
    xml[element(xml, "<ds:Signature", "</ds:Signature>")].to_string()
}

pub fn without_signature(xml: &str) -> String {
    let r = element(xml, "<ds:Signature", "</ds:Signature>");
    format!("{}{}", &xml[..r.start], &xml[r.end..])
}

/// An unsigned copy of an assertion with another ID and NameID.
pub fn evil_copy(assertion_xml: &str, id: &str, orig_id: &str) -> String {
    without_signature(assertion_xml)
        .replace(&format!(r#"ID="{orig_id}""#), &format!(r#"ID="{id}""#))
        .replace("alice@example.com", "admin@evil.test")
}

pub fn replace_assertion(xml: &str, with: &str) -> String {
    let r = element(xml, "<saml:Assertion", "</saml:Assertion>");
    format!("{}{}{}", &xml[..r.start], with, &xml[r.end..])
}

/// The vectors, XSW1 to XSW10.
pub const XSW_ALL: std::ops::RangeInclusive<u8> = 1..=10;

/// `base` signed the way vector `n` needs: XSW1 and XSW2 wrap a signed Response, the others a
/// signed Assertion (the IdP default).
pub fn xsw_spec(n: u8, base: ResponseSpec) -> ResponseSpec {
    ResponseSpec {
        sign: if n <= 2 {
            SignMode::Response
        } else {
            SignMode::Assertion
        },
        ..base
    }
}

/// Vector `n` made from `orig`, the genuine response signed for `s` (see [`xsw_spec`]). Each
/// one claims the subject `admin@evil.test` while keeping the genuine signature somewhere.
pub fn xsw(n: u8, orig: &str, s: &ResponseSpec) -> String {
    let a = assertion(orig);
    match n {
        // The signed Response moved inside the evil Response's signature.
        1 | 2 => {
            let orig_body = samlgate::demo::signer::strip_xml_declaration(orig).to_string();
            let sig = signature(orig);
            let inserted = if n == 1 {
                sig.replace("</ds:Signature>", &format!("{orig_body}</ds:Signature>"))
            } else {
                // The signed Response before the evil one's signature.
                format!("{orig_body}{sig}")
            };
            without_signature(orig)
                .replace(
                    &format!(r#"ID="{}""#, s.response_id),
                    r#"ID="_evil_response""#,
                )
                .replace("alice@example.com", "admin@evil.test")
                .replacen("</saml:Issuer>", &format!("</saml:Issuer>{inserted}"), 1)
        }
        // An evil assertion before the signed one.
        3 => replace_assertion(
            orig,
            &format!("{}{}", evil_copy(&a, "_evil", &s.assertion_id), a),
        ),
        // The signed assertion inside the evil one.
        4 => replace_assertion(
            orig,
            &evil_copy(&a, "_evil", &s.assertion_id)
                .replace("</saml:Subject>", &format!("</saml:Subject>{a}")),
        ),
        // The signature in the evil assertion, the original (unsigned) appended.
        5 => {
            let e = evil_copy(&a, "_evil", &s.assertion_id).replacen(
                "</saml:Issuer>",
                &format!("</saml:Issuer>{}", signature(&a)),
                1,
            );
            replace_assertion(orig, &e).replace(
                "</samlp:Response>",
                &format!("{}</samlp:Response>", without_signature(&a)),
            )
        }
        // The original inside the signature of the evil assertion.
        6 => {
            let sig = signature(&a).replace("</ds:Signature>", &format!("{a}</ds:Signature>"));
            replace_assertion(
                orig,
                &evil_copy(&a, "_evil", &s.assertion_id).replacen(
                    "</saml:Issuer>",
                    &format!("</saml:Issuer>{sig}"),
                    1,
                ),
            )
        }
        // The signed assertion in Extensions, an evil one in its place.
        7 => replace_assertion(orig, &evil_copy(&a, "_evil", &s.assertion_id)).replacen(
            "</saml:Issuer>",
            &format!("</saml:Issuer><samlp:Extensions>{a}</samlp:Extensions>"),
            1,
        ),
        // The original in a ds:Object of the evil assertion's signature.
        8 => {
            let sig = signature(&a).replace(
                "</ds:Signature>",
                &format!(
                    "<ds:Object>{}</ds:Object></ds:Signature>",
                    without_signature(&a)
                ),
            );
            let e = without_signature(&a)
                .replace("alice@example.com", "admin@evil.test")
                .replacen("</saml:Issuer>", &format!("</saml:Issuer>{sig}"), 1);
            replace_assertion(orig, &e)
        }
        // The original in an unknown wrapper element, the evil one beside it.
        9 => replace_assertion(
            orig,
            &format!(
                r#"<xsw:wrapper xmlns:xsw="urn:evil">{a}</xsw:wrapper>{}"#,
                evil_copy(&a, "_evil", &s.assertion_id)
            ),
        ),
        // The original in the Advice of an evil assertion with the same ID.
        10 => replace_assertion(
            orig,
            &without_signature(&a)
                .replace("alice@example.com", "admin@evil.test")
                .replace(
                    "</saml:Conditions>",
                    &format!("</saml:Conditions><saml:Advice>{a}</saml:Advice>"),
                ),
        ),
        _ => panic!("no vector XSW{n}"),
    }
}

/// `xml` with its XML declaration and `doctype` in front.
pub fn with_doctype(xml: &str, doctype: &str) -> String {
    let body = samlgate::demo::signer::strip_xml_declaration(xml);
    format!("<?xml version=\"1.0\"?>\n{doctype}\n{body}")
}

/// A DOCTYPE whose entity `&l9;` expands to 10^9 "lol"s.
pub fn billion_laughs_dtd() -> String {
    let mut dtd = String::from(r#"<!DOCTYPE r [<!ENTITY l0 "lol">"#);
    for i in 1..10 {
        dtd.push_str(&format!(
            r#"<!ENTITY l{i} "{}">"#,
            format!("&l{};", i - 1).repeat(10)
        ));
    }
    dtd.push_str("]>");
    dtd
}
