//! DemoDashboard: the upstream of `samlgate demo` — one page that shows what the gateway told
//! it (every identity header, the identity JWT decoded) and the accounts in its SCIM admin API,
//! which it also serves under `/scim/v2`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;

use super::scim::{self, ScimApi, ScimStore};
use super::{escape, html, page};
use crate::body::{Body, empty};

/// The header the identity JWT arrives in (the `[headers.jwt]` default).
pub const JWT_HEADER: &str = "x-samlgate-jwt-assertion";

/// Prefixes of the headers the dashboard lists as identity headers.
const IDENTITY_PREFIXES: &[&str] = &[
    "x-forwarded-",
    "x-samlgate-",
    "x-webauth-",
    "x-auth-request-",
];

/// The demo dashboard.
pub struct DemoDashboard {
    store: ScimStore,
    api: ScimApi,
    gateway_url: String,
    idp_url: String,
}

impl std::fmt::Debug for DemoDashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoDashboard").finish_non_exhaustive()
    }
}

impl DemoDashboard {
    /// A dashboard over `store`, serving `api` under `/scim/v2`.
    pub fn new(store: ScimStore, api: ScimApi, gateway_url: &str, idp_url: &str) -> Self {
        Self {
            store,
            api,
            gateway_url: gateway_url.to_string(),
            idp_url: idp_url.to_string(),
        }
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path();
        if path == scim::BASE_PATH || path.starts_with("/scim/v2/") {
            return self.api.handle(req).await;
        }
        if path == "/favicon.ico" {
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            return resp;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return html(
                StatusCode::METHOD_NOT_ALLOWED,
                page("Demo dashboard", "<p>Only GET here.</p>"),
                CSP,
            );
        }
        let csp = format!(
            "{CSP}; form-action 'self' {} {}",
            self.gateway_url, self.idp_url
        );
        html(StatusCode::OK, self.render(req.headers(), path), &csp)
    }

