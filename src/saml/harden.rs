//! Harden: the strict pre-parse and structure checks that run before any XML reaches xmlsec.
//!
//! samael 0.0.22 hands the document to libxml2 in recover mode and lets xmlsec dereference
//! whatever a `ds:Reference` names. Everything here closes one of those gaps (SECURITY.md S2,
//! S7, S8, S9, S11) on our own strict parse (roxmltree: no DTD, well-formed UTF-8, one root):
//!
//! * size caps: decoded bytes, depth, element count, attributes per element, attribute values;
//! * no DOCTYPE/ENTITY, no processing instruction, only a UTF-8 encoding declaration;
//! * the root is `samlp:Response` and holds exactly one `saml:Assertion` or
//!   `saml:EncryptedAssertion` as a direct child; no Assertion anywhere else (XSW, CVE-2022-41912)
//!   except, when a test policy allows it, inside `saml:Advice`;
//! * every `ds:Signature` is a direct child of the element its single Reference names
//!   (`#ID`, or `""` for the root), and that element is the Response or the top-level Assertion;
//! * only enveloped-signature and (exclusive) C14N transforms without comments; no XPath, XSLT,
//!   RetrievalMethod, `ds:Object` or `ds:Manifest`; algorithms from the configured allow-list;
//! * every `ID`/`Id` is an NCName and unique; no `xml:id`;
//! * no comment, CDATA section or processing instruction inside NameID, AttributeValue, Issuer
//!   or Audience (the comment-truncation class, CVE-2017-11427 / CVE-2018-7340).

use std::collections::HashSet;
use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use roxmltree::{Document, Node, NodeType, ParsingOptions};

use crate::config::SignatureAlgorithm;

/// SAML 2.0 protocol namespace (SAML core §3).
pub const NS_SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
/// SAML 2.0 assertion namespace (SAML core §2).
pub const NS_SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
/// XML-DSig namespace.
pub const NS_DS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// XML Encryption namespace.
pub const NS_XENC: &str = "http://www.w3.org/2001/04/xmlenc#";
const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";
const NS_EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";

const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
/// Canonicalization algorithms accepted, all *without* comments: a barename `#id` reference
/// drops comments anyway (XML-DSig §4.3.3.3), and refusing the `WithComments` variants keeps
/// xmlsec on its most exercised path.
const C14N: [&str; 3] = [
    "http://www.w3.org/2001/10/xml-exc-c14n#",
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    "http://www.w3.org/2006/12/xml-c14n11",
];

/// Caps applied before and during the strict parse (S7, S13).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest decoded XML document in bytes.
    pub max_decoded_bytes: usize,
    /// Deepest element nesting.
    pub max_depth: usize,
    /// Most elements in one document.
    pub max_elements: usize,
    /// Most attributes (including namespace declarations) on one element.
    pub max_attributes_per_element: usize,
    /// Most `saml:AttributeValue` elements in one document.
    pub max_attribute_values: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_decoded_bytes: 256 * 1024,
            max_depth: 48,
            max_elements: 20_000,
            max_attributes_per_element: 64,
            max_attribute_values: 5_000,
        }
    }
}

