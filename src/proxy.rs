//! Proxy: forwards a request to the dashboard over a pooled keep-alive client, removing
//! hop-by-hop headers (RFC 9110 §7.6.1), setting `X-Forwarded-*`, streaming both bodies, and
//! bridging `Upgrade` (WebSocket) connections. Knows nothing of sessions or identities.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderName};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::time::Instant;

use crate::body::{Body, BoxError, stream};
use crate::config::{ServerConfig, UpstreamConfig};

/// What [`Proxy::sanitize`] learnt of a request that [`Proxy::forward`] still needs: the
/// WebSocket upgrade it asked for, and whether its peer is a trusted proxy. Only `sanitize`
/// makes one, so a request cannot be forwarded without having been cleaned first.
#[derive(Debug)]
pub struct Sanitized {
    upgrade: Option<HeaderValue>,
    trusted: bool,
}

/// Why the upstream could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Connection refused, DNS, TLS, reset before the response head.
    #[error("upstream unreachable")]
    Unreachable(#[source] BoxError),
    /// Connect or response-head timeout.
    #[error("upstream timed out")]
    Timeout,
    /// The client's own request body failed on the way (a malformed chunk, a connection cut
    /// mid-body): its fault, not the dashboard's.
    #[error("the request body could not be read")]
    ClientBody,
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

/// The upstream connections and what the proxy needs to rewrite requests.
pub struct Proxy {
    connector: HttpsConnector<HttpConnector>,
    /// The idle keep-alive connections of each server worker: a worker's upstream connections
    /// live on its own runtime, so a request never hops threads to reach its connection.
    idle: Box<[Arc<Idle>]>,
    /// The upstream URI with an empty path: what the connector dials.
    origin: Uri,
    authority_header: HeaderValue,
    base_path: String,
    request_timeout: Duration,
    /// `server.send_timeout`: how long an HTTP/2 response may wait for its client.
    send_timeout: Duration,
    /// Maintenance ticks an upstream connection may stay idle.
    keepalive_ticks: u64,
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

/// Headers a `Connection` header cannot make hop-by-hop: the Host the dashboard is to see
/// (`upstream.preserve_host`) and the request id samlgate logs and passes on.
const NEVER_HOP_BY_HOP: [HeaderName; 2] = [header::HOST, HeaderName::from_static("x-request-id")];

/// `X-Forwarded-For`, `-Proto`, `-Host`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

impl Proxy {
    /// Builds the pooled clients once (one per server worker).
    pub fn new(cfg: &UpstreamConfig, server: &ServerConfig) -> Result<Self, BuildError> {
        let (trusted, workers) = (&server.trusted_proxies, server.workers);
        let extra = match &cfg.ca_file {
            Some(ca) => crate::outbound::read_ca_file(ca).map_err(BuildError::CaFile)?,
            None => Vec::new(),
        };
        let connector =
            crate::outbound::connector(extra, cfg.connect_timeout).map_err(BuildError::CaFile)?;
        let idle = (0..workers.max(1)).map(|_| Arc::default()).collect();
        let parts = cfg.url.clone().into_parts();
        let scheme = parts.scheme.unwrap_or(Scheme::HTTP);
        let authority = parts
            .authority
            .unwrap_or_else(|| Authority::from_static("127.0.0.1"));
        let origin = Uri::builder()
            .scheme(scheme)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_default();
        let authority_header = HeaderValue::from_str(authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        let base_path = parts
            .path_and_query
            .map(|p| p.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        Ok(Self {
            connector,
            idle,
            origin,
            authority_header,
            base_path,
            request_timeout: cfg.request_timeout,
            send_timeout: server.send_timeout,
            // Whole ticks, rounded down: a connection is never kept idle longer than the timeout.
            keepalive_ticks: u64::try_from(
                cfg.keepalive_timeout.as_millis() / MAINTENANCE_INTERVAL.as_millis(),
            )
            .unwrap_or(u64::MAX)
            .max(1),
            preserve_host: cfg.preserve_host,
            trusted: trusted.as_slice().into(),
        })
    }

    /// A worker's periodic upkeep, every [`MAINTENANCE_INTERVAL`] on that worker's runtime:
    /// closes its upstream connections that have been idle for `upstream.keepalive_timeout`
    /// or that the upstream has closed.
    pub fn maintain(&self, worker: usize) {
        self.idle[worker % self.idle.len()].reap(self.keepalive_ticks);
    }

    /// Takes off a client's request, before anything else reads or sets its headers, what it
    /// may not pass on to the dashboard:
    /// - its hop-by-hop headers, so that `Connection` can name only the client's own headers,
    ///   never one the gateway sets afterwards (identity headers, the JWT);
    /// - unless the peer is a trusted proxy, every forwarding header: `Forwarded`, `X-Real-IP`
    ///   and any `X-Forwarded-*` (the gateway sets `-For`, `-Proto` and `-Host` itself);
    /// - from any peer, an `X-Forwarded-*` name spelt with `_`, which CGI-style servers read
    ///   as the real one.
    ///
    /// Returns, for [`Proxy::forward`], the WebSocket upgrade the request asks for, which it
    /// bridges; any other `Upgrade` protocol (`h2c`, …) goes with the hop-by-hop headers.
    pub fn sanitize<B>(&self, req: &mut Request<B>, peer: Peer) -> Sanitized {
        let upgrade = upgrade_protocol(req);
        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        let trusted = self.is_trusted(peer.addr.ip());
        strip_forwarding(headers, trusted);
        Sanitized { upgrade, trusted }
    }

    /// Whether the upstream URL has a path that every request's is appended to.
    pub fn has_base_path(&self) -> bool {
        !self.base_path.is_empty()
    }

    /// Whether `X-Forwarded-*` from this peer are believed.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Forwards the request, which [`Proxy::sanitize`] has cleaned (its proof, `sanitized`,
    /// is required), and whose identity headers the caller has then set or stripped.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: Peer,
        sanitized: Sanitized,
    ) -> Result<Response<Body>, ProxyError> {
        let Sanitized { upgrade, trusted } = sanitized;
        let client_h2 = req.version() == Version::HTTP_2;
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

        let original_host = req.headers().get(header::HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        *req.uri_mut() = self.upstream_uri(req.uri());
        *req.version_mut() = Version::HTTP_11;
        let headers = req.headers_mut();
        self.set_forwarded(headers, peer, trusted, original_host.as_ref());
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

        let idle = &self.idle[peer.worker % self.idle.len()];
        let (mut resp, conn) =
            match tokio::time::timeout(self.request_timeout, self.send(req, idle)).await {
                Err(_) => return Err(ProxyError::Timeout),
                Ok(Err(e)) if is_timeout(e.as_ref()) => return Err(ProxyError::Timeout),
                Ok(Err(e)) if is_client_body(e.as_ref()) => return Err(ProxyError::ClientBody),
                Ok(Err(e)) => return Err(ProxyError::Unreachable(e)),
                Ok(Ok(pair)) => pair,
            };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            // The connection now belongs to the tunnel: it never goes back to the pool.
            drop(conn);
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
        // A 101 nobody asked for (or to an HTTP/2 client, where 101 does not exist) cannot be
        // passed on: the connection it switched is the upstream's alone.
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            return Err(ProxyError::Unreachable(
                "the dashboard switched protocols without being asked".into(),
            ));
        }

        strip_hop_by_hop(resp.headers_mut());
        let (parts, body) = resp.into_parts();
        let body = Returning::new(body, conn, idle.clone());
        let body = if client_h2 && !hyper::body::Body::is_end_stream(&body) {
            stream(SendWatch::start(body, self.send_timeout))
        } else {
            stream(body)
        };
        Ok(Response::from_parts(parts, body))
    }

    /// Sends the request on an idle keep-alive connection of this worker, or on a new one.
    /// A request an idle connection could not take (the upstream had closed it) is sent again
    /// on the next one; a request that was sent is never sent twice.
    async fn send(
        &self,
        mut req: Request<Incoming>,
        idle: &Idle,
    ) -> Result<(Response<Incoming>, SendRequest<Incoming>), BoxError> {
        loop {
            let (mut conn, reused) = match idle.take() {
                Some(conn) => (conn, true),
                // Dialing is the cold path: boxed, so that its large future (DNS, TCP, TLS,
                // handshake) is not part of every request's future.
                None => (Box::pin(self.dial()).await?, false),
            };
            match conn.try_send_request(req).await {
                Ok(resp) => return Ok((resp, conn)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// A new connection, ready for a request.
    async fn dial(&self) -> Result<SendRequest<Incoming>, BoxError> {
        let mut conn = self.connect().await?;
        conn.ready().await?;
        Ok(conn)
    }

    /// Dials the upstream (TCP, then TLS for https) and starts the HTTP/1.1 connection on the
    /// current worker's runtime.
    async fn connect(&self) -> Result<SendRequest<Incoming>, BoxError> {
        let mut connector = self.connector.clone();
        let io = tower_service::Service::call(&mut connector, self.origin.clone()).await?;
        let (conn, driver) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = driver.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(conn)
    }

    fn upstream_uri(&self, uri: &Uri) -> Uri {
        let pq = uri.path_and_query();
        let pq = if self.base_path.is_empty() {
            // The request's own, shared: neither copied nor parsed again.
            pq.cloned()
        } else {
            let pq = pq.map_or("/", PathAndQuery::as_str);
            PathAndQuery::try_from(format!("{}{pq}", self.base_path)).ok()
        };
        // Origin form: the connection is already the upstream's.
        Uri::from(pq.unwrap_or_else(|| PathAndQuery::from_static("/")))
    }

    /// Sets `X-Forwarded-For/-Proto/-Host`: appended to when the peer is a trusted proxy,
    /// replaced otherwise (a client cannot plant its own chain).
    fn set_forwarded(
        &self,
        headers: &mut HeaderMap,
        peer: Peer,
        trusted: bool,
        host: Option<&HeaderValue>,
    ) {
        let ip = ip_text(canonical_ip(peer.addr.ip()));
        let prior: Vec<&str> = if trusted {
            headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect()
        } else {
            Vec::new()
        };
        let xff = if prior.is_empty() {
            HeaderValue::from_maybe_shared(bytes::Bytes::from(ip))
        } else {
            HeaderValue::from_str(&format!("{}, {ip}", prior.join(", ")))
        };
        if let Ok(v) = xff {
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

/// An address as text, without `fmt` for IPv4 (the per-request case).
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

/// An IPv4-mapped IPv6 address as plain IPv4, so CIDRs match either way.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The `Upgrade` protocol when the request asks for a WebSocket (HTTP/1.1 `Connection:
/// upgrade`, `Upgrade: websocket`).
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
    if !wants {
        return None;
    }
    req.headers()
        .get(header::UPGRADE)
        .filter(|p| p.as_bytes().eq_ignore_ascii_case(b"websocket"))
        .cloned()
}

/// Removes hop-by-hop headers, including every header named in `Connection` (RFC 9110 §7.6.1).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present, then removals only of what is there: cheaper than
    // removing each of the nine candidates, which hashes every name (upstreams answer with
    // `Connection: keep-alive` on every response).
    let named: Vec<&str> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            *name == header::UPGRADE
                || HOP_BY_HOP.contains(name)
                || (!NEVER_HOP_BY_HOP.contains(name)
                    && named.iter().any(|n| n.eq_ignore_ascii_case(name.as_str())))
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Removes the forwarding headers of [`Proxy::sanitize`]'s list (names are lower-case).
fn strip_forwarding(headers: &mut HeaderMap, trusted: bool) {
    const PREFIX: &str = "x-forwarded-";
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let n = name.as_str();
            if n.len() > PREFIX.len() && crate::headers::folded_starts_with(n, PREFIX) {
                !trusted || n.contains('_')
            } else {
                !trusted && (n == "forwarded" || n == "x-real-ip")
            }
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Whether `err` or any error in its source chain is one `pred` picks.
fn chain_has(
    err: &(dyn std::error::Error + 'static),
    pred: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> bool {
    std::iter::successors(Some(err), |e| e.source()).any(pred)
}

fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    chain_has(err, |e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || {
                let text = e.to_string();
                text.contains("timed out") || text.contains("timeout")
            }
    })
}

/// hyper's "error from user's Body stream": the request body we were sending (the client's)
/// failed.
fn is_client_body(err: &(dyn std::error::Error + 'static)) -> bool {
    chain_has(err, |e| {
        e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_user)
    })
}

/// Most idle connections a worker keeps.
const MAX_IDLE: usize = 256;

/// How often each worker runs [`Proxy::maintain`].
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// One worker's idle keep-alive connections, the most recently used last, each with the
/// maintenance tick at which it went idle. Ticks instead of clock readings keep the request
/// path free of clock reads; the idle limit is kept to within one tick.
#[derive(Default)]
struct Idle(Mutex<IdleConns>);

#[derive(Default)]
struct IdleConns {
    conns: Vec<(SendRequest<Incoming>, u64)>,
    tick: u64,
}

impl Idle {
    /// The most recently used connection that can take a request now. Others are dropped: a
    /// closed one is gone, and one still busy (sending a request body the upstream answered
    /// before reading) finishes that and then closes, rather than making this request wait
    /// for it.
    fn take(&self) -> Option<SendRequest<Incoming>> {
        let mut idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((conn, _)) = idle.conns.pop() {
            if conn.is_ready() {
                return Some(conn);
            }
        }
        None
    }

    fn put(&self, conn: SendRequest<Incoming>) {
        if conn.is_closed() {
            return;
        }
        let mut idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.conns.len() < MAX_IDLE {
            let tick = idle.tick;
            idle.conns.push((conn, tick));
        }
    }

    /// Advances the tick and drops (so closes) the connections idle for `max_ticks` ticks and
    /// those the upstream has closed, wherever they are in the stack.
    fn reap(&self, max_ticks: u64) {
        let mut idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        idle.tick += 1;
        let now = idle.tick;
        idle.conns
            .retain(|(conn, since)| !conn.is_closed() && now - since < max_ticks);
    }
}

/// An upstream response body that hands its connection back to the worker's idle pool once
/// it has been read to the end. A body dropped before its end drops the connection with it:
/// HTTP/1 cannot reuse a connection in the middle of a response.
struct Returning {
    body: Incoming,
    conn: Option<(SendRequest<Incoming>, Arc<Idle>)>,
}

impl Returning {
    fn new(body: Incoming, conn: SendRequest<Incoming>, idle: Arc<Idle>) -> Self {
        let mut returning = Self {
            body,
            conn: Some((conn, idle)),
        };
        if hyper::body::Body::is_end_stream(&returning.body) {
            returning.give_back();
        }
        returning
    }

    fn give_back(&mut self) {
        if let Some((conn, idle)) = self.conn.take() {
            idle.put(conn);
        }
    }
}

impl hyper::body::Body for Returning {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.give_back(),
            Poll::Ready(Some(Ok(_))) => {}
            Poll::Ready(Some(Err(_))) => self.conn = None,
            Poll::Pending => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// An HTTP/2 response body that lets go of its upstream once its client has taken in
/// nothing for `server.send_timeout`. Over HTTP/1 the connection's own deadline does that
/// (a stalled write); over HTTP/2 a client can stall one stream by withholding its flow-
/// control window while the connection stays busy, which hyper waits out forever, holding
/// the stream's upstream connection. "Taken in" is hyper asking for more: it asks only when
/// the stream has window for it. A watchdog task per response checks, and on a stall
/// drops the upstream body (the dashboard sees its connection close); hyper then resets
/// the stream on its next poll.
struct SendWatch<B> {
    shared: Arc<Mutex<Watched<B>>>,
}

struct Watched<B> {
    /// `None` once the watchdog has let go of it.
    body: Option<B>,
    /// When hyper last asked for more.
    asked: Instant,
    /// Whether the last answer was a frame (the next move is the client's) rather than
    /// `Pending` (waiting for the upstream, which is not the client's stall).
    answered: bool,
    /// The body has ended: nothing left to watch.
    ended: bool,
}

impl<B> SendWatch<B>
where
    B: hyper::body::Body + Send + 'static,
{
    fn start(body: B, timeout: Duration) -> Self {
        let shared = Arc::new(Mutex::new(Watched {
            body: Some(body),
            asked: Instant::now(),
            answered: true,
            ended: false,
        }));
        let watched = Arc::downgrade(&shared);
        tokio::spawn(async move {
            let mut deadline = Instant::now() + timeout;
            loop {
                tokio::time::sleep_until(deadline).await;
                let Some(shared) = watched.upgrade() else {
                    return; // hyper dropped the response: nothing to hold
                };
                let mut w = shared.lock().unwrap_or_else(PoisonError::into_inner);
                if w.ended || w.body.is_none() {
                    return;
                }
                if w.answered && w.asked + timeout <= Instant::now() {
                    tracing::debug!(
                        "client took in nothing of its HTTP/2 response; upstream dropped"
                    );
                    w.body = None;
                    return;
                }
                deadline = w.asked.max(Instant::now()) + timeout;
            }
        });
        Self { shared }
    }
}

impl<B> hyper::body::Body for SendWatch<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut w = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(body) = w.body.as_mut() else {
            return Poll::Ready(Some(Err(Box::new(crate::server::client_stalled()))));
        };
        let polled = Pin::new(body).poll_frame(cx);
        let ended = matches!(polled, Poll::Ready(None | Some(Err(_))))
            || w.body
                .as_ref()
                .is_some_and(hyper::body::Body::is_end_stream);
        w.asked = Instant::now();
        w.answered = polled.is_ready();
        w.ended = ended;
        polled.map(|frame| frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        let w = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        w.body
            .as_ref()
            .is_some_and(hyper::body::Body::is_end_stream)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let w = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        w.body
            .as_ref()
            .map_or_else(hyper::body::SizeHint::default, hyper::body::Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_writes_what_display_writes() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "9.99.100.255",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:255.255.255.255",
        ] {
            let ip: IpAddr = ip.parse().expect("an address");
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn hop_by_hop_headers_go_and_end_to_end_ones_stay() {
        let mut plain = HeaderMap::new();
        plain.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        plain.insert(header::HOST, HeaderValue::from_static("a.example"));
        let before = plain.clone();
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain, before);

        let mut hop = before.clone();
        hop.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        hop.insert("x-private", HeaderValue::from_static("1"));
        hop.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        hop.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut hop);
        assert_eq!(hop, before);

        let mut only_keep_alive = before.clone();
        only_keep_alive.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        strip_hop_by_hop(&mut only_keep_alive);
        assert_eq!(only_keep_alive, before);
    }
}
