//! TestIdp: a development Identity Provider that signs real SAML 2.0 Responses.
//!
//! Used by the tests and by `samlgate demo`. It generates an RSA-2048 key and a self-signed
//! certificate at start-up, publishes IdP metadata, and produces Responses per SAML core §3.3.3
//! / the Web Browser SSO profile (SAML profiles §4.1.4.2), signed with XML-DSig enveloped
//! signatures (exclusive C14N, RSA-SHA256 by default) through xmlsec (via samael), and
//! optionally encrypted to an SP certificate (XML Encryption: AES-128-CBC + RSA-OAEP-MGF1P).
//!
//! Never use this in front of real users: it signs whatever it is told to.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::{Padding, Rsa};
use openssl::symm::{Cipher, encrypt};
use openssl::x509::{X509, X509NameBuilder};
use samael::crypto::{Crypto, CryptoProvider};

use crate::saml::xml_escape;

/// SAML 2.0 assertion namespace (SAML core §2).
const NS_SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
/// SAML 2.0 protocol namespace (SAML core §3).
const NS_SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";

/// Errors of the development IdP (key generation, signing, encryption).
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// OpenSSL failed (key or certificate generation, encryption).
    #[error("openssl: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    /// xmlsec refused to sign the document.
    #[error("xmlsec signing failed: {0}")]
    Sign(String),
}

/// Which parts of the Response carry an enveloped signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SignMode {
    /// Only the Assertion is signed (the most common IdP setting).
    #[default]
    Assertion,
    /// Only the Response is signed.
    Response,
    /// Both the Assertion and the Response are signed.
    Both,
    /// Nothing is signed (for negative tests).
    None,
}

/// The signature (and digest) algorithm of the generated signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SignAlgorithm {
    /// RSA-SHA256 with SHA-256 digests (XML-DSig more, RFC 6931 §2.3.2).
    #[default]
    RsaSha256,
    /// RSA-SHA1 with SHA-1 digests (for tests of the algorithm allow-list only).
    RsaSha1,
}

impl SignAlgorithm {
    /// SignatureMethod Algorithm URI.
    pub fn signature_uri(self) -> &'static str {
        match self {
            Self::RsaSha256 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            Self::RsaSha1 => "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
        }
    }

    /// DigestMethod Algorithm URI.
    pub fn digest_uri(self) -> &'static str {
        match self {
            Self::RsaSha256 => "http://www.w3.org/2001/04/xmlenc#sha256",
            Self::RsaSha1 => "http://www.w3.org/2000/09/xmldsig#sha1",
        }
    }
}

/// Everything a generated Response says. Build it with `ResponseSpec::default()` (valid for
/// the default SP below, issued now) and change the fields a test cares about.
#[derive(Clone, Debug)]
pub struct ResponseSpec {
    /// Response `ID`.
    pub response_id: String,
    /// Assertion `ID`.
    pub assertion_id: String,
    /// Issuer of Response and Assertion; `None` uses the IdP's entity ID.
    pub issuer: Option<String>,
    /// Response `Destination` (the SP's ACS URL); `None` omits it.
    pub destination: Option<String>,
    /// `InResponseTo` on the Response and the SubjectConfirmationData; `None` = unsolicited.
    pub in_response_to: Option<String>,
    /// IssueInstant of Response and Assertion (also AuthnInstant).
    pub issue_instant: DateTime<Utc>,
    /// Top-level StatusCode value.
    pub status: String,
    /// NameID text.
    pub name_id: String,
    /// NameID `Format`; `None` omits it.
    pub name_id_format: Option<String>,
    /// NameID `NameQualifier` and `SPNameQualifier`; `None` omits them.
    pub name_qualifiers: Option<(String, String)>,
    /// Bearer SubjectConfirmationData `Recipient`; `None` omits it.
    pub recipient: Option<String>,
    /// Bearer SubjectConfirmationData `NotOnOrAfter`; `None` omits it.
    pub subject_not_on_or_after: Option<DateTime<Utc>>,
    /// Conditions `NotBefore`; `None` omits it.
    pub not_before: Option<DateTime<Utc>>,
    /// Conditions `NotOnOrAfter`; `None` omits it.
    pub not_on_or_after: Option<DateTime<Utc>>,
    /// AudienceRestriction audiences; empty omits the AudienceRestriction.
    pub audiences: Vec<String>,
    /// Emit a Conditions element at all.
    pub conditions: bool,
    /// Emit an AuthnStatement.
    pub authn_statement: bool,
    /// AuthnStatement `SessionIndex`; `None` omits it.
    pub session_index: Option<String>,
    /// AuthnStatement `SessionNotOnOrAfter`; `None` omits it.
    pub session_not_on_or_after: Option<DateTime<Utc>>,
    /// Attributes: (Name, values). Each becomes one `saml:Attribute`.
    pub attributes: Vec<(String, Vec<String>)>,
    /// Which elements are signed.
    pub sign: SignMode,
    /// Signature algorithm.
    pub algorithm: SignAlgorithm,
    /// Encrypt the (signed) Assertion to this SP certificate (PEM): AES-128-CBC + RSA-OAEP.
    pub encrypt_to_pem: Option<String>,
}

