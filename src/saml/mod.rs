//! Saml: the Service Provider — login redirects out, Responses in, `Identity` out. The only
//! user of samael, and only for its xmlsec primitives (signature verification).
//!
//! `verify` runs, in order: the strict pre-parse and structure checks of [`harden`] → xmlsec
//! signature verification against the pinned IdP keys with the configured algorithms (S3) →
//! decryption of an EncryptedAssertion and verification of the decrypted Assertion (S10) →
//! the protocol checks of SAML profiles §4.1.4.2 / core §2.5, §3.2.2 against an injected `now`
//! (S5, S6, S9). Every field is read by us, with roxmltree, from the XML that xmlsec verified
//! (never from the unsigned rest of the message), so all decisions rest on signed content.

pub mod fetch;
pub mod harden;
pub mod logout;
pub mod metadata;

mod decrypt;
mod request;
pub mod xmlsec_guard;

use std::path::{Path, PathBuf};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use roxmltree::{Document, Node};
use samael::crypto::{
    AllowedSignatureAlgorithm, CertificateDer, Crypto, CryptoProvider, ReduceMode,
};

use crate::config::{AttributeMap, IdpMetadataSource, SamlConfig, SignatureAlgorithm};
use crate::identity::Identity;
use harden::{
    HardenError, Inspected, Limits, NS_SAML, NS_SAMLP, StructurePolicy, child, is, text_of,
};
pub use logout::{IdpLogoutRequest, IdpLogoutResponse, LogoutError, SloBinding, SloMessage};
pub use metadata::{IdpMetadata, MetadataError};
pub use request::{LoginRequest, RequestError, redirect_binding_url, request_id};

/// Top-level status meaning success (SAML core §3.2.2.2).
pub const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
/// Bearer subject confirmation method (SAML profiles §3.3).
pub const CM_BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
/// Email-address NameID format (SAML core §8.3.2).
pub const NAMEID_EMAIL: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";

/// Escapes text for XML character data and attribute values: the escaping of the HTML pages
/// (`&#39;` for an apostrophe is a character reference in XML as in HTML).
pub fn xml_escape(s: &str) -> String {
    crate::pages::escape(s)
}

/// How the verified XML is cut out of the document by samael (S13).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduce {
    /// xmlsec's pre-digest bytes of the one verified reference (the Response when it is
    /// signed): linear cost, and exactly what was hashed. The default.
    #[default]
    PreDigest,
    /// samael's default "validate and mark, no ancestors" pruning of the parsed document.
    /// Kept for comparison in the tests; quadratic in large attribute lists.
    Marked,
}

/// Everything `verify` enforces. `from_config` gives the production policy; the test-only
/// relaxations (`require_audience`, `allow_advice_assertions`) are not in the config and
/// default to strict.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Our entity ID: the Audience the assertion must name.
    pub entity_id: String,
    /// Our ACS URL: Destination and Recipient must equal it.
    pub acs_url: String,
    /// Our SLO URL (metadata).
    pub slo_url: String,
    /// Accept responses without InResponseTo.
    pub allow_idp_initiated: bool,
    /// Tolerance for the IdP's clock.
    pub clock_skew: StdDuration,
    /// Oldest IssueInstant accepted: `now - max_issue_age - clock_skew`.
    pub max_issue_age: StdDuration,
    /// Signature algorithms accepted; SHA-1 only when `RsaSha1` is listed.
    pub allowed_algorithms: Vec<SignatureAlgorithm>,
    /// Largest accepted `SAMLResponse` form value, in bytes.
    pub max_response_bytes: usize,
    /// Attribute names for the identity fields.
    pub attributes: AttributeMap,
    /// NameID format requested in AuthnRequests.
    pub name_id_format: Option<String>,
    /// Ask the IdP to re-authenticate (`ForceAuthn`).
    pub force_authn: bool,
    /// Require Conditions with an AudienceRestriction naming us (test relaxation: `false`).
    pub require_audience: bool,
    /// Accept Assertions inside `saml:Advice` (test relaxation: `true`); identity never comes
    /// from them.
    pub allow_advice_assertions: bool,
    /// How samael reduces the verified document.
    pub reduce: Reduce,
    /// Size caps of the strict parse.
    pub limits: Limits,
}

impl Policy {
    /// A strict policy for an SP with this entity ID and ACS URL (90 s skew, 5 min issue age,
    /// SHA-256+ only, the default attribute names).
    pub fn new(entity_id: &str, acs_url: &str) -> Self {
        let max_response_bytes = 262_144;
        Self {
            entity_id: entity_id.to_string(),
            acs_url: acs_url.to_string(),
            slo_url: acs_url.replace("/saml/acs", "/saml/logout"),
            allow_idp_initiated: false,
            clock_skew: StdDuration::from_secs(90),
            max_issue_age: StdDuration::from_secs(300),
            allowed_algorithms: vec![
                SignatureAlgorithm::RsaSha256,
                SignatureAlgorithm::RsaSha384,
                SignatureAlgorithm::RsaSha512,
                SignatureAlgorithm::EcdsaSha256,
            ],
            max_response_bytes,
            attributes: AttributeMap {
                email: "email".into(),
                first_name: "firstName".into(),
                last_name: "lastName".into(),
                groups: "groups".into(),
            },
            name_id_format: None,
            force_authn: false,
            require_audience: true,
            allow_advice_assertions: false,
            reduce: Reduce::PreDigest,
            limits: Limits {
                max_decoded_bytes: decoded_cap(max_response_bytes),
                ..Limits::default()
            },
        }
    }

