//! App: everything built once from config (behind one `Arc`) and `App::handle`, the whole
//! request pipeline read top to bottom. Errors become responses in one place and are logged
//! once, here, with one access-log line per request.

use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};

use crate::access;
use crate::body::{Body, empty, full};
use crate::config::{Config, IdpMetadataSource, PathPattern, StoreKind};
use crate::error::Error;
use crate::headers::{self, IdentityHeaders};
use crate::identity::Identity;
use crate::jwt::Signer;
use crate::provision::{ProvisionError, Provisioner};
use crate::proxy::{Peer, Proxy};
use crate::saml::fetch::{MetadataFetcher, RefreshError};
use crate::saml::{self, LogoutError, Saml, SloMessage, Verified};
use crate::session::{PendingLogin, PendingLogout, Session, Sessions};
use crate::telemetry::Metrics;

/// `X-Request-Id`
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Prefix of the short-lived cookie that binds a pending login to the browser that started it;
/// the RelayState token's first characters complete the name, so parallel logins in several
/// tabs do not overwrite each other. Over https it has the `__Host-` prefix too
/// ([`HOST_PREFIX`]), so that a sibling subdomain cannot plant one (login CSRF by cookie
/// tossing).
const BINDING_COOKIE: &str = "samlgate_login_";
/// The cookie-name prefix browsers accept only on a `Secure`, `Path=/` cookie without `Domain`.
const HOST_PREFIX: &str = "__Host-";
/// Characters of the RelayState token used in the binding cookie's name.
const BINDING_NAME_CHARS: usize = 10;

