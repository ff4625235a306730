//! Demo: the pieces behind `samlgate demo` (and the tests' development IdP).
//!
//! `samlgate demo` runs, on loopback only, the real gateway in front of a demo dashboard, a
//! development IdP that signs real SAML responses with a key generated at start-up, and an
//! in-memory SCIM 2.0 admin API that the gateway provisions first-time users into. Nothing here
//! is used by `samlgate serve`: the dev IdP signs whatever it is told to.

pub mod dashboard;
pub mod idp;
pub mod scim;
pub mod signer;

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{Body, full};
use crate::config::Config;
use crate::server::Running;

pub use crate::pages::escape;

/// The banner every demo page and the terminal show.
pub const BANNER: &str = "DEMO — not for production";

/// The ports the demo binds on 127.0.0.1 (0 = any free port). The defaults are the contract's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DemoPorts {
    /// The gateway (`server.listen`); the URL to open.
    pub gateway: u16,
    /// The gateway's admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub admin: u16,
    /// The development IdP.
    pub idp: u16,
    /// The demo dashboard and its SCIM admin API (`/scim/v2`).
    pub dashboard: u16,
}

impl Default for DemoPorts {
    fn default() -> Self {
        Self {
            gateway: 8080,
            admin: 9090,
            idp: 8081,
            dashboard: 3000,
        }
    }
}

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A port was taken (or not allowed).
    #[error("cannot listen on {addr} ({what}): {source}; pick another port with {flag}")]
    Bind {
        /// Which part of the demo.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The CLI flag that changes it.
        flag: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The development IdP's key could not be generated.
    #[error("development IdP: {0}")]
    Idp(#[from] signer::SignerError),
    /// A temporary file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The demo's own config was refused (a bug, or a `SAMLGATE_*` variable that breaks it).
    #[error("demo config invalid:\n{0}")]
    Config(String),
    /// The gateway could not be built.
    #[error(transparent)]
    Start(#[from] crate::app::StartError),
}

/// A running demo: the gateway, the dev IdP, the dashboard and the SCIM API.
pub struct Demo {
    /// `http://127.0.0.1:<gateway>`: what the browser opens.
    pub gateway_url: String,
    /// The gateway's admin listener, `http://127.0.0.1:<admin>`.
    pub admin_url: String,
    /// The dev IdP's base URL.
    pub idp_url: String,
    /// The dashboard's direct URL (behind the gateway it is reached through `gateway_url`).
    pub dashboard_url: String,
    /// The SCIM base URL (`…/scim/v2`).
    pub scim_url: String,
    /// The SCIM bearer token (random per run).
    pub scim_token: String,
    /// The running gateway.
    pub running: Running,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    dir: PathBuf,
}

async fn bind(port: u16, what: &'static str, flag: &'static str) -> Result<TcpListener, DemoError> {
    // Loopback only, by construction: the dev IdP signs anything it is asked to.
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpListener::bind(addr)
        .await
        .map_err(|source| DemoError::Bind {
            what,
            addr,
            flag,
            source,
        })
}

fn port_of(l: &TcpListener) -> u16 {
    l.local_addr().map(|a| a.port()).unwrap_or(0)
}

/// A random token of `bytes` random bytes, hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let random: Vec<u8> = (0..bytes).map(|_| rand::random()).collect();
    crate::session::hex(&random)
}

/// The gateway config the demo runs with (`Config::from_toml_str` input).
pub fn config_toml(
    gateway: SocketAddr,
    admin: SocketAddr,
    dashboard: SocketAddr,
    metadata: &Path,
    secret: &str,
    scim_token: &str,
) -> String {
    format!(
        r#"[server]
listen = "{gateway}"
admin_listen = "{admin}"
public_url = "http://{gateway}"
shutdown_grace = "2s"

[upstream]
url = "http://{dashboard}"
public_paths = ["/favicon.ico"]

[saml]
idp_metadata_file = "{metadata}"

[session]
secret = "{secret}"

[provisioning]
url = "http://{dashboard}/scim/v2"
token = "{scim_token}"
default_workspace = "Demo"
default_permission_set = "Viewer"

[[provisioning.rules]]
group = "admins"
workspace = "Operations"
permission_set = "Admin"

[headers.jwt]
audience = "demo-dashboard"

[log]
format = "pretty"
level = "warn,audit=info"
"#,
        metadata = metadata.display().to_string().replace('\\', "\\\\"),
    )
}

/// Starts everything on 127.0.0.1; `ports` of 0 pick free ports.
pub async fn start(ports: DemoPorts) -> Result<Demo, DemoError> {
    let gw_l = bind(ports.gateway, "gateway", "--port").await?;
    let admin_l = bind(ports.admin, "gateway admin", "--admin-port").await?;
    let idp_l = bind(ports.idp, "development IdP", "--idp-port").await?;
    let dash_l = bind(ports.dashboard, "demo dashboard", "--dashboard-port").await?;
    let gw = SocketAddr::from((Ipv4Addr::LOCALHOST, port_of(&gw_l)));
    let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, port_of(&admin_l)));
    let idp_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port_of(&idp_l)));
    let dash = SocketAddr::from((Ipv4Addr::LOCALHOST, port_of(&dash_l)));

    let gateway_url = format!("http://{gw}");
    let idp_url = format!("http://{idp_addr}");
    let dashboard_url = format!("http://{dash}");
    let scim_url = format!("{dashboard_url}/scim/v2");
    let scim_token = random_hex(24);

    let dev_idp = idp::DevIdp::new(&idp_url, &gateway_url)?;
    let dir = std::env::temp_dir().join(format!(
        "samlgate-demo-{}-{}",
        std::process::id(),
        random_hex(4)
    ));
    let metadata = dir.join("idp-metadata.xml");
    let metadata_xml = dev_idp.metadata_xml()?;
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&metadata, metadata_xml))
        .map_err(|source| DemoError::Io {
            path: metadata.clone(),
            source,
        })?;

    let toml = config_toml(gw, admin, dash, &metadata, &random_hex(32), &scim_token);
    let config = Config::from_toml_str(&toml, &dir).map_err(|e| DemoError::Config(e.to_string()));
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };

    let store = scim::ScimStore::with_demo_accounts();
    let (stop, stop_rx) = watch::channel(false);
    let idp_handler = Arc::new(dev_idp);
    let dash_handler = Arc::new(dashboard::DemoDashboard::new(
        store.clone(),
        scim::ScimApi::new(store, &scim_token),
        &gateway_url,
        &idp_url,
    ));
    let tasks = vec![
        tokio::spawn(serve_loop(idp_l, stop_rx.clone(), move |req| {
            let h = idp_handler.clone();
            async move { h.handle(req).await }
        })),
        tokio::spawn(serve_loop(dash_l, stop_rx.clone(), move |req| {
            let h = dash_handler.clone();
            async move { h.handle(req).await }
        })),
    ];
    let app = match crate::app::App::build(config).await {
        Ok(app) => app,
        Err(e) => {
            let _ = stop.send(true);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e.into());
        }
    };
    let mut gw_stop = stop_rx;
    let running = crate::server::start_with(app, gw_l, admin_l, None, async move {
        let _ = gw_stop.wait_for(|s| *s).await;
    });
    Ok(Demo {
        gateway_url,
        admin_url: format!("http://{admin}"),
        idp_url,
        dashboard_url,
        scim_url,
        scim_token,
        running,
        stop,
        tasks,
        dir,
    })
}

