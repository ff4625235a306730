//! Server: the gateway and admin listeners — rustls termination, HTTP/1.1 and HTTP/2 (ALPN
//! under TLS, prior knowledge in clear), a connection limit, a header-size limit, and graceful
//! shutdown that stops accepting and drains in-flight requests within a deadline. It knows
//! nothing of authentication: every request goes to `App::handle`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

use crate::app::{App, StartError};
use crate::body::Body;
use crate::config::{Config, TlsConfig};
use crate::proxy::Peer;

/// A running gateway (used by `serve`, `demo` and the tests).
pub struct Running {
    /// The gateway listener's bound address (port 0 resolved).
    pub addr: SocketAddr,
    /// The admin listener's bound address.
    pub admin_addr: SocketAddr,
    /// The app, for tests that inspect it.
    pub app: Arc<App>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, drains in-flight requests (up to `server.shutdown_grace`) and returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.done.await;
    }

    /// Waits until the server stops (after `shutdown` from elsewhere or a signal).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// The config key.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The app could not be built.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Builds the app, binds both listeners and serves until `shutdown` resolves.
pub async fn start(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, ServeError> {
    let tls = config.server.tls.as_ref().map(tls_acceptor).transpose()?;
    let bind = |key: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { key, addr, source })
    };
    let listener = bind("server.listen", config.server.listen).await?;
    let admin = bind("server.admin_listen", config.server.admin_listen).await?;
    let app = App::build(config).await?;
    Ok(start_with(app, listener, admin, tls, shutdown))
}

/// Serves an already built app on already bound listeners.
pub fn start_with(
    app: Arc<App>,
    listener: TcpListener,
    admin: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Running {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let admin_addr = admin
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (stop, stop_rx) = watch::channel(false);
    let stop_on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_on_signal.send(true);
    });
    let grace = app.config.server.shutdown_grace;
    // One current-thread runtime per worker thread, each accepting on the shared listener
    // (as nginx workers do): on the proxy's hot path this measured ~1.4x the throughput of one
    // multi-thread runtime, by keeping a request, its upstream connection and its timers on
    // one thread. Each worker has its own upstream connection pool (`Peer::worker`).
    let limit = Arc::new(Semaphore::new(app.config.server.max_connections));
    let std_listener = listener.into_std();
    let mut workers = Vec::new();
    for worker in 0..app.config.server.workers {
        let Ok(Ok(listener)) = std_listener.as_ref().map(std::net::TcpListener::try_clone) else {
            tracing::error!(worker, "cannot share the gateway listener with a worker");
            continue;
        };
        let (app, tls, stop_rx, limit) = (app.clone(), tls.clone(), stop_rx.clone(), limit.clone());
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name(format!("samlgate-worker-{worker}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(async move {
                        match TcpListener::from_std(listener) {
                            Ok(l) => serve_gateway(app, l, tls, stop_rx, limit, worker).await,
                            Err(e) => tracing::error!(worker, error = %e, "worker cannot listen"),
                        }
                    }),
                    Err(e) => tracing::error!(worker, error = %e, "worker runtime failed to start"),
                }
                let _ = done_tx.send(());
            });
        match spawned {
            Ok(_) => workers.push(done_rx),
            Err(e) => tracing::error!(worker, error = %e, "cannot start a worker thread"),
        }
    }
    drop(std_listener);
    let admin_task = tokio::spawn(serve_admin(app.clone(), admin, stop_rx));
    let done = tokio::spawn(async move {
        for worker in workers {
            let _ = worker.await;
        }
        // The admin listener stays up while the gateway drains, so probes see the shutdown.
        let _ = tokio::time::timeout(grace, admin_task).await;
    });
    Running {
        addr,
        admin_addr,
        app,
        stop,
        done,
    }
}

fn http_builder(
    max_header_bytes: usize,
    header_read_timeout: Duration,
) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

