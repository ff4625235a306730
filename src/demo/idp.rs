//! DevIdp: the development Identity Provider of `samlgate demo` — a sign-in form that answers
//! the gateway's AuthnRequest with a real, signed SAML Response (the same `TestIdp` signer the
//! tests use), posted to the ACS by an auto-submitting form (SAML bindings §3.5, HTTP-POST).
//!
//! It authenticates nobody: whoever fills in the form becomes that user. Loopback only.

use std::io::Read;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flate2::read::DeflateDecoder;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use openssl::pkey::{PKey, Private};

use super::signer::{ResponseSpec, SignerError, TestIdp, new_id};
use super::{escape, form_value, html, page, random_hex, read_body, redirect};
use crate::body::{Body, full};
use crate::saml::xml_escape;

/// The largest inflated AuthnRequest / LogoutRequest the dev IdP reads.
const MAX_REQUEST_XML: u64 = 64 * 1024;

/// A ready-made user of the sign-in form.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    /// Email (also the NameID).
    pub email: &'static str,
    /// Given name.
    pub first_name: &'static str,
    /// Family name.
    pub last_name: &'static str,
    /// Groups, comma-separated.
    pub groups: &'static str,
    /// What signing in as this user shows.
    pub note: &'static str,
}

/// The ready-made users; the demo SCIM store knows dora (active) and eve (deactivated).
pub const PRESETS: &[Preset] = &[
    Preset {
        email: "alice@example.com",
        first_name: "Alice",
        last_name: "Liddell",
        groups: "admins, staff",
        note: "new; group admins → Operations / Admin",
    },
    Preset {
        email: "bob@example.com",
        first_name: "Bob",
        last_name: "Builder",
        groups: "staff",
        note: "new; defaults → Demo / Viewer",
    },
    Preset {
        email: "dora@example.com",
        first_name: "Dora",
        last_name: "Explorer",
        groups: "staff",
        note: "already in the dashboard: no account created",
    },
    Preset {
        email: "eve@example.com",
        first_name: "Eve",
        last_name: "Mallory",
        groups: "",
        note: "deactivated in the dashboard: refused",
    },
];

/// What the dev IdP read from an AuthnRequest (SAML core §3.4.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthnRequestInfo {
    /// The request `ID` (answered as `InResponseTo`).
    pub id: String,
    /// The SP's `Issuer`.
    pub issuer: Option<String>,
    /// `AssertionConsumerServiceURL`, when given.
    pub acs_url: Option<String>,
}

/// The development IdP of the demo.
pub struct DevIdp {
    idp: TestIdp,
    key: PKey<Private>,
    base_url: String,
    gateway_url: String,
    acs_url: String,
    sp_entity_id: String,
    sp_logout_url: String,
}

