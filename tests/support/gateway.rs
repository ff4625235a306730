//! Starts the real gateway in-process on 127.0.0.1 port 0 and talks to it over real sockets.

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use samlgate::config::Config;
use samlgate::server::Running;
use tokio::net::TcpListener;

/// A session secret for tests (32+ bytes).
pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";

/// A running gateway and what tests need to reach it.
pub struct Gateway {
    pub running: Running,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub public_url: String,
}

/// The sections a test may add lines to; each string is inserted into its section.
#[derive(Default, Clone, Copy)]
pub struct Opts<'a> {
    /// IdP metadata file; default `config/idp-metadata.xml`.
    pub metadata: Option<&'a str>,
    /// Extra `[server]` lines.
    pub server: &'a str,
    /// Extra `[saml]` lines.
    pub saml: &'a str,
    /// Extra `[session]` lines.
    pub session: &'a str,
    /// Extra `[upstream]` lines (replaces the default public_paths when it sets them).
    pub upstream: &'a str,
    /// Whole extra sections (`[provisioning]`, `[headers]`, `[access]` …).
    pub extra: &'a str,
    /// `server.public_url` when browsers reach the gateway through something else (a proxy in
    /// front); default: the gateway's own address.
    pub public_url: Option<&'a str>,
    /// A path appended to the upstream URL (the dashboard's base path).
    pub base_path: &'a str,
}

/// A valid config for `upstream` with `opts`; `{public_url}` is replaced at start.
pub fn toml(public_url: &str, upstream: &str, opts: Opts<'_>) -> String {
    let metadata = opts.metadata.map(str::to_string).unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/idp-metadata.xml").to_string()
    });
    let public_paths = if opts.upstream.contains("public_paths") {
        String::new()
    } else {
        "public_paths = [\"/healthz\", \"/static/*\", \"/ws\", \"/echo\", \"/big\", \"/chunked\", \"/slow\"]\n".to_string()
    };
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"{public_url}\"\nshutdown_grace = \"5s\"\n{}\n\
         [upstream]\nurl = \"{upstream}{}\"\nrequest_timeout = \"2s\"\nconnect_timeout = \"1s\"\n{public_paths}{}\n\
         [saml]\nidp_metadata_file = \"{metadata}\"\n{}\n[session]\nsecret = \"{SECRET}\"\n{}\n[log]\nlevel = \"warn\"\n{}",
        opts.server, opts.base_path, opts.upstream, opts.saml, opts.session, opts.extra
    )
}

/// The minimal valid config for an upstream, with `extra` sections appended.
pub fn base_toml(public_url: &str, upstream: &str, extra: &str) -> String {
    toml(
        public_url,
        upstream,
        Opts {
            extra,
            ..Opts::default()
        },
    )
}

/// Starts the gateway with `toml` (use `{public_url}` for the URL browsers see).
pub async fn start_toml(toml: &str) -> Gateway {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let public_url = format!("http://127.0.0.1:{}", addr.port());
    let toml = toml.replace("{public_url}", &public_url);
    let config = Config::from_toml_str(&toml, Path::new(env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    let tls = config
        .server
        .tls
        .as_ref()
        .map(|t| samlgate::server::tls_acceptor(t).unwrap());
    let app = samlgate::app::App::build(config)
        .await
        .unwrap_or_else(|e| panic!("app build failed: {e}"));
    let running = samlgate::server::start_with(app, listener, admin, tls, std::future::pending());
    let admin = running.admin_addr;
    Gateway {
        running,
        addr,
        admin,
        public_url,
    }
}

/// Starts the gateway in front of `upstream` with `extra` config.
pub async fn start(upstream: &str, extra: &str) -> Gateway {
    start_toml(&base_toml("{public_url}", upstream, extra)).await
}

/// A plain HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Sends a request and collects the whole response body.
pub async fn send(req: Request<Full<Bytes>>) -> (Response<()>, Bytes) {
    let resp = client().request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (Response::from_parts(parts, ()), bytes)
}

/// GET `url` with extra headers.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> (Response<()>, Bytes) {
    let mut b = Request::get(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::new(Bytes::new())).unwrap()).await
}

/// Runs the `samlgate` binary with args and env, returning (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_samlgate"));
    cmd.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A raw HTTP/1.1 GET with header lines exactly as written (case, `_`, duplicates survive on
/// the wire, which a typed client would normalise away). Returns (status, whole response).
pub async fn raw_get(addr: SocketAddr, path: &str, lines: &[&str]) -> (u16, String) {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for l in lines {
        req.push_str(l);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    raw_request(addr, req.as_bytes()).await
}

/// Writes `request` to `addr` byte for byte (the request should ask for `Connection: close`),
/// reads until the server closes, and returns the status and everything read.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the server did not close within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    (
        text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0),
        text,
    )
}