    /// The production policy of a `[saml]` section.
    pub fn from_config(cfg: &SamlConfig) -> Self {
        let mut p = Self::new(&cfg.entity_id, &cfg.acs_url);
        p.slo_url = cfg.slo_url.clone();
        p.allow_idp_initiated = cfg.allow_idp_initiated;
        p.clock_skew = cfg.clock_skew;
        p.max_issue_age = cfg.max_issue_age;
        p.allowed_algorithms = cfg.allowed_algorithms.clone();
        p.max_response_bytes = cfg.max_response_bytes;
        p.attributes = cfg.attributes.clone();
        p.name_id_format = cfg.name_id_format.clone();
        p.force_authn = cfg.force_authn;
        p.limits.max_decoded_bytes = decoded_cap(cfg.max_response_bytes);
        p
    }
}

/// The largest decoded response a `SAMLResponse` value of `max_response_bytes` can carry
/// (base64 is 4/3 of the decoded size).
fn decoded_cap(max_response_bytes: usize) -> usize {
    max_response_bytes / 4 * 3 + 3
}

/// Why a `Saml` could not be built (start-up, `samlgate check`).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A file named in `[saml]` could not be read.
    #[error("{key}: cannot read {path}: {source}")]
    Read {
        /// The config key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The IdP metadata was refused.
    #[error("saml.idp_metadata_file: {0}")]
    Metadata(#[from] MetadataError),
    /// The IdP metadata has no HTTP-Redirect SingleSignOnService.
    #[error(
        "saml.idp_metadata_file: the IdP has no SingleSignOnService with the HTTP-Redirect binding"
    )]
    NoSsoRedirect,
    /// The metadata comes from a URL: fetch it and use `from_config_with_metadata`.
    #[error(
        "saml.idp_metadata_url: the metadata must be fetched first (Saml::from_config_with_metadata)"
    )]
    MetadataNotFetched,
    /// The SP private key is not a PEM RSA key.
    #[error("saml.sp_key_file: not a PEM RSA private key")]
    SpKey,
    /// The SP certificate is not PEM, or does not match the key.
    #[error("saml.sp_cert_file: not a PEM certificate matching saml.sp_key_file")]
    SpCert,
}

/// Why a Response was refused. The app logs the variant; the browser sees a generic page.
/// No variant carries XML or a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The form value is larger than `max_response_bytes`.
    #[error("SAMLResponse larger than {limit} bytes")]
    TooLarge {
        /// The cap.
        limit: usize,
    },
    /// The strict pre-parse or structure checks failed.
    #[error("structure: {0}")]
    Structure(#[from] HardenError),
    /// No signature covers the assertion (neither it nor the Response is signed).
    #[error("the assertion is not signed")]
    Unsigned,
    /// xmlsec did not verify every signature with a pinned IdP key and an allowed algorithm.
    #[error("signature verification failed")]
    Signature,
    /// What xmlsec verified is not the element the structure checks found.
    #[error("the verified content is not the Response or its Assertion")]
    VerifiedMismatch,
    /// An EncryptedAssertion and no SP key configured.
    #[error("encrypted assertion but no SP key configured")]
    NoDecryptionKey,
    /// Any decryption failure (one error for all, no oracle).
    #[error("the encrypted assertion could not be decrypted")]
    Decryption,
    /// `Version` is not 2.0.
    #[error("not a SAML 2.0 message")]
    Version,
    /// An Issuer is missing or is not the IdP's entity ID.
    #[error("issuer is not the configured IdP")]
    Issuer,
    /// The top-level status is not Success.
    #[error("IdP status is not Success: {code}")]
    Status {
        /// The StatusCode URI (a SAML constant, not user data).
        code: String,
    },
    /// Destination differs from our ACS, or is missing on a signed Response.
    #[error("Destination is not our ACS URL")]
    Destination,
    /// InResponseTo does not name this browser's pending request.
    #[error("InResponseTo does not match the pending request")]
    InResponseTo,
    /// No InResponseTo and IdP-initiated login is off.
    #[error("unsolicited response and IdP-initiated login is disabled")]
    Unsolicited,
    /// Conditions are missing.
    #[error("assertion has no Conditions")]
    MissingConditions,
    /// No AudienceRestriction, or one that does not name our entity ID.
    #[error("audience restriction does not name this SP")]
    Audience,
    /// Conditions NotBefore is later than now + skew.
    #[error("assertion not yet valid")]
    NotYetValid,
    /// Conditions NotOnOrAfter has passed (beyond the skew).
    #[error("assertion expired")]
    Expired,
    /// No bearer SubjectConfirmation.
    #[error("no bearer subject confirmation")]
    NoBearer,
    /// The bearer SubjectConfirmationData Recipient is missing or is not our ACS.
    #[error("subject confirmation recipient is not our ACS URL")]
    Recipient,
    /// The bearer SubjectConfirmationData NotOnOrAfter is missing or has passed.
    #[error("subject confirmation expired")]
    SubjectExpired,
    /// The bearer SubjectConfirmationData NotBefore is in the future.
    #[error("subject confirmation not yet valid")]
    SubjectNotYetValid,
    /// IssueInstant later than now + skew.
    #[error("IssueInstant is in the future")]
    IssuedInFuture,
    /// IssueInstant older than max_issue_age + skew.
    #[error("IssueInstant is too old")]
    IssuedTooLongAgo,
    /// A timestamp that is not an xs:dateTime with a time zone.
    #[error("malformed timestamp in {field}")]
    MalformedTime {
        /// Element/attribute.
        field: &'static str,
    },
    /// No AuthnStatement.
    #[error("assertion has no AuthnStatement")]
    MissingAuthnStatement,
    /// SessionNotOnOrAfter has passed.
    #[error("IdP session already ended")]
    SessionEnded,
    /// No NameID (or only an EncryptedID, which we do not accept).
    #[error("assertion has no NameID")]
    MissingNameId,
    /// Two Attributes with the same Name.
    #[error("duplicate attribute name")]
    DuplicateAttribute,
    /// A required ID attribute is missing.
    #[error("missing ID")]
    MissingId,
}

