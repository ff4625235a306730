//! App: everything built once from config (behind one `Arc`) and `App::handle`, the whole
//! request pipeline read top to bottom. Errors become responses in one place and are logged
//! once, here, with one access-log line per request.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use prometheus_client::registry::Registry;

use crate::access::{self, NormalPath};
use crate::body::{Body, full};
use crate::config::{Config, PathPattern};
use crate::error::Error;
use crate::headers::{self, IdentityHeaders};
use crate::proxy::{Peer, Proxy};
use crate::telemetry::Metrics;

/// `X-Request-Id`
pub const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

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
    /// TLS files could not be loaded.
    #[error("server.tls: {0}")]
    Tls(String),
}

/// The gateway, built once.
pub struct App {
    /// The validated config.
    pub config: Config,
    proxy: Proxy,
    public_paths: Vec<PathPattern>,
    identity_headers: IdentityHeaders,
    /// Request metrics.
    pub metrics: Metrics,
    registry: Registry,
}

impl App {
    /// Builds every part from config; fails on anything that would fail at request time.
    pub async fn build(config: Config) -> Result<Arc<App>, StartError> {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let proxy = Proxy::new(&config.upstream, &config.server.trusted_proxies)?;
        let identity_headers = IdentityHeaders::new(&config.headers)?;
        Ok(Arc::new(App {
            public_paths: config.upstream.public_paths.clone(),
            proxy,
            identity_headers,
            metrics,
            registry,
            config,
        }))
    }

    /// The gateway listener's entry point: never fails, always answers.
    pub async fn handle(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        peer: Peer,
    ) -> Response<Body> {
        let started = Instant::now();
        let request_id = request_id(&req);
        req.headers_mut().insert(X_REQUEST_ID, request_id.clone());
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        self.metrics.in_flight.inc();
        let (route, result) = self.dispatch(req, peer).await;
        self.metrics.in_flight.dec();
        let rid = request_id.to_str().unwrap_or("-");
        let mut resp = match result {
            Ok(resp) => resp,
            Err(err) => {
                log_error(&err, rid);
                if let Error::Upstream(e) = &err {
                    let kind = match e {
                        crate::proxy::ProxyError::Timeout => "timeout",
                        crate::proxy::ProxyError::Unreachable(_) => "connect",
                    };
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

    async fn dispatch(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: Peer,
    ) -> (&'static str, Result<Response<Body>, Error>) {
        match (req.method(), req.uri().path()) {
            (_, p) if p.starts_with("/saml/") => ("saml", Err(Error::NotFound)),
            _ => self.forward(req, peer).await,
        }
    }

    /// Public path → forwarded without identity; otherwise a session is required.
    async fn forward(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        peer: Peer,
    ) -> (&'static str, Result<Response<Body>, Error>) {
        let path = access::normalize(req.uri().path());
        if access::is_public(&self.public_paths, &path) {
            self.prepare_upstream_headers(&mut req);
            return (
                "public",
                self.proxy.forward(req, peer).await.map_err(Error::from),
            );
        }
        ("proxy", Err(self.unauthenticated(&req, &path)))
    }

    /// Removes what the dashboard must never see from a client: planted identity headers and
    /// our own cookies.
    fn prepare_upstream_headers(&self, req: &mut Request<Incoming>) {
        self.identity_headers.strip(req.headers_mut());
        headers::strip_cookies(req.headers_mut(), &[]);
    }

    fn unauthenticated(&self, req: &Request<Incoming>, _path: &NormalPath) -> Error {
        let return_to = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let login_url = format!(
            "{}/saml/login?return_to={}",
            self.config.server.public_url,
            percent_encoding::utf8_percent_encode(
                &access::safe_return_path(return_to),
                percent_encoding::NON_ALPHANUMERIC
            )
        );
        let _ = access::wants_redirect(req.method(), req.headers());
        Error::Unauthenticated { login_url }
    }

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
                let mut out = String::new();
                if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "metrics encoding failed\n",
                    );
                }
                let mut resp = Response::new(full(out));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                resp
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// What keeps the gateway from serving logins; empty when ready.
    async fn readiness(&self) -> Vec<&'static str> {
        Vec::new()
    }
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

/// Keeps a sane client `X-Request-Id` (≤ 128 visible ASCII), else makes a random one.
fn request_id<B>(req: &Request<B>) -> HeaderValue {
    if let Some(v) = req.headers().get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    let id = format!("{:032x}", rand::random::<u128>());
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Logs a request-path error once, at the level its kind deserves.
fn log_error(err: &Error, request_id: &str) {
    match err {
        Error::Unauthenticated { .. } | Error::NotFound | Error::MethodNotAllowed => {
            tracing::debug!(request_id, error = %err, "request refused")
        }
        Error::Denied(_)
        | Error::LoginRefused { .. }
        | Error::BadRequest(_)
        | Error::PayloadTooLarge => {
            tracing::warn!(request_id, error = %err, "request refused")
        }
        Error::Unavailable { .. } | Error::Upstream(_) => {
            let cause = std::error::Error::source(err)
                .map(|s| s.to_string())
                .unwrap_or_default();
            tracing::error!(request_id, error = %err, cause, "request failed")
        }
    }
}

/// Checks everything `check` can without the network: files named by the config are read and
/// parsed (TLS certificates, CA bundles, group filter). Each problem is one line.
pub fn validate(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(tls) = &config.server.tls
        && let Err(e) = crate::server::tls_acceptor(tls)
    {
        problems.push(e.to_string());
    }
    if let Err(e) = Proxy::new(&config.upstream, &config.server.trusted_proxies) {
        problems.push(e.to_string());
    }
    if let Err(e) = IdentityHeaders::new(&config.headers) {
        problems.push(e.to_string());
    }
    problems
}
