//! IdP metadata from `saml.idp_metadata_url`, black-box: a loopback HTTP server serves the
//! metadata of a TestIdp; the gateway starts from it and logins work; a key rollover is picked
//! up by a refresh; metadata without a signing key (S1) or past its validUntil is refused and
//! the previous keys stay; `/readyz` turns 503 once the copy in force expires; with the server
//! gone, a restart uses the backup file; with neither, the gateway starts not ready.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{SecondsFormat, Utc};
use samlgate::demo::signer::TestIdp;
use support::dashboard::Dashboard;
use support::gateway::{self, Gateway, Opts};
use support::sso::{Browser, IDP_ENTITY, Sso};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A loopback HTTP/1.1 server answering every request with the current document (404 when
/// there is none).
struct MetadataServer {
    url: String,
    doc: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl MetadataServer {
    async fn start(doc: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/idp/metadata.xml", listener.local_addr().unwrap());
        let doc = Arc::new(Mutex::new(Some(doc)));
        let shared = doc.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = shared.lock().unwrap().clone();
                    let resp = match body {
                        Some(b) => format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/samlmetadata+xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                            b.len()
                        ),
                        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
                    };
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Self { url, doc, task }
    }

    fn serve(&self, doc: String) {
        *self.doc.lock().unwrap() = Some(doc);
    }
}

fn metadata(idp: &TestIdp) -> String {
    idp.metadata_xml("https://idp.test/sso", Some("https://idp.test/slo"))
        .unwrap()
}

fn with_valid_until(xml: &str, t: chrono::DateTime<Utc>) -> String {
    xml.replacen(
        "<md:EntityDescriptor ",
        &format!(
            "<md:EntityDescriptor validUntil=\"{}\" ",
            t.to_rfc3339_opts(SecondsFormat::Millis, true)
        ),
        1,
    )
}

/// A gateway config that reads the IdP metadata from `url`, backed up in `backup`.
fn url_toml(dash: &Dashboard, url: &str, backup: &Path) -> String {
    let toml = gateway::toml("{public_url}", &dash.url(), Opts::default());
    let line = toml
        .lines()
        .find(|l| l.starts_with("idp_metadata_file"))
        .unwrap()
        .to_string();
    toml.replace(
        &line,
        &format!(
            "idp_metadata_url = \"{url}\"\nidp_metadata_refresh = \"1h\"\nidp_metadata_backup_file = \"{}\"",
            backup.display()
        ),
    )
}

async fn readyz(gw: &Gateway) -> u16 {
    gateway::get(&format!("http://{}/readyz", gw.admin), &[])
        .await
        .0
        .status()
        .as_u16()
}

async fn login_status(sso: &Sso) -> u16 {
    let mut b = Browser::new();
    sso.login(&mut b, "/").await.0.status().as_u16()
}

#[tokio::test]
async fn metadata_url_start_rollover_refusals_and_backup() {
    let idp1 = TestIdp::generate(IDP_ENTITY).unwrap();
    let server = MetadataServer::start(metadata(&idp1)).await;
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("idp-backup.xml");
    let dash = Dashboard::start().await;
    let toml = url_toml(&dash, &server.url, &backup);

    let gw = gateway::start_toml(&toml).await;
    let mut sso = Sso {
        idp: idp1,
        gw,
        dash,
        dir,
    };
    assert_eq!(readyz(&sso.gw).await, 200);
    assert_eq!(login_status(&sso).await, 303);
    assert_eq!(
        std::fs::read_to_string(&backup).unwrap(),
        metadata(&sso.idp)
    );
    // Our SP metadata is served from config.
    let (resp, _) = gateway::get(&format!("{}/saml/metadata", sso.gw.public_url), &[]).await;
    assert_eq!(resp.status(), 200);

    // Key rollover: the IdP publishes a new key; a refresh puts it in force.
    let idp2 = TestIdp::generate(IDP_ENTITY).unwrap();
    server.serve(metadata(&idp2));
    let idp1 = std::mem::replace(&mut sso.idp, idp2);
    assert_eq!(login_status(&sso).await, 403, "new key before the refresh");
    sso.gw.running.app.refresh_idp_metadata().await.unwrap();
    assert_eq!(login_status(&sso).await, 303, "new key after the refresh");
    let idp2 = std::mem::replace(&mut sso.idp, idp1);
    assert_eq!(login_status(&sso).await, 403, "old key after the rollover");
    sso.idp = idp2;

    // S1: metadata without a signing key is refused; the previous keys stay.
    let idp3 = TestIdp::generate(IDP_ENTITY).unwrap();
    server.serve(metadata(&idp3).replace("use=\"signing\"", "use=\"encryption\""));
    let err = sso.gw.running.app.refresh_idp_metadata().await.unwrap_err();
    assert!(err.to_string().contains("signing certificate"), "{err}");
    assert_eq!(login_status(&sso).await, 303);
    // Expired metadata is refused too.
    server.serve(with_valid_until(
        &metadata(&idp3),
        Utc::now() - chrono::Duration::hours(1),
    ));
    let err = sso.gw.running.app.refresh_idp_metadata().await.unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    assert_eq!(login_status(&sso).await, 303);
    assert_eq!(readyz(&sso.gw).await, 200);
    assert_eq!(
        std::fs::read_to_string(&backup).unwrap(),
        metadata(&sso.idp)
    );

    // The copy in force expires: logins keep working, /readyz says not ready.
    let soon = Utc::now() + chrono::Duration::milliseconds(1500);
    let expiring = with_valid_until(&metadata(&sso.idp), soon);
    server.serve(expiring.clone());
    sso.gw.running.app.refresh_idp_metadata().await.unwrap();
    assert_eq!(readyz(&sso.gw).await, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    assert_eq!(readyz(&sso.gw).await, 503);
    assert_eq!(login_status(&sso).await, 303);
    server.serve(metadata(&sso.idp));
    sso.gw.running.app.refresh_idp_metadata().await.unwrap();
    assert_eq!(readyz(&sso.gw).await, 200);

    // The server goes away: a refresh fails and changes nothing; a restart uses the backup.
    server.task.abort();
    drop(server);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(sso.gw.running.app.refresh_idp_metadata().await.is_err());
    assert_eq!(login_status(&sso).await, 303);
    sso.gw = gateway::start_toml(&toml).await;
    assert_eq!(readyz(&sso.gw).await, 200);
    assert_eq!(login_status(&sso).await, 303);
}

#[tokio::test]
async fn no_metadata_anywhere_starts_not_ready_and_bad_metadata_refuses_to_start() {
    let dash = Dashboard::start().await;
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("none.xml");
    // Nothing listens on this port.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/md.xml", closed.local_addr().unwrap());
    drop(closed);
    let gw = gateway::start_toml(&url_toml(&dash, &url, &backup)).await;
    assert_eq!(readyz(&gw).await, 503);
    let (resp, _) = gateway::get(
        &format!("{}/saml/login", gw.public_url),
        &[("accept", "text/html")],
    )
    .await;
    assert_eq!(resp.status(), 503);

    // Metadata without a signing key and no backup: the gateway refuses to start (S1).
    let idp = TestIdp::generate(IDP_ENTITY).unwrap();
    let server =
        MetadataServer::start(metadata(&idp).replace("use=\"signing\"", "use=\"encryption\""))
            .await;
    let toml = url_toml(&dash, &server.url, &backup).replace("{public_url}", "http://127.0.0.1:1");
    let config =
        samlgate::config::Config::from_toml_str(&toml, Path::new(env!("CARGO_MANIFEST_DIR")))
            .unwrap();
    let err = samlgate::app::App::build(config).await.err().unwrap();
    assert!(err.to_string().contains("signing certificate"), "{err}");
}
