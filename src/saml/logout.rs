//! Logout: SAML single logout in both directions (SAML core §3.7, profiles §4.4).
//!
//! * SP-initiated: [`Saml::logout_request`] builds our LogoutRequest (NameID + SessionIndex)
//!   for the IdP's HTTP-Redirect SingleLogoutService, signed per bindings §3.4.4.1 when an SP
//!   key is configured; the IdP's LogoutResponse comes back and is checked by
//!   [`Saml::verify_logout_response`] against the pending request ID.
//! * IdP-initiated: [`Saml::verify_logout_request`] checks a LogoutRequest, and
//!   [`Saml::logout_response`] answers it with a LogoutResponse on the HTTP-Redirect binding.
//!
//! Every incoming message must be signed by a key of the IdP metadata: on the HTTP-Redirect
//! binding with the query signature (`SigAlg` + `Signature`, bindings §3.4.4.1), on the
//! HTTP-POST binding with an enveloped XML signature (checked by xmlsec behind the same strict
//! parse as Responses). **Unsigned logout messages are refused**: anyone could otherwise end a
//! user's sessions by sending the browser a forged request. The inflated (Redirect) and decoded
//! (POST) XML is capped at [`MAX_LOGOUT_XML`] bytes; inflation stops at the cap, so a deflate
//! bomb costs at most that much.

use std::io::Read as _;

use chrono::{DateTime, SecondsFormat, Utc};
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::sign::Verifier;
use openssl::x509::X509;
use roxmltree::{Document, Node};
use samael::crypto::{Crypto, CryptoProvider, ReduceMode};

use super::harden::{self, HardenError, Limits, NS_SAML, NS_SAMLP, child, is, text_of};
use super::request::{RequestError, redirect_url};
use super::{STATUS_SUCCESS, Saml, xml_escape};
use crate::config::SignatureAlgorithm;

/// Top-level status: the SP could not do what was asked (SAML core §3.2.2.2).
pub const STATUS_RESPONDER: &str = "urn:oasis:names:tc:SAML:2.0:status:Responder";
/// Second-level status: not every session could be ended (SAML core §3.2.2.2).
pub const STATUS_PARTIAL_LOGOUT: &str = "urn:oasis:names:tc:SAML:2.0:status:PartialLogout";
/// Largest inflated (Redirect) or decoded (POST) logout message, in bytes.
pub const MAX_LOGOUT_XML: usize = 256 * 1024;
/// Largest `SAMLRequest`/`SAMLResponse` parameter value (base64 text), in bytes.
pub const MAX_LOGOUT_PARAM: usize = 512 * 1024;
/// Longest RelayState accepted from the IdP (bindings §3.4.3 says 80; some IdPs send more).
const MAX_RELAY_STATE: usize = 1024;