/// Why the app could not be built (bad files, unreachable stores…): reported by `check` and
/// refused by `serve`.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The upstream client could not be built.
    #[error(transparent)]
    Proxy(#[from] crate::proxy::BuildError),
    /// Identity header rules did not compile.
    #[error(transparent)]
    Headers(#[from] crate::headers::FilterError),
    /// The identity-JWT key could not be loaded or generated.
    #[error(transparent)]
    Jwt(#[from] crate::jwt::KeyError),
    /// TLS files could not be loaded.
    #[error("server.tls: {0}")]
    Tls(String),
    /// The SAML SP could not be set up (IdP metadata, SP keys).
    #[error(transparent)]
    Saml(#[from] saml::SetupError),
    /// The metadata fetched from `saml.idp_metadata_url` was refused and no backup copy is
    /// usable (S1: never start without an IdP signing key).
    #[error("saml.idp_metadata_url: {0}")]
    IdpMetadata(String),
    /// The session store could not be set up.
    #[error("session: {0}")]
    Session(#[from] crate::session::Error),
    /// The provisioning client could not be set up.
    #[error("provisioning: {0}")]
    Provision(String),
}

/// Labels of `samlgate_saml_responses_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The gateway, built once.
pub struct App {
    /// The validated config.
    pub config: Config,
    proxy: Proxy,
    public_paths: Vec<PathPattern>,
    identity_headers: IdentityHeaders,
    /// `[headers.jwt]`: the identity-JWT signer, when configured.
    jwt: Option<Signer>,
    access: access::Policy,
    /// The SP with the IdP metadata in force: swapped by a metadata refresh, read once per
    /// SAML request (the lock is never held across `.await`). `None` until URL metadata is
    /// first loaded.
    saml: RwLock<Option<Arc<Saml>>>,
    /// Our SP metadata (independent of the IdP's).
    sp_metadata: String,
    /// Fetches `saml.idp_metadata_url` (none for a metadata file).
    metadata_fetcher: Option<MetadataFetcher>,
    sessions: Sessions,
    provisioner: Option<Provisioner>,
    /// Request metrics.
    pub metrics: Metrics,
    saml_results: Family<ResultLabels, Counter>,
    saml_verify_seconds: Histogram,
    registry: Registry,
    /// Whether the untrusted forward-auth warning was logged.
    untrusted_warned: std::sync::atomic::AtomicBool,
}

/// Where the JWKS is served.
const JWKS_PATH: &str = "/.well-known/samlgate/jwks.json";

/// The request a forward-auth call asks about.
struct OriginalRequest {
    method: Method,
    /// Path and query (`/` when not believed).
    uri: String,
    /// Envoy ext_authz style (`/saml/auth/<path>`): answer 200, not 202.
    envoy: bool,
}

impl App {
    /// Builds every part from config; fails on anything that would fail at request time.
    pub async fn build(config: Config) -> Result<Arc<App>, StartError> {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let proxy = Proxy::new(&config.upstream, &config.server)?;
        let identity_headers = IdentityHeaders::new(&config.headers)?;
        let jwt = config.headers.jwt.as_ref().map(Signer::new).transpose()?;
        let sp_metadata = saml::sp_metadata_from_config(&config.saml)?;
        let (saml, metadata_fetcher) = match &config.saml.idp_metadata {
            IdpMetadataSource::File(_) => (Some(Arc::new(Saml::from_config(&config.saml)?)), None),
            IdpMetadataSource::Url {
                url, backup_file, ..
            } => {
                let fetcher = MetadataFetcher::new(url.clone(), backup_file.clone());
                let saml = initial_metadata(&config, &fetcher).await?;
                (saml.map(Arc::new), Some(fetcher))
            }
        };
        let sessions = Sessions::new(&config.session, config.server.public_https).await?;
        sessions.register(&mut registry);
        let provisioner = match &config.provisioning {
            None => None,
            Some(p) => {
                // Replicas share a Redis store: the lock that keeps them from creating one
                // user twice is held there. One process needs no more than its single flight.
                let shared = match config.session.store {
                    StoreKind::Memory => None,
                    StoreKind::Redis => Some(sessions.clone()),
                };
                let prov = Provisioner::new(p, shared)
                    .map_err(|e| StartError::Provision(e.to_string()))?;
                prov.register_metrics(&mut registry);
                Some(prov)
            }
        };
        let saml_results = Family::<ResultLabels, Counter>::default();
        registry.register(
            "samlgate_saml_responses",
            "SAML responses received at the ACS, by result",
            saml_results.clone(),
        );
        let saml_verify_seconds =
            Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]);
        registry.register(
            "samlgate_saml_verify_duration_seconds",
            "Time to verify a SAML response (parse, signature, checks)",
            saml_verify_seconds.clone(),
        );
        let app = Arc::new(App {
            public_paths: config.upstream.public_paths.clone(),
            access: access::Policy::new(&config.access),
            proxy,
            identity_headers,
            jwt,
            saml: RwLock::new(saml),
            sp_metadata,
            metadata_fetcher,
            sessions,
            provisioner,
            metrics,
            saml_results,
            saml_verify_seconds,
            registry,
            untrusted_warned: std::sync::atomic::AtomicBool::new(false),
            config,
        });
        if let IdpMetadataSource::Url { refresh, .. } = &app.config.saml.idp_metadata {
            spawn_metadata_refresher(Arc::downgrade(&app), *refresh);
        }
        Ok(app)
    }

    /// The SAML SP with the IdP metadata in force (`None` until URL metadata is loaded).
    pub fn saml(&self) -> Option<Arc<Saml>> {
        self.saml
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The SP for one SAML request, or 503 while no IdP metadata is loaded.
    fn current_saml(&self) -> Result<Arc<Saml>, Error> {
        self.saml().ok_or_else(|| Error::Unavailable {
            what: "identity provider",
            detail: "IdP metadata not loaded yet".into(),
        })
    }

    /// Fetches `saml.idp_metadata_url` now and, when the metadata is acceptable (a signing
    /// certificate, S1; `validUntil` not passed; an SSO endpoint), puts it in force and writes
    /// the backup copy. A refused or unreachable copy leaves the metadata in force untouched.
    /// The background refresher calls this every `idp_metadata_refresh`; tests call it directly.
    pub async fn refresh_idp_metadata(&self) -> Result<(), RefreshError> {
        let Some(fetcher) = &self.metadata_fetcher else {
            return Ok(());
        };
        let xml = fetcher.fetch().await?;
        let saml = saml::fetch::build_checked(&self.config.saml, &xml, chrono::Utc::now())?;
        let certs = saml.idp().signing_certs.len();
        *self
            .saml
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(saml));
        if let Err(e) = fetcher.write_backup(&xml) {
            tracing::warn!(error = %e, "could not write saml.idp_metadata_backup_file");
        }
        tracing::info!(signing_certs = certs, "IdP metadata refreshed");
        Ok(())
    }

    /// The gateway listener's entry point: never fails, always answers.
    pub async fn handle(self: Arc<Self>, mut req: Request<Incoming>, peer: Peer) -> Response<Body> {
        let started = Instant::now();
        let request_id = request_id(&req);
        req.headers_mut().insert(X_REQUEST_ID, request_id.clone());
        let method = req.method().clone();
        // The access line is the only reader of the path once the request is forwarded.
        let path = if tracing::enabled!(target: "access", tracing::Level::INFO) {
            req.uri().path().to_owned()
        } else {
            String::new()
        };
        let in_flight = self.metrics.in_flight();
        // Forwarding is the hot path and runs in this future; samlgate's own endpoints are
        // boxed, so that their larger futures are not part of the future of every request
        // (hyper moves it into the connection once per request).
        let (route, result) = match saml_route(req.uri().path()) {
            None => self.forward(req, peer).await,
            Some(route) => (route, Box::pin(self.endpoint(req, peer)).await),
        };
        drop(in_flight);
        let rid = request_id.to_str().unwrap_or("-");
        let mut resp = match result {
            Ok(resp) => resp,
            Err(err) => {
                log_error(&err, rid);
                // A client's own bad body is not the dashboard's failure: not counted.
                let kind = match &err {
                    Error::Upstream(crate::proxy::ProxyError::Timeout) => Some("timeout"),
                    Error::Upstream(crate::proxy::ProxyError::Unreachable(_)) => Some("connect"),
                    _ => None,
                };
                if let Some(kind) = kind {
                    self.metrics
                        .upstream_errors
                        .get_or_create(&crate::telemetry::KindLabels { kind })
                        .inc();
                }
                err.into_response(rid)
            }
        };
        resp.headers_mut().insert(X_REQUEST_ID, request_id.clone());
        let status = resp.status();
        let elapsed = started.elapsed();
        self.metrics.observe(route, status, elapsed);
        tracing::info!(target: "access", request_id = rid, peer = %peer.addr, %method, path = %path,
            status = status.as_u16(), route, duration_ms = elapsed.as_secs_f64() * 1000.0);
        resp
    }

    /// samlgate's own endpoints (`/saml/*`, `/.well-known/samlgate/*`).
    async fn endpoint(&self, req: Request<Incoming>, peer: Peer) -> Result<Response<Body>, Error> {
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/saml/metadata") => Ok(self.metadata()),
            (&Method::GET, "/saml/login") => {
                let return_to =
                    query_param(req.uri().query(), "return_to").unwrap_or_else(|| "/".into());
                self.start_login(&return_to).await
            }
            (&Method::POST, "/saml/acs") => self.finish_login(req).await,
            (&Method::GET | &Method::POST, "/saml/logout") => self.logout(req).await,
            (&Method::GET, "/saml/auth") => self.forward_auth(&req, peer).await,
            (_, p) if p.starts_with("/saml/auth/") => self.forward_auth(&req, peer).await,
            (&Method::GET, "/saml/userinfo") => self.userinfo(&req).await,
            (&Method::GET | &Method::HEAD, JWKS_PATH) => self.jwks(),
            (_, "/saml/metadata" | JWKS_PATH) => Err(Error::MethodNotAllowed("GET, HEAD")),
            (_, "/saml/login" | "/saml/auth" | "/saml/userinfo") => {
                Err(Error::MethodNotAllowed("GET"))
            }
            (_, "/saml/acs") => Err(Error::MethodNotAllowed("POST")),
            (_, "/saml/logout") => Err(Error::MethodNotAllowed("GET, POST")),
            _ => Err(Error::NotFound),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Forwarding
    // -----------------------------------------------------------------------------------------

    /// Public path → forwarded without identity; otherwise session → access → forward.
    /// Written flat, with one await of the proxy, because this future is part of every
    /// forwarded request's (see `handle`): nested async blocks would each hold the request.
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: Peer,
    ) -> (&'static str, Result<Response<Body>, Error>) {
        let sanitized = self.proxy.sanitize(&mut req, peer);
        // Access rules see the normalised path; the dashboard gets the raw one after its base
        // path, where `..` could resolve above the base: refused rather than guessed at.
        if self.proxy.has_base_path() && access::climbs(req.uri().path()) {
            return (
                "proxy",
                Err(Error::BadRequest(
                    "the path climbs above the dashboard's base path",
                )),
            );
        }
        let path = access::normalize(req.uri().path());
        let route = if access::is_public(&self.public_paths, &path) {
            self.strip_client_identity(req.headers_mut());
            "public"
        } else {
            let admitted = match self.load_session(req.headers()).await {
                Ok(Some(session)) => self.admit(&mut req, &session, &path),
                Ok(None) => return ("proxy", Box::pin(self.unauthenticated(&req)).await),
                Err(e) => Err(e),
            };
            if let Err(e) = admitted {
                return ("proxy", Err(e));
            }
            "proxy"
        };
        drop(path);
        let mut answer = self.proxy.forward(req, peer, sanitized).await;
        if let Ok(resp) = &mut answer {
            self.strip_upstream_cookies(resp.headers_mut());
        }
        (route, answer.map_err(Error::from))
    }

    /// Whether a cookie name is one of samlgate's own: the session cookie (with or without the
    /// `__Host-` prefix) or a login-binding cookie.
    fn is_our_cookie(&self, name: &str) -> bool {
        let name = name.strip_prefix(HOST_PREFIX).unwrap_or(name);
        let session = self.sessions.cookie_name();
        name == session.strip_prefix(HOST_PREFIX).unwrap_or(session)
            || name.starts_with(BINDING_COOKIE)
    }

    /// Drops the dashboard's `Set-Cookie` headers that would set, overwrite or delete one of
    /// samlgate's own cookies (ending sessions, or planting one obtained elsewhere). The usual
    /// response has no `Set-Cookie`: one lookup.
    fn strip_upstream_cookies(&self, headers: &mut HeaderMap) {
        // The cookie's name; one that is not text cannot be ours (our names are ASCII).
        let ours = |v: &HeaderValue| {
            let b = v.as_bytes();
            let end = b
                .iter()
                .position(|&c| c == b'=' || c == b';')
                .unwrap_or(b.len());
            std::str::from_utf8(&b[..end]).is_ok_and(|name| self.is_our_cookie(name.trim()))
        };
        if !headers.get_all(header::SET_COOKIE).iter().any(ours) {
            return;
        }
        let kept: Vec<HeaderValue> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter(|v| !ours(v))
            .cloned()
            .collect();
        headers.remove(header::SET_COOKIE);
        for v in kept {
            headers.append(header::SET_COOKIE, v);
        }
        tracing::warn!(
            "the dashboard tried to set one of samlgate's own cookies; the Set-Cookie was dropped"
        );
    }

    /// Authorises the session's identity for the path and puts it on the request: planted
    /// identity and samlgate's cookies out, identity headers (and the JWT) in.
    fn admit(
        &self,
        req: &mut Request<Incoming>,
        session: &Session,
        path: &access::NormalPath,
    ) -> Result<(), Error> {
        self.access
            .authorize(&session.identity, req.method(), path)?;
        self.strip_client_identity(req.headers_mut());
        self.identity_headers
            .inject(req.headers_mut(), &session.identity);
        self.set_jwt(req.headers_mut(), session)
    }

    /// Removes what the dashboard must never see from a client: planted identity headers and
    /// samlgate's own cookies.
    fn strip_client_identity(&self, headers: &mut HeaderMap) {
        self.identity_headers.strip(headers);
        headers::strip_cookies(headers, |name| self.is_our_cookie(name));
    }

    /// Sets the identity JWT (when `[headers.jwt]` is configured), reusing the session's token
    /// while it is fresh.
    fn set_jwt(&self, headers: &mut HeaderMap, session: &Session) -> Result<(), Error> {
        let Some(signer) = &self.jwt else {
            return Ok(());
        };
        let token = signer
            .token(&session.id.fingerprint(), &session.identity)
            .map_err(|e| Error::Unavailable {
                what: "identity signer",
                detail: e.to_string(),
            })?;
        headers.insert(signer.header_name().clone(), token);
        Ok(())
    }

    async fn load_session(&self, headers: &HeaderMap) -> Result<Option<Session>, Error> {
        self.sessions.load(headers).await.map_err(session_error)
    }

    /// No session: a browser asking for a page is sent to the IdP at once; anything else gets
    /// 401 with the login URL.
    async fn unauthenticated<B>(&self, req: &Request<B>) -> Result<Response<Body>, Error> {
        let return_to = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        if access::wants_redirect(req.headers()) {
            return self.start_login(return_to).await;
        }
        Err(Error::Unauthenticated {
            login_url: self.login_url(return_to),
        })
    }

    fn login_url(&self, return_to: &str) -> String {
        format!(
            "{}/saml/login?return_to={}",
            self.config.server.public_url,
            percent_encoding::utf8_percent_encode(
                &access::safe_return_path(return_to),
                percent_encoding::NON_ALPHANUMERIC
            )
        )
    }

    // -----------------------------------------------------------------------------------------
    // SAML endpoints
    // -----------------------------------------------------------------------------------------

    fn metadata(&self) -> Response<Body> {
        let mut resp = Response::new(full(self.sp_metadata.clone()));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/samlmetadata+xml"),
        );
        resp
    }

    /// SP-initiated login: the pending login goes to the store under a random RelayState token,
    /// bound to this browser by a short-lived cookie; 302 to the IdP (HTTP-Redirect binding).
    async fn start_login(&self, return_to: &str) -> Result<Response<Body>, Error> {
        let return_to = access::safe_return_path(return_to);
        let request_id = saml::request_id();
        let binding = crate::session::random_token::<32>();
        let pending = PendingLogin {
            request_id: request_id.clone(),
            return_to,
            binding: digest(&binding),
        };
        let token = self
            .sessions
            .begin_login(pending, self.config.saml.login_timeout)
            .await
            .map_err(session_error)?;
        let login = self
            .current_saml()?
            .login_request_with_id(request_id, &token)
            .map_err(|e| Error::Unavailable {
                what: "identity provider",
                detail: e.to_string(),
            })?;
        let mut resp = redirect(StatusCode::FOUND, &login.redirect_url);
        let cookie = self.binding_cookie(&token, &binding, self.config.saml.login_timeout);
        resp.headers_mut().append(header::SET_COOKIE, cookie);
        Ok(resp)
    }

    /// The binding cookie for a RelayState `token`, or with an empty `value` and no `max_age`,
    /// its deletion.
    fn binding_cookie(&self, token: &str, value: &str, max_age: Duration) -> HeaderValue {
        // The IdP's POST to the ACS is cross-site: only SameSite=None (which needs Secure) is
        // sent with it. On plain-http development (loopback), browsers refuse SameSite=None
        // without Secure, and the IdP is usually same-site, so Lax is used there. `__Host-`
        // needs `Path=/`; the cookie is then sent to every path, and never forwarded
        // (`strip_client_identity`).
        let attributes = if self.config.server.public_https {
            "Path=/; HttpOnly; SameSite=None; Secure"
        } else {
            "Path=/saml/acs; HttpOnly; SameSite=Lax"
        };
        let name = self.binding_cookie_name(token);
        HeaderValue::from_str(&format!(
            "{name}={value}; {attributes}; Max-Age={}",
            max_age.as_secs()
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("samlgate_login_=; Max-Age=0"))
    }

    /// The binding cookie's name for a RelayState token.
    fn binding_cookie_name(&self, token: &str) -> String {
        let part: String = token
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(BINDING_NAME_CHARS)
            .collect();
        let host = if self.config.server.public_https {
            HOST_PREFIX
        } else {
            ""
        };
        format!("{host}{BINDING_COOKIE}{part}")
    }

    /// The Assertion Consumer Service: read the form → take the pending login of this browser →
    /// verify → replay cache → provision → session → 303.
    async fn finish_login(&self, req: Request<Incoming>) -> Result<Response<Body>, Error> {
        let (parts, body) = req.into_parts();
        // A form that is too large or malformed is a refused sign-in like any other (403).
        let form = read_form(
            body,
            self.config.saml.max_response_bytes + 16 * 1024,
            self.config.server.header_read_timeout,
        )
        .await
        .map_err(|e| match e {
            Error::PayloadTooLarge => refused(
                "The sign-in response is larger than this service accepts.",
                "the ACS form is over saml.max_response_bytes",
            ),
            Error::BadRequest(why) => refused(why, why),
            other => other,
        })?;
        let Some(saml_response) = form.get("SAMLResponse") else {
            return Err(refused(
                "The identity provider sent no SAML response.",
                "no SAMLResponse in the form",
            ));
        };
        let relay_state = form.get("RelayState").map(String::as_str).unwrap_or("");
        let pending = self.take_pending_login(relay_state, &parts.headers).await?;
        let verified = self
            .verify(
                saml_response,
                pending.as_ref().map(|p| p.request_id.clone()),
            )
            .await?;
        self.claim_once(&verified).await?;
        let identity = self.provision(verified.identity.clone()).await?;
        let cap = verified.session_not_on_or_after.map(SystemTime::from);
        let (session, cookie) = self
            .sessions
            .create(identity, cap)
            .await
            .map_err(|e| match e {
                crate::session::Error::AlreadyExpired => refused(
                    "Your sign-in at the identity provider has already ended.",
                    "SessionNotOnOrAfter passed",
                ),
                e => session_error(e),
            })?;
        let return_to = match &pending {
            Some(p) => p.return_to.clone(),
            // IdP-initiated: RelayState is a landing path only when it is a same-origin path.
            None => access::safe_return_path(relay_state),
        };
        tracing::info!(target: "audit", event = "login", user = %session.identity.subject,
            upstream_user = session.identity.upstream_user(), session = %session.id.fingerprint(),
            idp_initiated = pending.is_none(), "signed in");
        let mut resp = redirect(StatusCode::SEE_OTHER, &return_to);
        resp.headers_mut().append(header::SET_COOKIE, cookie);
        if pending.is_some() {
            let clear = self.binding_cookie(relay_state, "", Duration::ZERO);
            resp.headers_mut().append(header::SET_COOKIE, clear);
        }
        Ok(resp)
    }

    /// The pending login named by RelayState, if it was started by *this* browser. A RelayState
    /// that names no pending login is an IdP-initiated login's landing path (or nothing).
    async fn take_pending_login(
        &self,
        relay_state: &str,
        headers: &HeaderMap,
    ) -> Result<Option<PendingLogin>, Error> {
        if relay_state.is_empty() || relay_state.starts_with('/') {
            return Ok(None);
        }
        let Some(pending) = self
            .sessions
            .take_login(relay_state)
            .await
            .map_err(session_error)?
        else {
            return Ok(None);
        };
        let name = self.binding_cookie_name(relay_state);
        let bound = cookie_values(headers, &name)
            .any(|v| constant_time_eq(digest(v).as_bytes(), pending.binding.as_bytes()));
        if !bound {
            // Login CSRF: a response to a login another browser started (S5).
            self.saml_results
                .get_or_create(&ResultLabels {
                    result: "wrong_browser",
                })
                .inc();
            return Err(refused(
                "This sign-in was started in another browser or has expired. Please sign in again.",
                "binding cookie missing or wrong for the RelayState's pending login",
            ));
        }
        Ok(Some(pending))
    }

    /// Runs samael/xmlsec off the async threads, with a panic guard and a time limit (S12).
    async fn verify(
        &self,
        saml_response: &str,
        pending: Option<String>,
    ) -> Result<Verified, Error> {
        let saml = self.current_saml()?;
        let form_value = saml_response.to_string();
        let started = Instant::now();
        let result =
            blocking(move || saml.verify(&form_value, pending.as_deref(), chrono::Utc::now()))
                .await;
        self.saml_verify_seconds
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(verified)) => {
                self.saml_results
                    .get_or_create(&ResultLabels { result: "verified" })
                    .inc();
                Ok(verified)
            }
            Ok(Err(e)) => {
                self.saml_results
                    .get_or_create(&ResultLabels { result: "invalid" })
                    .inc();
                Err(refused(
                    &login_refusal_text(&e),
                    &format!("SAML response refused: {e}"),
                ))
            }
            Err(why) => {
                self.saml_results
                    .get_or_create(&ResultLabels { result: why })
                    .inc();
                Err(refused(
                    "The sign-in response could not be processed.",
                    &format!("SAML verification {why}"),
                ))
            }
        }
    }

    /// One-time use of each Response and Assertion ID, across replicas (S4).
    async fn claim_once(&self, v: &Verified) -> Result<(), Error> {
        let ttl = replay_ttl(
            v.replay_expires_at,
            chrono::Utc::now(),
            self.config.saml.clock_skew,
        );
        for key in [
            format!("assertion:{}:{}", v.issuer, v.assertion_id),
            format!("response:{}:{}", v.issuer, v.response_id),
        ] {
            if !self
                .sessions
                .claim_once(&key, ttl)
                .await
                .map_err(session_error)?
            {
                self.saml_results
                    .get_or_create(&ResultLabels { result: "replay" })
                    .inc();
                return Err(refused(
                    "This sign-in response was already used. Please sign in again.",
                    &format!("replayed {key}"),
                ));
            }
        }
        Ok(())
    }

    async fn provision(&self, identity: Identity) -> Result<Identity, Error> {
        let Some(provisioner) = &self.provisioner else {
            return Ok(identity);
        };
        provisioner.resolve(identity).await.map_err(|e| match e {
            ProvisionError::Unavailable { .. } => Error::Unavailable {
                what: "dashboard's account service",
                detail: format!("provisioning: {e}"),
            },
            e => Error::LoginRefused {
                reason: e.to_string(),
                detail: format!("provisioning: {e}"),
            },
        })
    }

    /// `/saml/logout`: (a) the IdP's LogoutRequest (`SAMLRequest`) ends every session of its
    /// NameID and is answered with a LogoutResponse redirect; (b) the IdP's LogoutResponse
    /// (`SAMLResponse`) to ours lands on the signed-out page; (c) otherwise the user is signing
    /// out: the local session ends first, then, when the IdP has an SLO endpoint, 302 to it with
    /// our LogoutRequest. Redirect binding on GET, POST binding on POST.
    async fn logout(&self, req: Request<Incoming>) -> Result<Response<Body>, Error> {
        let (parts, body) = req.into_parts();
        let received = if parts.method == Method::POST {
            let form = read_form(
                body,
                saml::logout::MAX_LOGOUT_PARAM + 16 * 1024,
                self.config.server.header_read_timeout,
            )
            .await?;
            let relay = form.get("RelayState").map(String::as_str);
            match (form.get("SAMLRequest"), form.get("SAMLResponse")) {
                (None, None) => None,
                (Some(v), None) => Some(Received::Post(true, v.clone(), relay.map(str::to_string))),
                (None, Some(v)) => {
                    Some(Received::Post(false, v.clone(), relay.map(str::to_string)))
                }
                (Some(_), Some(_)) => return Err(logout_refused(&LogoutError::NoMessage)),
            }
        } else {
            let query = parts.uri.query().unwrap_or("");
            let has = |k: &str| query_param(Some(query), k).is_some();
            (has("SAMLRequest") || has("SAMLResponse"))
                .then(|| Received::Redirect(query.to_string()))
        };
        let Some(received) = received else {
            return self.sign_out(&parts.headers).await;
        };
        let saml = self.current_saml()?;
        let msg = match &received {
            Received::Redirect(query) => saml.read_logout_redirect(query),
            Received::Post(is_request, value, relay) => {
                saml.read_logout_post(*is_request, value, relay.as_deref())
            }
        }
        .map_err(|e| logout_refused(&e))?;
        if msg.is_request() {
            self.idp_logout(saml, msg).await
        } else {
            self.logout_answered(saml, msg).await
        }
    }

    /// (c) The user signs out: local session first (always), then SAML single logout.
    async fn sign_out(&self, headers: &HeaderMap) -> Result<Response<Body>, Error> {
        let still_in = |e: crate::session::Error| Error::SignOutFailed(e.to_string());
        let Some(session) = self.sessions.load(headers).await.map_err(still_in)? else {
            let mut resp = signed_out_page("You are signed out.");
            resp.headers_mut()
                .append(header::SET_COOKIE, self.sessions.removal_cookie());
            return Ok(resp);
        };
        let clear = self.sessions.destroy(&session).await.map_err(still_in)?;
        tracing::info!(target: "audit", event = "logout", user = %session.identity.subject,
            session = %session.id.fingerprint(), "signed out");
        let mut resp = match self.slo_redirect(&session.identity).await {
            Some(url) => redirect(StatusCode::FOUND, &url),
            None => signed_out_page("You are signed out."),
        };
        resp.headers_mut().append(header::SET_COOKIE, clear);
        Ok(resp)
    }

    /// Our LogoutRequest for `identity`, kept as a pending logout under a RelayState token;
    /// `None` (logged) when the IdP has no SLO endpoint, the session has no NameID, or the
    /// store or signing failed — the local session has ended either way.
    async fn slo_redirect(&self, identity: &Identity) -> Option<String> {
        let saml = self.saml()?;
        saml.idp().slo_redirect.as_ref()?;
        if identity.subject.is_empty() {
            return None;
        }
        let request_id = saml::request_id();
        let pending = PendingLogout {
            request_id: request_id.clone(),
        };
        let token = match self
            .sessions
            .begin_logout(pending, self.config.saml.login_timeout)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "single logout skipped: pending logout not stored");
                return None;
            }
        };
        match saml.logout_request(&request_id, identity, &token, chrono::Utc::now()) {
            Ok(url) => url,
            Err(e) => {
                tracing::warn!(error = %e, "single logout skipped: LogoutRequest not built");
                None
            }
        }
    }

    /// (a) The IdP's LogoutRequest: verify → once only → end the NameID's sessions → 302 to
    /// the IdP with our LogoutResponse (PartialLogout when the store failed).
    async fn idp_logout(&self, saml: Arc<Saml>, msg: SloMessage) -> Result<Response<Body>, Error> {
        let verifier = saml.clone();
        let verified = blocking(move || verifier.verify_logout_request(&msg, chrono::Utc::now()))
            .await
            .map_err(|why| Error::LogoutRefused {
                detail: format!("LogoutRequest verification {why}"),
            })?
            .map_err(|e| logout_refused(&e))?;
        // A LogoutRequest is acted on once (it could otherwise end a later session again).
        // With the store down nothing can be ended: the IdP is still answered (PartialLogout,
        // SAML core §3.7.3.2), so that its logout chain goes on and it knows we failed.
        let ttl = self.config.saml.max_issue_age + self.config.saml.clock_skew * 2;
        let key = format!("logout:{}:{}", saml.idp().entity_id, verified.id);
        let store_up = match self.sessions.claim_once(&key, ttl).await {
            Ok(true) => true,
            Ok(false) => {
                return Err(Error::LogoutRefused {
                    detail: "replayed LogoutRequest".into(),
                });
            }
            Err(e) => {
                tracing::error!(error = %e,
                    "IdP-initiated logout: the session store is not answering, no session ended");
                false
            }
        };
        let mut ended = 0;
        let mut partial = !store_up;
        let indexes: Vec<Option<&str>> = if verified.session_indexes.is_empty() {
            vec![None]
        } else {
            verified
                .session_indexes
                .iter()
                .map(|s| Some(s.as_str()))
                .collect()
        };
        for index in indexes.into_iter().filter(|_| store_up) {
            match self
                .sessions
                .destroy_by_subject(&verified.name_id, index)
                .await
            {
                Ok(n) => ended += n,
                Err(e) => {
                    tracing::error!(error = %e, "IdP-initiated logout: sessions not all ended");
                    partial = true;
                }
            }
        }
        // Not fully acted on: the IdP may send it again.
        if store_up
            && partial
            && let Err(e) = self.sessions.release_claim(&key).await
        {
            tracing::warn!(error = %e, "IdP-initiated logout: its replay claim stays");
        }
        tracing::info!(target: "audit", event = "idp_logout", user = %verified.name_id,
            sessions = ended, partial, "signed out by the IdP");
        match saml.logout_response(
            &verified.id,
            partial,
            verified.relay_state.as_deref(),
            chrono::Utc::now(),
        ) {
            Ok(Some(url)) => Ok(redirect(StatusCode::FOUND, &url)),
            Ok(None) => Ok(signed_out_page("You are signed out.")),
            Err(e) => Err(Error::Unavailable {
                what: "identity provider",
                detail: format!("LogoutResponse not built: {e}"),
            }),
        }
    }

    /// (b) The IdP's LogoutResponse to our LogoutRequest (named by the RelayState token).
    async fn logout_answered(
        &self,
        saml: Arc<Saml>,
        msg: SloMessage,
    ) -> Result<Response<Body>, Error> {
        let token = msg.relay_state().unwrap_or("").to_string();
        let pending = self
            .sessions
            .take_logout(&token)
            .await
            .map_err(session_error)?;
        let verified = blocking(move || {
            saml.verify_logout_response(
                &msg,
                pending.as_ref().map(|p| p.request_id.as_str()),
                chrono::Utc::now(),
            )
        })
        .await
        .map_err(|why| Error::LogoutRefused {
            detail: format!("LogoutResponse verification {why}"),
        })?;
        match verified {
            Ok(_) => Ok(signed_out_page("You are signed out.")),
            Err(LogoutError::Status { code }) => {
                tracing::warn!(status = %code, "the IdP did not end its session");
                Ok(signed_out_page(
                    "You are signed out here, but the identity provider reported that it could not end its own session. Close the browser to be sure.",
                ))
            }
            Err(e) => Err(logout_refused(&e)),
        }
    }

    /// Forward-auth for nginx `auth_request`, Traefik ForwardAuth and Envoy ext_authz: 202 (200
    /// on Envoy's `/saml/auth/<path>`, as Envoy allows only on 200) with `X-Auth-Request-*` and
    /// the JWT; 401 with the login URL (body and `X-Auth-Request-Redirect`), or 302 to it for a
    /// browser where the proxy passes our answer through; 403 when a rule denies the original
    /// request.
    async fn forward_auth(
        &self,
        req: &Request<Incoming>,
        peer: Peer,
    ) -> Result<Response<Body>, Error> {
        let original = self.original_request(req, peer)?;
        let Some(session) = self.load_session(req.headers()).await? else {
            // `?rd=` (oauth2-proxy's name) on `/saml/auth` itself picks the landing path.
            let own_query = (!original.envoy).then(|| req.uri().query()).flatten();
            let return_to = match query_param(own_query, "rd") {
                Some(rd) => self.same_origin_path(&rd),
                None => original.uri.clone(),
            };
            let login_url = self.login_url(&return_to);
            // nginx needs 401 (it treats a 3xx from auth_request as an error); Traefik and
            // Envoy hand our answer to the client, so a browser there gets the redirect
            // (Envoy mode always, `/saml/auth?redirect=1` for Traefik).
            let redirect_ok = original.envoy
                || query_param(own_query, "redirect").is_some_and(|v| v == "1" || v == "true");
            if redirect_ok && access::wants_redirect(req.headers()) {
                return Ok(redirect(StatusCode::FOUND, &login_url));
            }
            return Err(Error::Unauthenticated { login_url });
        };
        let path = original.uri.split(['?', '#']).next().unwrap_or("/");
        self.access.authorize(
            &session.identity,
            &original.method,
            &access::normalize(path),
        )?;
        let mut resp = Response::new(empty());
        *resp.status_mut() = if original.envoy {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        };
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        self.identity_headers
            .inject_auth_request(h, &session.identity);
        self.set_jwt(h, &session)?;
        Ok(resp)
    }

    /// The request a forward-auth call asks about. Believed only from `server.trusted_proxies`
    /// (anyone else could name a harmless URI to pass a path rule): nginx's `X-Original-URI`
    /// and `-Method`, else Traefik's `X-Forwarded-Uri` and `-Method`, else Envoy's path after
    /// `/saml/auth` with the request's own method. From an untrusted peer: `GET /`.
    fn original_request<B>(&self, req: &Request<B>, peer: Peer) -> Result<OriginalRequest, Error> {
        let path = req.uri().path();
        let envoy = path.starts_with("/saml/auth/");
        let names = [
            "x-original-uri",
            "x-forwarded-uri",
            "x-original-method",
            "x-forwarded-method",
        ];
        if !self.proxy.is_trusted(peer.addr.ip()) {
            if envoy || names.iter().any(|n| req.headers().contains_key(*n)) {
                self.warn_untrusted_forward_auth(peer);
            }
            return Ok(OriginalRequest {
                method: Method::GET,
                uri: "/".into(),
                envoy,
            });
        }
        if envoy {
            let rest = &path["/saml/auth".len()..];
            let uri = match req.uri().query() {
                Some(q) => format!("{rest}?{q}"),
                None => rest.to_string(),
            };
            return Ok(OriginalRequest {
                method: req.method().clone(),
                uri,
                envoy,
            });
        }
        // One value per header: a repeated one means a client's copy got through, so refuse.
        let single = |name: &str| -> Result<Option<String>, Error> {
            let mut values = req.headers().get_all(name).iter();
            let first = values.next();
            if values.next().is_some() {
                return Err(Error::BadRequest("a forward-auth header was sent twice"));
            }
            // Present but not text (raw bytes over 0x7f, which nginx passes on from the request
            // line) is refused: read as absent, it would be judged as `GET /`.
            first
                .map(|v| {
                    v.to_str().map(str::to_string).map_err(|_| {
                        Error::BadRequest("a forward-auth header is not text (percent-encode it)")
                    })
                })
                .transpose()
        };
        let uri = match single("x-original-uri")? {
            Some(u) => Some(u),
            None => single("x-forwarded-uri")?,
        };
        let method = match single("x-original-method")? {
            Some(m) => Some(m),
            None => single("x-forwarded-method")?,
        };
        // A URI or method that cannot be what the proxy received is refused: read as `/` or
        // `GET`, it would be checked against the wrong access rule.
        let method = match method {
            Some(m) => Method::from_bytes(m.as_bytes())
                .map_err(|_| Error::BadRequest("the forward-auth original method is not one"))?,
            None => Method::GET,
        };
        let uri = match uri {
            Some(u) => origin_form(&u).ok_or(Error::BadRequest(
                "the forward-auth original URI is not a path",
            ))?,
            None => "/".into(),
        };
        Ok(OriginalRequest { method, uri, envoy })
    }

    /// Logs once per process that forward-auth headers from an untrusted peer were ignored:
    /// path rules then see `/`, which is almost always a missing `server.trusted_proxies` entry.
    fn warn_untrusted_forward_auth(&self, peer: Peer) {
        use std::sync::atomic::Ordering;
        if !self.untrusted_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(peer = %peer.addr.ip(),
                "forward-auth request from a peer outside server.trusted_proxies: its X-Original-URI/X-Forwarded-Uri is ignored and access rules are checked against GET /");
        }
    }

    /// A `rd` parameter as a same-origin path: an absolute URL on `public_url` loses its
    /// origin; anything else unsafe becomes `/`.
    fn same_origin_path(&self, rd: &str) -> String {
        let base = &self.config.server.public_url;
        let rest = match rd.strip_prefix(base.as_str()) {
            Some("") => "/",
            Some(rest) if rest.starts_with('/') => rest,
            Some(_) => "/",
            None => rd,
        };
        access::safe_return_path(rest)
    }

    /// The public keys that verify the identity JWT (RFC 7517 JWK Set); 404 without
    /// `[headers.jwt]`.
    fn jwks(&self) -> Result<Response<Body>, Error> {
        let Some(signer) = &self.jwt else {
            return Err(Error::NotFound);
        };
        let mut resp = Response::new(full(signer.jwks_json()));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        Ok(resp)
    }

    /// The signed-in identity as JSON, for single-page apps.
    async fn userinfo(&self, req: &Request<Incoming>) -> Result<Response<Body>, Error> {
        let Some(session) = self.load_session(req.headers()).await? else {
            return Err(Error::Unauthenticated {
                login_url: self.login_url("/"),
            });
        };
        let id = &session.identity;
        let expires_at = session
            .expires_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let body = serde_json::json!({
            "user": id.upstream_user(),
            "email": id.email,
            "name": id.display_name(),
            "groups": id.groups,
            "workspace": id.workspace,
            "permission_set": id.permission_set,
            "expires_at": expires_at,
        });
        let mut resp = Response::new(full(body.to_string()));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(resp)
    }

    /// A server worker's periodic upkeep (see [`crate::proxy::MAINTENANCE_INTERVAL`]).
    pub fn maintain(&self, worker: usize) {
        self.proxy.maintain(worker);
    }

    // -----------------------------------------------------------------------------------------
    // Admin listener
    // -----------------------------------------------------------------------------------------

    /// The admin listener: `/healthz`, `/readyz`, `/metrics`.
    pub async fn handle_admin(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/readyz") => {
                let problems = self.readiness().await;
                if problems.is_empty() {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!("not ready: {}\n", problems.join(", ")),
                    )
                }
            }
            (&Method::GET, "/metrics") => {
                let accept = req
                    .headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let Ok((out, content_type)) =
                    crate::telemetry::encode_metrics(&self.registry, accept)
                else {
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "metrics encoding failed\n",
                    );
                };
                let mut resp = Response::new(full(out));
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                resp
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// What keeps the gateway from serving logins; empty when ready.
    async fn readiness(&self) -> Vec<&'static str> {
        let mut problems = Vec::new();
        match self.saml() {
            None => problems.push("IdP metadata not loaded"),
            // The last good copy of URL metadata stays in use past its validUntil (logins keep
            // working), but the instance reports not ready so that someone looks. A file is
            // checked at start only: one that expires while running must not take every
            // replica out of its Service at the same instant.
            Some(saml)
                if self.metadata_fetcher.is_some()
                    && saml.idp().check_valid_at(chrono::Utc::now()).is_err() =>
            {
                problems.push("IdP metadata expired (validUntil passed)")
            }
            Some(_) => {}
        }
        if !self.sessions.ready().await {
            problems.push("session store not answering");
        }
        problems
    }
}