/// The SP entity ID that `ResponseSpec::default()` names as Audience.
pub const DEFAULT_SP_ENTITY_ID: &str = "https://sp.example.com/saml/metadata";
/// The ACS URL that `ResponseSpec::default()` names as Destination and Recipient.
pub const DEFAULT_ACS_URL: &str = "https://sp.example.com/saml/acs";
/// The request ID that `ResponseSpec::default()` answers.
pub const DEFAULT_REQUEST_ID: &str = "_0123456789abcdef0123456789abcdef";

impl Default for ResponseSpec {
    fn default() -> Self {
        let now = Utc::now();
        Self {
            response_id: new_id(),
            assertion_id: new_id(),
            issuer: None,
            destination: Some(DEFAULT_ACS_URL.into()),
            in_response_to: Some(DEFAULT_REQUEST_ID.into()),
            issue_instant: now,
            status: "urn:oasis:names:tc:SAML:2.0:status:Success".into(),
            name_id: "alice@example.com".into(),
            name_id_format: Some("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".into()),
            name_qualifiers: None,
            recipient: Some(DEFAULT_ACS_URL.into()),
            subject_not_on_or_after: Some(now + Duration::minutes(5)),
            not_before: Some(now - Duration::seconds(30)),
            not_on_or_after: Some(now + Duration::minutes(5)),
            audiences: vec![DEFAULT_SP_ENTITY_ID.into()],
            conditions: true,
            authn_statement: true,
            session_index: Some(new_id()),
            session_not_on_or_after: None,
            attributes: vec![
                ("email".into(), vec!["alice@example.com".into()]),
                ("firstName".into(), vec!["Alice".into()]),
                ("lastName".into(), vec!["Liddell".into()]),
                (
                    "groups".into(),
                    vec!["staff".into(), "dashboard-admins".into()],
                ),
            ],
            sign: SignMode::Assertion,
            algorithm: SignAlgorithm::RsaSha256,
            encrypt_to_pem: None,
        }
    }
}

impl ResponseSpec {
    /// A default spec whose every instant is relative to `now` instead of the system clock.
    pub fn at(now: DateTime<Utc>) -> Self {
        Self {
            issue_instant: now,
            subject_not_on_or_after: Some(now + Duration::minutes(5)),
            not_before: Some(now - Duration::seconds(30)),
            not_on_or_after: Some(now + Duration::minutes(5)),
            ..Self::default()
        }
    }
}

/// A fresh NCName-safe ID: `_` + 32 hex digits (128 random bits).
pub fn new_id() -> String {
    crate::saml::request_id()
}

/// Base64 (standard alphabet, no line breaks) of an XML Response, as posted in the
/// `SAMLResponse` form field (SAML bindings §3.5.4).
pub fn to_form_value(xml: &str) -> String {
    STANDARD.encode(xml.as_bytes())
}

