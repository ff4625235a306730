//! Foundation, black-box: the real gateway on 127.0.0.1:0 in front of a fake dashboard, over
//! real sockets — streaming, hop-by-hop, X-Forwarded-*, upgrades, timeouts, HTTP/2, TLS,
//! fail-closed paths, the CLI and graceful shutdown.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use support::dashboard::Dashboard;
use support::gateway::{self, get};
use support::local;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn public_path_is_forwarded_with_forwarded_headers_and_without_hop_by_hop() {
    let dash = Dashboard::start().await;
    let gw = gateway::start(&dash.url(), "").await;
    let (resp, body) = get(
        &format!("{}/static/app.js?v=1", gw.public_url),
        &[
            ("connection", "x-custom, keep-alive"),
            ("x-custom", "hop"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "evil.test"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "abc-123"),
            // Forwarding headers samlgate does not set, and `_` spellings of those it does.
            ("x_forwarded_for", "6.6.6.6"),
            ("X_Forwarded_Host", "evil.test"),
            ("x-forwarded_proto", "https"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-prefix", "/evil"),
            ("x-forwarded-ssl", "on"),
            ("forwarded", "for=6.6.6.6;host=evil.test;proto=https"),
            ("x-real-ip", "6.6.6.6"),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(&body[..], b"dashboard saw /static/app.js");
    // Response hop-by-hop headers (and those named in Connection) are gone; others pass.
    assert!(resp.headers().get("x-hop").is_none());
    assert!(resp.headers().get("keep-alive").is_none());
    assert_eq!(resp.headers()["x-upstream"], "yes");
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    let seen = dash.last();
    assert_eq!(seen.uri, "/static/app.js?v=1");
    for h in [
        "x-custom",
        "keep-alive",
        "te",
        "proxy-authorization",
        "connection",
    ] {
        assert!(seen.headers.get(h).is_none(), "{h} reached the dashboard");
    }
    // An untrusted peer's chain is replaced, not appended to, and no other forwarding header
    // of its own, in any spelling, gets through.
    for (name, value) in &seen.headers {
        let n = name.as_str();
        assert!(
            !(n.contains('_') || n == "forwarded" || n == "x-real-ip"),
            "{n} reached the dashboard"
        );
        assert!(
            !n.starts_with("x-forwarded-")
                || ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"].contains(&n),
            "{n}: {value:?} reached the dashboard"
        );
    }
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(
        seen.headers["x-forwarded-host"],
        format!("127.0.0.1:{}", gw.addr.port()).as_str()
    );
    assert_eq!(seen.headers["x-request-id"], "abc-123");
    // The Host is kept by default.
    assert_eq!(
        seen.headers["host"],
        format!("127.0.0.1:{}", gw.addr.port()).as_str()
    );
}

/// A client whose own chunked body is malformed gets 400, and it is not counted as a dashboard
/// failure (a 502 "cannot be reached" and an upstream-error metric were what anyone could
/// raise at will).
#[tokio::test]
async fn a_malformed_client_body_is_the_clients_fault_not_the_dashboards() {
    let dash = Dashboard::start().await;
    let gw = gateway::start(&dash.url(), "").await;
    let (status, head) = gateway::raw_request(
        gw.addr,
        b"POST /static/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
          Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{head}");
    let (_, metrics) = get(&format!("http://{}/metrics", gw.admin), &[]).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        !metrics.contains("samlgate_upstream_errors_total{kind=\"connect\"} 1"),
        "{metrics}"
    );
}

/// An upstream that answers 101 to a request that asked for no upgrade gets its client a 502,
/// not a bare 101 (which would end the client's connection, or break HTTP/2 where 101 does
/// not exist).
#[tokio::test]
async fn an_unasked_101_from_the_upstream_is_a_502() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                          Upgrade: evil\r\n\r\nraw bytes of another protocol",
                    )
                    .await;
            });
        }
    });
    let gw = gateway::start(&format!("http://127.0.0.1:{port}"), "").await;
    let (resp, body) = get(&format!("{}/static/x", gw.public_url), &[]).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(!String::from_utf8_lossy(&body).contains("raw bytes"));
}