/// A logout message as it arrived, before decoding.
enum Received {
    /// The raw query string (HTTP-Redirect).
    Redirect(String),
    /// (is a LogoutRequest, the form value, RelayState) (HTTP-POST).
    Post(bool, String, Option<String>),
}

fn logout_refused(e: &LogoutError) -> Error {
    Error::LogoutRefused {
        detail: e.to_string(),
    }
}

fn signed_out_page(text: &str) -> Response<Body> {
    let mut resp = crate::pages::page(StatusCode::OK, "Signed out", text, "-");
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A request target as its path and query: itself in origin form (`/path?query`), the path
/// and query of an absolute `http(s)` URI, `None` for anything else (`admin`, `%2Fadmin`, ``).
fn origin_form(target: &str) -> Option<String> {
    if target.starts_with('/') {
        return Some(target.to_string());
    }
    let uri: http::Uri = target.parse().ok()?;
    match uri.scheme_str() {
        Some("http" | "https") => Some(
            uri.path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_string(),
        ),
        _ => None,
    }
}

/// How long a replay-cache claim is kept: until the response can no longer be accepted
/// anywhere (`expires_at`, which already includes the clock skew allowed towards the IdP),
/// plus what can separate that verdict from the claim: another replica's clock running behind
/// by up to `clock_skew`, and a verification that read the clock up to [`BLOCKING_LIMIT`]
/// before the claim was made.
fn replay_ttl(
    expires_at: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
    clock_skew: Duration,
) -> Duration {
    (expires_at - now).to_std().unwrap_or(Duration::ZERO) + clock_skew + BLOCKING_LIMIT
}

/// The longest CPU-bound SAML work may run (S12).
const BLOCKING_LIMIT: Duration = Duration::from_secs(10);

/// Runs CPU-bound SAML work (xmlsec is C) off the async threads, with a panic guard and a
/// time limit (S12).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, &'static str> {
    let task = tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
    });
    match tokio::time::timeout(BLOCKING_LIMIT, task).await {
        Err(_) => Err("timeout"),
        Ok(Err(_)) | Ok(Ok(Err(_))) => Err("panic"),
        Ok(Ok(Ok(v))) => Ok(v),
    }
}

