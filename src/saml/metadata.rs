//! Metadata: IdP metadata in (entity ID, endpoints, every signing certificate) and our SP
//! metadata out (SAML metadata §2.4.3, §2.4.4).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use openssl::x509::X509;
use roxmltree::{Document, Node, ParsingOptions};

use super::harden::NS_DS;
use super::xml_escape;

/// SAML 2.0 metadata namespace.
pub const NS_MD: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
/// HTTP-Redirect binding URI (SAML bindings §3.4).
pub const BINDING_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
/// HTTP-POST binding URI (SAML bindings §3.5).
pub const BINDING_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

/// Why IdP metadata was refused.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// Not well-formed XML, or a DTD.
    #[error("IdP metadata is not well-formed XML without DTD: {0}")]
    Xml(String),
    /// No `md:EntityDescriptor` with an `md:IDPSSODescriptor`, or several.
    #[error("IdP metadata must describe exactly one entity with an IDPSSODescriptor (found {0})")]
    NoIdp(usize),
    /// A `validUntil` that is not an xs:dateTime.
    #[error("IdP metadata has a malformed validUntil")]
    BadValidUntil,
    /// The metadata's `validUntil` has passed (SAML metadata §2.3.1).
    #[error("IdP metadata expired (validUntil {0})")]
    Expired(DateTime<Utc>),
    /// The EntityDescriptor has no entityID.
    #[error("IdP metadata has no entityID")]
    NoEntityId,
    /// No usable signing certificate (S1): samael would then check no signature at all.
    #[error(
        "IdP metadata has no signing certificate (a KeyDescriptor with use=\"signing\" or no use, holding ds:X509Certificate); refusing to trust any response"
    )]
    NoSigningCertificate,
    /// A signing certificate that does not parse.
    #[error("IdP metadata signing certificate #{index} is not a valid X.509 certificate")]
    BadCertificate {
        /// 1-based position among the signing certificates.
        index: usize,
    },
}

/// What we use from the IdP's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdpMetadata {
    /// The IdP entity ID: every Issuer must equal it.
    pub entity_id: String,
    /// SingleSignOnService with the HTTP-Redirect binding.
    pub sso_redirect: Option<String>,
    /// SingleLogoutService with the HTTP-Redirect binding.
    pub slo_redirect: Option<String>,
    /// `ResponseLocation` of the HTTP-Redirect SingleLogoutService, when it differs from its
    /// `Location` (SAML metadata §2.2.2): where LogoutResponses go.
    pub slo_redirect_response: Option<String>,
    /// SingleLogoutService with the HTTP-POST binding.
    pub slo_post: Option<String>,
    /// The earliest `validUntil` of the IDPSSODescriptor and its enclosing descriptors.
    pub valid_until: Option<DateTime<Utc>>,
    /// Every signing certificate (DER), in document order: all are accepted, for key rollover.
    pub signing_certs: Vec<Vec<u8>>,
}

fn is_md(n: Node<'_, '_>, name: &str) -> bool {
    super::harden::is(n, NS_MD, name)
}

impl IdpMetadata {
    /// Parses IdP metadata. An `md:EntitiesDescriptor` is accepted when exactly one entity in it
    /// has an IDPSSODescriptor. Certificate validity dates are not checked: metadata keys are
    /// pinned keys (SAML metadata-iop §2.5.1).
    pub fn parse(xml: &str) -> Result<Self, MetadataError> {
        let options = ParsingOptions {
            allow_dtd: false,
            nodes_limit: 1_000_000,
            ..ParsingOptions::default()
        };
        let doc = Document::parse_with_options(xml, options)
            .map_err(|e| MetadataError::Xml(e.to_string()))?;
        let idps: Vec<(Node<'_, '_>, Node<'_, '_>)> = doc
            .descendants()
            .filter(|n| is_md(*n, "EntityDescriptor"))
            .filter_map(|e| {
                e.children()
                    .find(|c| is_md(*c, "IDPSSODescriptor"))
                    .map(|idp| (e, idp))
            })
            .collect();
        let [(entity, idp)] = idps.as_slice() else {
            return Err(MetadataError::NoIdp(idps.len()));
        };
        let entity_id = entity
            .attribute("entityID")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(MetadataError::NoEntityId)?
            .to_string();

        let endpoint_attr = |kind: &str, binding: &str, attr: &str| {
            idp.children()
                .filter(|c| is_md(*c, kind))
                .find(|c| c.attribute("Binding") == Some(binding))
                .and_then(|c| c.attribute(attr))
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
        };
        let endpoint = |kind: &str, binding: &str| endpoint_attr(kind, binding, "Location");

        // SAML metadata §2.3.1: validUntil applies to the element and everything inside it.
        let mut valid_until: Option<DateTime<Utc>> = None;
        for node in idp.ancestors().filter(|n| n.is_element()) {
            if let Some(v) = node.attribute("validUntil") {
                let t = DateTime::parse_from_rfc3339(v.trim())
                    .map_err(|_| MetadataError::BadValidUntil)?
                    .with_timezone(&Utc);
                valid_until = Some(valid_until.map_or(t, |u| u.min(t)));
            }
        }

        let mut signing_certs = Vec::new();
        for kd in idp.children().filter(|c| is_md(*c, "KeyDescriptor")) {
            // SAML metadata §2.4.1.1: no `use` means the key serves both purposes.
            if !matches!(kd.attribute("use"), None | Some("signing")) {
                continue;
            }
            for cert in kd
                .descendants()
                .filter(|n| super::harden::is(*n, NS_DS, "X509Certificate"))
            {
                let b64: String = cert
                    .text()
                    .unwrap_or("")
                    .chars()
                    .filter(|c| !c.is_ascii_whitespace())
                    .collect();
                let index = signing_certs.len() + 1;
                let der = STANDARD
                    .decode(b64)
                    .map_err(|_| MetadataError::BadCertificate { index })?;
                X509::from_der(&der).map_err(|_| MetadataError::BadCertificate { index })?;
                if !signing_certs.contains(&der) {
                    signing_certs.push(der);
                }
            }
        }
        if signing_certs.is_empty() {
            return Err(MetadataError::NoSigningCertificate);
        }
        Ok(Self {
            entity_id,
            sso_redirect: endpoint("SingleSignOnService", BINDING_REDIRECT),
            slo_redirect: endpoint("SingleLogoutService", BINDING_REDIRECT),
            slo_redirect_response: endpoint_attr(
                "SingleLogoutService",
                BINDING_REDIRECT,
                "ResponseLocation",
            ),
            slo_post: endpoint("SingleLogoutService", BINDING_POST),
            valid_until,
            signing_certs,
        })
    }

