//! The stack's floor for `benches/load.sh`: a bare reverse proxy on the same crates samlgate
//! uses (hyper's HTTP/1 server on one current-thread runtime, mimalloc), with no
//! authentication, no header rewriting beyond `Host` and no metrics. What samlgate costs on
//! top of hyper is its throughput against this, measured side by side.
//!
//! `hyper_floor <listen> <upstream host:port> [legacy|conn]`: `legacy` forwards through
//! hyper-util's pooled client, `conn` through hyper's connection API with a plain stack of
//! idle connections.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{HeaderValue, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, hyper::Error>;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (listen, upstream) = (args[1].clone(), args[2].clone());
    let legacy = args.get(3).is_none_or(|m| m == "legacy");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(&listen).await?;
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let idle: Arc<Mutex<Vec<SendRequest<Incoming>>>> = Arc::default();
        let host = HeaderValue::from_str(&upstream).expect("upstream host:port");
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let (client, idle, host, upstream) =
                (client.clone(), idle.clone(), host.clone(), upstream.clone());
            let service = service_fn(move |mut req: Request<Incoming>| {
                let (client, idle, host, upstream) =
                    (client.clone(), idle.clone(), host.clone(), upstream.clone());
                async move {
                    req.headers_mut().insert(http::header::HOST, host);
                    let resp = if legacy {
                        let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
                        *req.uri_mut() =
                            Uri::try_from(format!("http://{upstream}{pq}")).expect("upstream uri");
                        client
                            .request(req)
                            .await
                            .expect("upstream")
                            .map(BodyExt::boxed_unsync)
                    } else {
                        let mut sender = loop {
                            let popped = idle.lock().expect("idle lock").pop();
                            match popped {
                                Some(s) if !s.is_closed() => break s,
                                Some(_) => continue,
                                None => {
                                    let io = TokioIo::new(
                                        TcpStream::connect(&upstream).await.expect("connect"),
                                    );
                                    let (s, conn) = hyper::client::conn::http1::handshake(io)
                                        .await
                                        .expect("handshake");
                                    tokio::task::spawn_local(conn);
                                    break s;
                                }
                            }
                        };
                        sender.ready().await.expect("ready");
                        let resp = sender.send_request(req).await.expect("upstream");
                        let (parts, body) = resp.into_parts();
                        let body = Returning {
                            inner: body,
                            sender: Some(sender),
                            idle,
                        };
                        Response::from_parts(parts, body.boxed_unsync())
                    };
                    Ok::<Response<Body>, Infallible>(resp)
                }
            });
            tokio::task::spawn_local(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// A response body that hands its connection back to the idle stack once it has ended.
struct Returning {
    inner: Incoming,
    sender: Option<SendRequest<Incoming>>,
    idle: Arc<Mutex<Vec<SendRequest<Incoming>>>>,
}

impl hyper::body::Body for Returning {
    type Data = bytes::Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let frame = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if self.inner.is_end_stream()
            && let Some(s) = self.sender.take()
        {
            self.idle.lock().expect("idle lock").push(s);
        }
        frame
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}