/// `Connection` cannot name away the Host the dashboard is to see or the request id samlgate
/// logs (the client's own headers it names still go).
#[tokio::test]
async fn connection_cannot_name_away_host_or_the_request_id() {
    let dash = Dashboard::start().await;
    let gw = gateway::start(&dash.url(), "").await;
    let (status, _) = gateway::raw_get(
        gw.addr,
        "/static/app.js",
        &[
            "Connection: host, x-request-id, x-private",
            "X-Request-Id: trace-42",
            "X-Private: 1",
        ],
    )
    .await;
    assert_eq!(status, 200);
    let seen = dash.last();
    assert_eq!(seen.headers["host"], gw.addr.to_string().as_str());
    assert_eq!(seen.headers["x-request-id"], "trace-42");
    assert!(seen.headers.get("x-private").is_none());
}

/// The dashboard cannot set, overwrite or delete samlgate's own cookies (the session cookie,
/// with or without `__Host-`, and login-binding cookies): that would end sessions or plant one
/// obtained elsewhere. Its own cookies pass.
#[tokio::test]
async fn the_upstream_cannot_set_samlgates_cookies() {
    let dash = Dashboard::start().await;
    let gw = gateway::start(&dash.url(), "").await;
    let (resp, _) = get(&format!("{}/static/app.js?cookies=1", gw.public_url), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let set: Vec<&str> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(set, ["theme=dark; Path=/", "lang=en"]);
}

#[tokio::test]
async fn the_upstream_urls_path_prefix_is_kept() {
    let dash = Dashboard::start().await;
    let gw = gateway::start(&format!("{}/dash/", dash.url()), "").await;
    let (resp, _) = get(&format!("{}/static/app.js?v=1", gw.public_url), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(dash.last().uri, "/dash/static/app.js?v=1");
}

#[tokio::test]
async fn trusted_proxy_chain_is_appended() {
    let dash = Dashboard::start().await;
    let gw = gateway::start(&dash.url(), "").await;
    drop(gw);
    let toml = gateway::base_toml("{public_url}", &dash.url(), "").replace(
        "shutdown_grace = \"5s\"",
        "shutdown_grace = \"5s\"\ntrusted_proxies = [\"127.0.0.0/8\"]",
    );
    let gw = gateway::start_toml(&toml).await;
    get(
        &format!("{}/static/x", gw.public_url),
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-prefix", "/dash"),
            ("forwarded", "for=203.0.113.9"),
            ("x-real-ip", "203.0.113.9"),
            ("x_forwarded_for", "6.6.6.6"),
        ],
    )
    .await;
    let seen = dash.last();
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    // A trusted proxy's other forwarding headers are believed too; an `_` spelling never is.
    assert_eq!(seen.headers["x-forwarded-prefix"], "/dash");
    assert_eq!(seen.headers["forwarded"], "for=203.0.113.9");
    assert_eq!(seen.headers["x-real-ip"], "203.0.113.9");
    assert!(seen.headers.get("x_forwarded_for").is_none());
}

#[tokio::test]
async fn only_websocket_upgrades_are_bridged() {
    let dash = Dashboard::start().await;
    let gw = gateway::start(&dash.url(), "").await;
    // An h2c upgrade (RFC 7540 §3.2) is forwarded as a plain request: a dashboard that took it
    // would give the client an HTTP/2 tunnel past every header samlgate sets.
    let (resp, body) = get(
        &format!("{}/static/app.js", gw.public_url),
        &[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(&body[..], b"dashboard saw /static/app.js");
    let seen = dash.last();
    for h in ["upgrade", "http2-settings", "connection"] {
        assert!(seen.headers.get(h).is_none(), "{h} reached the dashboard");
    }
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let dash = Dashboard::start().await;
    let gw = gateway::start(&dash.url(), "").await;
    // 8 MiB up, sent in chunks, echoed back as it arrives.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
    tokio::spawn(async move {
        for _ in 0..128 {
            tx.send(Ok(Frame::data(Bytes::from(vec![7u8; 64 * 1024]))))
                .await
                .unwrap();
        }
    });
    let body = StreamBody::new(Box::pin(futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|v| (v, rx)) },
    )));
    let req = Request::post(format!("{}/echo", gw.public_url))
        .body(body)
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.len(), 8 * 1024 * 1024);
    assert!(got.iter().all(|b| *b == 7));
    // And 16 MiB down.
    let (resp, body) = get(&format!("{}/big?n={}", gw.public_url, 16 << 20), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body.len(), 16 << 20);
}