/// Why a response failed the strict checks. No variant carries document content.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HardenError {
    /// The form value is not base64 (after removing ASCII whitespace).
    #[error("SAMLResponse is not valid base64")]
    Base64,
    /// Larger than `max_decoded_bytes`.
    #[error("response larger than {limit} bytes")]
    TooLarge {
        /// The cap.
        limit: usize,
    },
    /// Not UTF-8, or an encoding declaration other than UTF-8.
    #[error("response is not UTF-8")]
    Encoding,
    /// Not well-formed XML (junk after the root, several roots, bad syntax...).
    #[error("response is not well-formed XML ({0})")]
    Malformed(String),
    /// A DOCTYPE or ENTITY declaration (XXE, billion laughs).
    #[error("DTDs are not accepted")]
    Dtd,
    /// A processing instruction anywhere.
    #[error("processing instructions are not accepted")]
    ProcessingInstruction,
    /// Nesting deeper than `max_depth`.
    #[error("elements nested deeper than {limit}")]
    TooDeep {
        /// The cap.
        limit: usize,
    },
    /// More elements than `max_elements`.
    #[error("more than {limit} elements")]
    TooManyElements {
        /// The cap.
        limit: usize,
    },
    /// An element with more than `max_attributes_per_element` attributes.
    #[error("an element has more than {limit} attributes")]
    TooManyAttributes {
        /// The cap.
        limit: usize,
    },
    /// More AttributeValues than `max_attribute_values`.
    #[error("more than {limit} attribute values")]
    TooManyAttributeValues {
        /// The cap.
        limit: usize,
    },
    /// The root is not a `samlp:Response`, or a Response is nested somewhere.
    #[error("the document is not a single samlp:Response")]
    NotAResponse,
    /// The root is not a `samlp:LogoutRequest` or `samlp:LogoutResponse`.
    #[error("the document is not a single LogoutRequest or LogoutResponse")]
    NotALogoutMessage,
    /// Not exactly one Assertion/EncryptedAssertion as a direct child of the Response.
    #[error("expected exactly one Assertion or EncryptedAssertion, found {found}")]
    AssertionCount {
        /// How many direct-child assertions were found.
        found: usize,
    },
    /// An Assertion somewhere other than as the Response's child (or, when allowed, in Advice).
    #[error("an Assertion appears outside its allowed position")]
    AssertionMisplaced,
    /// A Signature that is not a direct child of the element it signs, or of an element that
    /// may be signed.
    #[error("a Signature is not a direct child of the element it signs")]
    SignatureMisplaced,
    /// A Signature whose SignedInfo/Reference structure is not the SAML profile's (one
    /// Reference, URI `#ID` of the parent).
    #[error("a Signature reference is not allowed: {0}")]
    SignatureReference(&'static str),
    /// A Transform or canonicalization algorithm outside the allow-list (XPath, XSLT, ...).
    #[error("transform or canonicalization not allowed")]
    Transform,
    /// A SignatureMethod or DigestMethod outside the configured allow-list.
    #[error("signature or digest algorithm not allowed")]
    Algorithm,
    /// `ds:RetrievalMethod`, `ds:Object` or `ds:Manifest` in a Signature.
    #[error("indirect key or object references are not accepted")]
    Indirection,
    /// An `ID` that is not an NCName, or an `xml:id`.
    #[error("an ID attribute is not an NCName")]
    InvalidId,
    /// Two elements share an ID.
    #[error("duplicate ID attribute values")]
    DuplicateId,
    /// A comment, CDATA section, PI or child element inside an identity-bearing text element.
    #[error("markup inside {element} text")]
    MarkupInText {
        /// The element's local name.
        element: &'static str,
    },
}

/// What the strict parse learned; later steps rely on it instead of re-deriving structure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspected {
    /// The Response `ID`.
    pub response_id: String,
    /// The top-level Assertion `ID`, `None` when it is an EncryptedAssertion.
    pub assertion_id: Option<String>,
    /// Byte range of the EncryptedAssertion element, when the assertion is encrypted.
    pub encrypted_range: Option<Range<usize>>,
    /// Byte range of the Response's own Signature element, when the Response is signed.
    pub response_signature_range: Option<Range<usize>>,
    /// The Response carries a Signature.
    pub response_signed: bool,
    /// The top-level (plain) Assertion carries a Signature.
    pub assertion_signed: bool,
    /// Signatures on Assertions inside Advice (only when allowed).
    pub advice_signatures: usize,
}