/// Why a logout message was refused or could not be built. No variant carries XML.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogoutError {
    /// Neither `SAMLRequest` nor `SAMLResponse`, or both.
    #[error("no single SAMLRequest or SAMLResponse parameter")]
    NoMessage,
    /// A parameter appears twice.
    #[error("a SAML parameter appears twice")]
    DuplicateParameter,
    /// Larger than the caps (encoded, inflated or decoded), or a RelayState too long.
    #[error("logout message larger than allowed")]
    TooLarge,
    /// Not base64.
    #[error("logout message is not valid base64")]
    Base64,
    /// Not a DEFLATE stream (Redirect binding).
    #[error("logout message is not DEFLATE-compressed")]
    Inflate,
    /// The strict parse or structure checks failed.
    #[error("structure: {0}")]
    Structure(#[from] HardenError),
    /// A LogoutResponse where a LogoutRequest was expected, or the reverse, or a parameter
    /// name that does not match the root element.
    #[error("unexpected kind of logout message")]
    WrongKind,
    /// The message carries no signature (query or XML).
    #[error("the logout message is not signed")]
    Unsigned,
    /// `SigAlg` outside `allowed_algorithms`.
    #[error("signature algorithm not allowed")]
    Algorithm,
    /// No IdP signing key verifies the signature.
    #[error("signature verification failed")]
    Signature,
    /// What xmlsec verified is not the message's root.
    #[error("the verified content is not the logout message")]
    VerifiedMismatch,
    /// `Version` is not 2.0.
    #[error("not a SAML 2.0 message")]
    Version,
    /// A required `ID` is missing.
    #[error("missing ID")]
    MissingId,
    /// Issuer missing or not the IdP.
    #[error("issuer is not the configured IdP")]
    Issuer,
    /// Destination missing or not our SLO URL.
    #[error("Destination is not our SLO URL")]
    Destination,
    /// InResponseTo missing or not a pending logout of ours.
    #[error("InResponseTo does not match a pending logout")]
    InResponseTo,
    /// The IdP did not report success.
    #[error("IdP logout status is not Success: {code}")]
    Status {
        /// The top-level StatusCode URI (a SAML constant, truncated).
        code: String,
    },
    /// IssueInstant later than now + skew.
    #[error("IssueInstant is in the future")]
    IssuedInFuture,
    /// IssueInstant older than max_issue_age + skew.
    #[error("IssueInstant is too old")]
    IssuedTooLongAgo,
    /// NotOnOrAfter has passed (beyond the skew).
    #[error("logout request expired")]
    Expired,
    /// A malformed xs:dateTime.
    #[error("malformed timestamp in {field}")]
    MalformedTime {
        /// Element/attribute.
        field: &'static str,
    },
    /// No NameID, or no EncryptedID hiding one (a BaseID is not supported), or both.
    #[error("logout request has no NameID")]
    MissingNameId,
    /// An EncryptedID that `saml.sp_key_file` cannot decrypt (no key, or another key).
    #[error("logout request's EncryptedID cannot be decrypted with saml.sp_key_file")]
    EncryptedId,
    /// The outgoing message could not be encoded or signed.
    #[error("could not encode the logout message: {0}")]
    Encode(#[from] RequestError),
}

/// The binding a logout message arrived with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SloBinding {
    /// HTTP-Redirect (bindings §3.4): GET, deflated, query signature.
    Redirect,
    /// HTTP-POST (bindings §3.5): form, base64, enveloped XML signature.
    Post,
}

/// The query signature of an HTTP-Redirect message (bindings §3.4.4.1).
#[derive(Clone, Debug, PartialEq, Eq)]
struct QuerySignature {
    sig_alg: String,
    signature: Vec<u8>,
    /// `SAMLRequest=..[&RelayState=..]&SigAlg=..` exactly as received (still URL-encoded).
    signed_octets: String,
}

/// A logout message as received and decoded, not yet trusted: read it with
/// [`Saml::read_logout_redirect`] / [`Saml::read_logout_post`], then verify it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SloMessage {
    binding: SloBinding,
    is_request: bool,
    xml: String,
    relay_state: Option<String>,
    query_signature: Option<QuerySignature>,
}

impl SloMessage {
    /// A LogoutRequest (else a LogoutResponse).
    pub fn is_request(&self) -> bool {
        self.is_request
    }

    /// RelayState as sent (untrusted until verified; a LogoutResponse's names our pending
    /// logout, a LogoutRequest's must be echoed back).
    pub fn relay_state(&self) -> Option<&str> {
        self.relay_state.as_deref()
    }
}

/// A verified IdP-initiated LogoutRequest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdpLogoutRequest {
    /// Its `ID`: the InResponseTo of our answer.
    pub id: String,
    /// The NameID whose sessions end.
    pub name_id: String,
    /// NameID `Format`.
    pub name_id_format: Option<String>,
    /// SessionIndex values; empty means every session of the NameID (core §3.7.1).
    pub session_indexes: Vec<String>,
    /// RelayState to echo in the LogoutResponse (bindings §3.4.3).
    pub relay_state: Option<String>,
}

/// A verified LogoutResponse answering our LogoutRequest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdpLogoutResponse {
    /// Its `ID`.
    pub id: String,
    /// Our LogoutRequest it answers.
    pub in_response_to: String,
}

fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn logout_limits(base: &Limits) -> Limits {
    Limits {
        max_decoded_bytes: MAX_LOGOUT_XML,
        ..base.clone()
    }
}

