//! A browser-like SSO driver: a development IdP (the same signer the demo uses) whose metadata
//! the gateway trusts, a cookie jar, and the SP-initiated round trip step by step.

use std::io::Read;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::Full;
use samlgate::demo::signer::{ResponseSpec, TestIdp};

use super::dashboard::Dashboard;
use super::gateway::{self, Gateway, Opts};

/// The IdP's entity ID in tests.
pub const IDP_ENTITY: &str = "https://idp.test/metadata";

/// A gateway in front of a fake dashboard, trusting a freshly generated IdP.
pub struct Sso {
    pub idp: TestIdp,
    pub gw: Gateway,
    pub dash: Dashboard,
    pub dir: tempfile::TempDir,
}

impl Sso {
    /// Starts everything; `opts.metadata` is filled in here.
    pub async fn start(opts: Opts<'_>) -> Sso {
        let dash = Dashboard::start().await;
        Self::start_with(dash, opts).await
    }

    /// Starts everything with `extra` sections (`[headers]`, `[access]`, …) in the config.
    pub async fn start_extra(extra: &str) -> Sso {
        Self::start(Opts {
            extra,
            ..Opts::default()
        })
        .await
    }

    /// Same, in front of an existing dashboard.
    pub async fn start_with(dash: Dashboard, opts: Opts<'_>) -> Sso {
        Self::start_with_slo(dash, opts, Some("https://idp.test/slo")).await
    }

    /// Same, with the IdP's single logout endpoint (`None`: its metadata names none, as
    /// Google Workspace's does).
    pub async fn start_with_slo(dash: Dashboard, opts: Opts<'_>, slo: Option<&str>) -> Sso {
        let idp = TestIdp::generate(IDP_ENTITY).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("idp.xml");
        std::fs::write(
            &meta,
            idp.metadata_xml("https://idp.test/sso", slo).unwrap(),
        )
        .unwrap();
        let meta = meta.display().to_string();
        let toml = gateway::toml(
            opts.public_url.unwrap_or("{public_url}"),
            &dash.url(),
            Opts {
                metadata: Some(&meta),
                ..opts
            },
        );
        let mut gw = gateway::start_toml(&toml).await;
        if let Some(url) = opts.public_url {
            gw.public_url = url.to_string();
        }
        Sso { idp, gw, dash, dir }
    }

    /// A second gateway (another replica) trusting the same IdP, in front of the same
    /// dashboard, telling browsers the same `public_url` as the first.
    pub async fn replica(&self, opts: Opts<'_>) -> Gateway {
        let meta = self.dir.path().join("idp.xml").display().to_string();
        let toml = gateway::toml(
            &self.gw.public_url,
            &self.dash.url(),
            Opts {
                metadata: Some(&meta),
                ..opts
            },
        );
        gateway::start_toml(&toml).await
    }

    pub fn acs(&self) -> String {
        format!("{}/saml/acs", self.gw.public_url)
    }

    pub fn entity_id(&self) -> String {
        format!("{}/saml/metadata", self.gw.public_url)
    }

    /// A valid response for this gateway answering `request_id` (None = unsolicited).
    pub fn spec(&self, request_id: Option<&str>) -> ResponseSpec {
        ResponseSpec {
            destination: Some(self.acs()),
            recipient: Some(self.acs()),
            audiences: vec![self.entity_id()],
            in_response_to: request_id.map(str::to_string),
            ..ResponseSpec::default()
        }
    }

    pub fn form_value(&self, spec: &ResponseSpec) -> String {
        self.idp.response_form_value(spec).unwrap()
    }

    /// Full SP-initiated login for `browser`; returns the ACS response.
    pub async fn login(&self, browser: &mut Browser, return_to: &str) -> (Response<()>, Bytes) {
        let start = browser.start_login(&self.gw, return_to).await;
        let value = self.form_value(&self.spec(Some(&start.request_id)));
        browser.post_acs(&self.gw, &value, &start.relay_state).await
    }
}

/// What `/saml/login` answered.
pub struct LoginStart {
    pub location: String,
    pub request_id: String,
    pub relay_state: String,
    pub authn_request: String,
}

/// A cookie jar that behaves like a browser for one origin (path and flags ignored).
#[derive(Default, Clone)]
pub struct Browser {
    pub cookies: Vec<(String, String)>,
}