/// What the structure checks may accept besides the strict profile.
#[derive(Clone, Debug)]
pub struct StructurePolicy<'a> {
    /// Accept Assertions inside `saml:Advice` of the top-level Assertion (test relaxation).
    pub allow_advice_assertions: bool,
    /// Signature algorithms accepted (digests follow: SHA-1 digests only with RSA-SHA1).
    pub algorithms: &'a [SignatureAlgorithm],
    /// Size caps.
    pub limits: &'a Limits,
}

/// SignatureMethod URI of an algorithm (RFC 6931, XML-DSig §6.4).
pub fn signature_uri(a: SignatureAlgorithm) -> &'static str {
    match a {
        SignatureAlgorithm::RsaSha1 => "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
        SignatureAlgorithm::RsaSha256 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        SignatureAlgorithm::RsaSha384 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
        SignatureAlgorithm::RsaSha512 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
        SignatureAlgorithm::EcdsaSha256 => "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
        SignatureAlgorithm::EcdsaSha384 => "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
        SignatureAlgorithm::EcdsaSha512 => "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
    }
}

/// DigestMethod URI that goes with an algorithm (RFC 6931 §2.1).
pub fn digest_uri(a: SignatureAlgorithm) -> &'static str {
    match a {
        SignatureAlgorithm::RsaSha1 => "http://www.w3.org/2000/09/xmldsig#sha1",
        SignatureAlgorithm::RsaSha256 | SignatureAlgorithm::EcdsaSha256 => {
            "http://www.w3.org/2001/04/xmlenc#sha256"
        }
        SignatureAlgorithm::RsaSha384 | SignatureAlgorithm::EcdsaSha384 => {
            "http://www.w3.org/2001/04/xmldsig-more#sha384"
        }
        SignatureAlgorithm::RsaSha512 | SignatureAlgorithm::EcdsaSha512 => {
            "http://www.w3.org/2001/04/xmlenc#sha512"
        }
    }
}

/// Decodes a `SAMLResponse` form value (SAML bindings §3.5.4): ASCII whitespace is removed first
/// (IdPs wrap base64 at 64 or 76 columns, S11); the decoded size is capped before decoding.
pub fn decode_form_value(value: &str, max_decoded_bytes: usize) -> Result<Vec<u8>, HardenError> {
    let compact: Vec<u8> = value.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if compact.len() / 4 * 3 > max_decoded_bytes.saturating_add(3) {
        return Err(HardenError::TooLarge {
            limit: max_decoded_bytes,
        });
    }
    let decoded = STANDARD.decode(&compact).map_err(|_| HardenError::Base64)?;
    if decoded.len() > max_decoded_bytes {
        return Err(HardenError::TooLarge {
            limit: max_decoded_bytes,
        });
    }
    Ok(decoded)
}

/// Checks the bytes are UTF-8 with no other encoding declared (a declaration such as
/// ISO-8859-1 would make libxml2 read different text than we do).
pub fn utf8_document<'a>(bytes: &'a [u8], limits: &Limits) -> Result<&'a str, HardenError> {
    if bytes.len() > limits.max_decoded_bytes {
        return Err(HardenError::TooLarge {
            limit: limits.max_decoded_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| HardenError::Encoding)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(rest) = text.strip_prefix("<?xml") {
        let decl = rest.split("?>").next().unwrap_or("");
        if let Some(pos) = decl.find("encoding") {
            let value = decl[pos + "encoding".len()..]
                .trim_start()
                .trim_start_matches('=')
                .trim_start()
                .trim_start_matches(['"', '\''])
                .split(['"', '\''])
                .next()
                .unwrap_or("");
            if !value.eq_ignore_ascii_case("utf-8") {
                return Err(HardenError::Encoding);
            }
        }
    }
    Ok(text)
}

/// Drops a leading `<?xml ...?>` declaration (xmlsec output and decrypted plaintext may
/// carry one; in the middle of a document it would be a processing instruction).
pub fn strip_declaration(xml: &str) -> &str {
    let t = xml.trim_start_matches('\u{feff}').trim_start();
    if let Some(rest) = t.strip_prefix("<?xml")
        && let Some(end) = rest.find("?>")
    {
        return rest[end + 2..].trim_start();
    }
    t
}

/// Parses strictly with roxmltree: no DTD, a node cap, well-formed with one root.
pub fn parse_strict<'a>(text: &'a str, limits: &Limits) -> Result<Document<'a>, HardenError> {
    // Belt and braces: roxmltree refuses DTDs without allow_dtd, but name the attack precisely.
    if text.contains("<!DOCTYPE") || text.contains("<!ENTITY") {
        return Err(HardenError::Dtd);
    }
    let nodes_limit = u32::try_from(limits.max_elements.saturating_mul(4)).unwrap_or(u32::MAX);
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit,
        ..ParsingOptions::default()
    };
    Document::parse_with_options(text, options).map_err(|e| match e {
        roxmltree::Error::DtdDetected => HardenError::Dtd,
        roxmltree::Error::NodesLimitReached => HardenError::TooManyElements {
            limit: limits.max_elements,
        },
        other => HardenError::Malformed(error_kind(&other)),
    })
}

