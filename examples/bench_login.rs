//! Helper of `benches/load.sh`: a development IdP that signs real responses, so the load
//! benchmark measures authenticated requests with a session made by a real login.
//!
//!   bench_login idp DIR                 writes DIR/idp.xml, DIR/idp-key.pem, DIR/idp-cert.pem
//!   bench_login login DIR GATEWAY_URL   logs in through GATEWAY_URL, prints "name=value"
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use samlgate::demo::signer::{ResponseSpec, TestIdp};

const ENTITY: &str = "https://bench-idp.test/metadata";

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::Path::new(&args[2]);
    match args[1].as_str() {
        "idp" => {
            let idp = TestIdp::generate(ENTITY).unwrap();
            std::fs::write(
                dir.join("idp.xml"),
                idp.metadata_xml("https://bench-idp.test/sso", None)
                    .unwrap(),
            )
            .unwrap();
            std::fs::write(dir.join("idp-key.pem"), idp.key_pem().unwrap()).unwrap();
            std::fs::write(dir.join("idp-cert.pem"), idp.cert_pem().unwrap()).unwrap();
        }
        "login" => {
            let base = args[3].trim_end_matches('/');
            let idp = TestIdp::from_pem(
                ENTITY,
                &std::fs::read(dir.join("idp-key.pem")).unwrap(),
                &std::fs::read(dir.join("idp-cert.pem")).unwrap(),
            )
            .unwrap();
            let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
            let resp = client
                .request(
                    http::Request::get(format!("{base}/saml/login?return_to=/"))
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                )
                .await
                .unwrap();
            let location = resp.headers()["location"].to_str().unwrap().to_string();
            let binding = resp.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_string();
            let url = url::Url::parse(&location).unwrap();
            let q = |k: &str| {
                url.query_pairs()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.into_owned())
                    .unwrap()
            };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(q("SAMLRequest"))
                .unwrap();
            let mut xml = String::new();
            flate2::read::DeflateDecoder::new(&raw[..])
                .read_to_string(&mut xml)
                .unwrap();
            let i = xml.find(" ID=\"").unwrap() + 5;
            let id = &xml[i..i + xml[i..].find('"').unwrap()];
            let spec = ResponseSpec {
                destination: Some(format!("{base}/saml/acs")),
                recipient: Some(format!("{base}/saml/acs")),
                audiences: vec![format!("{base}/saml/metadata")],
                in_response_to: Some(id.to_string()),
                ..ResponseSpec::default()
            };
            let form: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("SAMLResponse", &idp.response_form_value(&spec).unwrap())
                .append_pair("RelayState", &q("RelayState"))
                .finish();
            let resp = client
                .request(
                    http::Request::post(format!("{base}/saml/acs"))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .header("cookie", binding)
                        .body(Full::new(Bytes::from(form)))
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = resp.status();
            let cookie = resp
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(|c| c.split(';').next().unwrap_or("").to_string())
                .find(|c| c.contains("samlgate=") && !c.starts_with("samlgate_login_"));
            let _ = resp.into_body().collect().await;
            match cookie {
                Some(c) if status == 303 => println!("{c}"),
                _ => {
                    eprintln!("login failed: {status}");
                    std::process::exit(1);
                }
            }
        }
        other => panic!("unknown command {other}"),
    }
}
