//! Interop: the Provisioner against a SCIM 2.0 server no one here wrote — `scim2-server` from
//! PyPI — started on a free loopback port. Run with `scripts/scim-interop.sh`, which makes the
//! venv and sets `SCIM2_SERVER`; without it these tests are ignored.
//!
//! A small forwarding proxy sits in front of the server so the "another replica created the
//! user first" race can be staged for real: the proxy sends the create twice and hands back the
//! server's own 409.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use samlgate::config::{ProvisioningConfig, ProvisioningMode, ProvisioningRule};
use samlgate::provision::{ProvisionError, Provisioner};
use serde_json::{Value, json};
use tokio::net::TcpListener;

#[path = "support/provisioning.rs"]
mod provisioning;
use provisioning::person;

const TOKEN: &str = "interop-token";

/// The scim2-server child process, killed on drop.
struct Scim2Server {
    child: Child,
    base: String,
}

impl Drop for Scim2Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_scim2_server() -> Scim2Server {
    let bin = std::env::var("SCIM2_SERVER").unwrap_or_else(|_| {
        panic!("SCIM2_SERVER is not set: run scripts/scim-interop.sh (it installs scim2-server from PyPI in a venv)")
    });
    let port = StdListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new(&bin)
        .args([
            "--hostname",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--bearer-token",
            TOKEN,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let server = Scim2Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let until = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < until,
            "scim2-server did not listen on port {port} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// Forwards everything to `upstream`; when `race` is set, the next POST is sent twice and the
/// second answer (the server's 409) is returned.
async fn start_proxy(upstream: String, race: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("addr");
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (client, upstream, race) = (client.clone(), upstream.clone(), race.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let (client, upstream, race) = (client.clone(), upstream.clone(), race.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let uri = format!(
                            "{upstream}{}",
                            parts.uri.path_and_query().map_or("/", |p| p.as_str())
                        );
                        let send = |body: Bytes| {
                            let mut req = Request::builder()
                                .method(parts.method.clone())
                                .uri(uri.clone());
                            for (k, v) in &parts.headers {
                                if k != http::header::HOST {
                                    req = req.header(k, v);
                                }
                            }
                            client.request(req.body(Full::new(body)).expect("request"))
                        };
                        if parts.method == Method::POST && race.swap(false, Ordering::SeqCst) {
                            send(body.clone())
                                .await
                                .expect("the other replica's create");
                        }
                        let resp = send(body).await.expect("forward");
                        let (parts, body) = resp.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        Ok::<_, Infallible>(Response::from_parts(parts, Full::new(body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn config(url: String) -> ProvisioningConfig {
    provisioning::config(url, TOKEN, Duration::from_secs(5))
}

/// A direct call to the server (the test's own view of what it stores).
async fn raw(
    server: &Scim2Server,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let req = Request::builder()
        .method(method)
        .uri(format!("{}{path}", server.base))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/scim+json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .expect("request");
    let resp = client.request(req).await.expect("scim2-server answers");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn stored(server: &Scim2Server, user_name: &str) -> Vec<Value> {
    let filter = format!("userName eq {}", Value::String(user_name.into()));
    let q: String = filter
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let (status, list) = raw(server, Method::GET, &format!("/Users?filter={q}"), None).await;
    assert_eq!(status, 200, "{list}");
    list["Resources"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs scim2-server from PyPI: scripts/scim-interop.sh"]
async fn create_then_lookup_case_insensitively_against_scim2_server() {
    let server = start_scim2_server();
    let p = Provisioner::new(&config(server.base.clone()), None).expect("provisioner");
    let who = p
        .resolve(person("Ann.Lee@Example.com"))
        .await
        .expect("created");
    let users = stored(&server, "ann.lee@example.com").await;
    assert_eq!(users.len(), 1, "{users:?}");
    let u = &users[0];
    assert_eq!(who.user_id.as_deref(), u["id"].as_str());
    assert_eq!(u["externalId"], "nameid-Ann.Lee@Example.com");
    assert_eq!(u["active"], true);
    assert_eq!(u["name"]["givenName"], "Ann");
    assert_eq!(u["emails"][0]["value"], "Ann.Lee@Example.com");
    assert_eq!(u["roles"][0]["value"], "Analyst");
    assert_eq!(u["entitlements"][0]["value"], "Production");

    // A second replica (no shared cache) finds the same user, spelled differently, and reads
    // the workspace and permission set back from roles/entitlements.
    let other = Provisioner::new(&config(server.base.clone()), None).expect("provisioner");
    let again = other
        .resolve(person("ann.lee@example.COM"))
        .await
        .expect("found");
    assert_eq!(again.user_id, who.user_id);
    assert_eq!(
        (again.workspace.as_deref(), again.permission_set.as_deref()),
        (Some("Production"), Some("Analyst"))
    );
    assert_eq!(stored(&server, "ann.lee@example.com").await.len(), 1);
}

#[tokio::test]
#[ignore = "needs scim2-server from PyPI: scripts/scim-interop.sh"]
async fn a_real_409_is_answered_by_a_lookup_against_scim2_server() {
    let server = start_scim2_server();
    let race = Arc::new(AtomicBool::new(true));
    let proxy = start_proxy(server.base.clone(), race.clone()).await;
    let p = Provisioner::new(&config(format!("http://{proxy}")), None).expect("provisioner");
    let who = p
        .resolve(person("race@example.com"))
        .await
        .expect("found after the server's 409");
    assert!(
        !race.load(Ordering::SeqCst),
        "the create went through the race"
    );
    let users = stored(&server, "race@example.com").await;
    assert_eq!(users.len(), 1);
    assert_eq!(who.user_id.as_deref(), users[0]["id"].as_str());
}

#[tokio::test]
#[ignore = "needs scim2-server from PyPI: scripts/scim-interop.sh"]
async fn inactive_escaped_and_synced_users_against_scim2_server() {
    let server = start_scim2_server();
    // Deactivated in the directory.
    let (status, created) = raw(
        &server,
        Method::POST,
        "/Users",
        Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "gone@example.com", "active": false})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let p = Provisioner::new(&config(server.base.clone()), None).expect("provisioner");
    assert_eq!(
        p.resolve(person("gone@example.com")).await,
        Err(ProvisionError::Inactive)
    );

    // A quote and a backslash survive the filter (RFC 7644 §3.4.2.2).
    let odd = r#"o"d\d@example.com"#;
    let first = p.resolve(person(odd)).await.expect("created");
    let other = Provisioner::new(&config(server.base.clone()), None).expect("provisioner");
    assert_eq!(
        other.resolve(person(odd)).await.expect("found").user_id,
        first.user_id
    );
    assert_eq!(stored(&server, odd).await.len(), 1);

    // sync_on_login: PUT accepted by a real server, and read back.
    let mut cfg = config(server.base.clone());
    cfg.mode = ProvisioningMode::SyncOnLogin;
    cfg.rules = vec![ProvisioningRule {
        group: "ops".into(),
        workspace: "Ops".into(),
        permission_set: "Admin".into(),
    }];
    let syncing = Provisioner::new(&cfg, None).expect("provisioner");
    let mut ops = person(odd);
    ops.groups = samlgate::identity::groups(["ops"]);
    let synced = syncing.resolve(ops).await.expect("synced");
    assert_eq!(
        (
            synced.workspace.as_deref(),
            synced.permission_set.as_deref()
        ),
        (Some("Ops"), Some("Admin"))
    );
    let u = &stored(&server, odd).await[0];
    assert_eq!(u["entitlements"][0]["value"], "Ops");
    assert_eq!(u["roles"][0]["value"], "Admin");
}