/// A short description of a parse error without document content.
fn error_kind(e: &roxmltree::Error) -> String {
    let pos = e.pos();
    format!("syntax error at line {} column {}", pos.row, pos.col)
}

/// Checks size, node kinds, IDs and text markup over the whole document.
fn check_nodes(doc: &Document<'_>, text: &str, limits: &Limits) -> Result<(), HardenError> {
    let mut elements = 0usize;
    let mut values = 0usize;
    let mut ids: HashSet<&str> = HashSet::new();
    // Element depth per node id, filled in document order (a parent precedes its children).
    let mut depths: Vec<u32> = Vec::new();
    for node in doc.root().descendants() {
        let idx = node.id().get_usize();
        if depths.len() <= idx {
            depths.resize(idx + 1, 0);
        }
        let parent_depth = node
            .parent()
            .map_or(0, |p| depths.get(p.id().get_usize()).copied().unwrap_or(0));
        match node.node_type() {
            NodeType::PI => return Err(HardenError::ProcessingInstruction),
            NodeType::Element => {}
            _ => continue,
        }
        let depth = parent_depth + 1;
        depths[idx] = depth;
        if depth as usize > limits.max_depth {
            return Err(HardenError::TooDeep {
                limit: limits.max_depth,
            });
        }
        elements += 1;
        if elements > limits.max_elements {
            return Err(HardenError::TooManyElements {
                limit: limits.max_elements,
            });
        }
        if node.attributes().len() + node.namespaces().len() > limits.max_attributes_per_element {
            return Err(HardenError::TooManyAttributes {
                limit: limits.max_attributes_per_element,
            });
        }
        for attr in node.attributes() {
            if attr.namespace() == Some(NS_XML) && attr.name() == "id" {
                return Err(HardenError::InvalidId);
            }
            if attr.namespace().is_none() && matches!(attr.name(), "ID" | "Id") {
                if !is_ncname(attr.value()) {
                    return Err(HardenError::InvalidId);
                }
                if !ids.insert(attr.value()) {
                    return Err(HardenError::DuplicateId);
                }
            }
        }
        let name = node.tag_name().name();
        let text_element: Option<&'static str> = match name {
            "NameID" => Some("NameID"),
            "AttributeValue" => Some("AttributeValue"),
            "Issuer" => Some("Issuer"),
            "Audience" => Some("Audience"),
            _ => None,
        };
        if name == "AttributeValue" {
            values += 1;
            if values > limits.max_attribute_values {
                return Err(HardenError::TooManyAttributeValues {
                    limit: limits.max_attribute_values,
                });
            }
        }
        if let Some(element) = text_element {
            // roxmltree folds CDATA into text, so look at the source bytes themselves.
            let raw = &text[node.range()];
            let inner = raw.find('>').map_or(raw, |i| &raw[i + 1..]);
            if inner.contains("<!--") || inner.contains("<![CDATA[") || inner.contains("<?") {
                return Err(HardenError::MarkupInText { element });
            }
            // Only AttributeValue may hold elements (e.g. eduPersonTargetedID's NameID).
            if element != "AttributeValue" && node.children().any(|c| c.is_element()) {
                return Err(HardenError::MarkupInText { element });
            }
        }
    }
    Ok(())
}