    fn render(&self, headers: &HeaderMap, path: &str) -> String {
        let get = |name: &str| {
            headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let me = get("x-forwarded-user");
        let mut out = String::new();
        match (&me, get("x-forwarded-email")) {
            (Some(_), Some(email)) => out.push_str(&format!(
                "<p id=\"greeting\">Signed in through samlgate as <strong>{}</strong> &lt;{}&gt;. \
                 This page is the dashboard: everything below is what the gateway sent it for \
                 <code>{}</code>.</p>",
                escape(&get("x-forwarded-name").unwrap_or_default()),
                escape(&email),
                escape(path),
            )),
            _ => out.push_str(&format!(
                "<p id=\"greeting\"><strong>No identity headers</strong>: this request did not \
                 come through samlgate. Open the dashboard through the gateway: \
                 <a href=\"{gw}/\">{gw}/</a>.</p>",
                gw = escape(&self.gateway_url)
            )),
        }
        out.push_str(
            "<form method=\"post\" action=\"/saml/logout\">\
             <button type=\"submit\" class=\"primary\" id=\"sign-out\">Sign out</button></form>",
        );

        out.push_str("<h2>Identity headers the dashboard received</h2><table id=\"identity-headers\"><tr><th>Header</th><th>Value</th></tr>");
        let mut others = String::new();
        let mut identity = Vec::new();
        for (name, value) in headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            let row = format!(
                "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>",
                escape(&display_name(name.as_str())),
                escape(&value)
            );
            if IDENTITY_PREFIXES
                .iter()
                .any(|p| name.as_str().starts_with(p))
            {
                identity.push((header_rank(name.as_str()), row));
            } else {
                others.push_str(&row);
            }
        }
        identity.sort();
        for (_, row) in identity {
            out.push_str(&row);
        }
        out.push_str("</table>");

        if let Some(jwt) = get(JWT_HEADER) {
            out.push_str(&format!(
                "<h2>The identity JWT (<code>{}</code>), decoded</h2>\
                 <p class=\"muted\">Decoded here without verification; a real dashboard verifies it \
                 with the keys at <code>/.well-known/samlgate/jwks.json</code>.</p><pre id=\"jwt\">{}</pre>",
                escape(&display_name(JWT_HEADER)),
                escape(&decode_jwt(&jwt))
            ));
        }

        out.push_str(
            "<h2>Accounts in the dashboard's admin API (SCIM)</h2>\
             <p class=\"muted\">samlgate looked you up here at sign-in and created you if you were new. \
             Your row is green.</p><table id=\"accounts\"><tr><th>userName</th><th>id</th><th>Name</th>\
             <th>Workspace</th><th>Permission set</th><th>Active</th><th>Created</th></tr>",
        );
        for u in self.store.users() {
            let s = |p: &str| {
                u.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let id = s("/id");
            let (ws, ps) = scim::workspace_and_permission_set(&u);
            let active = u.get("active").and_then(Value::as_bool).unwrap_or(true);
            let class = if me.as_deref() == Some(id.as_str()) {
                " class=\"me\""
            } else {
                ""
            };
            out.push_str(&format!(
                "<tr{class}><td>{}</td><td><code>{}</code></td><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&s("/userName")),
                escape(&id),
                escape(&s("/name/givenName")),
                escape(&s("/name/familyName")),
                escape(&ws.unwrap_or_default()),
                escape(&ps.unwrap_or_default()),
                if active { "yes" } else { "no (deactivated)" },
                escape(&s("/meta/created")),
            ));
        }
        out.push_str("</table>");

        out.push_str(&format!(
            "<h2>More to look at</h2><ul>\
             <li><a href=\"/saml/userinfo\">/saml/userinfo</a>: your session as JSON (answered by samlgate)</li>\
             <li><a href=\"/saml/metadata\">/saml/metadata</a>: the SP metadata you would give a real IdP</li>\
             <li><a href=\"/reports?month=may\">/reports?month=may</a>: any other path is proxied the same way</li>\
             </ul><details><summary>Every other request header</summary>\
             <table><tr><th>Header</th><th>Value</th></tr>{others}</table></details>"
        ));
        page("Demo dashboard", &out)
    }
}

/// The CSP of the dashboard's page (form-action is added per request).
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'";

/// Display order: the identity headers as the contract lists them, then the rest by name.
fn header_rank(name: &str) -> (usize, String) {
    const ORDER: &[&str] = &[
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-name",
        "x-forwarded-groups",
        "x-forwarded-workspace",
        "x-forwarded-permission-set",
        JWT_HEADER,
    ];
    let rank = ORDER.iter().position(|n| *n == name).unwrap_or(ORDER.len());
    (rank, name.to_string())
}

/// `x-forwarded-user` → `X-Forwarded-User` for display.
fn display_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The JOSE header and claims of a compact JWT, pretty-printed (RFC 7519 §7.2, without the
/// signature check).
pub fn decode_jwt(jwt: &str) -> String {
    let mut parts = jwt.trim().split('.');
    let mut section = |what: &str| {
        let decoded = parts
            .next()
            .and_then(|p| URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| serde_json::to_string_pretty(&v).ok());
        format!(
            "{what}: {}",
            decoded.unwrap_or_else(|| "(not base64url JSON)".into())
        )
    };
    let header = section("header");
    let claims = section("claims");
    format!("{header}\n{claims}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_compact_jwt() {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256"}"#);
        let c = URL_SAFE_NO_PAD.encode(br#"{"sub":"u-1","email":"a@x.com"}"#);
        let out = decode_jwt(&format!("{h}.{c}.sig"));
        assert!(out.contains("\"alg\": \"ES256\""), "{out}");
        assert!(out.contains("\"email\": \"a@x.com\""), "{out}");
        assert!(decode_jwt("garbage").contains("not base64url JSON"));
    }

    #[test]
    fn header_names_are_shown_capitalised() {
        assert_eq!(display_name("x-forwarded-user"), "X-Forwarded-User");
    }
}