impl std::fmt::Debug for DevIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIdp")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl DevIdp {
    /// A new IdP at `base_url` (entity ID `base_url/metadata`) for the gateway at `gateway_url`
    /// (SP entity ID and ACS the gateway's defaults), with a freshly generated key.
    pub fn new(base_url: &str, gateway_url: &str) -> Result<Self, SignerError> {
        let idp = TestIdp::generate(&format!("{base_url}/metadata"))?;
        let key = PKey::private_key_from_pem(idp.key_pem()?.as_bytes())?;
        Ok(Self {
            idp,
            key,
            base_url: base_url.to_string(),
            gateway_url: gateway_url.to_string(),
            acs_url: format!("{gateway_url}/saml/acs"),
            sp_entity_id: format!("{gateway_url}/saml/metadata"),
            sp_logout_url: format!("{gateway_url}/saml/logout"),
        })
    }

    /// The IdP metadata the gateway trusts: signing certificate, SSO and SLO (HTTP-Redirect).
    pub fn metadata_xml(&self) -> Result<String, SignerError> {
        self.idp.metadata_xml(
            &format!("{}/sso", self.base_url),
            Some(&format!("{}/slo", self.base_url)),
        )
    }

    /// Answers one request.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let query = req.uri().query().unwrap_or("").to_string();
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/sso") => self.login_form(&query, None),
            (&Method::POST, "/sso") => {
                let form = read_body(req.into_body(), 64 * 1024)
                    .await
                    .unwrap_or_default();
                self.sign_in(&form).await
            }
            (&Method::GET, "/slo") => self.logout(&query),
            (&Method::GET, "/metadata") => match self.metadata_xml() {
                Ok(xml) => {
                    let mut resp = Response::new(full(xml));
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/samlmetadata+xml"),
                    );
                    resp
                }
                Err(e) => self.error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            },
            (&Method::GET, "/") => html(
                StatusCode::OK,
                page(
                    "samlgate development IdP",
                    &format!(
                        "<p>This IdP answers the gateway's sign-in requests. Start at the gateway: \
                         <a href=\"{gw}/\">{gw}/</a>.</p><p class=\"muted\">Metadata: \
                         <a href=\"/metadata\">/metadata</a></p>",
                        gw = escape(&self.gateway_url)
                    ),
                ),
                CSP_PAGE,
            ),
            _ => self.error(
                StatusCode::NOT_FOUND,
                "No such page at the development IdP.",
            ),
        }
    }

    fn error(&self, status: StatusCode, message: &str) -> Response<Body> {
        html(
            status,
            page(
                "Development IdP",
                &format!(
                    "<p id=\"idp-error\">{}</p><p><a href=\"{gw}/\">Back to the gateway</a></p>",
                    escape(message),
                    gw = escape(&self.gateway_url)
                ),
            ),
            CSP_PAGE,
        )
    }

    /// `GET /sso?SAMLRequest=…&RelayState=…`: the sign-in form for this AuthnRequest.
    fn login_form(&self, query: &str, problem: Option<&str>) -> Response<Body> {
        let Some(saml_request) = form_value(query, "SAMLRequest") else {
            return self.error(
                StatusCode::BAD_REQUEST,
                "No SAMLRequest: open the gateway, which sends you here with one.",
            );
        };
        let relay_state = form_value(query, "RelayState").unwrap_or_default();
        let request = match parse_authn_request(&saml_request) {
            Ok(r) => r,
            Err(e) => {
                return self.error(
                    StatusCode::BAD_REQUEST,
                    &format!("Unreadable AuthnRequest: {e}"),
                );
            }
        };
        if request.issuer.as_deref() != Some(self.sp_entity_id.as_str()) {
            return self.error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "This IdP only knows the demo gateway ({}); the request came from {}.",
                    self.sp_entity_id,
                    request.issuer.as_deref().unwrap_or("an unnamed SP")
                ),
            );
        }
        if let Some(acs) = &request.acs_url
            && acs != &self.acs_url
        {
            return self.error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "The request asks for the ACS {acs}, not the demo gateway's {}.",
                    self.acs_url
                ),
            );
        }
        let hidden = format!(
            "<input type=\"hidden\" name=\"request_id\" value=\"{}\">\
             <input type=\"hidden\" name=\"relay_state\" value=\"{}\">",
            escape(&request.id),
            escape(&relay_state)
        );
        let mut presets = String::new();
        for p in PRESETS {
            presets.push_str(&format!(
                "<form method=\"post\" action=\"/sso\">{hidden}\
                 <input type=\"hidden\" name=\"email\" value=\"{e}\">\
                 <input type=\"hidden\" name=\"first_name\" value=\"{f}\">\
                 <input type=\"hidden\" name=\"last_name\" value=\"{l}\">\
                 <input type=\"hidden\" name=\"groups\" value=\"{g}\">\
                 <button type=\"submit\" title=\"{n}\">{f} {l} <span class=\"muted\">({e}; {n})</span></button></form><br>",
                e = escape(p.email),
                f = escape(p.first_name),
                l = escape(p.last_name),
                g = escape(p.groups),
                n = escape(p.note),
            ));
        }
        let problem = problem
            .map(|p| {
                format!(
                    "<p id=\"idp-problem\" style=\"color:#c62828\">{}</p>",
                    escape(p)
                )
            })
            .unwrap_or_default();
        let body = format!(
            "<p>The gateway <code>{sp}</code> asks who you are (AuthnRequest <code>{id}</code>). \
             This IdP signs whatever you enter: there is no password.</p>{problem}\
             <div class=\"card\"><h2>Sign in as a new user</h2>\
             <form method=\"post\" action=\"/sso\" id=\"new-user\">{hidden}\
             <label for=\"email\">Email</label><input type=\"email\" id=\"email\" name=\"email\" required placeholder=\"you@example.com\">\
             <label for=\"first_name\">First name</label><input type=\"text\" id=\"first_name\" name=\"first_name\">\
             <label for=\"last_name\">Last name</label><input type=\"text\" id=\"last_name\" name=\"last_name\">\
             <label for=\"groups\">Groups (comma-separated; <code>admins</code> maps to workspace Operations / Admin)</label>\
             <input type=\"text\" id=\"groups\" name=\"groups\" placeholder=\"admins, staff\">\
             <p><button type=\"submit\" class=\"primary\" id=\"sign-in\">Sign in</button></p></form></div>\
             <div class=\"card presets\"><h2>Or a ready-made user</h2>{presets}</div>\
             <p class=\"muted\">Attributes released: <code>email</code>, <code>firstName</code>, \
             <code>lastName</code>, <code>groups</code>; NameID = the email (emailAddress format).</p>",
            sp = escape(&self.sp_entity_id),
            id = escape(&request.id),
        );
        html(
            StatusCode::OK,
            page("Sign in — samlgate development IdP", &body),
            CSP_PAGE,
        )
    }

    /// `POST /sso`: sign a Response for the entered user and post it to the ACS.
    async fn sign_in(self: Arc<Self>, form: &str) -> Response<Body> {
        let field = |n: &str| form_value(form, n).unwrap_or_default().trim().to_string();
        let request_id = field("request_id");
        let relay_state = form_value(form, "relay_state").unwrap_or_default();
        let email = field("email");
        if request_id.is_empty() {
            return self.error(
                StatusCode::BAD_REQUEST,
                "The sign-in form lost its request: start again at the gateway.",
            );
        }
        if email.is_empty() {
            return self.error(StatusCode::BAD_REQUEST, "An email is required.");
        }
        let groups: Vec<String> = field("groups")
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect();
        let mut attributes = vec![
            ("email".to_string(), vec![email.clone()]),
            ("firstName".to_string(), vec![field("first_name")]),
            ("lastName".to_string(), vec![field("last_name")]),
        ];
        attributes.retain(|(_, v)| v.iter().all(|s| !s.is_empty()));
        if !groups.is_empty() {
            attributes.push(("groups".to_string(), groups));
        }
        let spec = ResponseSpec {
            destination: Some(self.acs_url.clone()),
            recipient: Some(self.acs_url.clone()),
            audiences: vec![self.sp_entity_id.clone()],
            in_response_to: Some(request_id),
            name_id: email,
            attributes,
            ..ResponseSpec::default()
        };
        let me = self.clone();
        let signed = tokio::task::spawn_blocking(move || me.idp.response_xml(&spec)).await;
        let xml = match signed {
            Ok(Ok(xml)) => xml,
            Ok(Err(e)) => return self.error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            Err(_) => return self.error(StatusCode::INTERNAL_SERVER_ERROR, "signing failed"),
        };
        let nonce = random_hex(16);
        let body = format!(
            "<p>Signed a SAML Response for the gateway; your browser now posts it to \
             <code>{acs}</code> (HTTP-POST binding).</p>\
             <form method=\"post\" action=\"{acs}\" id=\"saml-post\">\
             <input type=\"hidden\" name=\"SAMLResponse\" value=\"{value}\">\
             <input type=\"hidden\" name=\"RelayState\" value=\"{rs}\">\
             <button type=\"submit\" class=\"primary\">Continue to the gateway</button></form>\
             <details><summary>The signed Response</summary><pre>{xml}</pre></details>\
             <script nonce=\"{nonce}\">document.getElementById('saml-post').submit();</script>",
            acs = escape(&self.acs_url),
            value = escape(&super::signer::to_form_value(&xml)),
            rs = escape(&relay_state),
            xml = escape(&xml),
        );
        let csp = format!(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; \
             form-action {}; frame-ancestors 'none'",
            self.gateway_url
        );
        html(StatusCode::OK, page("Signing you in…", &body), &csp)
    }

    /// `GET /slo`: a LogoutRequest is answered with a signed LogoutResponse to the gateway's
    /// SLO endpoint (SAML bindings §3.4, HTTP-Redirect); without one, back to the gateway.
    fn logout(&self, query: &str) -> Response<Body> {
        let Some(request) = form_value(query, "SAMLRequest") else {
            return redirect(StatusCode::FOUND, &format!("{}/", self.gateway_url));
        };
        let relay_state = form_value(query, "RelayState");
        let in_response_to = inflate(&request)
            .ok()
            .and_then(|xml| {
                let doc = roxmltree::Document::parse(&xml).ok()?;
                doc.root_element().attribute("ID").map(str::to_string)
            })
            .unwrap_or_default();
        match self.logout_response_url(&in_response_to, relay_state.as_deref()) {
            Ok(url) => redirect(StatusCode::FOUND, &url),
            Err(e) => self.error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }

    fn logout_response_url(
        &self,
        in_response_to: &str,
        relay_state: Option<&str>,
    ) -> Result<String, SignerError> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let irt = if in_response_to.is_empty() {
            String::new()
        } else {
            format!(" InResponseTo=\"{}\"", xml_escape(in_response_to))
        };
        let xml = format!(
            "<samlp:LogoutResponse xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" \
             xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" Version=\"2.0\" \
             IssueInstant=\"{now}\" Destination=\"{dest}\"{irt}><saml:Issuer>{issuer}</saml:Issuer>\
             <samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/>\
             </samlp:Status></samlp:LogoutResponse>",
            id = new_id(),
            dest = xml_escape(&self.sp_logout_url),
            issuer = xml_escape(self.idp.entity_id()),
        );
        crate::saml::redirect_binding_url(
            &self.sp_logout_url,
            "SAMLResponse",
            &xml,
            relay_state.unwrap_or(""),
            Some(&self.key),
        )
        .map_err(|e| SignerError::Sign(e.to_string()))
    }
}