/// XML Namespaces §3 NCName (ASCII-conservative: letters, digits, `_`, `-`, `.`, non-ASCII
/// letters; must not start with a digit, `-` or `.`).
pub fn is_ncname(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let start_ok = first == '_' || first.is_alphabetic();
    start_ok && chars.all(|c| c == '_' || c == '-' || c == '.' || c.is_alphanumeric())
}

/// Whether `node` is the element `ns`:`name`.
pub(super) fn is(node: Node<'_, '_>, ns: &str, name: &str) -> bool {
    node.is_element() && node.tag_name().namespace() == Some(ns) && node.tag_name().name() == name
}

/// The first child element `ns`:`name` of `n`.
pub(super) fn child<'a, 'i>(n: Node<'a, 'i>, ns: &str, name: &str) -> Option<Node<'a, 'i>> {
    n.children().find(|c| is(*c, ns, name))
}

/// Text content, trimmed (the strict checks refused comments/CDATA/elements inside the
/// elements this is read from).
pub(super) fn text_of(n: Node<'_, '_>) -> String {
    n.text().unwrap_or("").trim().to_string()
}

/// An xs:dateTime with a time zone (SAML core §1.3.3 requires UTC), as UTC.
pub(super) fn parse_time(v: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(v.trim())
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// The whole strict inspection of a decoded Response document.
pub fn inspect(text: &str, policy: &StructurePolicy<'_>) -> Result<Inspected, HardenError> {
    let doc = parse_strict(text, policy.limits)?;
    inspect_document(&doc, text, policy)
}

/// `inspect` on an already parsed document (the source `text` is needed for byte ranges).
pub fn inspect_document(
    doc: &Document<'_>,
    text: &str,
    policy: &StructurePolicy<'_>,
) -> Result<Inspected, HardenError> {
    check_nodes(doc, text, policy.limits)?;
    let root = doc.root_element();
    if !is(root, NS_SAMLP, "Response") {
        return Err(HardenError::NotAResponse);
    }
    let response_id = root
        .attribute("ID")
        .ok_or(HardenError::InvalidId)?
        .to_string();

    // Exactly one assertion, a direct child of the Response (SAML core §3.3.3; S8).
    let top: Vec<Node<'_, '_>> = root
        .children()
        .filter(|c| {
            c.is_element() && matches!(c.tag_name().name(), "Assertion" | "EncryptedAssertion")
        })
        .collect();
    if top.len() != 1 {
        return Err(HardenError::AssertionCount { found: top.len() });
    }
    let top_assertion = top[0];
    let encrypted = is(top_assertion, NS_SAML, "EncryptedAssertion");
    if !encrypted && !is(top_assertion, NS_SAML, "Assertion") {
        return Err(HardenError::AssertionMisplaced);
    }
    for node in root.descendants().filter(|n| n.is_element()) {
        let local = node.tag_name().name();
        if node != root && local == "Response" {
            return Err(HardenError::NotAResponse);
        }
        if !matches!(local, "Assertion" | "EncryptedAssertion") || node == top_assertion {
            continue;
        }
        // Allowed only when the policy says so, only `saml:Assertion`, only as the child of
        // a `saml:Advice` inside the top-level Assertion.
        if !(policy.allow_advice_assertions && in_advice(node, top_assertion)) {
            return Err(HardenError::AssertionMisplaced);
        }
    }

    let advice_ids: HashSet<&str> = if policy.allow_advice_assertions {
        root.descendants()
            .filter(|n| is(*n, NS_SAML, "Assertion") && *n != top_assertion)
            .filter_map(|n| n.attribute("ID"))
            .collect()
    } else {
        HashSet::new()
    };
    let mut inspected = Inspected {
        response_id,
        assertion_id: None,
        encrypted_range: None,
        response_signature_range: None,
        response_signed: false,
        assertion_signed: false,
        advice_signatures: 0,
    };
    if encrypted {
        inspected.encrypted_range = Some(top_assertion.range());
    } else {
        inspected.assertion_id = Some(
            top_assertion
                .attribute("ID")
                .ok_or(HardenError::InvalidId)?
                .to_string(),
        );
    }

    // Every ds:Signature (S2, S8).
    for sig in root.descendants().filter(|n| is(*n, NS_DS, "Signature")) {
        // Signatures inside an EncryptedAssertion would be ciphertext; a visible one there is
        // someone else's content.
        let parent = sig
            .parent_element()
            .ok_or(HardenError::SignatureMisplaced)?;
        let signs = if parent == root {
            Signs::Response
        } else if parent == top_assertion && !encrypted {
            Signs::Assertion
        } else if policy.allow_advice_assertions && in_advice(parent, top_assertion) {
            Signs::AdviceAssertion
        } else {
            return Err(HardenError::SignatureMisplaced);
        };
        check_signature(
            sig,
            parent,
            parent == root,
            (signs == Signs::AdviceAssertion).then_some(&advice_ids),
            policy,
        )?;
        match signs {
            Signs::Response => {
                if inspected.response_signed {
                    return Err(HardenError::SignatureMisplaced);
                }
                inspected.response_signed = true;
                inspected.response_signature_range = Some(sig.range());
            }
            Signs::Assertion => {
                if inspected.assertion_signed {
                    return Err(HardenError::SignatureMisplaced);
                }
                inspected.assertion_signed = true;
            }
            Signs::AdviceAssertion => inspected.advice_signatures += 1,
        }
    }

    // Indirection anywhere in the ds namespace outside an EncryptedAssertion's KeyInfo (S2):
    // xmlsec would follow a RetrievalMethod before the signature is checked.
    for node in root
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().namespace() == Some(NS_DS))
    {
        let local = node.tag_name().name();
        if matches!(local, "Object" | "Manifest") {
            return Err(HardenError::Indirection);
        }
        if local == "RetrievalMethod" {
            let inside_encrypted = encrypted && node.ancestors().any(|a| a == top_assertion);
            let local_ref = node.attribute("URI").is_some_and(|u| u.starts_with('#'));
            if !(inside_encrypted && local_ref) {
                return Err(HardenError::Indirection);
            }
        }
    }
    Ok(inspected)
}

