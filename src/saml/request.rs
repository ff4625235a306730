//! Request: the AuthnRequest of an SP-initiated login, sent with the HTTP-Redirect binding
//! (SAML core §3.4.1, bindings §3.4.4: DEFLATE, base64, URL-encode; signed per §3.4.4.1).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use flate2::Compression;
use flate2::write::DeflateEncoder;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use std::io::Write as _;
use url::form_urlencoded::byte_serialize;

use super::harden::{NS_SAML, NS_SAMLP};
use super::metadata::BINDING_POST;
use super::{Saml, xml_escape};

/// RSA-SHA256 SigAlg URI (bindings §3.4.4.1).
pub(super) const SIG_ALG_RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";

/// A login to start: remember `request_id` for this browser, send it to `redirect_url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginRequest {
    /// The AuthnRequest ID: the InResponseTo the Response must carry.
    pub request_id: String,
    /// The IdP SSO URL with `SAMLRequest`, `RelayState` (and `SigAlg`, `Signature`).
    pub redirect_url: String,
}

/// Why a login redirect could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// The IdP metadata has no HTTP-Redirect SSO endpoint.
    #[error("the IdP has no HTTP-Redirect SingleSignOnService")]
    NoSsoEndpoint,
    /// RelayState longer than 80 bytes (bindings §3.4.3).
    #[error("RelayState longer than 80 bytes")]
    RelayStateTooLong,
    /// Compression or signing failed.
    #[error("could not encode or sign the message")]
    Encode,
}

/// `_` + 32 hex digits: 128 random bits, NCName-safe (S14).
pub fn request_id() -> String {
    let bytes: [u8; 16] = rand::random();
    format!("_{}", crate::session::hex(&bytes))
}

pub(super) fn encode(v: &str) -> String {
    byte_serialize(v.as_bytes()).collect()
}

pub(super) fn login_request(
    saml: &Saml,
    relay_state: &str,
    now: DateTime<Utc>,
) -> Result<LoginRequest, RequestError> {
    login_request_with_id(saml, request_id(), relay_state, now)
}

pub(super) fn login_request_with_id(
    saml: &Saml,
    id: String,
    relay_state: &str,
    now: DateTime<Utc>,
) -> Result<LoginRequest, RequestError> {
    let sso = saml
        .idp
        .sso_redirect
        .as_deref()
        .ok_or(RequestError::NoSsoEndpoint)?;
    if relay_state.len() > 80 {
        return Err(RequestError::RelayStateTooLong);
    }
    let p = &saml.policy;
    let mut xml = format!(
        r#"<samlp:AuthnRequest xmlns:samlp="{NS_SAMLP}" xmlns:saml="{NS_SAML}" ID="{id}" Version="2.0" IssueInstant="{}" Destination="{}" AssertionConsumerServiceURL="{}" ProtocolBinding="{BINDING_POST}""#,
        now.to_rfc3339_opts(SecondsFormat::Secs, true),
        xml_escape(sso),
        xml_escape(&p.acs_url),
    );
    if p.force_authn {
        xml.push_str(r#" ForceAuthn="true""#);
    }
    xml.push_str(&format!(
        "><saml:Issuer>{}</saml:Issuer>",
        xml_escape(&p.entity_id)
    ));
    if let Some(f) = &p.name_id_format {
        xml.push_str(&format!(
            r#"<samlp:NameIDPolicy Format="{}" AllowCreate="true"/>"#,
            xml_escape(f)
        ));
    }
    xml.push_str("</samlp:AuthnRequest>");

    Ok(LoginRequest {
        request_id: id,
        redirect_url: redirect_url(saml, sso, "SAMLRequest", &xml, relay_state)?,
    })
}

/// The HTTP-Redirect binding URL of one of our messages: [`redirect_binding_url`] signed with
/// the SP key when there is one.
pub(super) fn redirect_url(
    saml: &Saml,
    endpoint: &str,
    param: &str,
    xml: &str,
    relay_state: &str,
) -> Result<String, RequestError> {
    redirect_binding_url(endpoint, param, xml, relay_state, saml.sp_key.as_ref())
}

/// The HTTP-Redirect binding URL of a message (bindings §3.4.4): `xml` deflated, base64'd and
/// URL-encoded as `param` on `endpoint`, with `RelayState` when not empty; with a `key`,
/// `SigAlg` (RSA-SHA256) and `Signature` over the octets `param=..&RelayState=..&SigAlg=..`
/// exactly as they appear, URL-encoded, in the query string (§3.4.4.1). The dev IdP signs its
/// LogoutResponses with it too.
pub fn redirect_binding_url(
    endpoint: &str,
    param: &str,
    xml: &str,
    relay_state: &str,
    key: Option<&PKey<Private>>,
) -> Result<String, RequestError> {
    let mut deflater = DeflateEncoder::new(Vec::new(), Compression::default());
    deflater
        .write_all(xml.as_bytes())
        .map_err(|_| RequestError::Encode)?;
    let deflated = deflater.finish().map_err(|_| RequestError::Encode)?;
    let mut query = format!("{param}={}", encode(&STANDARD.encode(deflated)));
    if !relay_state.is_empty() {
        query.push_str(&format!("&RelayState={}", encode(relay_state)));
    }
    if let Some(key) = key {
        query.push_str(&format!("&SigAlg={}", encode(SIG_ALG_RSA_SHA256)));
        let mut signer =
            Signer::new(MessageDigest::sha256(), key).map_err(|_| RequestError::Encode)?;
        signer
            .update(query.as_bytes())
            .map_err(|_| RequestError::Encode)?;
        let sig = signer.sign_to_vec().map_err(|_| RequestError::Encode)?;
        query.push_str(&format!("&Signature={}", encode(&STANDARD.encode(sig))));
    }
    let sep = if endpoint.contains('?') { '&' } else { '?' };
    Ok(format!("{endpoint}{sep}{query}"))
}