#[tokio::test]
async fn chunked_response_arrives_before_the_upstream_finishes() {
    let dash = Dashboard::start().await;
    let gw = gateway::start(&dash.url(), "").await;
    let started = Instant::now();
    let resp = gateway::client()
        .request(
            Request::get(format!("{}/chunked", gw.public_url))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"first\n");
    // The upstream holds the rest for 3 s: the first chunk must not have waited for it.
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "first chunk took {:?}",
        started.elapsed()
    );
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"last\n");
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    let dash = Dashboard::start().await;
    let gw = gateway::start(&dash.url(), "").await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    // A masked WebSocket text frame "hello" goes through and comes back byte for byte.
    let frame = [
        0x81u8,
        0x85,
        1,
        2,
        3,
        4,
        b'h' ^ 1,
        b'e' ^ 2,
        b'l' ^ 3,
        b'l' ^ 4,
        b'o' ^ 1,
    ];
    s.write_all(&frame).await.unwrap();
    let mut echo = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echo, frame);
    assert_eq!(dash.last().headers["upgrade"], "websocket");
}

#[tokio::test]
async fn upstream_down_gives_502_page() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gw = gateway::start(&format!("http://127.0.0.1:{port}"), "").await;
    let started = Instant::now();
    let (resp, body) = get(&format!("{}/static/x", gw.public_url), &[]).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(String::from_utf8_lossy(&body).contains("Bad gateway"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn upstream_slower_than_request_timeout_gives_504_page() {
    let dash = Dashboard::start().await;
    let gw = gateway::start(&dash.url(), "").await;
    let (resp, body) = get(&format!("{}/slow?ms=4000", gw.public_url), &[]).await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(String::from_utf8_lossy(&body).contains("did not answer in time"));
}

#[tokio::test]
async fn http2_prior_knowledge_client() {
    let dash = Dashboard::start().await;
    let gw = gateway::start(&dash.url(), "").await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let resp = client
        .request(
            Request::get(format!("{}/static/h2", gw.public_url))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"dashboard saw /static/h2");
    // The dashboard got HTTP/1.1 with a Host header made from the :authority.
    assert_eq!(
        dash.last().headers["host"],
        format!("127.0.0.1:{}", gw.addr.port()).as_str()
    );
}

/// A gateway with `[server.tls]` (a self-signed `localhost` certificate) and `server` lines
/// in front of `dash`, and the roots a client needs to trust it.
async fn tls_gateway(
    dash: &Dashboard,
    server: &str,
) -> (gateway::Gateway, rustls::RootCertStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path, cert) = local::localhost_cert(dir.path());
    let toml = gateway::toml(
        "{public_url}",
        &dash.url(),
        gateway::Opts {
            server,
            ..gateway::Opts::default()
        },
    ) + &format!(
        "\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    );
    let gw = gateway::start_toml(&toml).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(
            cert.to_der().unwrap(),
        ))
        .unwrap();
    (gw, roots, dir)
}

#[tokio::test]
async fn tls_listener_serves_h2_and_http11() {
    let dash = Dashboard::start().await;
    let (gw, roots, _dir) = tls_gateway(&dash, "").await;
    for (alpn, want) in [
        (b"h2".to_vec(), http::Version::HTTP_2),
        (b"http/1.1".to_vec(), http::Version::HTTP_11),
    ] {
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        cfg.alpn_protocols = vec![alpn];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let tls = connector
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let io = hyper_util::rt::TokioIo::new(tls);
        let req = Request::get("/static/tls")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = if want == http::Version::HTTP_2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let req = Request::get(format!("https://localhost:{}/static/tls", gw.addr.port()))
                .body(Full::new(Bytes::new()))
                .unwrap();
            sender.send_request(req).await.unwrap()
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            sender.send_request(req).await.unwrap()
        };
        assert_eq!(resp.version(), want);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(dash.last().headers["x-forwarded-proto"], "https");
    }
}