/// Splits a raw query into (name, raw value) pairs, keeping the values URL-encoded.
fn raw_pairs(query: &str) -> impl Iterator<Item = (String, &str)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let name: String = url::form_urlencoded::parse(k.as_bytes())
            .next()
            .map(|(n, _)| n.into_owned())
            .unwrap_or_default();
        (name, v)
    })
}

fn url_decode(raw: &str) -> String {
    // form_urlencoded::parse of "x=<raw>" decodes %XX and '+' exactly as browsers encode.
    url::form_urlencoded::parse(format!("x={raw}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn base64_decode(value: &str, max: usize) -> Result<Vec<u8>, LogoutError> {
    if value.len() > MAX_LOGOUT_PARAM {
        return Err(LogoutError::TooLarge);
    }
    harden::decode_form_value(value, max).map_err(|e| match e {
        HardenError::TooLarge { .. } => LogoutError::TooLarge,
        _ => LogoutError::Base64,
    })
}

/// Raw DEFLATE (RFC 1951, bindings §3.4.4.1), stopping at the cap.
fn inflate(deflated: &[u8]) -> Result<Vec<u8>, LogoutError> {
    let mut out = Vec::new();
    let cap = u64::try_from(MAX_LOGOUT_XML).unwrap_or(u64::MAX) + 1;
    flate2::read::DeflateDecoder::new(deflated)
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|_| LogoutError::Inflate)?;
    if out.len() > MAX_LOGOUT_XML {
        return Err(LogoutError::TooLarge);
    }
    Ok(out)
}

fn time(v: Option<&str>, field: &'static str) -> Result<DateTime<Utc>, LogoutError> {
    v.and_then(harden::parse_time)
        .ok_or(LogoutError::MalformedTime { field })
}

fn algorithm_of(uri: &str, allowed: &[SignatureAlgorithm]) -> Option<SignatureAlgorithm> {
    allowed
        .iter()
        .copied()
        .find(|a| harden::signature_uri(*a) == uri)
}

fn digest_of(a: SignatureAlgorithm) -> MessageDigest {
    match a {
        SignatureAlgorithm::RsaSha1 => MessageDigest::sha1(),
        SignatureAlgorithm::RsaSha256 | SignatureAlgorithm::EcdsaSha256 => MessageDigest::sha256(),
        SignatureAlgorithm::RsaSha384 | SignatureAlgorithm::EcdsaSha384 => MessageDigest::sha384(),
        SignatureAlgorithm::RsaSha512 | SignatureAlgorithm::EcdsaSha512 => MessageDigest::sha512(),
    }
}

/// XML-DSig carries ECDSA signatures as r‖s (RFC 4050); OpenSSL wants DER.
fn ecdsa_der(sig: &[u8]) -> Option<Vec<u8>> {
    if sig.is_empty() || !sig.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = sig.split_at(sig.len() / 2);
    let sig =
        EcdsaSig::from_private_components(BigNum::from_slice(r).ok()?, BigNum::from_slice(s).ok()?)
            .ok()?;
    sig.to_der().ok()
}

fn verify_with_cert(cert_der: &[u8], digest: MessageDigest, octets: &[u8], sig: &[u8]) -> bool {
    let Ok(cert) = X509::from_der(cert_der) else {
        return false;
    };
    let Ok(key) = cert.public_key() else {
        return false;
    };
    let check = |sig: &[u8]| {
        Verifier::new(digest, &key)
            .and_then(|mut v| {
                v.update(octets)?;
                v.verify(sig)
            })
            .unwrap_or(false)
    };
    if check(sig) {
        return true;
    }
    key.ec_key().is_ok() && ecdsa_der(sig).is_some_and(|der| check(&der))
}

impl Saml {
    /// Our LogoutRequest (SAML core §3.7.1) for the session of `identity` (its NameID and
    /// SessionIndex), as an HTTP-Redirect URL to the IdP's SingleLogoutService, signed when an
    /// SP key is configured. `request_id` (from [`super::request_id`]) is the InResponseTo the IdP's
    /// answer must carry. `None` when the IdP has no HTTP-Redirect SLO endpoint.
    pub fn logout_request(
        &self,
        request_id: &str,
        identity: &crate::identity::Identity,
        relay_state: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, LogoutError> {
        let Some(slo) = self.idp.slo_redirect.as_deref() else {
            return Ok(None);
        };
        if relay_state.len() > 80 {
            return Err(LogoutError::Encode(RequestError::RelayStateTooLong));
        }
        let mut xml = format!(
            r#"<samlp:LogoutRequest xmlns:samlp="{NS_SAMLP}" xmlns:saml="{NS_SAML}" ID="{}" Version="2.0" IssueInstant="{}" Destination="{}"><saml:Issuer>{}</saml:Issuer><saml:NameID"#,
            xml_escape(request_id),
            instant(now),
            xml_escape(slo),
            xml_escape(&self.policy.entity_id),
        );
        // The NameID exactly as the IdP sent it: value, Format and qualifiers.
        for (name, value) in [
            ("NameQualifier", &identity.name_qualifier),
            ("SPNameQualifier", &identity.sp_name_qualifier),
            ("Format", &identity.name_id_format),
        ] {
            if let Some(v) = value {
                xml.push_str(&format!(r#" {name}="{}""#, xml_escape(v)));
            }
        }
        xml.push_str(&format!(">{}</saml:NameID>", xml_escape(&identity.subject)));
        if let Some(si) = identity.session_index.as_deref() {
            xml.push_str(&format!(
                "<samlp:SessionIndex>{}</samlp:SessionIndex>",
                xml_escape(si)
            ));
        }
        xml.push_str("</samlp:LogoutRequest>");
        Ok(Some(redirect_url(
            self,
            slo,
            "SAMLRequest",
            &xml,
            relay_state,
        )?))
    }

    /// Our LogoutResponse (SAML core §3.7.2) to the IdP's LogoutRequest `in_response_to`, as an
    /// HTTP-Redirect URL to the IdP's SLO `ResponseLocation` (else `Location`), signed when an
    /// SP key is configured. `partial`: some sessions could not be ended (the store failed):
    /// status Responder / PartialLogout instead of Success. `None` when the IdP has no
    /// HTTP-Redirect SLO endpoint.
    pub fn logout_response(
        &self,
        in_response_to: &str,
        partial: bool,
        relay_state: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, LogoutError> {
        let Some(slo) = self.idp.slo_response_redirect() else {
            return Ok(None);
        };
        let status = if partial {
            format!(
                r#"<samlp:StatusCode Value="{STATUS_RESPONDER}"><samlp:StatusCode Value="{STATUS_PARTIAL_LOGOUT}"/></samlp:StatusCode>"#
            )
        } else {
            format!(r#"<samlp:StatusCode Value="{STATUS_SUCCESS}"/>"#)
        };
        let xml = format!(
            r#"<samlp:LogoutResponse xmlns:samlp="{NS_SAMLP}" xmlns:saml="{NS_SAML}" ID="{}" Version="2.0" IssueInstant="{}" Destination="{}" InResponseTo="{}"><saml:Issuer>{}</saml:Issuer><samlp:Status>{status}</samlp:Status></samlp:LogoutResponse>"#,
            super::request_id(),
            instant(now),
            xml_escape(slo),
            xml_escape(in_response_to),
            xml_escape(&self.policy.entity_id),
        );
        Ok(Some(redirect_url(
            self,
            slo,
            "SAMLResponse",
            &xml,
            relay_state.unwrap_or(""),
        )?))
    }

    /// Reads an HTTP-Redirect logout message from the raw (still URL-encoded) query string:
    /// one `SAMLRequest` or `SAMLResponse`, optional `RelayState`, `SigAlg` and `Signature`.
    /// Decodes, inflates (capped) and strictly parses it; nothing is trusted yet.
    pub fn read_logout_redirect(&self, raw_query: &str) -> Result<SloMessage, LogoutError> {
        let mut message: Option<(bool, &str)> = None;
        let mut relay: Option<&str> = None;
        let mut sig_alg: Option<&str> = None;
        let mut signature: Option<&str> = None;
        for (name, raw) in raw_pairs(raw_query) {
            let slot = match name.as_str() {
                "SAMLRequest" | "SAMLResponse" => {
                    if message.is_some() {
                        return Err(
                            if message.is_some_and(|(r, _)| r == (name == "SAMLRequest")) {
                                LogoutError::DuplicateParameter
                            } else {
                                LogoutError::NoMessage
                            },
                        );
                    }
                    message = Some((name == "SAMLRequest", raw));
                    continue;
                }
                "RelayState" => &mut relay,
                "SigAlg" => &mut sig_alg,
                "Signature" => &mut signature,
                _ => continue,
            };
            if slot.replace(raw).is_some() {
                return Err(LogoutError::DuplicateParameter);
            }
        }
        let (is_request, raw_message) = message.ok_or(LogoutError::NoMessage)?;
        if raw_message.len() > MAX_LOGOUT_PARAM
            || relay.is_some_and(|r| r.len() > MAX_RELAY_STATE * 3)
        {
            return Err(LogoutError::TooLarge);
        }
        let deflated = base64_decode(&url_decode(raw_message), MAX_LOGOUT_PARAM)?;
        let xml = inflate(&deflated)?;
        let query_signature = match (sig_alg, signature) {
            (Some(alg), Some(sig)) => {
                // Bindings §3.4.4.1: the signed octets are the parameters as they appear in
                // the query, URL-encoded, in this order.
                let param = if is_request {
                    "SAMLRequest"
                } else {
                    "SAMLResponse"
                };
                let mut signed_octets = format!("{param}={raw_message}");
                if let Some(r) = relay {
                    signed_octets.push_str(&format!("&RelayState={r}"));
                }
                signed_octets.push_str(&format!("&SigAlg={alg}"));
                Some(QuerySignature {
                    sig_alg: url_decode(alg),
                    signature: base64_decode(&url_decode(sig), 4096)?,
                    signed_octets,
                })
            }
            _ => None,
        };
        self.logout_message(
            SloBinding::Redirect,
            is_request,
            &xml,
            relay.map(url_decode),
            query_signature,
        )
    }

    /// Reads an HTTP-POST logout message: `value` is the `SAMLRequest` (`is_request`) or
    /// `SAMLResponse` form field. Decodes (capped) and strictly parses it.
    pub fn read_logout_post(
        &self,
        is_request: bool,
        value: &str,
        relay_state: Option<&str>,
    ) -> Result<SloMessage, LogoutError> {
        if relay_state.is_some_and(|r| r.len() > MAX_RELAY_STATE) {
            return Err(LogoutError::TooLarge);
        }
        let xml = base64_decode(value, MAX_LOGOUT_XML)?;
        self.logout_message(
            SloBinding::Post,
            is_request,
            &xml,
            relay_state.map(str::to_string),
            None,
        )
    }

    fn logout_message(
        &self,
        binding: SloBinding,
        is_request: bool,
        bytes: &[u8],
        relay_state: Option<String>,
        query_signature: Option<QuerySignature>,
    ) -> Result<SloMessage, LogoutError> {
        if relay_state
            .as_ref()
            .is_some_and(|r| r.len() > MAX_RELAY_STATE)
        {
            return Err(LogoutError::TooLarge);
        }
        let limits = logout_limits(&self.policy.limits);
        let text = harden::utf8_document(bytes, &limits)?;
        let doc = harden::parse_strict(text, &limits)?;
        let sp = harden::StructurePolicy {
            allow_advice_assertions: false,
            algorithms: &self.policy.allowed_algorithms,
            limits: &limits,
        };
        let insp = harden::inspect_logout(&doc, text, &sp)?;
        if insp.is_request != is_request {
            return Err(LogoutError::WrongKind);
        }
        Ok(SloMessage {
            binding,
            is_request,
            xml: text.to_string(),
            relay_state,
            query_signature,
        })
    }

    /// The signature check of either binding; returns the XML whose content is signed.
    fn verified_logout_xml(&self, msg: &SloMessage) -> Result<String, LogoutError> {
        match msg.binding {
            SloBinding::Redirect => {
                let qs = msg.query_signature.as_ref().ok_or(LogoutError::Unsigned)?;
                let alg = algorithm_of(&qs.sig_alg, &self.policy.allowed_algorithms)
                    .ok_or(LogoutError::Algorithm)?;
                let ok = self.idp.signing_certs.iter().any(|cert| {
                    verify_with_cert(
                        cert,
                        digest_of(alg),
                        qs.signed_octets.as_bytes(),
                        &qs.signature,
                    )
                });
                if !ok {
                    return Err(LogoutError::Signature);
                }
                Ok(msg.xml.clone())
            }
            SloBinding::Post => {
                let limits = logout_limits(&self.policy.limits);
                let doc = harden::parse_strict(&msg.xml, &limits)?;
                let sp = harden::StructurePolicy {
                    allow_advice_assertions: false,
                    algorithms: &self.policy.allowed_algorithms,
                    limits: &limits,
                };
                let insp = harden::inspect_logout(&doc, &msg.xml, &sp)?;
                if !insp.signed {
                    return Err(LogoutError::Unsigned);
                }
                let verified = Crypto::reduce_xml_to_signed_with_allowed_algorithms(
                    &msg.xml,
                    &self.certs,
                    ReduceMode::PreDigest,
                    self.samael_algorithms.as_deref(),
                )
                .map_err(|_| LogoutError::Signature)?;
                let verified = harden::strip_declaration(&verified).to_string();
                let vdoc = Document::parse(&verified).map_err(|_| LogoutError::VerifiedMismatch)?;
                let root = vdoc.root_element();
                let kind = if msg.is_request {
                    "LogoutRequest"
                } else {
                    "LogoutResponse"
                };
                if !is(root, NS_SAMLP, kind) || root.attribute("ID") != Some(insp.id.as_str()) {
                    return Err(LogoutError::VerifiedMismatch);
                }
                Ok(verified)
            }
        }
    }

    /// The checks every logout message gets (SAML core §3.2.1, §3.2.2): Version, ID, Issuer =
    /// the IdP, Destination = our SLO URL, IssueInstant within the skew and age.
    fn check_logout_common(
        &self,
        root: Node<'_, '_>,
        now: DateTime<Utc>,
    ) -> Result<String, LogoutError> {
        let p = &self.policy;
        if root.attribute("Version") != Some("2.0") {
            return Err(LogoutError::Version);
        }
        let id = root.attribute("ID").ok_or(LogoutError::MissingId)?;
        match child(root, NS_SAML, "Issuer") {
            Some(i) if text_of(i) == self.idp.entity_id => {}
            _ => return Err(LogoutError::Issuer),
        }
        // Every logout message we accept is signed, and a signed message must name where it was
        // sent (bindings §3.4.5.2, §3.5.5.2): one sent to another SP cannot be replayed here.
        if root.attribute("Destination") != Some(p.slo_url.as_str()) {
            return Err(LogoutError::Destination);
        }
        let skew = super::to_chrono(p.clock_skew);
        let max_age = super::to_chrono(p.max_issue_age);
        let issued = time(root.attribute("IssueInstant"), "IssueInstant")?;
        if issued > now + skew {
            return Err(LogoutError::IssuedInFuture);
        }
        if issued + max_age + skew < now {
            return Err(LogoutError::IssuedTooLongAgo);
        }
        Ok(id.to_string())
    }

    /// Verifies an IdP-initiated LogoutRequest (signature, then core §3.7.1): Issuer,
    /// Destination, IssueInstant, NotOnOrAfter (all with `clock_skew`), a NameID. Returns the
    /// NameID and SessionIndexes whose sessions must end. Synchronous; the POST binding runs
    /// xmlsec, so call it off the async threads.
    pub fn verify_logout_request(
        &self,
        msg: &SloMessage,
        now: DateTime<Utc>,
    ) -> Result<IdpLogoutRequest, LogoutError> {
        if !msg.is_request {
            return Err(LogoutError::WrongKind);
        }
        let xml = self.decrypt_name_id(self.verified_logout_xml(msg)?)?;
        let doc = Document::parse(&xml).map_err(|_| LogoutError::VerifiedMismatch)?;
        let root = doc.root_element();
        let id = self.check_logout_common(root, now)?;
        if root
            .children()
            .filter(|c| is(*c, NS_SAML, "NameID") || is(*c, NS_SAML, "EncryptedID"))
            .count()
            != 1
        {
            return Err(LogoutError::MissingNameId);
        }
        if let Some(na) = root.attribute("NotOnOrAfter") {
            let na = time(Some(na), "NotOnOrAfter")?;
            if now >= na + super::to_chrono(self.policy.clock_skew) {
                return Err(LogoutError::Expired);
            }
        }
        let name_id_node = child(root, NS_SAML, "NameID").ok_or(LogoutError::MissingNameId)?;
        let name_id = text_of(name_id_node);
        if name_id.is_empty() {
            return Err(LogoutError::MissingNameId);
        }
        let session_indexes = root
            .children()
            .filter(|c| is(*c, NS_SAMLP, "SessionIndex"))
            .map(text_of)
            .filter(|s| !s.is_empty())
            .collect();
        Ok(IdpLogoutRequest {
            id,
            name_id,
            name_id_format: name_id_node.attribute("Format").map(str::to_string),
            session_indexes,
            relay_state: msg.relay_state.clone(),
        })
    }

    /// The verified LogoutRequest with its EncryptedID (core §3.7.1) replaced by the NameID it
    /// hides, decrypted with the SP key. The plaintext is spliced in place so it keeps the
    /// request's namespace context; the result is parsed again, without DTDs, by the caller.
    fn decrypt_name_id(&self, xml: String) -> Result<String, LogoutError> {
        let doc = Document::parse(&xml).map_err(|_| LogoutError::VerifiedMismatch)?;
        let Some(enc) = child(doc.root_element(), NS_SAML, "EncryptedID") else {
            return Ok(xml);
        };
        let key = self.sp_key.as_ref().ok_or(LogoutError::EncryptedId)?;
        let plaintext =
            super::decrypt::decrypt_element(enc, key).map_err(|_| LogoutError::EncryptedId)?;
        let range = enc.range();
        Ok(format!(
            "{}{}{}",
            &xml[..range.start],
            harden::strip_declaration(&plaintext),
            &xml[range.end..]
        ))
    }

    /// Verifies the IdP's LogoutResponse to our LogoutRequest `pending` (signature, then core
    /// §3.7.2): Issuer, Destination, IssueInstant, InResponseTo = `pending`, status Success.
    pub fn verify_logout_response(
        &self,
        msg: &SloMessage,
        pending: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<IdpLogoutResponse, LogoutError> {
        if msg.is_request {
            return Err(LogoutError::WrongKind);
        }
        let xml = self.verified_logout_xml(msg)?;
        let doc = Document::parse(&xml).map_err(|_| LogoutError::VerifiedMismatch)?;
        let root = doc.root_element();
        let id = self.check_logout_common(root, now)?;
        let in_response_to = match (root.attribute("InResponseTo"), pending) {
            (Some(irt), Some(p)) if irt == p => irt.to_string(),
            _ => return Err(LogoutError::InResponseTo),
        };
        let code = child(root, NS_SAMLP, "Status")
            .and_then(|s| child(s, NS_SAMLP, "StatusCode"))
            .and_then(|c| c.attribute("Value"))
            .unwrap_or("");
        if code != STATUS_SUCCESS {
            return Err(LogoutError::Status {
                code: code.chars().take(100).collect(),
            });
        }
        Ok(IdpLogoutResponse { id, in_response_to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflate_stops_at_the_cap() {
        use flate2::Compression;
        use flate2::write::DeflateEncoder;
        use std::io::Write as _;
        let mut e = DeflateEncoder::new(Vec::new(), Compression::best());
        e.write_all(&vec![b'a'; 50 * 1024 * 1024]).expect("test");
        let bomb = e.finish().expect("test");
        assert!(bomb.len() < 100 * 1024);
        let started = std::time::Instant::now();
        assert_eq!(inflate(&bomb), Err(LogoutError::TooLarge));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn raw_pairs_keep_the_encoding() {
        let pairs: Vec<_> = raw_pairs("SAMLRequest=a%2Bb&RelayState=x+y&SigAlg=z").collect();
        assert_eq!(pairs[0], ("SAMLRequest".to_string(), "a%2Bb"));
        assert_eq!(url_decode(pairs[0].1), "a+b");
        assert_eq!(url_decode(pairs[1].1), "x y");
    }
}