/// What the strict parse learned about a LogoutRequest or LogoutResponse (SAML core §3.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InspectedLogout {
    /// The message's `ID`.
    pub id: String,
    /// `true` for a LogoutRequest, `false` for a LogoutResponse.
    pub is_request: bool,
    /// The message carries an enveloped Signature (a direct child of the root, `#ID`).
    pub signed: bool,
}

/// The strict inspection of a decoded LogoutRequest/LogoutResponse: the node checks of
/// `inspect` (size, DTD, PI, IDs, markup in text), the root is `samlp:LogoutRequest` or
/// `samlp:LogoutResponse`, no Assertion anywhere, at most one Signature and only as a direct
/// child of the root referencing it, the same transform/algorithm allow-lists, no indirection.
pub fn inspect_logout(
    doc: &Document<'_>,
    text: &str,
    policy: &StructurePolicy<'_>,
) -> Result<InspectedLogout, HardenError> {
    check_nodes(doc, text, policy.limits)?;
    let root = doc.root_element();
    let is_request = if is(root, NS_SAMLP, "LogoutRequest") {
        true
    } else if is(root, NS_SAMLP, "LogoutResponse") {
        false
    } else {
        return Err(HardenError::NotALogoutMessage);
    };
    let id = root
        .attribute("ID")
        .ok_or(HardenError::InvalidId)?
        .to_string();
    let mut signed = false;
    for node in root.descendants().filter(|n| n.is_element()) {
        let local = node.tag_name().name();
        if matches!(
            local,
            "Assertion" | "EncryptedAssertion" | "LogoutRequest" | "LogoutResponse"
        ) && node != root
        {
            return Err(HardenError::AssertionMisplaced);
        }
        if node.tag_name().namespace() != Some(NS_DS) {
            continue;
        }
        match local {
            "Object" | "Manifest" | "RetrievalMethod" => return Err(HardenError::Indirection),
            "Signature" => {
                if node.parent_element() != Some(root) || signed {
                    return Err(HardenError::SignatureMisplaced);
                }
                check_signature(node, root, true, None, policy)?;
                signed = true;
            }
            _ => {}
        }
    }
    Ok(InspectedLogout {
        id,
        is_request,
        signed,
    })
}