impl Browser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn get_cookie(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// Applies every Set-Cookie of a response.
    pub fn absorb(&mut self, headers: &HeaderMap) {
        for sc in headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            let first = sc.split(';').next().unwrap_or("");
            let Some((name, value)) = first.split_once('=') else {
                continue;
            };
            let removed = sc.to_ascii_lowercase().contains("max-age=0");
            self.cookies.retain(|(k, _)| k != name);
            if !removed && !value.is_empty() {
                self.cookies.push((name.to_string(), value.to_string()));
            }
        }
    }

    /// GET with this browser's cookies and `Accept: text/html`.
    pub async fn get(&mut self, url: &str) -> (Response<()>, Bytes) {
        let mut b = Request::get(url).header("accept", "text/html");
        if !self.cookies.is_empty() {
            b = b.header("cookie", self.cookie_header());
        }
        let (resp, body) = gateway::send(b.body(Full::new(Bytes::new())).unwrap()).await;
        self.absorb(resp.headers());
        (resp, body)
    }

    /// `/saml/login?return_to=…`, decoding the AuthnRequest from the redirect.
    pub async fn start_login(&mut self, gw: &Gateway, return_to: &str) -> LoginStart {
        self.start_login_at(&gw.public_url, return_to).await
    }

    /// `start_login` at the gateway whose base URL is `base` (a `serve` process).
    pub async fn start_login_at(&mut self, base: &str, return_to: &str) -> LoginStart {
        let url = format!(
            "{base}/saml/login?return_to={}",
            url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect::<String>()
        );
        let (resp, _) = self.get(&url).await;
        assert_eq!(resp.status(), 302, "login did not redirect");
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        decode_redirect(&location)
    }

    /// POSTs the form to the ACS with this browser's cookies.
    pub async fn post_acs(
        &mut self,
        gw: &Gateway,
        saml_response: &str,
        relay_state: &str,
    ) -> (Response<()>, Bytes) {
        self.try_post_acs(gw, saml_response, relay_state)
            .await
            .expect("the gateway closed the connection")
    }

    /// Like `post_acs`, but `None` when the gateway refused by closing the connection (a body
    /// over its cap may be cut off while it is still being sent).
    pub async fn try_post_acs(
        &mut self,
        gw: &Gateway,
        saml_response: &str,
        relay_state: &str,
    ) -> Option<(Response<()>, Bytes)> {
        self.try_post_acs_at(&gw.public_url, saml_response, relay_state)
            .await
    }

    /// `try_post_acs` to the gateway whose base URL is `base` (a `serve` process).
    pub async fn try_post_acs_at(
        &mut self,
        base: &str,
        saml_response: &str,
        relay_state: &str,
    ) -> Option<(Response<()>, Bytes)> {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("SAMLResponse", saml_response)
            .append_pair("RelayState", relay_state)
            .finish();
        let mut b = Request::post(format!("{base}/saml/acs"))
            .header("content-type", "application/x-www-form-urlencoded");
        if !self.cookies.is_empty() {
            b = b.header("cookie", self.cookie_header());
        }
        let resp = gateway::client()
            .request(b.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .ok()?;
        let (parts, body) = resp.into_parts();
        let bytes = http_body_util::BodyExt::collect(body)
            .await
            .ok()?
            .to_bytes();
        let resp = Response::from_parts(parts, ());
        self.absorb(resp.headers());
        Some((resp, bytes))
    }
}

/// Decodes an HTTP-Redirect binding URL: SAMLRequest (deflate + base64) and RelayState.
pub fn decode_redirect(location: &str) -> LoginStart {
    let url = url::Url::parse(location).unwrap();
    let get = |k: &str| {
        url.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(get("SAMLRequest").expect("no SAMLRequest"))
        .unwrap();
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(&raw[..])
        .read_to_string(&mut xml)
        .unwrap();
    let id_start = xml.find(" ID=\"").expect("AuthnRequest without ID") + 5;
    let request_id = xml[id_start..xml[id_start..].find('"').unwrap() + id_start].to_string();
    LoginStart {
        location: location.to_string(),
        request_id,
        relay_state: get("RelayState").unwrap_or_default(),
        authn_request: xml,
    }
}

/// Sets attribute `name` of `spec` to `values`, replacing what it had; no values removes it.
pub fn set_attribute(spec: &mut ResponseSpec, name: &str, values: &[&str]) {
    spec.attributes.retain(|(n, _)| n != name);
    if !values.is_empty() {
        spec.attributes
            .push((name.into(), values.iter().map(|v| v.to_string()).collect()));
    }
}

/// Whether any Set-Cookie of the response starts a session (name contains "samlgate" and is
/// not the login-binding cookie, and has a value).
pub fn sets_session(resp: &Response<()>) -> bool {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|sc| {
            let first = sc.split(';').next().unwrap_or("");
            let (name, value) = first.split_once('=').unwrap_or(("", ""));
            let name = name.strip_prefix("__Host-").unwrap_or(name);
            name.contains("samlgate") && !name.starts_with("samlgate_login_") && !value.is_empty()
        })
}