#[tokio::test]
async fn protected_paths_fail_closed_without_a_session() {
    let dash = Dashboard::start().await;
    let gw = gateway::start(&dash.url(), "").await;
    for path in [
        "/reports",
        "/static/../admin",
        "/static/%2e%2e/admin",
        "/static/..%2fadmin",
        "/%2e/static/x",
        "/static//../x",
    ] {
        let (resp, body) = get(
            &format!("{}{path}", gw.public_url),
            &[("accept", "application/json")],
        )
        .await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"], "unauthenticated");
        assert!(
            json["login_url"]
                .as_str()
                .unwrap()
                .contains("/saml/login?return_to=")
        );
    }
    assert!(
        dash.seen().is_empty(),
        "the dashboard saw {:?}",
        dash.seen()
    );
}

#[tokio::test]
async fn metrics_count_requests() {
    let dash = Dashboard::start().await;
    let gw = gateway::start(&dash.url(), "").await;
    for _ in 0..3 {
        get(&format!("{}/static/m", gw.public_url), &[]).await;
    }
    get(&format!("{}/private", gw.public_url), &[]).await;
    let (resp, body) = get(&format!("http://{}/metrics", gw.admin), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("samlgate_requests_total{route=\"public\",status=\"2xx\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("samlgate_requests_total{route=\"proxy\",status=\"4xx\"} 1"),
        "{text}"
    );
    assert!(text.contains("samlgate_request_duration_seconds"), "{text}");
    assert!(text.contains("samlgate_build_info{version="), "{text}");
    // Without asking for OpenMetrics: the classic text format (0.0.4), where a family's TYPE
    // names its samples and only the four classic types exist.
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(!text.contains("# EOF"), "{text}");
    let mut family: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            family = Some((name.to_string(), kind.to_string()));
        } else if !line.starts_with('#') && !line.is_empty() {
            let (name, kind) = family.as_ref().expect("a sample before any TYPE");
            let sample = line.split(['{', ' ']).next().unwrap();
            let belongs = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| sample == format!("{name}{s}")),
                _ => sample == name,
            };
            assert!(belongs, "{sample} under TYPE {name} {kind}");
        }
    }
    // Prometheus asks for OpenMetrics, and gets it.
    let (resp, body) = get(
        &format!("http://{}/metrics", gw.admin),
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
    )
    .await;
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("# TYPE samlgate_requests counter"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let (resp, _) = get(&format!("http://{}/healthz", gw.admin), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn oversized_request_head_is_refused() {
    let dash = Dashboard::start().await;
    let gw = gateway::start(&dash.url(), "").await;
    let big = "a".repeat(40 * 1024);
    let req = Request::get(format!("{}/static/x", gw.public_url))
        .header("x-big", big)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let result = gateway::client().request(req).await;
    // hyper answers 431, or closes the connection: both refuse.
    if let Ok(resp) = result {
        assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    assert!(dash.seen().is_empty());
}

/// A gateway in front of `dash` with `server` lines added to its `[server]` section.
async fn gateway_with_server(dash: &Dashboard, server: &str) -> gateway::Gateway {
    gateway::start_toml(&gateway::toml(
        "{public_url}",
        &dash.url(),
        gateway::Opts {
            server,
            ..gateway::Opts::default()
        },
    ))
    .await
}

/// A gateway with `server.header_read_timeout = "1s"` in front of `dash`, and a raw connection
/// to it.
async fn connect_with_header_read_timeout_of_1s(
    dash: &Dashboard,
) -> (gateway::Gateway, tokio::net::TcpStream) {
    let gw = gateway_with_server(dash, "header_read_timeout = \"1s\"").await;
    let s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    (gw, s)
}

/// A client that sends its request head too slowly (slowloris) is cut off after
/// `server.header_read_timeout`, and the dashboard sees nothing.
#[tokio::test]
async fn slow_request_heads_are_cut_off() {
    let dash = Dashboard::start().await;
    let (_gw, mut s) = connect_with_header_read_timeout_of_1s(&dash).await;
    s.write_all(b"GET /static/x HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let buf = read_until_closed_by_a_1s_timeout(&mut s, "the half-sent request").await;
    // hyper answers 408 before closing, or just closes (a reset counts too).
    let text = String::from_utf8_lossy(&buf);
    assert!(
        buf.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected answer: {text}"
    );
    assert!(dash.seen().is_empty());
}

/// A connection that never sends a byte is closed after `server.header_read_timeout` too (hyper
/// starts that timer at the first byte): otherwise one host holding `max_connections` silent
/// sockets would have the gateway answer nobody, while /healthz and /readyz stayed 200.
#[tokio::test]
async fn connections_that_never_send_a_byte_are_closed_after_the_header_read_timeout() {
    let dash = Dashboard::start().await;
    let (_gw, mut s) = connect_with_header_read_timeout_of_1s(&dash).await;
    let buf = read_until_closed_by_a_1s_timeout(&mut s, "a silent connection").await;
    assert!(buf.is_empty(), "unexpected data: {buf:?}");
    // With every slot held by silent connections, a new client is served once they are gone.
    let gw = gateway_with_server(&dash, "header_read_timeout = \"1s\"\nmax_connections = 3").await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(gw.addr).await.unwrap());
    }
    let (resp, _) = tokio::time::timeout(
        Duration::from_secs(5),
        get(&format!("{}/static/after", gw.public_url), &[]),
    )
    .await
    .expect("no answer while silent connections held every slot");
    assert_eq!(resp.status(), StatusCode::OK);
    drop(silent);
}

/// An idle keep-alive connection is closed once `server.header_read_timeout` passes without a
/// new request head (the wait for the next request is the wait for its head).
#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_header_read_timeout() {
    let dash = Dashboard::start().await;
    let (_gw, mut s) = connect_with_header_read_timeout_of_1s(&dash).await;
    // HEAD: the answer is its head alone, so what is read next can only be the close.
    s.write_all(b"HEAD /static/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let n = read_head(&mut s, &mut buf).await;
    assert!(n.is_some(), "no answer to the first request");
    assert!(buf.starts_with(b"HTTP/1.1 200"));
    let more = read_until_closed_by_a_1s_timeout(&mut s, "an idle keep-alive connection").await;
    assert!(more.is_empty(), "unexpected data: {more:?}");
}

/// Reads `s` until the gateway closes it, which must be about 1 s from now (the tests' 1 s
/// timeouts), and returns what arrived before.
async fn read_until_closed_by_a_1s_timeout(s: &mut tokio::net::TcpStream, what: &str) -> Vec<u8> {
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{what} was still open after 10 s"));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the timeout after {:?}: {read:?}",
        started.elapsed()
    );
    buf
}

/// A sign-in form trickled slower than `server.header_read_timeout` is answered 408 once that
/// time is up, with no session, instead of holding its connection for as long as the client
/// likes (the head arrived in time, so hyper's own timer does not apply).
#[tokio::test]
async fn slow_sign_in_form_bodies_are_cut_off() {
    let dash = Dashboard::start().await;
    let (_gw, mut s) = connect_with_header_read_timeout_of_1s(&dash).await;
    s.write_all(
        b"POST /saml/acs HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n\
          SAMLResponse=PHNhbWxwOlJlc3BvbnNl",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("no answer 10 s into a stalled sign-in form")
            .unwrap();
        assert!(
            n > 0,
            "closed without an answer after {:?}",
            started.elapsed()
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).to_lowercase();
    assert!(
        head.starts_with("http/1.1 408"),
        "unexpected answer: {head}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "answered before the timeout: {head}"
    );
    assert!(!head.contains("set-cookie: samlgate="), "{head}");
    assert!(dash.seen().is_empty());
}

#[tokio::test]
async fn https_upstream_with_a_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = local::localhost_cert(dir.path());
    let acceptor = samlgate::server::tls_acceptor(&samlgate::config::TlsConfig {
        cert_file: cert.clone(),
        key_file: key,
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(format!("tls upstream saw {}", req.uri().path())),
                        )))
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    let upstream = format!("https://localhost:{port}");
    let with_ca = gateway::toml(
        "{public_url}",
        &upstream,
        gateway::Opts {
            upstream: &format!("ca_file = \"{}\"", cert.display()),
            ..Default::default()
        },
    );
    let gw = gateway::start_toml(&with_ca).await;
    let (resp, body) = get(&format!("{}/static/secure", gw.public_url), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(&body[..], b"tls upstream saw /static/secure");
    // Without the CA, the self-signed upstream is not trusted: 502, never a plain-text fallback.
    let gw = gateway::start(&upstream, "").await;
    let (resp, _) = get(&format!("{}/static/secure", gw.public_url), &[]).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
}

/// A gateway with one worker, so that every request shares one upstream connection pool.
async fn one_worker_gateway(upstream: &str) -> gateway::Gateway {
    let opts = gateway::Opts {
        server: "workers = 1",
        ..Default::default()
    };
    gateway::start_toml(&gateway::toml("{public_url}", upstream, opts)).await
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let dash = Dashboard::start().await;
    let gw = one_worker_gateway(&dash.url()).await;
    for i in 0..20 {
        let url = format!("{}/static/{i}.js", gw.public_url);
        if i % 5 == 0 {
            // A body-less answer hands its connection back at once.
            let (resp, body) =
                gateway::send(Request::head(&url).body(Full::default()).unwrap()).await;
            assert_eq!(resp.status(), StatusCode::OK);
            assert!(body.is_empty());
        } else {
            let (resp, body) = get(&url, &[]).await;
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(
                &body[..],
                format!("dashboard saw /static/{i}.js").as_bytes()
            );
        }
    }
    assert_eq!(dash.seen().len(), 20);
    assert_eq!(
        dash.connections(),
        1,
        "requests did not share a keep-alive connection"
    );
}

/// Reads from `stream` into `buf` until it holds a whole request head: the head's length
/// (through the blank line), or `None` when the peer closed first.
/// What the raw fake dashboards below answer, framed for keep-alive.
const OK_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// GETs `url` through the gateway and expects the raw fakes' "ok"; `why` names the failure.
async fn get_ok(url: &str, why: &str) {
    let (resp, body) = get(url, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK, "{why}");
    assert_eq!(&body[..], b"ok", "{why}");
}

async fn read_head(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(end + 4);
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test]
async fn a_keep_alive_connection_the_dashboard_closed_is_not_used_again() {
    // A dashboard that answers one request per connection, framed for keep-alive, and then
    // closes the idle connection (as one does when its keep-alive timeout is shorter).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                if read_head(&mut stream, &mut Vec::new()).await.is_none() {
                    return;
                }
                let _ = stream.write_all(OK_RESPONSE).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
    });
    let gw = one_worker_gateway(&format!("http://{addr}")).await;
    for _ in 0..5 {
        get_ok(
            &format!("{}/static/x", gw.public_url),
            "a closed connection was used",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 5);
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_after_the_keepalive_timeout() {
    // A dashboard that keeps every connection open for as long as the gateway does, and
    // reports each connection the gateway closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while let Some(end) = read_head(&mut stream, &mut head).await {
                    head.drain(..end);
                    let _ = stream.write_all(OK_RESPONSE).await;
                }
                let _ = closed_tx.send(());
            });
        }
    });
    let opts = gateway::Opts {
        server: "workers = 1",
        upstream: "keepalive_timeout = \"1s\"",
        ..Default::default()
    };
    let gw = gateway::start_toml(&gateway::toml(
        "{public_url}",
        &format!("http://{addr}"),
        opts,
    ))
    .await;
    let url = format!("{}/static/x", gw.public_url);
    for _ in 0..2 {
        get_ok(&url, "a request before the idle wait").await;
        // Idle for 1 s plus at most one maintenance tick; the default (90 s) would keep it.
        tokio::time::timeout(Duration::from_secs(5), closed.recv())
            .await
            .expect("the idle upstream connection was never closed")
            .expect("dashboard gone");
    }
    assert!(
        closed.try_recv().is_err(),
        "one connection per request, each closed once"
    );
}