/// One Signature: SAML core §5.4 profile of XML-DSig.
fn check_signature(
    sig: Node<'_, '_>,
    parent: Node<'_, '_>,
    parent_is_root: bool,
    advice_ids: Option<&HashSet<&str>>,
    policy: &StructurePolicy<'_>,
) -> Result<(), HardenError> {
    let signed_infos: Vec<_> = sig
        .children()
        .filter(|c| is(*c, NS_DS, "SignedInfo"))
        .collect();
    let [signed_info] = signed_infos.as_slice() else {
        return Err(HardenError::SignatureReference(
            "not exactly one SignedInfo",
        ));
    };
    // CanonicalizationMethod: an allow-listed C14N without comments.
    let c14n = signed_info
        .children()
        .find(|c| is(*c, NS_DS, "CanonicalizationMethod"))
        .and_then(|c| c.attribute("Algorithm"))
        .ok_or(HardenError::Transform)?;
    if !C14N.contains(&c14n) {
        return Err(HardenError::Transform);
    }
    // SignatureMethod from the allow-list (S3).
    let method = signed_info
        .children()
        .find(|c| is(*c, NS_DS, "SignatureMethod"))
        .and_then(|c| c.attribute("Algorithm"))
        .ok_or(HardenError::Algorithm)?;
    if !policy
        .algorithms
        .iter()
        .any(|a| signature_uri(*a) == method)
    {
        return Err(HardenError::Algorithm);
    }
    // Exactly one Reference (SAML core §5.4.2), naming the parent. The one exception, under
    // the Advice relaxation only: a signature inside an Advice Assertion may reference several
    // Advice Assertions (never the Response or the top-level Assertion).
    let references: Vec<_> = signed_info
        .children()
        .filter(|c| is(*c, NS_DS, "Reference"))
        .collect();
    if let Some(ids) = advice_ids {
        if references.is_empty() {
            return Err(HardenError::SignatureReference("no Reference"));
        }
        for reference in &references {
            let uri = reference
                .attribute("URI")
                .ok_or(HardenError::SignatureReference("no URI"))?;
            match uri.strip_prefix('#') {
                Some(id) if ids.contains(id) => {}
                _ => return Err(HardenError::SignatureMisplaced),
            }
            check_reference(*reference, policy)?;
        }
        return Ok(());
    }
    let [reference] = references.as_slice() else {
        return Err(HardenError::SignatureReference("not exactly one Reference"));
    };
    let uri = reference
        .attribute("URI")
        .ok_or(HardenError::SignatureReference("no URI"))?;
    let parent_id = parent
        .attribute("ID")
        .ok_or(HardenError::SignatureReference("signed element has no ID"))?;
    let points_to_parent = match uri.strip_prefix('#') {
        Some(id) => id == parent_id,
        None => uri.is_empty() && parent_is_root,
    };
    if !points_to_parent {
        return Err(if uri.is_empty() || uri.starts_with('#') {
            HardenError::SignatureMisplaced
        } else {
            HardenError::SignatureReference("URI is neither \"\" nor #ID")
        });
    }
    check_reference(*reference, policy)
}

