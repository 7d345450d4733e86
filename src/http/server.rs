//! The HTTP server loop: accepts connections (plain or TLS, behind trusted proxies with the
//! PROXY protocol or not), tags each request with who sent it and a request id that every log
//! line of it carries, logs every server error, and on shutdown stops accepting, lets
//! in-flight requests finish, then returns. No client holds a connection for free: headers
//! must arrive in time, an idle connection is closed, and beyond --http-max-connections new
//! ones are closed on arrival (so a crowd of idle sockets cannot use up the file descriptors
//! that signing and the database need).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderValue;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::Instrument;

use crate::app::metrics::{Metrics, StateLabels};
use crate::http::client::{ClientInfo, RequestId, TrustedProxies};
use crate::http::ratelimit::RateLimit;

/// A client that does not finish the TLS handshake (or a proxy its PROXY header) in this time
/// is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the server accepts connections.
#[derive(Clone, Default)]
pub struct ServerOptions {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub trusted_proxies: TrustedProxies,
    pub limits: ConnectionLimits,
    pub metrics: Option<Arc<Metrics>>,
}

#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// The whole request head must arrive within this.
    pub header_timeout: Duration,
    /// No request in flight and no byte either way for this long: closed.
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub http2_max_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: default_max_connections(),
            http2_max_streams: 128,
        }
    }
}

/// Half the open-file limit (the rest is for the database, keystores and logs), at most 4096.
pub fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur as usize
    } else {
        1024
    };
    (soft / 2).clamp(16, 4096)
}

pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let limits = options.limits;
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams);
    let graceful = GracefulShutdown::new();
    let acceptor = options.tls.clone().map(TlsAcceptor::from);
    let proxies = Arc::new(options.trusted_proxies);
    let metrics = options.metrics.unwrap_or_default();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let (accept_failures, refusals) = (RateLimit::new(), RateLimit::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        if let Some(held) = accept_failures.allow() {
                            tracing::warn!(error = %e, similar_since_last = held, "accept failed");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    metrics.connections_refused.inc();
                    if let Some(held) = refusals.allow() {
                        tracing::warn!(peer = %remote, max = limits.max_connections, similar_since_last = held,
                            "connection closed on arrival: --http-max-connections are open");
                    }
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (router, builder, watcher) = (router.clone(), builder.clone(), graceful.watcher());
                let (acceptor, proxies, metrics) = (acceptor.clone(), proxies.clone(), metrics.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    metrics.connections_open.inc();
                    let _open = scopeguard(|| {
                        metrics.connections_open.dec();
                    });
                    let conn = Conn { router, builder, watcher, proxies: proxies.clone(), idle: limits.idle_timeout, metrics: metrics.clone() };
                    let mut client = ClientInfo { peer: Some(remote), ..Default::default() };
                    let mut stream = stream;
                    if proxies.trusts(remote.ip()) {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, proxy_header(&mut stream)).await {
                            Ok(Ok(forwarded)) => client.forwarded = forwarded,
                            Ok(Err(e)) => {
                                tracing::warn!(peer = %remote, error = %e, "bad PROXY protocol header");
                                return;
                            }
                            Err(_) => return,
                        }
                    }
                    match acceptor {
                        None => conn.serve(stream, client).await,
                        Some(acceptor) => {
                            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => tls,
                                Ok(Err(e)) => {
                                    tracing::warn!(client = %client, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    metrics.connections_timed_out.get_or_create(&StateLabels { state: "handshake" }).inc();
                                    tracing::debug!(client = %client, "TLS handshake timed out");
                                    return;
                                }
                            };
                            client.certificate = crate::http::tls::client_certificate(tls.get_ref().1);
                            conn.serve(tls, client).await;
                        }
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(grace) => tracing::warn!("in-flight requests did not finish within {}s", grace.as_secs()),
    }
}

/// The PROXY protocol v2 header a trusted proxy sends first, if it sends one: the client's
/// address. Nothing is consumed when the connection does not start with one.
async fn proxy_header(stream: &mut TcpStream) -> Result<Option<SocketAddr>, String> {
    const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
    let mut head = [0u8; 16];
    let mut seen;
    // Peek until the 16-byte fixed part is there, or the bytes cannot be a header.
    loop {
        seen = stream.peek(&mut head).await.map_err(|e| e.to_string())?;
        if seen == 0 || !SIGNATURE.starts_with(&head[..seen.min(12)]) || seen >= 16 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if seen < 16 || &head[..12] != SIGNATURE {
        return Ok(None);
    }
    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
    if len > 1024 {
        return Err(format!("PROXY header of {len} bytes"));
    }
    let mut header = vec![0u8; 16 + len];
    stream.read_exact(&mut header).await.map_err(|e| e.to_string())?;
    let parsed = ppp::v2::Header::try_from(header.as_slice()).map_err(|e| e.to_string())?;
    Ok(match parsed.addresses {
        ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        // LOCAL (health checks) and UNIX sockets: the proxy itself is the client.
        _ => None,
    })
}

/// What serving one connection needs.
struct Conn {
    router: Router,
    builder: Builder<TokioExecutor>,
    watcher: Watcher,
    proxies: Arc<TrustedProxies>,
    idle: Duration,
    metrics: Arc<Metrics>,
}

impl Conn {
    async fn serve<I>(self, io: I, client: ClientInfo)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            router,
            builder,
            watcher,
            proxies,
            idle,
            metrics,
        } = self;
        let activity = Arc::new(Activity::default());
        activity.touch();
        let in_service = activity.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let in_flight = InFlight::start(in_service.clone());
            let mut client = client.clone();
            // Forwarding headers only count from a trusted proxy that sent no PROXY header.
            if client.forwarded.is_none()
                && client.peer.is_some_and(|p| proxies.trusts(p.ip()))
                && let Some(ip) = proxies.forwarded_client(req.headers())
            {
                client.forwarded = Some(SocketAddr::new(ip, 0));
            }
            let id = RequestId::of(req.headers());
            let span = tracing::info_span!("request", id = %id.0, client = %client);
            req.extensions_mut().insert(client);
            req.extensions_mut().insert(id.clone());
            let (method, path) = (req.method().clone(), req.uri().path().to_string());
            let started = Instant::now();
            let response = router.clone().oneshot(req);
            async move {
                let _in_flight = in_flight;
                let mut response = response.await;
                if let Ok(r) = &mut response {
                    if let Ok(v) = HeaderValue::from_str(&id.0) {
                        r.headers_mut().insert("x-request-id", v);
                    }
                    // Health endpoints answer 503 by design while not ready; the monitor logs changes.
                    if r.status().is_server_error() && path != "/readyz" && path != "/healthcheck" {
                        tracing::warn!(status = r.status().as_u16(), %method, %path,
                            ms = started.elapsed().as_millis() as u64, "answered with a server error");
                    }
                }
                response
            }
            .instrument(span)
        });
        let io = Watched {
            inner: io,
            activity: activity.clone(),
        };
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let conn = watcher.watch(conn);
        tokio::pin!(conn);
        let tick = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = &mut conn => return,
                _ = tokio::time::sleep(tick) => {
                    if activity.idle_for() >= idle {
                        metrics.connections_timed_out.get_or_create(&StateLabels { state: "idle" }).inc();
                        return; // dropping the connection closes it
                    }
                }
            }
        }
    }
}

/// When a connection last moved a byte, and how many of its requests are being answered.
#[derive(Default)]
struct Activity {
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    born: std::sync::OnceLock<Instant>,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.born.get_or_init(Instant::now).elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Zero while a request is in flight.
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(self.now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(a: Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(a)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An I/O stream that records when bytes move.
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Runs `f` when dropped.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f()
            }
        }
    }
    Guard(Some(f))
}