/// The IdP metadata at start-up from `saml.idp_metadata_url`: the fetched copy when it is
/// acceptable (and then written to the backup file), else the backup copy, else `None` (the
/// gateway starts not ready and the refresher keeps trying). Refused content with no usable
/// backup stops the start (S1).
async fn initial_metadata(
    config: &Config,
    fetcher: &MetadataFetcher,
) -> Result<Option<Saml>, StartError> {
    let refused = match fetcher.fetch().await {
        Ok(xml) => match saml::fetch::build_checked(&config.saml, &xml, chrono::Utc::now()) {
            Ok(saml) => {
                if let Err(e) = fetcher.write_backup(&xml) {
                    tracing::warn!(error = %e, "could not write saml.idp_metadata_backup_file");
                }
                return Ok(Some(saml));
            }
            Err(e) => {
                tracing::error!(error = %e, "fetched IdP metadata refused; trying the backup copy");
                Some(e.to_string())
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "IdP metadata URL unreachable; trying the backup copy");
            None
        }
    };
    let from_backup = match fetcher.read_backup() {
        // The last good copy is used even past its validUntil; /readyz reports it.
        Some(Ok(xml)) => match Saml::from_config_with_metadata(&config.saml, &xml) {
            Ok(saml) => {
                tracing::warn!("using the backup copy of the IdP metadata");
                Some(saml)
            }
            Err(e) => {
                tracing::error!(error = %e, "backup copy of the IdP metadata refused");
                None
            }
        },
        Some(Err(e)) => {
            tracing::error!(error = %e, "cannot read saml.idp_metadata_backup_file");
            None
        }
        None => None,
    };
    match (from_backup, refused) {
        (Some(saml), _) => Ok(Some(saml)),
        (None, Some(why)) => Err(StartError::IdpMetadata(why)),
        (None, None) => {
            tracing::error!("no IdP metadata yet: not ready until the URL answers");
            Ok(None)
        }
    }
}