#[tokio::test]
async fn a_request_never_waits_for_an_upload_the_dashboard_answered_early() {
    // A dashboard that answers a POST at once and then keeps reading its body (a size limit
    // that drains), and answers anything else with "ok", keeping connections alive.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                while let Some(end) = read_head(&mut stream, &mut head).await {
                    if head.starts_with(b"POST") {
                        let _ = stream
                            .write_all(
                                b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n",
                            )
                            .await;
                        let mut sink = [0u8; 4096];
                        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                        return;
                    }
                    head.drain(..end);
                    if stream.write_all(OK_RESPONSE).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let gw = one_worker_gateway(&format!("http://{addr}")).await;
    // An upload that sends one chunk and then stalls.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
    tx.send(Ok(Frame::data(Bytes::from_static(b"first chunk"))))
        .await
        .unwrap();
    let mut rx = rx;
    let upload = Request::post(format!("{}/static/upload", gw.public_url))
        .body(StreamBody::new(futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
        })))
        .unwrap();
    let early = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http()
        .request(upload)
        .await
        .unwrap();
    assert_eq!(early.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // The next request on the same worker gets a connection of its own rather than waiting
    // for the busy one until the request timeout (504).
    get_ok(
        &format!("{}/static/next", gw.public_url),
        "waited for a busy upstream connection",
    )
    .await;
    drop(tx);
}

