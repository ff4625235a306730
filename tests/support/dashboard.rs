//! A fake dashboard (the upstream): records every request it sees and answers a few routes
//! that exercise streaming, slowness and upgrades.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as the dashboard saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body_len: usize,
}

#[derive(Clone, Default)]
pub struct Dashboard {
    pub addr: Option<SocketAddr>,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    streaming: Arc<AtomicUsize>,
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

impl Dashboard {
    /// Starts on 127.0.0.1:0.
    pub async fn start() -> Dashboard {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dash = Dashboard {
            addr: Some(addr),
            seen: Arc::default(),
            connections: Arc::default(),
            streaming: Arc::default(),
        };
        let d = dash.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                d.connections.fetch_add(1, Ordering::SeqCst);
                let d = d.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let d = d.clone();
                        async move { Ok::<_, Infallible>(d.answer(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        dash
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr.unwrap())
    }

    /// How many connections the dashboard has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// How many `/big` bodies are being sent right now: each counts until it is through or
    /// its connection is gone.
    pub fn streaming(&self) -> usize {
        self.streaming.load(Ordering::SeqCst)
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The last request seen.
    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the dashboard saw no request")
    }

    async fn answer(&self, mut req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let mut seen = Seen {
            method: req.method().clone(),
            uri: req.uri().to_string(),
            headers: req.headers().clone(),
            body_len: 0,
        };
        match path.as_str() {
            "/ws" => {
                self.seen.lock().unwrap().push(seen);
                let on_upgrade = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    if let Ok(up) = on_upgrade.await {
                        let mut io = TokioIo::new(up);
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = io.read(&mut buf).await {
                            if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                });
                Response::builder()
                    .status(StatusCode::SWITCHING_PROTOCOLS)
                    .header("connection", "upgrade")
                    .header("upgrade", "websocket")
                    .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
                    .body(full(""))
                    .unwrap()
            }
            "/echo" => {
                // Streams the request body back as it arrives.
                let seen_log = self.seen.clone();
                let (tx, rx) =
                    tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
                let mut body = req.into_body();
                tokio::spawn(async move {
                    let mut n = 0;
                    while let Some(frame) = body.frame().await {
                        let Ok(frame) = frame else { break };
                        if let Some(data) = frame.data_ref() {
                            n += data.len();
                            if tx.send(Ok(Frame::data(data.clone()))).await.is_err() {
                                break;
                            }
                        }
                    }
                    seen.body_len = n;
                    seen_log.lock().unwrap().push(seen);
                });
                Response::new(StreamBody::new(tokio_stream_from(rx)).boxed())
            }
            "/big" => {
                self.seen.lock().unwrap().push(seen);
                let n: usize = query
                    .strip_prefix("n=")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(1 << 20);
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                // Counted until hyper lets go of the body: sent, or its connection gone.
                let counted = Counted::new(self.streaming.clone());
                tokio::spawn(async move {
                    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                    let mut left = n;
                    while left > 0 {
                        let take = left.min(chunk.len());
                        if tx.send(Ok(Frame::data(chunk.slice(..take)))).await.is_err() {
                            break;
                        }
                        left -= take;
                    }
                });
                let chunks =
                    futures_util::stream::unfold((rx, counted), |(mut rx, counted)| async move {
                        rx.recv().await.map(|v| (v, (rx, counted)))
                    });
                Response::new(StreamBody::new(chunks).boxed())
            }
            "/chunked" => {
                // First chunk now, the rest only after 3 s: a proxy that buffers is caught.
                self.seen.lock().unwrap().push(seen);
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                tokio::spawn(async move {
                    let _ = tx
                        .send(Ok(Frame::data(Bytes::from_static(b"first\n"))))
                        .await;
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    let _ = tx
                        .send(Ok(Frame::data(Bytes::from_static(b"last\n"))))
                        .await;
                });
                Response::new(StreamBody::new(tokio_stream_from(rx)).boxed())
            }
            "/slow" => {
                self.seen.lock().unwrap().push(seen);
                let ms: u64 = query
                    .strip_prefix("ms=")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(1000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Response::new(full("slow done"))
            }
            _ => {
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                seen.body_len = body.len();
                self.seen.lock().unwrap().push(seen);
                let mut resp = Response::new(full(format!("dashboard saw {path}")));
                resp.headers_mut()
                    .insert("connection", "x-hop".parse().unwrap());
                resp.headers_mut()
                    .insert("x-hop", "must-not-pass".parse().unwrap());
                resp.headers_mut()
                    .insert("keep-alive", "timeout=5".parse().unwrap());
                resp.headers_mut()
                    .insert("x-upstream", "yes".parse().unwrap());
                // `?cookies=1`: the dashboard sets its own cookie and tries samlgate's.
                if query == "cookies=1" {
                    for c in [
                        "theme=dark; Path=/",
                        "samlgate=forged-by-upstream; Path=/; HttpOnly",
                        "__Host-samlgate=x; Path=/; Secure",
                        "samlgate_login_abc=y; Path=/",
                        "lang=en",
                    ] {
                        resp.headers_mut().append("set-cookie", c.parse().unwrap());
                    }
                }
                resp
            }
        }
    }
}

/// An mpsc receiver as a `Stream` without pulling in tokio-stream.
/// One in a count, for as long as it lives.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn tokio_stream_from<T>(rx: tokio::sync::mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}