/// xs:dateTime in UTC with a `Z` (SAML core §1.3.3).
fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A development IdP: an RSA key, its self-signed certificate and an entity ID.
pub struct TestIdp {
    entity_id: String,
    key: PKey<Private>,
    cert: X509,
}

impl std::fmt::Debug for TestIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIdp")
            .field("entity_id", &self.entity_id)
            .finish_non_exhaustive()
    }
}

impl TestIdp {
    /// Generates an RSA-2048 key and a self-signed certificate (CN = the entity ID's host
    /// part is not needed: the SP pins the key from metadata; valid for ten years).
    pub fn generate(entity_id: &str) -> Result<Self, SignerError> {
        let rsa = Rsa::generate(2048)?;
        let key = PKey::from_rsa(rsa)?;
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_text("CN", "samlgate development IdP")?;
        let name = name.build();
        let mut builder = X509::builder()?;
        builder.set_version(2)?;
        let mut serial = BigNum::new()?;
        serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
        let serial = serial.to_asn1_integer()?;
        builder.set_serial_number(&serial)?;
        builder.set_subject_name(&name)?;
        builder.set_issuer_name(&name)?;
        builder.set_pubkey(&key)?;
        let not_before = Asn1Time::days_from_now(0)?;
        let not_after = Asn1Time::days_from_now(3650)?;
        builder.set_not_before(&not_before)?;
        builder.set_not_after(&not_after)?;
        builder.sign(&key, MessageDigest::sha256())?;
        Ok(Self {
            entity_id: entity_id.to_string(),
            key,
            cert: builder.build(),
        })
    }

    /// Rebuilds an IdP from a saved key and certificate (PEM), e.g. across processes.
    pub fn from_pem(entity_id: &str, key_pem: &[u8], cert_pem: &[u8]) -> Result<Self, SignerError> {
        Ok(Self {
            entity_id: entity_id.to_string(),
            key: PKey::private_key_from_pem(key_pem)?,
            cert: X509::from_pem(cert_pem)?,
        })
    }

    /// The IdP entity ID (the Issuer of every Response).
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    /// The signing certificate, DER.
    pub fn cert_der(&self) -> Result<Vec<u8>, SignerError> {
        Ok(self.cert.to_der()?)
    }

    /// The signing certificate, PEM.
    pub fn cert_pem(&self) -> Result<String, SignerError> {
        Ok(String::from_utf8_lossy(&self.cert.to_pem()?).into_owned())
    }

    /// The private key, PKCS#8 PEM (tests that need an SP key pair can reuse a TestIdp).
    pub fn key_pem(&self) -> Result<String, SignerError> {
        Ok(String::from_utf8_lossy(&self.key.private_key_to_pem_pkcs8()?).into_owned())
    }

    fn cert_base64(&self) -> Result<String, SignerError> {
        Ok(STANDARD.encode(self.cert.to_der()?))
    }