/// Refreshes URL metadata every `refresh` (every 10 s at most while none is loaded) for as
/// long as the app lives.
fn spawn_metadata_refresher(app: Weak<App>, refresh: Duration) {
    tokio::spawn(async move {
        loop {
            let loaded = match app.upgrade() {
                Some(a) => a.saml().is_some(),
                None => return,
            };
            let delay = if loaded {
                refresh
            } else {
                refresh.min(Duration::from_secs(10))
            };
            tokio::time::sleep(delay).await;
            let Some(app) = app.upgrade() else {
                return;
            };
            if let Err(e) = app.refresh_idp_metadata().await {
                tracing::warn!(error = %e, "IdP metadata refresh failed; the previous metadata stays in force");
            }
        }
    });
}

/// Store failures are outages (503); anything else is ours (503 too, logged as a failure).
fn session_error(e: crate::session::Error) -> Error {
    if matches!(e, crate::session::Error::Unavailable { .. }) {
        return Error::StoreOutage(e.to_string());
    }
    Error::Unavailable {
        what: "session store",
        detail: e.to_string(),
    }
}

fn refused(reason: &str, detail: &str) -> Error {
    Error::LoginRefused {
        reason: reason.to_string(),
        detail: detail.to_string(),
    }
}

/// What a user reads for a refused SAML response: generic, never the precise cause (which is
/// logged), except where the user can act on it.
fn login_refusal_text(e: &saml::Error) -> String {
    match e {
        saml::Error::Expired | saml::Error::SubjectExpired | saml::Error::IssuedTooLongAgo => {
            "The sign-in response has expired. Please sign in again.".into()
        }
        saml::Error::NotYetValid | saml::Error::SubjectNotYetValid | saml::Error::IssuedInFuture => {
            "The sign-in response is not valid yet: the clocks of the identity provider and this gateway disagree.".into()
        }
        saml::Error::Unsolicited | saml::Error::InResponseTo => {
            "This sign-in was not started here, or has expired. Please sign in again.".into()
        }
        saml::Error::Status { .. } => "The identity provider did not sign you in.".into(),
        _ => "The sign-in response from the identity provider was not accepted.".into(),
    }
}

fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Every value of cookie `name` in the `Cookie` headers.
fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then_some(v.trim())
        })
}

fn digest(value: &str) -> String {
    crate::session::hex(&Sha256::digest(value.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The metrics route of a path samlgate answers itself (`auth` for forward-auth, `saml` for
/// the rest); `None` for a path that is forwarded.
fn saml_route(path: &str) -> Option<&'static str> {
    if path == "/saml/auth" || path.starts_with("/saml/auth/") {
        Some("auth")
    } else if path.starts_with("/saml/") || path.starts_with("/.well-known/samlgate/") {
        Some("saml")
    } else {
        None
    }
}

/// One query parameter, percent-decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Reads an `application/x-www-form-urlencoded` body of at most `limit` bytes, sent within
/// `deadline` (a client trickling a body must not hold a connection for ever; hyper's
/// header-read timeout covers only the head).
async fn read_form(
    body: Incoming,
    limit: usize,
    deadline: Duration,
) -> Result<std::collections::HashMap<String, String>, Error> {
    let collected = tokio::time::timeout(deadline, Limited::new(body, limit).collect())
        .await
        .map_err(|_| Error::RequestTimeout)?;
    let bytes: Bytes = match collected {
        Ok(c) => c.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(Error::PayloadTooLarge);
        }
        Err(_) => return Err(Error::BadRequest("the request body could not be read")),
    };
    let mut out = std::collections::HashMap::new();
    for (k, v) in url::form_urlencoded::parse(&bytes) {
        if out.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(Error::BadRequest("a form field was sent twice"));
        }
    }
    Ok(out)
}

/// Keeps a sane client `X-Request-Id` (≤ 128 visible ASCII), else makes a random one.
fn request_id<B>(req: &Request<B>) -> HeaderValue {
    if let Some(v) = req.headers().get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    let id = crate::session::hex(&rand::random::<u128>().to_be_bytes());
    HeaderValue::try_from(id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Logs a request-path error once, at the level its kind deserves.
fn log_error(err: &Error, request_id: &str) {
    match err {
        Error::Unauthenticated { .. } | Error::NotFound | Error::MethodNotAllowed(_) => {
            tracing::debug!(request_id, error = %err, "request refused")
        }
        Error::Denied(_)
        | Error::LoginRefused { .. }
        | Error::LogoutRefused { .. }
        | Error::BadRequest(_)
        | Error::Upstream(crate::proxy::ProxyError::ClientBody)
        | Error::PayloadTooLarge
        | Error::RequestTimeout => {
            tracing::warn!(request_id, error = %err, "request refused")
        }
        // As for StoreOutage: the store logs the outage itself, once.
        Error::SignOutFailed(_) => {
            tracing::debug!(request_id, error = %err, "sign-out failed: the session stays")
        }
        // The store logs an outage once when it starts and once when it ends; a line per
        // request would bury that (every request needs the store).
        Error::StoreOutage(_) => tracing::debug!(request_id, error = %err, "request failed"),
        Error::Unavailable { .. } | Error::Upstream(_) => {
            let cause = std::error::Error::source(err)
                .map(|s| s.to_string())
                .unwrap_or_default();
            tracing::error!(request_id, error = %err, cause, "request failed")
        }
    }
}

/// Checks everything `check` can without the network: files named by the config are read and
/// parsed (TLS certificates, CA bundles, IdP metadata, SP keys, group filter). Each problem is
/// one line.
pub fn validate(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(tls) = &config.server.tls
        && let Err(e) = crate::server::tls_acceptor(tls)
    {
        problems.push(e.to_string());
    }
    if let Err(e) = Proxy::new(&config.upstream, &config.server) {
        problems.push(e.to_string());
    }
    if let Err(e) = IdentityHeaders::new(&config.headers) {
        problems.push(e.to_string());
    }
    if let Some(jwt) = &config.headers.jwt
        && let Err(e) = Signer::new(jwt)
    {
        problems.push(e.to_string());
    }
    match &config.saml.idp_metadata {
        IdpMetadataSource::File(_) => {
            if let Err(e) = Saml::from_config(&config.saml) {
                problems.push(e.to_string());
            }
        }
        // The URL is parsed by the config, not fetched here (`serve` fetches it); the SP
        // certificate is still read.
        IdpMetadataSource::Url { .. } => {
            if let Err(e) = saml::sp_metadata_from_config(&config.saml) {
                problems.push(e.to_string());
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_claim_outlives_every_replica_that_could_still_accept_the_response() {
        let now = chrono::Utc::now();
        let skew = Duration::from_secs(90);
        // A response acceptable for another minute is remembered for that minute, plus a
        // replica's clock behind by the skew, plus the longest verification.
        let ttl = replay_ttl(now + chrono::Duration::seconds(60), now, skew);
        assert_eq!(ttl, Duration::from_secs(60) + skew + BLOCKING_LIMIT);
        // One verified just before its deadline and claimed after it is still remembered.
        let ttl = replay_ttl(now - chrono::Duration::seconds(5), now, skew);
        assert_eq!(ttl, skew + BLOCKING_LIMIT);
    }

    #[test]
    fn forward_auth_original_uris_are_read_in_origin_form_or_refused() {
        assert_eq!(origin_form("/admin?x=1").as_deref(), Some("/admin?x=1"));
        assert_eq!(
            origin_form("https://dash.example.com/admin?x=1").as_deref(),
            Some("/admin?x=1")
        );
        assert_eq!(origin_form("http://dash.example.com").as_deref(), Some("/"));
        for bad in [
            "admin",
            "%2Fadmin",
            "",
            "ftp://h/admin",
            "*",
            "dash.example.com:443",
        ] {
            assert_eq!(origin_form(bad), None, "{bad}");
        }
    }
}