/// One SAML attribute as sent (values trimmed, in document order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    /// `Name`.
    pub name: String,
    /// `FriendlyName`, when sent.
    pub friendly_name: Option<String>,
    /// The values' text (an AttributeValue holding elements gives their text).
    pub values: Vec<String>,
}

/// A verified login: what the Response asserted, and the Identity built from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Response `ID` (replay cache key).
    pub response_id: String,
    /// Assertion `ID` (replay cache key).
    pub assertion_id: String,
    /// The IdP entity ID.
    pub issuer: String,
    /// NameID, trimmed.
    pub name_id: String,
    /// NameID `Format`.
    pub name_id_format: Option<String>,
    /// AuthnStatement `SessionIndex`.
    pub session_index: Option<String>,
    /// AuthnStatement `SessionNotOnOrAfter`: cap the session there.
    pub session_not_on_or_after: Option<DateTime<Utc>>,
    /// Keep the IDs in the replay cache until this instant: the earliest of the Conditions and
    /// bearer NotOnOrAfter and IssueInstant + max_issue_age, plus the skew — after it, `verify`
    /// itself refuses the response.
    pub replay_expires_at: DateTime<Utc>,
    /// The request this answers; `None` for IdP-initiated logins.
    pub in_response_to: Option<String>,
    /// Every attribute of the Assertion's AttributeStatements.
    pub attributes: Vec<Attribute>,
    /// The identity per `[saml.attributes]`.
    pub identity: Identity,
}

/// The Service Provider: IdP trust, SP keys and policy, built once at start-up.
pub struct Saml {
    policy: Policy,
    idp: IdpMetadata,
    certs: Vec<CertificateDer>,
    samael_algorithms: Option<Vec<AllowedSignatureAlgorithm>>,
    sp_key: Option<PKey<Private>>,
    sp_cert_der: Option<Vec<u8>>,
}