impl Demo {
    /// What the terminal prints: the banner, what to open, what to try.
    pub fn instructions(&self) -> String {
        let gw = &self.gateway_url;
        let idp = &self.idp_url;
        let scim = &self.scim_url;
        let token = &self.scim_token;
        let line = "=".repeat(78);
        [
            String::new(),
            line.clone(),
            format!("  {BANNER}"),
            "  The IdP below signs anything it is asked to; everything binds to 127.0.0.1 only."
                .into(),
            line,
            String::new(),
            format!("  Open:  {gw}/"),
            String::new(),
            "  Running:".into(),
            format!(
                "    gateway (samlgate)    {gw}   admin: {}/metrics",
                self.admin_url
            ),
            format!("    development IdP       {idp}/sso   metadata: {idp}/metadata"),
            format!(
                "    demo dashboard        {}   (reach it through the gateway)",
                self.dashboard_url
            ),
            format!("    demo SCIM admin API   {scim}   Authorization: Bearer {token}"),
            String::new(),
            "  Try:".into(),
            format!("    1. Open {gw}/ in a browser: you land on the dev IdP's sign-in form."),
            "    2. Sign in as a new user (any email; group \"admins\" gets workspace Operations /"
                .into(),
            "       Admin, anyone else Demo / Viewer): samlgate creates the account over SCIM."
                .into(),
            "    3. The dashboard shows the identity headers samlgate injected and the accounts"
                .into(),
            "       in its admin API, yours highlighted.".into(),
            "    4. Sign out, then sign in as dora@example.com (already an account: none is".into(),
            "       created) or eve@example.com (deactivated: samlgate answers 403).".into(),
            format!("    5. curl {gw}/saml/metadata"),
            format!("       curl -H 'Authorization: Bearer {token}' {scim}/Users"),
            String::new(),
            "  Stop with Ctrl-C.".into(),
        ]
        .join("\n")
    }