/// One Reference's Transforms and DigestMethod.
fn check_reference(
    reference: Node<'_, '_>,
    policy: &StructurePolicy<'_>,
) -> Result<(), HardenError> {
    // Transforms: enveloped-signature and C14N only, each at most once (XSLT, XPath, XPointer
    // and base64 transforms are refused).
    let mut seen = HashSet::new();
    for t in reference.children().filter(|c| c.is_element()) {
        if is(t, NS_DS, "Transforms") {
            for tr in t.children().filter(|c| c.is_element()) {
                if !is(tr, NS_DS, "Transform") {
                    return Err(HardenError::Transform);
                }
                let alg = tr.attribute("Algorithm").ok_or(HardenError::Transform)?;
                if !(alg == ENVELOPED || C14N.contains(&alg)) || !seen.insert(alg) {
                    return Err(HardenError::Transform);
                }
                // Only exc-C14N's InclusiveNamespaces may appear inside a Transform.
                for child in tr.children().filter(|c| c.is_element()) {
                    let ok = alg == NS_EXC_C14N
                        && child.tag_name().namespace() == Some(NS_EXC_C14N)
                        && child.tag_name().name() == "InclusiveNamespaces";
                    if !ok {
                        return Err(HardenError::Transform);
                    }
                }
            }
        } else if is(t, NS_DS, "DigestMethod") {
            let alg = t.attribute("Algorithm").ok_or(HardenError::Algorithm)?;
            if !policy.algorithms.iter().any(|a| digest_uri(*a) == alg) {
                return Err(HardenError::Algorithm);
            }
        } else if !is(t, NS_DS, "DigestValue") {
            return Err(HardenError::Transform);
        }
    }
    if seen.len() > 2 {
        return Err(HardenError::Transform);
    }
    Ok(())
}

/// What a `ds:Signature` signs, by where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signs {
    /// The Response (its child).
    Response,
    /// The top-level Assertion (its child).
    Assertion,
    /// An Assertion inside the top-level Assertion's `saml:Advice` (test relaxation only).
    AdviceAssertion,
}

/// A `saml:Assertion` that is the child of a `saml:Advice` inside the top-level Assertion.
fn in_advice(node: Node<'_, '_>, top_assertion: Node<'_, '_>) -> bool {
    is(node, NS_SAML, "Assertion")
        && node
            .parent_element()
            .is_some_and(|p| is(p, NS_SAML, "Advice"))
        && node.ancestors().any(|a| a == top_assertion)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ncname() {
        assert!(is_ncname("_abc-1.2"));
        assert!(is_ncname("pfx777d8da0-3205"));
        assert!(!is_ncname("28338c8c"));
        assert!(!is_ncname("element(/1/3)"));
        assert!(!is_ncname(""));
        assert!(!is_ncname("a:b"));
    }

    #[test]
    fn base64_with_line_breaks() {
        let v = "PHg+\r\n PC94Pg==\n";
        assert_eq!(decode_form_value(v, 100).expect("test"), b"<x></x>");
        assert_eq!(decode_form_value("!!!!", 100), Err(HardenError::Base64));
        assert!(matches!(
            decode_form_value(&"A".repeat(1000), 10),
            Err(HardenError::TooLarge { .. })
        ));
    }

    #[test]
    fn encoding_declaration() {
        let l = Limits::default();
        assert!(utf8_document(br#"<?xml version="1.0" encoding="UTF-8"?><a/>"#, &l).is_ok());
        assert_eq!(
            utf8_document(br#"<?xml version="1.0" encoding="ISO-8859-1"?><a/>"#, &l),
            Err(HardenError::Encoding)
        );
        assert_eq!(
            utf8_document(b"<a>\xff</a>", &l),
            Err(HardenError::Encoding)
        );
    }
}