    /// IdP metadata (SAML metadata §2.4.3): entity ID, one `use="signing"` KeyDescriptor, the
    /// SSO service (HTTP-Redirect) and, when given, the SLO service (HTTP-Redirect).
    pub fn metadata_xml(
        &self,
        sso_url: &str,
        slo_url: Option<&str>,
    ) -> Result<String, SignerError> {
        let slo = slo_url
            .map(|u| {
                format!(
                    r#"<md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{}"/>"#,
                    xml_escape(u)
                )
            })
            .unwrap_or_default();
        Ok(format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{entity}">
  <md:IDPSSODescriptor WantAuthnRequestsSigned="false" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    {slo}
    <md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{sso}"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>
"#,
            entity = xml_escape(&self.entity_id),
            cert = self.cert_base64()?,
            sso = xml_escape(sso_url),
        ))
    }

    /// An enveloped-signature template (XML-DSig §4) for the element with `ID="{ref_id}"`:
    /// exclusive C14N, `Reference URI="#ref_id"`, enveloped-signature + exc-C14N transforms,
    /// the certificate in KeyInfo. Insert it as a child of that element, then `sign_document`.
    pub fn signature_template(
        &self,
        ref_id: &str,
        algorithm: SignAlgorithm,
    ) -> Result<String, SignerError> {
        Ok(format!(
            concat!(
                r#"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo>"#,
                r#"<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>"#,
                r#"<ds:SignatureMethod Algorithm="{sig}"/>"#,
                r##"<ds:Reference URI="#{id}"><ds:Transforms>"##,
                r#"<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>"#,
                r#"<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>"#,
                r#"</ds:Transforms><ds:DigestMethod Algorithm="{dig}"/><ds:DigestValue></ds:DigestValue>"#,
                r#"</ds:Reference></ds:SignedInfo><ds:SignatureValue></ds:SignatureValue>"#,
                r#"<ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>"#,
                r#"</ds:Signature>"#
            ),
            sig = algorithm.signature_uri(),
            id = xml_escape(ref_id),
            dig = algorithm.digest_uri(),
            cert = self.cert_base64()?,
        ))
    }

    /// Signs the first `ds:Signature` template of `xml` (in document order) with this IdP's
    /// key through xmlsec; `ID` attributes are registered as XML IDs first.
    pub fn sign_document(&self, xml: &str) -> Result<String, SignerError> {
        let der = self.key.rsa()?.private_key_to_der()?;
        Crypto::sign_xml(xml, &der).map_err(|e| SignerError::Sign(e.to_string()))
    }

    /// The Assertion element (SAML core §2.3.3), unsigned, with a signature template right
    /// after its Issuer when `with_template`.
    fn assertion_xml(
        &self,
        spec: &ResponseSpec,
        with_template: bool,
    ) -> Result<String, SignerError> {
        let issuer = xml_escape(spec.issuer.as_deref().unwrap_or(&self.entity_id));
        let mut a = String::with_capacity(4096);
        a.push_str(&format!(
            r#"<saml:Assertion xmlns:saml="{NS_SAML}" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ID="{}" IssueInstant="{}" Version="2.0">"#,
            xml_escape(&spec.assertion_id),
            instant(spec.issue_instant)
        ));
        a.push_str(&format!("<saml:Issuer>{issuer}</saml:Issuer>"));
        if with_template {
            a.push_str(&self.signature_template(&spec.assertion_id, spec.algorithm)?);
        }
        // Subject (SAML core §2.4) with a bearer SubjectConfirmation (profiles §4.1.4.2).
        a.push_str("<saml:Subject><saml:NameID");
        if let Some(f) = &spec.name_id_format {
            a.push_str(&format!(r#" Format="{}""#, xml_escape(f)));
        }
        if let Some((nq, spnq)) = &spec.name_qualifiers {
            a.push_str(&format!(
                r#" NameQualifier="{}" SPNameQualifier="{}""#,
                xml_escape(nq),
                xml_escape(spnq)
            ));
        }
        a.push_str(&format!(">{}</saml:NameID>", xml_escape(&spec.name_id)));
        a.push_str(r#"<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData"#);
        if let Some(irt) = &spec.in_response_to {
            a.push_str(&format!(r#" InResponseTo="{}""#, xml_escape(irt)));
        }
        if let Some(t) = spec.subject_not_on_or_after {
            a.push_str(&format!(r#" NotOnOrAfter="{}""#, instant(t)));
        }
        if let Some(r) = &spec.recipient {
            a.push_str(&format!(r#" Recipient="{}""#, xml_escape(r)));
        }
        a.push_str("/></saml:SubjectConfirmation></saml:Subject>");
        // Conditions (SAML core §2.5).
        if spec.conditions {
            a.push_str("<saml:Conditions");
            if let Some(t) = spec.not_before {
                a.push_str(&format!(r#" NotBefore="{}""#, instant(t)));
            }
            if let Some(t) = spec.not_on_or_after {
                a.push_str(&format!(r#" NotOnOrAfter="{}""#, instant(t)));
            }
            a.push('>');
            if !spec.audiences.is_empty() {
                a.push_str("<saml:AudienceRestriction>");
                for aud in &spec.audiences {
                    a.push_str(&format!(
                        "<saml:Audience>{}</saml:Audience>",
                        xml_escape(aud)
                    ));
                }
                a.push_str("</saml:AudienceRestriction>");
            }
            a.push_str("</saml:Conditions>");
        }
        // AuthnStatement (SAML core §2.7.2).
        if spec.authn_statement {
            a.push_str(&format!(
                r#"<saml:AuthnStatement AuthnInstant="{}""#,
                instant(spec.issue_instant)
            ));
            if let Some(si) = &spec.session_index {
                a.push_str(&format!(r#" SessionIndex="{}""#, xml_escape(si)));
            }
            if let Some(t) = spec.session_not_on_or_after {
                a.push_str(&format!(r#" SessionNotOnOrAfter="{}""#, instant(t)));
            }
            a.push_str("><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>");
        }
        // AttributeStatement (SAML core §2.7.3).
        if !spec.attributes.is_empty() {
            a.push_str("<saml:AttributeStatement>");
            for (name, values) in &spec.attributes {
                a.push_str(&format!(
                    r#"<saml:Attribute Name="{}" NameFormat="urn:oasis:names:tc:SAML:2.0:attrname-format:basic">"#,
                    xml_escape(name)
                ));
                for v in values {
                    a.push_str(&format!(
                        r#"<saml:AttributeValue xsi:type="xs:string">{}</saml:AttributeValue>"#,
                        xml_escape(v)
                    ));
                }
                a.push_str("</saml:Attribute>");
            }
            a.push_str("</saml:AttributeStatement>");
        }
        a.push_str("</saml:Assertion>");
        Ok(a)
    }

    /// A complete SAML 2.0 Response (SAML core §3.3.3 / §3.2.2) per `spec`, signed per
    /// `spec.sign` and, when `spec.encrypt_to_pem` is set, with the Assertion encrypted.
    pub fn response_xml(&self, spec: &ResponseSpec) -> Result<String, SignerError> {
        let sign_assertion = matches!(spec.sign, SignMode::Assertion | SignMode::Both);
        let sign_response = matches!(spec.sign, SignMode::Response | SignMode::Both);

        let mut assertion = self.assertion_xml(spec, sign_assertion)?;
        if sign_assertion {
            assertion = strip_xml_declaration(&self.sign_document(&assertion)?).to_string();
        }
        if let Some(pem) = &spec.encrypt_to_pem {
            assertion = encrypt_element(&assertion, "EncryptedAssertion", pem)?;
        }

        let issuer = xml_escape(spec.issuer.as_deref().unwrap_or(&self.entity_id));
        let mut r = String::with_capacity(assertion.len() + 2048);
        r.push_str(&format!(
            r#"<samlp:Response xmlns:samlp="{NS_SAMLP}" xmlns:saml="{NS_SAML}" ID="{}" Version="2.0" IssueInstant="{}""#,
            xml_escape(&spec.response_id),
            instant(spec.issue_instant)
        ));
        if let Some(d) = &spec.destination {
            r.push_str(&format!(r#" Destination="{}""#, xml_escape(d)));
        }
        if let Some(irt) = &spec.in_response_to {
            r.push_str(&format!(r#" InResponseTo="{}""#, xml_escape(irt)));
        }
        r.push('>');
        r.push_str(&format!("<saml:Issuer>{issuer}</saml:Issuer>"));
        if sign_response {
            r.push_str(&self.signature_template(&spec.response_id, spec.algorithm)?);
        }
        r.push_str(&format!(
            r#"<samlp:Status><samlp:StatusCode Value="{}"/></samlp:Status>"#,
            xml_escape(&spec.status)
        ));
        r.push_str(&assertion);
        r.push_str("</samlp:Response>");
        if sign_response {
            // The Response template precedes the Assertion in document order, so it is the
            // first Signature xmlsec finds; the Assertion's signature is already final.
            r = self.sign_document(&r)?;
        }
        Ok(r)
    }

    /// `response_xml` as a `SAMLResponse` form value.
    pub fn response_form_value(&self, spec: &ResponseSpec) -> Result<String, SignerError> {
        Ok(to_form_value(&self.response_xml(spec)?))
    }
}

/// Drops a leading `<?xml ...?>` declaration (libxml2 adds one when it serializes).
pub fn strip_xml_declaration(xml: &str) -> &str {
    let t = xml.trim_start();
    if t.starts_with("<?xml")
        && let Some(end) = t.find("?>")
    {
        return t[end + 2..].trim_start();
    }
    t
}

/// `<saml:EncryptedID>` hiding the NameID element `name_id_xml` from everyone but the holder of
/// the key of `sp_cert_pem` (SAML core §2.2.4), as a LogoutRequest may carry it.
pub fn encrypted_id(name_id_xml: &str, sp_cert_pem: &str) -> Result<String, SignerError> {
    encrypt_element(name_id_xml, "EncryptedID", sp_cert_pem)
}

/// Encrypts an element to an SP certificate inside `<saml:{wrapper}>` (XML Encryption 1.0
/// §3.5.1 / SAML core §2.3.4): AES-128-CBC content encryption, RSA-OAEP-MGF1P (SHA-1) key
/// transport.
fn encrypt_element(element: &str, wrapper: &str, sp_cert_pem: &str) -> Result<String, SignerError> {
    let cert = X509::from_pem(sp_cert_pem.as_bytes())?;
    let rsa = cert.public_key()?.rsa()?;
    let key: [u8; 16] = rand::random();
    let iv: [u8; 16] = rand::random();
    // PKCS#7 padding is one valid instance of XML Encryption's padding (§5.2.1).
    let mut data = iv.to_vec();
    data.extend(encrypt(
        Cipher::aes_128_cbc(),
        &key,
        Some(&iv),
        element.as_bytes(),
    )?);
    let mut wrapped = vec![0u8; rsa.size() as usize];
    let n = rsa.public_encrypt(&key, &mut wrapped, Padding::PKCS1_OAEP)?;
    wrapped.truncate(n);
    Ok(format!(
        concat!(
            r#"<saml:{wrapper}><xenc:EncryptedData xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" Type="http://www.w3.org/2001/04/xmlenc#Element">"#,
            r#"<xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>"#,
            r#"<ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><xenc:EncryptedKey>"#,
            r#"<xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"><ds:DigestMethod Algorithm="http://www.w3.org/2000/09/xmldsig#sha1"/></xenc:EncryptionMethod>"#,
            r#"<xenc:CipherData><xenc:CipherValue>{key}</xenc:CipherValue></xenc:CipherData></xenc:EncryptedKey></ds:KeyInfo>"#,
            r#"<xenc:CipherData><xenc:CipherValue>{data}</xenc:CipherValue></xenc:CipherData></xenc:EncryptedData></saml:{wrapper}>"#
        ),
        key = STANDARD.encode(&wrapped),
        data = STANDARD.encode(&data),
        wrapper = wrapper,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_assertion_response_and_both() {
        let idp = TestIdp::generate("https://idp.example.com").expect("test");
        for sign in [SignMode::Assertion, SignMode::Response, SignMode::Both] {
            let spec = ResponseSpec {
                sign,
                ..ResponseSpec::default()
            };
            let xml = idp.response_xml(&spec).expect("test");
            let doc = roxmltree::Document::parse(&xml).expect("test");
            let sigs = doc
                .descendants()
                .filter(|n| n.tag_name().name() == "SignatureValue")
                .filter(|n| !n.text().unwrap_or("").trim().is_empty())
                .count();
            let want = if sign == SignMode::Both { 2 } else { 1 };
            assert_eq!(sigs, want, "{sign:?}");
        }
    }
}