    /// Stops the gateway (draining), the IdP and the dashboard, and removes the temp files.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.running.shutdown().await;
        for t in self.tasks {
            let _ = t.await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Serves HTTP/1.1 on `listener` with `handler` until `stop` turns true.
async fn serve_loop<H, F>(listener: TcpListener, mut stop: watch::Receiver<bool>, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let handler = handler.clone();
        let mut conn_stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let fut = handler(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = conn_stop.wait_for(|s| *s) => {}
            }
        });
    }
}

/// A complete demo page: the banner, a title and `body` (HTML, already escaped by the caller).
pub(crate) fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{CSS}</style></head>\
<body><div class=\"banner\" id=\"demo-banner\">⚠ {BANNER} ⚠</div><main><h1>{t}</h1>{body}</main></body></html>",
        t = escape(title),
    )
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1d1d1f;background:#f6f7f9}\
.banner{background:#c62828;color:#fff;font-weight:700;text-align:center;padding:.6rem;letter-spacing:.05em}\
main{max-width:60rem;margin:1.5rem auto;padding:0 1rem}h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}\
table{border-collapse:collapse;width:100%;background:#fff}td,th{border:1px solid #ddd;padding:.35rem .5rem;text-align:left;vertical-align:top;font-size:.9rem}\
th{background:#eef0f3}code,pre{font-family:ui-monospace,monospace;font-size:.85rem}pre{background:#fff;border:1px solid #ddd;padding:.6rem;overflow:auto}\
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:1rem;margin:1rem 0}\
label{display:block;margin:.5rem 0 .2rem}input[type=text],input[type=email]{width:100%;max-width:28rem;padding:.4rem;box-sizing:border-box}\
button{padding:.45rem 1rem;margin:.3rem .3rem .3rem 0;cursor:pointer;border-radius:4px;border:1px solid #888;background:#fff}\
button.primary{background:#1565c0;color:#fff;border-color:#1565c0}.muted{color:#666;font-size:.9rem}\
tr.me td{background:#e8f5e9}.presets form{display:inline}";

/// An HTML response from the demo (never cached), with `csp` as its Content-Security-Policy.
pub(crate) fn html(status: StatusCode, html: String, csp: &str) -> Response<Body> {
    let mut resp = Response::new(full(html));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(csp) {
        h.insert("content-security-policy", v);
    }
    resp
}

/// A redirect from the demo.
pub(crate) fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// The value of `name` in an `application/x-www-form-urlencoded` string.
pub(crate) fn form_value(form: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(form.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Reads a request body of at most `limit` bytes as UTF-8 (lossy).
pub(crate) async fn read_body(body: Incoming, limit: usize) -> Option<String> {
    use http_body_util::{BodyExt, Limited};
    let bytes = Limited::new(body, limit).collect().await.ok()?.to_bytes();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}