/// A gauge as the admin listener reports it.
async fn gauge(gw: &gateway::Gateway, name: &str) -> i64 {
    let (_, body) = get(&format!("http://{}/metrics", gw.admin), &[]).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// `samlgate_requests_in_flight`: requests whose response head is not out yet.
async fn in_flight(gw: &gateway::Gateway) -> i64 {
    gauge(gw, "samlgate_requests_in_flight").await
}

#[tokio::test]
async fn a_request_whose_client_went_away_is_no_longer_in_flight() {
    let dash = Dashboard::start().await;
    let gw = gateway::start(&dash.url(), "").await;
    let mut client = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    client
        .write_all(b"GET /slow?ms=60000 HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while dash.seen().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the dashboard never saw the request"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(in_flight(&gw).await, 1);
    // The client hangs up long before the dashboard answers: the request is dropped, and
    // the gauge must not stay raised.
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(5);
    while in_flight(&gw).await != 0 {
        assert!(
            Instant::now() < deadline,
            "a dropped request stayed in flight"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A gateway with `server.send_timeout = "1s"` in front of `dash`, and a raw connection to it
/// with a receive buffer of `rcvbuf` bytes, on which `GET /big?n={n}` has been sent.
async fn request_big_with_send_timeout_of_1s(
    dash: &Dashboard,
    n: usize,
    rcvbuf: u32,
) -> (gateway::Gateway, tokio::net::TcpStream) {
    let gw = gateway_with_server(dash, "send_timeout = \"1s\"").await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(rcvbuf).unwrap();
    let mut s = socket.connect(gw.addr).await.unwrap();
    s.write_all(
        format!("GET /big?n={n} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    (gw, s)
}

/// Waits until the dashboard has seen the request and the gateway has closed every client
/// connection, which must take about the tests' 1 s send timeout.
async fn wait_until_cut_off_after_about_1s(dash: &Dashboard, gw: &gateway::Gateway, who: &str) {
    let started = Instant::now();
    while dash.seen().is_empty() || gauge(gw, "samlgate_connections_open").await != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{who} was still being served after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "cut off before the timeout: {:?}",
        started.elapsed()
    );
}

/// A client that stops reading its response is cut off after `server.send_timeout`: its
/// connection is closed (and its upstream request dropped with it) long before the body is
/// through. Without the timeout it stays open for as long as the client likes, holding a
/// connection slot and an upstream connection.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_after_the_send_timeout() {
    let dash = Dashboard::start().await;
    let n = 64 << 20;
    let (gw, mut s) = request_big_with_send_timeout_of_1s(&dash, n, 16 * 1024).await;
    wait_until_cut_off_after_about_1s(&dash, &gw, "a client that reads nothing").await;
    // What the kernel's buffers held arrives; then the connection ends (EOF or reset).
    let mut got = 0usize;
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("the cut-off connection stayed open")
        {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    assert!(got < n / 2, "{got} of {n} bytes arrived after the cut-off");
}

/// The send timeout holds under TLS too, where a write first goes into rustls's buffer: a
/// client that stops reading is cut off once that buffer is full and the socket waits.
#[tokio::test]
async fn a_tls_client_that_stops_reading_is_cut_off_after_the_send_timeout() {
    let dash = Dashboard::start().await;
    let (gw, roots, _dir) = tls_gateway(&dash, "send_timeout = \"1s\"").await;
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(
        format!(
            "GET /big?n={} HTTP/1.1\r\nHost: localhost\r\n\r\n",
            64 << 20
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    wait_until_cut_off_after_about_1s(&dash, &gw, "a TLS client that reads nothing").await;
    drop(tls);
}

/// The send timeout is between two writes, not for the whole response: a client that reads
/// slowly but steadily, for longer than `server.send_timeout` in all, gets the whole body.
#[tokio::test]
async fn a_slow_but_steady_reader_gets_the_whole_response() {
    let dash = Dashboard::start().await;
    // More than the gateway's send buffer and the client's receive buffer hold, so the
    // gateway's writes do wait for the client, many times.
    let n = 8 << 20;
    let (_gw, mut s) = request_big_with_send_timeout_of_1s(&dash, n, 32 * 1024).await;
    let started = Instant::now();
    let mut got = Vec::with_capacity(n + 4096);
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let k = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("no data for 10 s")
            .unwrap();
        if k == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..k]);
    }
    assert!(
        started.elapsed() > Duration::from_millis(1100),
        "the client was not slower than the send timeout in all: {:?}",
        started.elapsed()
    );
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(got.starts_with(b"HTTP/1.1 200"), "{:?}", &got[..head_end]);
    // Chunked: the body's bytes plus framing, ending with the last chunk.
    let xs = got[head_end..].iter().filter(|b| **b == b'x').count();
    assert_eq!(xs, n, "the body was cut short");
    assert!(got.ends_with(b"0\r\n\r\n"));
}

/// An HTTP/2 connection to a gateway with `server.send_timeout = "1s"` in front of `dash`.
async fn h2_with_send_timeout_of_1s(
    dash: &Dashboard,
) -> (
    gateway::Gateway,
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
) {
    let gw = gateway_with_server(dash, "send_timeout = \"1s\"").await;
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    (gw, sender)
}

fn h2_get(gw: &gateway::Gateway, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("{}{path}", gw.public_url))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Over HTTP/2 a client can stall single streams by withholding their flow-control window
/// while its connection stays busy, so no write ever waits: each stream whose client took in
/// nothing for `server.send_timeout` lets go of its upstream (the dashboard stops sending),
/// and ends with an error when the client reads on; the connection stays usable. Without
/// this, the three streams hold three dashboard connections for as long as the client likes.
#[tokio::test]
async fn http2_streams_whose_client_withholds_window_let_go_of_the_upstream() {
    let dash = Dashboard::start().await;
    let (gw, mut h2) = h2_with_send_timeout_of_1s(&dash).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let resp = h2
            .send_request(h2_get(&gw, &format!("/big?n={}", 64 << 20)))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        // The body is never read, so its window never comes back.
        held.push(resp);
    }
    let started = Instant::now();
    while dash.streaming() != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the dashboard was still sending {} bodies to a stalled HTTP/2 client after 10 s",
            dash.streaming()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "let go before the timeout: {:?}",
        started.elapsed()
    );
    let resp = h2.send_request(h2_get(&gw, "/static/after")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cut = held.pop().unwrap().into_body().collect().await;
    assert!(cut.is_err(), "a stalled stream ended as if complete");
}

/// A slow but steady HTTP/2 reader, slower than `server.send_timeout` in all, gets the whole
/// body: the timeout is between two steps the client takes, not for the whole response.
#[tokio::test]
async fn a_slow_but_steady_http2_reader_gets_the_whole_response() {
    let dash = Dashboard::start().await;
    let (gw, mut h2) = h2_with_send_timeout_of_1s(&dash).await;
    let n = 8 << 20;
    let resp = h2
        .send_request(h2_get(&gw, &format!("/big?n={n}")))
        .await
        .unwrap();
    let started = Instant::now();
    let mut body = resp.into_body();
    let (mut got, mut since_pause) = (0usize, 0usize);
    while let Some(frame) = body.frame().await {
        let len = frame.unwrap().data_ref().map_or(0, Bytes::len);
        got += len;
        since_pause += len;
        if since_pause >= 512 * 1024 {
            since_pause = 0;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    assert_eq!(got, n, "the body was cut short");
    assert!(
        started.elapsed() > Duration::from_millis(1100),
        "the client was not slower than the send timeout in all: {:?}",
        started.elapsed()
    );
}
