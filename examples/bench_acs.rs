//! Login throughput through the real gateway, side by side in one run: the ACS (verify →
//! replay cache → provisioning → session) for a ~4 KB signed response, without `[provisioning]`
//! and with it for a returning (cached) user. Responses are signed before the clock starts
//! (IdP-initiated, so each can be made in advance); the gateway gets every core.
//!
//!   cargo run --release --example bench_acs [logins-per-round=600] [rounds=3] [concurrency=16]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use samlgate::config::Config;
use samlgate::demo::scim::{ScimApi, ScimStore};
use samlgate::demo::signer::{ResponseSpec, TestIdp};
use tokio::net::TcpListener;

const IDP: &str = "https://bench-idp.test/metadata";
const TOKEN: &str = "bench-scim-token";

async fn gateway(dir: &Path, extra: &str) -> (String, samlgate::server::Running) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let toml = format!(
        "[server]\npublic_url = \"{url}\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n[saml]\nidp_metadata_file = \"{}\"\nallow_idp_initiated = true\n\
         [session]\nsecret = \"bench-secret-0123456789abcdef0123456789\"\n[log]\nlevel = \"error\"\n{extra}",
        dir.join("idp.xml").display()
    );
    let config = Config::from_toml_str(&toml, dir).unwrap();
    let app = samlgate::app::App::build(config).await.unwrap();
    (
        url,
        samlgate::server::start_with(app, listener, admin, None, std::future::pending()),
    )
}

fn responses(idp: &TestIdp, url: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let spec = ResponseSpec {
                destination: Some(format!("{url}/saml/acs")),
                recipient: Some(format!("{url}/saml/acs")),
                audiences: vec![format!("{url}/saml/metadata")],
                in_response_to: None,
                ..ResponseSpec::default()
            };
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("SAMLResponse", &idp.response_form_value(&spec).unwrap())
                .finish()
        })
        .collect()
}

/// Posts every form with `concurrency` in flight; returns logins per second.
async fn storm(url: &str, forms: Vec<String>, concurrency: usize) -> f64 {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let forms = Arc::new(tokio::sync::Mutex::new(forms));
    let started = Instant::now();
    let mut tasks = Vec::new();
    let total = forms.lock().await.len();
    for _ in 0..concurrency {
        let (client, forms, url) = (client.clone(), forms.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(form) = forms.lock().await.pop() else {
                    break;
                };
                let req = http::Request::post(format!("{url}/saml/acs"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from(form)))
                    .unwrap();
                let resp = client.request(req).await.unwrap();
                assert_eq!(resp.status(), 303, "login refused");
                let _ = resp.into_body().collect().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (n, rounds, concurrency) = (
        args.first().copied().unwrap_or(600),
        args.get(1).copied().unwrap_or(3),
        args.get(2).copied().unwrap_or(16),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let idp = TestIdp::generate(IDP).unwrap();
        std::fs::write(dir.path().join("idp.xml"), idp.metadata_xml("https://bench-idp.test/sso", None).unwrap()).unwrap();

        // The admin API: the demo's in-memory SCIM server.
        let scim_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scim_url = format!("http://{}/scim/v2", scim_listener.local_addr().unwrap());
        let api = ScimApi::new(ScimStore::new(), TOKEN);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = scim_listener.accept().await {
                let api = api.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let api = api.clone();
                        async move { Ok::<_, Infallible>(api.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
                });
            }
        });
        let prov = format!(
            "[provisioning]\nurl = \"{scim_url}\"\ntoken = \"{TOKEN}\"\ndefault_workspace = \"Production\"\ndefault_permission_set = \"Analyst\"\n"
        );
        let (plain_url, _plain) = gateway(dir.path(), "").await;
        let (prov_url, _prov) = gateway(dir.path(), &prov).await;
        // The first login creates the account; every later one is a returning, cached user.
        storm(&prov_url, responses(&idp, &prov_url, 1), 1).await;

        let (mut plain, mut with_prov) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let forms = responses(&idp, &plain_url, n);
            plain.push(storm(&plain_url, forms, concurrency).await);
            let forms = responses(&idp, &prov_url, n);
            with_prov.push(storm(&prov_url, forms, concurrency).await);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let (p, q) = (median(&mut plain), median(&mut with_prov));
        println!("ACS logins/s (4 KB signed response, {concurrency} in flight, median of {rounds} rounds of {n}):");
        println!("  without provisioning        {p:8.0}");
        println!("  with provisioning (cached)  {q:8.0}");
        println!("  cached provisioning overhead {:+.1}%", (p / q - 1.0) * 100.0);
    });
}