    /// Refuses metadata whose `validUntil` has passed at `now` (SAML metadata §2.3.1).
    pub fn check_valid_at(&self, now: DateTime<Utc>) -> Result<(), MetadataError> {
        match self.valid_until {
            Some(t) if now >= t => Err(MetadataError::Expired(t)),
            _ => Ok(()),
        }
    }

    /// Where LogoutResponses go (HTTP-Redirect): `ResponseLocation`, else `Location`.
    pub fn slo_response_redirect(&self) -> Option<&str> {
        self.slo_redirect_response
            .as_deref()
            .or(self.slo_redirect.as_deref())
    }
}

/// Our SP metadata (SAML metadata §2.4.4), written by hand (S15): entity ID, ACS (HTTP-POST),
/// SLO (HTTP-Redirect and HTTP-POST), NameID formats, `AuthnRequestsSigned` when we have a key,
/// `WantAssertionsSigned`, and — with an SP certificate — one signing and one encryption
/// KeyDescriptor, the latter listing only the algorithms `decrypt` implements.
pub fn sp_metadata_xml(
    entity_id: &str,
    acs_url: &str,
    slo_url: &str,
    sp_cert_der: Option<&[u8]>,
) -> String {
    let keys = sp_cert_der
        .map(|der| {
            let cert = STANDARD.encode(der);
            let key_info = format!(
                r#"<ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>"#
            );
            let methods: String = super::decrypt::CONTENT_ALGORITHMS
                .iter()
                .chain(super::decrypt::KEY_TRANSPORT_ALGORITHMS)
                .map(|a| format!(r#"<md:EncryptionMethod Algorithm="{a}"/>"#))
                .collect::<Vec<_>>()
                .join("\n      ");
            format!(
                "    <md:KeyDescriptor use=\"signing\">{key_info}</md:KeyDescriptor>\n    <md:KeyDescriptor use=\"encryption\">{key_info}\n      {methods}\n    </md:KeyDescriptor>\n"
            )
        })
        .unwrap_or_default();
    let signed = sp_cert_der.is_some();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="{NS_MD}" entityID="{entity}">
  <md:SPSSODescriptor AuthnRequestsSigned="{signed}" WantAssertionsSigned="true" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
{keys}    <md:SingleLogoutService Binding="{BINDING_REDIRECT}" Location="{slo}"/>
    <md:SingleLogoutService Binding="{BINDING_POST}" Location="{slo}"/>
    <md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat>
    <md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent</md:NameIDFormat>
    <md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:transient</md:NameIDFormat>
    <md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified</md:NameIDFormat>
    <md:AssertionConsumerService Binding="{BINDING_POST}" Location="{acs}" index="0" isDefault="true"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
"#,
        entity = xml_escape(entity_id),
        slo = xml_escape(slo_url),
        acs = xml_escape(acs_url),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_metadata_without_signing_key() {
        let xml = r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="x">
          <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
            <md:KeyDescriptor use="encryption"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data><ds:X509Certificate>AAAA</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
          </md:IDPSSODescriptor></md:EntityDescriptor>"#;
        assert!(matches!(
            IdpMetadata::parse(xml),
            Err(MetadataError::NoSigningCertificate)
        ));
    }

    #[test]
    fn refuses_doctype() {
        let xml = r#"<!DOCTYPE x [<!ENTITY a "b">]><md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="x"/>"#;
        assert!(matches!(
            IdpMetadata::parse(xml),
            Err(MetadataError::Xml(_))
        ));
    }
}