impl std::fmt::Debug for Saml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saml")
            .field("policy", &self.policy)
            .field("idp", &self.idp.entity_id)
            .field("sp_key", &self.sp_key.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|source| SetupError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

/// Our SP metadata for `[saml]` without the IdP's metadata (it depends only on our own
/// entity ID, endpoints and certificate): served even before URL metadata is fetched.
pub fn sp_metadata_from_config(cfg: &SamlConfig) -> Result<String, SetupError> {
    let cert_der = cfg
        .sp_cert_file
        .as_deref()
        .map(|p| {
            let pem = read("saml.sp_cert_file", p)?;
            X509::from_pem(&pem)
                .and_then(|c| c.to_der())
                .map_err(|_| SetupError::SpCert)
        })
        .transpose()?;
    Ok(metadata::sp_metadata_xml(
        &cfg.entity_id,
        &cfg.acs_url,
        &cfg.slo_url,
        cert_der.as_deref(),
    ))
}

impl Saml {
    /// Builds the SP from `[saml]`, reading the IdP metadata file and the SP key/cert files.
    pub fn from_config(cfg: &SamlConfig) -> Result<Self, SetupError> {
        let IdpMetadataSource::File(path) = &cfg.idp_metadata else {
            return Err(SetupError::MetadataNotFetched);
        };
        let xml = read("saml.idp_metadata_file", path)?;
        let saml = Self::from_config_with_metadata(cfg, &String::from_utf8_lossy(&xml))?;
        // Refused as a fetched copy would be (SAML metadata §2.3.1): an expired file is stale,
        // and the IdP may have rolled its keys since.
        saml.idp().check_valid_at(chrono::Utc::now())?;
        Ok(saml)
    }

    /// Builds the SP from `[saml]` with IdP metadata already in hand (fetched from a URL).
    pub fn from_config_with_metadata(
        cfg: &SamlConfig,
        idp_metadata_xml: &str,
    ) -> Result<Self, SetupError> {
        let idp = IdpMetadata::parse(idp_metadata_xml)?;
        if idp.sso_redirect.is_none() {
            return Err(SetupError::NoSsoRedirect);
        }
        let key = cfg
            .sp_key_file
            .as_deref()
            .map(|p| read("saml.sp_key_file", p))
            .transpose()?;
        let cert = cfg
            .sp_cert_file
            .as_deref()
            .map(|p| read("saml.sp_cert_file", p))
            .transpose()?;
        Self::new(
            Policy::from_config(cfg),
            idp,
            key.as_deref(),
            cert.as_deref(),
        )
    }

    /// Builds the SP from parts (tests, the demo). The SP key (PEM, RSA) decrypts and signs;
    /// the SP certificate (PEM) is published in our metadata and must match the key.
    pub fn new(
        policy: Policy,
        idp: IdpMetadata,
        sp_key_pem: Option<&[u8]>,
        sp_cert_pem: Option<&[u8]>,
    ) -> Result<Self, SetupError> {
        xmlsec_guard::install();
        // S1: IdpMetadata::parse refuses metadata without a signing certificate; a hand-built
        // IdpMetadata must not slip past that either.
        if idp.signing_certs.is_empty() {
            return Err(SetupError::Metadata(MetadataError::NoSigningCertificate));
        }
        let sp_key = sp_key_pem
            .map(|pem| {
                let key = PKey::private_key_from_pem(pem).map_err(|_| SetupError::SpKey)?;
                key.rsa().map_err(|_| SetupError::SpKey)?;
                Ok::<_, SetupError>(key)
            })
            .transpose()?;
        let sp_cert_der = sp_cert_pem
            .map(|pem| {
                let cert = X509::from_pem(pem).map_err(|_| SetupError::SpCert)?;
                if let Some(key) = &sp_key {
                    let public = cert.public_key().map_err(|_| SetupError::SpCert)?;
                    if !public.public_eq(key) {
                        return Err(SetupError::SpCert);
                    }
                }
                cert.to_der().map_err(|_| SetupError::SpCert)
            })
            .transpose()?;
        let certs = idp
            .signing_certs
            .iter()
            .cloned()
            .map(CertificateDer::from)
            .collect();
        Ok(Self {
            samael_algorithms: samael_algorithms(&policy.allowed_algorithms),
            policy,
            idp,
            certs,
            sp_key,
            sp_cert_der,
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The IdP's metadata as parsed.
    pub fn idp(&self) -> &IdpMetadata {
        &self.idp
    }

    /// Our SP metadata XML for this policy and certificate. The gateway and `samlgate
    /// metadata` serve the same document from [`sp_metadata_from_config`], which needs no IdP.
    pub fn metadata_xml(&self) -> String {
        metadata::sp_metadata_xml(
            &self.policy.entity_id,
            &self.policy.acs_url,
            &self.policy.slo_url,
            self.sp_cert_der.as_deref(),
        )
    }

    /// Starts an SP-initiated login: a fresh AuthnRequest ID (128 random bits, S14) and the
    /// HTTP-Redirect URL to the IdP's SSO service (signed when an SP key is configured).
    pub fn login_request(&self, relay_state: &str) -> Result<LoginRequest, request::RequestError> {
        request::login_request(self, relay_state, Utc::now())
    }

    /// Like [`Saml::login_request`] with a caller-chosen request ID (from
    /// [`request_id`]), so the pending login can be stored before the redirect is built.
    pub fn login_request_with_id(
        &self,
        request_id: String,
        relay_state: &str,
    ) -> Result<LoginRequest, request::RequestError> {
        request::login_request_with_id(self, request_id, relay_state, Utc::now())
    }

    /// Verifies a `SAMLResponse` form value (HTTP-POST binding) at instant `now`. `pending` is
    /// the ID of this browser's outstanding AuthnRequest, if any. Synchronous and CPU-bound;
    /// run it in `spawn_blocking` behind `catch_unwind` (xmlsec is C).
    pub fn verify(
        &self,
        saml_response: &str,
        pending: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Verified, Error> {
        if saml_response.len() > self.policy.max_response_bytes {
            return Err(Error::TooLarge {
                limit: self.policy.max_response_bytes,
            });
        }
        let bytes = harden::decode_form_value(saml_response, self.policy.limits.max_decoded_bytes)?;
        self.verify_xml(&bytes, pending, now)
    }

    fn structure_policy(&self) -> StructurePolicy<'_> {
        StructurePolicy {
            allow_advice_assertions: self.policy.allow_advice_assertions,
            algorithms: &self.policy.allowed_algorithms,
            limits: &self.policy.limits,
        }
    }

    /// Runs xmlsec over `text` (every Signature must verify with a pinned key) and returns the
    /// verified XML.
    fn reduce(&self, text: &str, insp: &Inspected) -> Result<String, Error> {
        // PreDigest yields one result: the Response's when it is signed, else the only
        // reference. With signed Advice Assertions and an unsigned Response there are several
        // non-Response references, which only the marking mode can combine.
        let several = !insp.response_signed
            && usize::from(insp.assertion_signed) + insp.advice_signatures > 1;
        let mode = match self.policy.reduce {
            Reduce::PreDigest if !several => ReduceMode::PreDigest,
            _ => ReduceMode::ValidateAndMarkNoAncestors,
        };
        Crypto::reduce_xml_to_signed_with_allowed_algorithms(
            text,
            &self.certs,
            mode,
            self.samael_algorithms.as_deref(),
        )
        .map_err(|_| Error::Signature)
    }

    /// `verify` on decoded XML bytes.
    pub fn verify_xml(
        &self,
        bytes: &[u8],
        pending: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Verified, Error> {
        let sp = self.structure_policy();
        let text = harden::utf8_document(bytes, sp.limits)?;
        let doc = harden::parse_strict(text, sp.limits)?;
        let insp = harden::inspect_document(&doc, text, &sp)?;
        let any_signature =
            insp.response_signed || insp.assertion_signed || insp.advice_signatures > 0;

        let verified_text = if any_signature {
            Some(self.reduce(text, &insp)?)
        } else {
            None
        };
        let verified_doc = match &verified_text {
            Some(v) => Some(
                Document::parse(harden::strip_declaration(v))
                    .map_err(|_| Error::VerifiedMismatch)?,
            ),
            None => None,
        };
        let verified_root = verified_doc.as_ref().map(|d| d.root_element());

        // The signed Response, when there is one; else the unsigned original (its fields are
        // then only compared, never trusted for identity).
        let signed_response = match verified_root {
            Some(r) if is(r, NS_SAMLP, "Response") => {
                if r.attribute("ID") != Some(insp.response_id.as_str()) {
                    return Err(Error::VerifiedMismatch);
                }
                Some(r)
            }
            _ if insp.response_signed => return Err(Error::VerifiedMismatch),
            _ => None,
        };
        let response = signed_response.unwrap_or_else(|| doc.root_element());

        if insp.encrypted_range.is_none() {
            let assertion = match (signed_response, verified_root) {
                (Some(r), _) => top_assertion(r).ok_or(Error::VerifiedMismatch)?,
                (None, Some(a)) if is(a, NS_SAML, "Assertion") => a,
                (None, Some(_)) => return Err(Error::VerifiedMismatch),
                (None, None) => return Err(Error::Unsigned),
            };
            if assertion.attribute("ID") != insp.assertion_id.as_deref() {
                return Err(Error::VerifiedMismatch);
            }
            return self.check(
                response,
                signed_response.is_some(),
                false,
                assertion,
                pending,
                now,
            );
        }

        // S10: decrypt, then verify the decrypted Assertion's own signature (if any).
        let key = self.sp_key.as_ref().ok_or(Error::NoDecryptionKey)?;
        let enc = top_assertion(response).ok_or(Error::VerifiedMismatch)?;
        let plaintext = decrypt::decrypt_element(enc, key).map_err(|_| Error::Decryption)?;
        let plaintext = harden::strip_declaration(&plaintext);
        // Splice the plaintext in place of the EncryptedAssertion (so it keeps the Response's
        // namespace context) and drop the Response signature, which no longer applies (it was
        // verified above over the ciphertext).
        let spliced = splice(text, &insp, plaintext)?;
        let spliced_doc =
            harden::parse_strict(&spliced, sp.limits).map_err(|_| Error::Decryption)?;
        let insp2 = harden::inspect_document(&spliced_doc, &spliced, &sp)?;
        let assertion_verified = if insp2.assertion_signed || insp2.advice_signatures > 0 {
            Some(self.reduce(&spliced, &insp2)?)
        } else {
            None
        };
        let assertion_doc = match &assertion_verified {
            Some(v) => Some(
                Document::parse(harden::strip_declaration(v))
                    .map_err(|_| Error::VerifiedMismatch)?,
            ),
            None => None,
        };
        let assertion = match assertion_doc.as_ref().map(|d| d.root_element()) {
            Some(a) if is(a, NS_SAML, "Assertion") => a,
            Some(_) => return Err(Error::VerifiedMismatch),
            // Unsigned inside, but the ciphertext was covered by the Response signature.
            None if signed_response.is_some() => {
                top_assertion(spliced_doc.root_element()).ok_or(Error::VerifiedMismatch)?
            }
            None => return Err(Error::Unsigned),
        };
        if assertion.attribute("ID") != insp2.assertion_id.as_deref() {
            return Err(Error::VerifiedMismatch);
        }
        self.check(
            response,
            signed_response.is_some(),
            true,
            assertion,
            pending,
            now,
        )
    }

    /// The protocol checks (SAML profiles §4.1.4.2–3, core §2.5, §3.2.2) and the extraction.
    fn check(
        &self,
        response: Node<'_, '_>,
        response_signed: bool,
        encrypted: bool,
        assertion: Node<'_, '_>,
        pending: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Verified, Error> {
        let p = &self.policy;
        let skew = to_chrono(p.clock_skew);
        let max_age = to_chrono(p.max_issue_age);

        // Response (SAML core §3.2.2).
        if response.attribute("Version") != Some("2.0")
            || assertion.attribute("Version") != Some("2.0")
        {
            return Err(Error::Version);
        }
        let response_id = response
            .attribute("ID")
            .ok_or(Error::MissingId)?
            .to_string();
        match child(response, NS_SAML, "Issuer") {
            Some(i) if text_of(i) == self.idp.entity_id => {}
            Some(_) => return Err(Error::Issuer),
            // Profiles §4.1.4.2: required on a signed Response or with an encrypted assertion.
            None if response_signed || encrypted => return Err(Error::Issuer),
            None => {}
        }
        let code = child(response, NS_SAMLP, "Status")
            .and_then(|s| child(s, NS_SAMLP, "StatusCode"))
            .and_then(|c| c.attribute("Value"))
            .unwrap_or("");
        if code != STATUS_SUCCESS {
            return Err(Error::Status {
                code: code.chars().take(100).collect(),
            });
        }
        match response.attribute("Destination") {
            Some(d) if d == p.acs_url => {}
            Some(_) => return Err(Error::Destination),
            None if response_signed => return Err(Error::Destination),
            None => {}
        }
        let response_issued = time(response.attribute("IssueInstant"), "Response IssueInstant")?;
        check_issue_instant(response_issued, now, skew, max_age)?;

        // Assertion (SAML core §2.3.3).
        let assertion_id = assertion
            .attribute("ID")
            .ok_or(Error::MissingId)?
            .to_string();
        match child(assertion, NS_SAML, "Issuer") {
            Some(i) if text_of(i) == self.idp.entity_id => {}
            _ => return Err(Error::Issuer),
        }
        let issued = time(
            assertion.attribute("IssueInstant"),
            "Assertion IssueInstant",
        )?;
        check_issue_instant(issued, now, skew, max_age)?;
        let mut deadline = issued.min(response_issued) + max_age;

        let subject = child(assertion, NS_SAML, "Subject").ok_or(Error::MissingNameId)?;
        let name_id_node = child(subject, NS_SAML, "NameID").ok_or(Error::MissingNameId)?;
        let name_id = text_of(name_id_node);
        if name_id.is_empty() {
            return Err(Error::MissingNameId);
        }

        // InResponseTo (S5): a present value must be this browser's pending request; only a
        // message without any is unsolicited. An unsigned Response's value is checked but proves
        // nothing: anyone can wrap a signed, unsolicited assertion in a Response that names
        // their own pending request, so then only the signed SubjectConfirmationData counts.
        let response_irt = response.attribute("InResponseTo");
        let irt_ok = |v: &str| pending == Some(v);
        if let Some(v) = response_irt
            && !irt_ok(v)
        {
            return Err(Error::InResponseTo);
        }

        // Bearer SubjectConfirmation (profiles §4.1.4.2): Recipient = ACS, NotOnOrAfter in the
        // future, InResponseTo = the request. The first one that satisfies everything counts.
        let mut first_error = Error::NoBearer;
        let mut confirmed: Option<(DateTime<Utc>, Option<&str>)> = None;
        for sc in subject
            .children()
            .filter(|c| is(*c, NS_SAML, "SubjectConfirmation"))
        {
            if sc.attribute("Method") != Some(CM_BEARER) {
                continue;
            }
            match check_bearer(sc, p, pending, now, skew) {
                Ok(found) => {
                    confirmed = Some(found);
                    break;
                }
                Err(e) => {
                    if first_error == Error::NoBearer {
                        first_error = e;
                    }
                }
            }
        }
        let Some((scd_deadline, scd_irt)) = confirmed else {
            return Err(first_error);
        };
        deadline = deadline.min(scd_deadline);
        let in_response_to = match (response_irt.filter(|_| response_signed), scd_irt) {
            (None, None) => {
                if !p.allow_idp_initiated {
                    return Err(Error::Unsolicited);
                }
                None
            }
            (a, b) => a.or(b).map(str::to_string),
        };

        // Conditions (core §2.5.1).
        match child(assertion, NS_SAML, "Conditions") {
            Some(c) => {
                if let Some(nb) = c.attribute("NotBefore")
                    && time(Some(nb), "Conditions NotBefore")? > now + skew
                {
                    return Err(Error::NotYetValid);
                }
                if let Some(na) = c.attribute("NotOnOrAfter") {
                    let na = time(Some(na), "Conditions NotOnOrAfter")?;
                    if now >= na + skew {
                        return Err(Error::Expired);
                    }
                    deadline = deadline.min(na);
                }
                // §2.5.1.4: every AudienceRestriction must name us.
                let restrictions: Vec<_> = c
                    .children()
                    .filter(|r| is(*r, NS_SAML, "AudienceRestriction"))
                    .collect();
                if restrictions.is_empty() && p.require_audience {
                    return Err(Error::Audience);
                }
                for r in restrictions {
                    let ours = r
                        .children()
                        .filter(|a| is(*a, NS_SAML, "Audience"))
                        .any(|a| text_of(a) == p.entity_id);
                    if !ours {
                        return Err(Error::Audience);
                    }
                }
            }
            None if p.require_audience => return Err(Error::MissingConditions),
            None => {}
        }

        // AuthnStatement (profiles §4.1.4.2: at least one).
        let authn =
            child(assertion, NS_SAML, "AuthnStatement").ok_or(Error::MissingAuthnStatement)?;
        let session_index = authn.attribute("SessionIndex").map(str::to_string);
        let session_not_on_or_after = match authn.attribute("SessionNotOnOrAfter") {
            Some(s) => {
                let t = time(Some(s), "SessionNotOnOrAfter")?;
                if now >= t + skew {
                    return Err(Error::SessionEnded);
                }
                Some(t)
            }
            None => None,
        };

        let attributes = attributes(assertion)?;
        let name_id_format = name_id_node.attribute("Format").map(str::to_string);
        let identity = build_identity(
            name_id_node,
            &name_id,
            session_index.as_deref(),
            &attributes,
            &p.attributes,
        );
        Ok(Verified {
            response_id,
            assertion_id,
            issuer: self.idp.entity_id.clone(),
            name_id,
            name_id_format,
            session_index,
            session_not_on_or_after,
            replay_expires_at: (deadline + skew).max(now + Duration::seconds(1)),
            in_response_to,
            attributes,
            identity,
        })
    }
}

/// Checks one bearer SubjectConfirmation; returns its NotOnOrAfter and InResponseTo.
fn check_bearer<'a>(
    sc: Node<'a, '_>,
    p: &Policy,
    pending: Option<&str>,
    now: DateTime<Utc>,
    skew: Duration,
) -> Result<(DateTime<Utc>, Option<&'a str>), Error> {
    let scd = child(sc, NS_SAML, "SubjectConfirmationData").ok_or(Error::Recipient)?;
    if scd.attribute("Recipient") != Some(p.acs_url.as_str()) {
        return Err(Error::Recipient);
    }
    let noa = time(
        Some(scd.attribute("NotOnOrAfter").ok_or(Error::SubjectExpired)?),
        "SubjectConfirmationData NotOnOrAfter",
    )?;
    if now >= noa + skew {
        return Err(Error::SubjectExpired);
    }
    if let Some(nb) = scd.attribute("NotBefore")
        && time(Some(nb), "SubjectConfirmationData NotBefore")? > now + skew
    {
        return Err(Error::SubjectNotYetValid);
    }
    let irt = scd.attribute("InResponseTo");
    if let Some(v) = irt
        && pending != Some(v)
    {
        return Err(Error::InResponseTo);
    }
    Ok((noa, irt))
}

fn check_issue_instant(
    t: DateTime<Utc>,
    now: DateTime<Utc>,
    skew: Duration,
    max_age: Duration,
) -> Result<(), Error> {
    if t > now + skew {
        return Err(Error::IssuedInFuture);
    }
    if t + max_age + skew < now {
        return Err(Error::IssuedTooLongAgo);
    }
    Ok(())
}

/// All attributes of the Assertion's own AttributeStatements; duplicate Names are refused (S9).
fn attributes(assertion: Node<'_, '_>) -> Result<Vec<Attribute>, Error> {
    let mut out: Vec<Attribute> = Vec::new();
    for stmt in assertion
        .children()
        .filter(|c| is(*c, NS_SAML, "AttributeStatement"))
    {
        for a in stmt.children().filter(|c| is(*c, NS_SAML, "Attribute")) {
            let name = a.attribute("Name").unwrap_or("").to_string();
            if out.iter().any(|o| o.name == name) {
                return Err(Error::DuplicateAttribute);
            }
            let values = a
                .children()
                .filter(|c| is(*c, NS_SAML, "AttributeValue"))
                .map(|v| {
                    v.descendants()
                        .filter(|d| d.is_text())
                        .filter_map(|d| d.text())
                        .collect::<String>()
                        .trim()
                        .to_string()
                })
                .collect();
            out.push(Attribute {
                name,
                friendly_name: a.attribute("FriendlyName").map(str::to_string),
                values,
            });
        }
    }
    Ok(out)
}

/// Finds the mapped attribute: by Name first, then by FriendlyName (deterministic).
fn mapped<'a>(attrs: &'a [Attribute], key: &str) -> Option<&'a Attribute> {
    attrs.iter().find(|a| a.name == key).or_else(|| {
        attrs
            .iter()
            .find(|a| a.friendly_name.as_deref() == Some(key))
    })
}

fn build_identity(
    name_id_node: Node<'_, '_>,
    name_id: &str,
    session_index: Option<&str>,
    attrs: &[Attribute],
    map: &AttributeMap,
) -> Identity {
    let format = name_id_node.attribute("Format");
    let first = |key: &str| {
        mapped(attrs, key)
            .and_then(|a| a.values.iter().find(|v| !v.is_empty()))
            .cloned()
    };
    let email = first(&map.email).or_else(|| {
        (format == Some(NAMEID_EMAIL) || crate::identity::looks_like_email(name_id))
            .then(|| name_id.to_string())
    });
    let mut groups: Vec<String> = Vec::new();
    if let Some(a) = mapped(attrs, &map.groups) {
        for v in &a.values {
            if !v.is_empty() && !groups.contains(v) {
                groups.push(v.clone());
            }
        }
    }
    Identity {
        subject: name_id.into(),
        name_id_format: format.map(Into::into),
        name_qualifier: name_id_node.attribute("NameQualifier").map(Into::into),
        sp_name_qualifier: name_id_node.attribute("SPNameQualifier").map(Into::into),
        session_index: session_index.map(Into::into),
        email: email.map(Into::into),
        first_name: first(&map.first_name).map(Into::into),
        last_name: first(&map.last_name).map(Into::into),
        groups: crate::identity::groups(groups),
        ..Identity::default()
    }
}

/// Replaces the EncryptedAssertion by `plaintext` and removes the Response's Signature.
fn splice(text: &str, insp: &Inspected, plaintext: &str) -> Result<String, Error> {
    let enc = insp.encrypted_range.clone().ok_or(Error::Decryption)?;
    let mut cuts = vec![(enc, plaintext)];
    if let Some(sig) = insp.response_signature_range.clone() {
        cuts.push((sig, ""));
    }
    cuts.sort_by_key(|(r, _)| r.start);
    let mut out = String::with_capacity(text.len() + plaintext.len());
    let mut at = 0;
    for (r, with) in cuts {
        out.push_str(text.get(at..r.start).ok_or(Error::Decryption)?);
        out.push_str(with);
        at = r.end;
    }
    out.push_str(text.get(at..).ok_or(Error::Decryption)?);
    Ok(out)
}

fn to_chrono(d: StdDuration) -> Duration {
    Duration::from_std(d).unwrap_or(Duration::days(365_000))
}

/// samael's algorithm allow-list. SHA-1 has no samael variant: when it is listed, samael is
/// told to allow everything and our own check in `harden` is the allow-list.
fn samael_algorithms(list: &[SignatureAlgorithm]) -> Option<Vec<AllowedSignatureAlgorithm>> {
    if list.contains(&SignatureAlgorithm::RsaSha1) {
        return None;
    }
    Some(
        list.iter()
            .filter_map(|a| match a {
                SignatureAlgorithm::RsaSha1 => None,
                SignatureAlgorithm::RsaSha256 => Some(AllowedSignatureAlgorithm::RsaSha256),
                SignatureAlgorithm::RsaSha384 => Some(AllowedSignatureAlgorithm::RsaSha384),
                SignatureAlgorithm::RsaSha512 => Some(AllowedSignatureAlgorithm::RsaSha512),
                SignatureAlgorithm::EcdsaSha256 => Some(AllowedSignatureAlgorithm::EcdsaSha256),
                SignatureAlgorithm::EcdsaSha384 => Some(AllowedSignatureAlgorithm::EcdsaSha384),
                SignatureAlgorithm::EcdsaSha512 => Some(AllowedSignatureAlgorithm::EcdsaSha512),
            })
            .collect(),
    )
}

/// xs:dateTime with a time zone (SAML core §1.3.3 requires UTC).
fn time(v: Option<&str>, field: &'static str) -> Result<DateTime<Utc>, Error> {
    v.and_then(harden::parse_time)
        .ok_or(Error::MalformedTime { field })
}

fn top_assertion<'a, 'i>(response: Node<'a, 'i>) -> Option<Node<'a, 'i>> {
    response
        .children()
        .find(|c| is(*c, NS_SAML, "Assertion") || is(*c, NS_SAML, "EncryptedAssertion"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_text_reads_back_unchanged_from_xml_content_and_attributes() {
        let text = r#"O'Brien & <Sons> "Ltd""#;
        let escaped = xml_escape(text);
        assert!(!escaped.contains(['<', '>', '"', '\'']), "{escaped}");
        let xml = format!(r#"<a b="{escaped}" c='{escaped}'>{escaped}</a>"#);
        let doc = roxmltree::Document::parse(&xml).expect("well-formed");
        let a = doc.root_element();
        assert_eq!(a.attribute("b"), Some(text));
        assert_eq!(a.attribute("c"), Some(text));
        assert_eq!(a.text(), Some(text));
    }

    #[test]
    fn the_strict_test_policy_is_what_the_config_defaults_give() {
        let toml = "[server]\npublic_url = \"https://sp.example\"\n\
                    [upstream]\nurl = \"http://127.0.0.1:1\"\n\
                    [saml]\nidp_metadata_file = \"config/idp-metadata.xml\"\n\
                    [session]\nsecret = \"0123456789abcdef0123456789abcdef\"\n";
        let cfg = crate::config::Config::from_toml_str(toml, Path::new(env!("CARGO_MANIFEST_DIR")))
            .expect("a valid config");
        assert_eq!(
            Policy::new(&cfg.saml.entity_id, &cfg.saml.acs_url),
            Policy::from_config(&cfg.saml)
        );
    }
}
