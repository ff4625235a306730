//! Proxy: forwards a request to the dashboard over a pooled keep-alive client, removing
//! hop-by-hop headers (RFC 9110 §7.6.1), setting `X-Forwarded-*`, streaming both bodies, and
//! bridging `Upgrade` (WebSocket) connections. Knows nothing of sessions or identities.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;

use crate::body::{Body, stream};
use crate::config::UpstreamConfig;

/// Why the upstream could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Connection refused, DNS, TLS, reset before the response head.
    #[error("upstream unreachable")]
    Unreachable(#[source] hyper_util::client::legacy::Error),
    /// Connect or response-head timeout.
    #[error("upstream timed out")]
    Timeout,
}

/// Why the proxy could not be built from config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The CA file could not be read or parsed.
    #[error("upstream.ca_file: {0}")]
    CaFile(String),
}

/// Per-request facts the proxy needs about the client connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The TCP peer.
    pub addr: SocketAddr,
    /// Whether the client connection was TLS.
    pub tls: bool,
    /// The server worker (thread) handling the connection: selects its upstream pool.
    pub worker: usize,
}

/// The pooled upstream client and what it needs to rewrite requests.
pub struct Proxy {
    /// One pooled client per server worker: a worker's upstream connections live on its own
    /// runtime, so a request never hops threads to reach its connection.
    clients: Box<[Client<HttpsConnector<HttpConnector>, Incoming>]>,
    scheme: Scheme,
    authority: Authority,
    authority_header: HeaderValue,
    base_path: String,
    request_timeout: Duration,
    preserve_host: bool,
    trusted: Arc<[IpNet]>,
}

/// Headers that are hop-by-hop by definition (RFC 9110 §7.6.1, plus the legacy ones proxies strip).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// `X-Forwarded-For`, `-Proto`, `-Host`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

impl Proxy {
    /// Builds the pooled clients once (one per server worker).
    pub fn new(
        cfg: &UpstreamConfig,
        trusted: &[IpNet],
        workers: usize,
    ) -> Result<Self, BuildError> {
        let extra = match &cfg.ca_file {
            Some(ca) => crate::outbound::read_ca_file(ca).map_err(BuildError::CaFile)?,
            None => Vec::new(),
        };
        let connector =
            crate::outbound::connector(extra, cfg.connect_timeout).map_err(BuildError::CaFile)?;
        let clients = (0..workers.max(1))
            .map(|_| crate::outbound::client(connector.clone(), 256, Duration::from_secs(90)))
            .collect();
        let parts = cfg.url.clone().into_parts();
        let scheme = parts.scheme.unwrap_or(Scheme::HTTP);
        let authority = parts
            .authority
            .unwrap_or_else(|| Authority::from_static("127.0.0.1"));
        let authority_header = HeaderValue::from_str(authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        let base_path = parts
            .path_and_query
            .map(|p| p.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        Ok(Self {
            clients,
            scheme,
            authority,
            authority_header,
            base_path,
            request_timeout: cfg.request_timeout,
            preserve_host: cfg.preserve_host,
            trusted: trusted.into(),
        })
    }

    /// Whether `X-Forwarded-*` from this peer are believed.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Forwards the request; the caller has already set (or stripped) identity headers.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: Peer,
    ) -> Result<Response<Body>, ProxyError> {
        let upgrade = upgrade_protocol(&req);
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

        let original_host = req.headers().get(header::HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        *req.uri_mut() = self.upstream_uri(req.uri());
        *req.version_mut() = Version::HTTP_11;
        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        self.set_forwarded(headers, peer, original_host.as_ref());
        match (&original_host, self.preserve_host) {
            (Some(host), true) => {
                headers.insert(header::HOST, host.clone());
            }
            _ => {
                headers.insert(header::HOST, self.authority_header.clone());
            }
        }
        if let Some(proto) = &upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, proto.clone());
        }

        let mut resp = match tokio::time::timeout(
            self.request_timeout,
            self.clients[peer.worker % self.clients.len()].request(req),
        )
        .await
        {
            Err(_) => return Err(ProxyError::Timeout),
            Ok(Err(e)) if is_timeout(&e) => return Err(ProxyError::Timeout),
            Ok(Err(e)) => return Err(ProxyError::Unreachable(e)),
            Ok(Ok(resp)) => resp,
        };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await)
                else {
                    return;
                };
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
            let (parts, body) = resp.into_parts();
            return Ok(Response::from_parts(parts, stream(body)));
        }

        strip_hop_by_hop(resp.headers_mut());
        let (parts, body) = resp.into_parts();
        Ok(Response::from_parts(parts, stream(body)))
    }

    fn upstream_uri(&self, uri: &Uri) -> Uri {
        let pq = uri
            .path_and_query()
            .map(PathAndQuery::as_str)
            .unwrap_or("/");
        let pq = if self.base_path.is_empty() {
            PathAndQuery::try_from(pq)
        } else {
            PathAndQuery::try_from(format!("{}{}", self.base_path, pq))
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(pq.unwrap_or_else(|_| PathAndQuery::from_static("/")));
        Uri::from_parts(parts).unwrap_or_default()
    }

    /// Sets `X-Forwarded-For/-Proto/-Host`: appended to when the peer is a trusted proxy,
    /// replaced otherwise (a client cannot plant its own chain).
    pub fn set_forwarded(&self, headers: &mut HeaderMap, peer: Peer, host: Option<&HeaderValue>) {
        let ip = canonical_ip(peer.addr.ip()).to_string();
        let trusted = self.is_trusted(peer.addr.ip());
        let xff = if trusted {
            let prior: Vec<&str> = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if prior.is_empty() {
                ip
            } else {
                format!("{}, {ip}", prior.join(", "))
            }
        } else {
            ip
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            headers.insert(X_FORWARDED_FOR, v);
        }
        let proto_given = trusted && headers.contains_key(&X_FORWARDED_PROTO);
        if !proto_given {
            headers.insert(
                X_FORWARDED_PROTO,
                HeaderValue::from_static(if peer.tls { "https" } else { "http" }),
            );
        }
        let host_given = trusted && headers.contains_key(&X_FORWARDED_HOST);
        if !host_given {
            match host {
                Some(h) => {
                    headers.insert(X_FORWARDED_HOST, h.clone());
                }
                None => {
                    headers.remove(&X_FORWARDED_HOST);
                }
            }
        }
    }
}

/// An IPv4-mapped IPv6 address as plain IPv4, so CIDRs match either way.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The `Upgrade` protocol when the request asks for one (HTTP/1.1 `Connection: upgrade`).
fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let wants = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if wants {
        req.headers().get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Removes hop-by-hop headers, including every header named in `Connection` (RFC 9110 §7.6.1).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

fn is_timeout(err: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        let text = e.to_string();
        if text.contains("timed out") || text.contains("timeout") {
            return true;
        }
        source = e.source();
    }
    false
}
