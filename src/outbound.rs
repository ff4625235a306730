//! Outbound: the one way samlgate builds HTTP(S) clients to its neighbours — the dashboard,
//! the admin API and the IdP's metadata URL: rustls (ring) with the webpki roots plus an
//! optional extra CA bundle, HTTP/1.1, TCP_NODELAY, a connect timeout, pooled connections.

use std::path::Path;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;

/// A pooled HTTP(S) client whose requests carry bodies of type `B`.
pub type HttpsClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// An error and its sources, `": "`-joined (a transport error's useful part is usually a
/// source: refused, reset, certificate).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The certificates of a PEM file: a CA bundle to trust on top of the webpki roots, or the
/// chain a TLS listener serves.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| e.to_string())
}

/// The HTTPS connector: the webpki roots plus `extra_roots`.
pub fn connector(
    extra_roots: Vec<CertificateDer<'static>>,
    connect_timeout: Duration,
) -> Result<HttpsConnector<HttpConnector>, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra_roots {
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// A pooled client trusting only the webpki roots (the admin API, the IdP's metadata URL).
pub fn webpki_client<B>(
    connect_timeout: Duration,
    max_idle: usize,
    idle_timeout: Duration,
) -> HttpsClient<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    // Adding no certificate cannot fail.
    let connector =
        connector(Vec::new(), connect_timeout).unwrap_or_else(|_| unreachable!("no extra roots"));
    client(connector, max_idle, idle_timeout)
}

/// A client over `connector` keeping up to `max_idle` idle connections per host for
/// `idle_timeout` (`max_idle = 0`: no pooling).
pub fn client<B>(
    connector: HttpsConnector<HttpConnector>,
    max_idle: usize,
    idle_timeout: Duration,
) -> HttpsClient<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(idle_timeout)
        .pool_max_idle_per_host(max_idle)
        .build(connector)
}