/// The CSP of the IdP's own pages (forms post back to the IdP only).
const CSP_PAGE: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

/// base64 + raw DEFLATE (SAML bindings §3.4.4.1) → XML text, bounded.
fn inflate(value: &str) -> Result<String, String> {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    let raw = STANDARD
        .decode(compact)
        .map_err(|e| format!("not base64: {e}"))?;
    let mut xml = String::new();
    DeflateDecoder::new(&raw[..])
        .take(MAX_REQUEST_XML)
        .read_to_string(&mut xml)
        .map_err(|e| format!("not DEFLATE-compressed UTF-8: {e}"))?;
    Ok(xml)
}

/// Reads the `SAMLRequest` of an HTTP-Redirect binding: base64 → inflate → AuthnRequest.
pub fn parse_authn_request(value: &str) -> Result<AuthnRequestInfo, String> {
    let xml = inflate(value)?;
    let doc = roxmltree::Document::parse(&xml).map_err(|e| format!("not XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "AuthnRequest" {
        return Err(format!(
            "a {} is not an AuthnRequest",
            root.tag_name().name()
        ));
    }
    let id = root
        .attribute("ID")
        .ok_or("the AuthnRequest has no ID")?
        .to_string();
    let issuer = root
        .children()
        .find(|n| n.tag_name().name() == "Issuer")
        .and_then(|n| n.text())
        .map(|t| t.trim().to_string());
    Ok(AuthnRequestInfo {
        id,
        issuer,
        acs_url: root
            .attribute("AssertionConsumerServiceURL")
            .map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::DeflateEncoder;

    #[test]
    fn reads_a_redirect_binding_authn_request() {
        let xml = r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_abc" Version="2.0" AssertionConsumerServiceURL="http://127.0.0.1:8080/saml/acs"><saml:Issuer>http://127.0.0.1:8080/saml/metadata</saml:Issuer></samlp:AuthnRequest>"#;
        let mut enc = DeflateEncoder::new(Vec::new(), Compression::default());
        std::io::Write::write_all(&mut enc, xml.as_bytes()).unwrap();
        let value = STANDARD.encode(enc.finish().unwrap());
        let info = parse_authn_request(&value).unwrap();
        assert_eq!(info.id, "_abc");
        assert_eq!(
            info.issuer.as_deref(),
            Some("http://127.0.0.1:8080/saml/metadata")
        );
        assert_eq!(
            info.acs_url.as_deref(),
            Some("http://127.0.0.1:8080/saml/acs")
        );
        assert!(parse_authn_request("!!").is_err());
    }
}