async fn serve_gateway(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
    limit: Arc<Semaphore>,
    worker: usize,
) {
    let builder = Arc::new(http_builder(
        app.config.server.max_header_bytes,
        app.config.server.header_read_timeout,
    ));
    let graceful = GracefulShutdown::new();
    let send_timeout = app.config.server.send_timeout;
    // The worker's upkeep tick. Besides closing stale upstream connections, it keeps the
    // runtime's timer driver due to wake within a second, so arming a request's later
    // deadlines (header read, upstream response) never has to wake the driver through its
    // eventfd: measured, that was a `write` syscall on every other request.
    let maintenance = tokio::spawn({
        let app = app.clone();
        async move {
            let mut tick = tokio::time::interval(crate::proxy::MAINTENANCE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                app.maintain(worker);
            }
        }
    });
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let peer = Peer {
            addr,
            tls: tls.is_some(),
            worker,
        };
        let app2 = app.clone();
        // The request's future is `handle`'s own (no wrapping async block, which would hold
        // a second copy of the request): it is moved into the connection on every request.
        let service = service_fn(move |req| {
            futures_util::FutureExt::map(app2.clone().handle(req, peer), infallible)
        });
        app.metrics.connections.inc();
        let app3 = app.clone();
        match &tls {
            None => {
                let builder = builder.clone();
                let watcher = graceful.watcher();
                let first_byte = app.config.server.header_read_timeout;
                tokio::spawn(async move {
                    // hyper's header-read timeout starts with the first byte: a client that
                    // connects and sends nothing would hold its connection slot for ever.
                    // (`peek`, not `readable`: a new socket's readiness may be reported before
                    // any byte is there.)
                    let mut first = [0u8; 1];
                    if let Ok(Ok(_)) =
                        tokio::time::timeout(first_byte, stream.peek(&mut first)).await
                    {
                        let io = SendDeadline::new(stream, send_timeout);
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(io), service)
                            .into_owned();
                        let _ = watcher.watch(conn).await;
                    }
                    app3.metrics.connections.dec();
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    if let Ok(Ok(tls_stream)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
                    {
                        let io = SendDeadline::new(tls_stream, send_timeout);
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(io), service)
                            .into_owned();
                        let _ = watcher.watch(conn).await;
                    }
                    app3.metrics.connections.dec();
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    let grace = app.config.server.shutdown_grace;
    tracing::info!(
        connections = graceful.count(),
        grace_s = grace.as_secs(),
        "shutting down: draining in-flight requests"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
    maintenance.abort();
}

pin_project_lite::pin_project! {
    /// A client connection whose writes must make progress: once a write (or flush, or
    /// shutdown) has waited `timeout` for a client that takes in nothing, it fails with
    /// `TimedOut` and hyper closes the connection, which also drops its upstream request
    /// (`server.send_timeout`, nginx's `send_timeout`). hyper has no write timeout of its own,
    /// and `header_read_timeout` covers only what the client sends. A write that goes through
    /// at once costs a branch; the timer exists only once a write has had to wait.
    struct SendDeadline<T> {
        #[pin]
        io: T,
        timeout: Duration,
        // Armed while writes are waiting; kept (and reset) across stalls.
        stalled: Option<Pin<Box<Sleep>>>,
        armed: bool,
    }
}

impl<T> SendDeadline<T> {
    fn new(io: T, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            stalled: None,
            armed: false,
        }
    }
}

impl<T: AsyncWrite> SendDeadline<T> {
    /// Runs one write-side operation under the deadline.
    fn guard<R>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        let this = self.project();
        let polled = op(this.io, cx);
        if polled.is_ready() {
            *this.armed = false;
            return polled;
        }
        let timeout = *this.timeout;
        let sleep = this
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if !*this.armed {
            sleep.as_mut().reset(Instant::now() + timeout);
            *this.armed = true;
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(client_stalled())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The error that ends the response of a client that took in nothing of it for
/// `server.send_timeout` (a stalled connection here, a stalled HTTP/2 stream in the proxy).
pub(crate) fn client_stalled() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the client took in nothing of its response within server.send_timeout",
    )
}

impl<T: AsyncRead> AsyncRead for SendDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for SendDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.guard(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.guard(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.guard(cx, AsyncWrite::poll_flush)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.guard(cx, AsyncWrite::poll_shutdown)
    }
}

fn infallible(resp: http::Response<Body>) -> Result<http::Response<Body>, Infallible> {
    Ok(resp)
}

async fn serve_admin(app: Arc<App>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let builder = Arc::new(http_builder(
        16 * 1024,
        app.config.server.header_read_timeout,
    ));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(pair) => pair, Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue } },
            _ = stop.changed() => break,
        };
        let app2 = app.clone();
        let service = service_fn(move |req| {
            let app = app2.clone();
            async move { Ok::<_, Infallible>(app.handle_admin(req).await) }
        });
        let io = SendDeadline::new(stream, app.config.server.send_timeout);
        let conn = builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        let fut = graceful.watch(conn);
        tokio::spawn(fut);
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
}

/// Loads the PEM certificate chain and key into a rustls acceptor offering h2 and http/1.1.
pub fn tls_acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, StartError> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let certs = crate::outbound::read_ca_file(&cfg.cert_file)
        .map_err(|e| StartError::Tls(format!("cert_file {}: {e}", cfg.cert_file.display())))?;
    if certs.is_empty() {
        return Err(StartError::Tls(format!(
            "cert_file {}: no certificate found",
            cfg.cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file)
        .map_err(|e| StartError::Tls(format!("key_file {}: {e}", cfg.key_file.display())))?;
    let mut server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(format!("certificate and key do not fit together: {e}")))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
