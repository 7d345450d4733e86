//! The HTTP server loop: accepts connections (plain or TLS, behind trusted proxies with the
//! PROXY protocol or not), tags each request with who sent it and a request id that every log
//! line of it carries, and on shutdown stops accepting, lets in-flight requests finish, then
//! returns. No client holds a connection for free: the first request (handshakes included)
//! and every request head must arrive in time, an idle connection is closed only after
//! validator clients' own keep-alive, and a full table makes room by closing the connection
//! with least claim (`connections`), so a crowd of idle sockets can neither lock clients out
//! nor use up the file descriptors that signing and the database need.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
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
use crate::http::connections::{Admitted, ConnState, Connections, Deadlines, Evicted, Phase, Refused};
use crate::ratelimit::RateLimit;

/// A request head (request line and headers) larger than this is refused (431): real clients
/// send under 1 KiB, and every connection may buffer this much.
const MAX_HEAD_BYTES: usize = 32 * 1024;
/// HTTP/2 flow-control windows: how much a peer may send that no request has read yet.
const H2_WINDOW: u32 = 256 * 1024;

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
    /// The first request after accept (TLS and PROXY handshakes included), and each request
    /// head from its first byte, must arrive within this.
    pub header_timeout: Duration,
    /// No request for this long after the last one: closed.
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Connections one client address may hold (trusted proxies exempt).
    pub max_connections_per_client: usize,
    pub http2_max_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        let max_connections = default_max_connections();
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections,
            max_connections_per_client: default_per_client(max_connections),
            http2_max_streams: 128,
        }
    }
}

/// Half the connections: one address can never take them all.
pub fn default_per_client(max_connections: usize) -> usize {
    (max_connections / 2).max(1)
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
    let builder = builder(&limits);
    let graceful = GracefulShutdown::new();
    let acceptor = options.tls.clone().map(TlsAcceptor::from);
    let proxies = Arc::new(options.trusted_proxies);
    let metrics = options.metrics.unwrap_or_default();
    let table = Connections::new(limits.max_connections, limits.max_connections_per_client);
    let accept_failures = RateLimit::new();
    let warnings = Arc::new(ConnWarnings::default());
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
                let trusted_proxy = proxies.trusts(remote.ip());
                let Some(admitted) = admit(&table, remote, trusted_proxy, &metrics, &warnings) else {
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let conn = Conn {
                    router: router.clone(),
                    builder: builder.clone(),
                    watcher: graceful.watcher(),
                    proxies: proxies.clone(),
                    deadlines: Deadlines { header: limits.header_timeout, idle: limits.idle_timeout },
                    metrics: metrics.clone(),
                };
                let arrival = Arrival { stream, remote, trusted_proxy, admitted };
                tokio::spawn(connection(arrival, conn, acceptor.clone(), warnings.clone()));
                // Lets the new connection read its request before a burst of others is
                // accepted (which could pick it to give way).
                tokio::task::yield_now().await;
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

/// HTTP/1 and HTTP/2 with our limits. Our own deadlines replace hyper's header timeout, which
/// also cut idle keep-alive connections at the header deadline (see `ConnState`).
fn builder(limits: &ConnectionLimits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .initial_connection_window_size(H2_WINDOW)
        .initial_stream_window_size(H2_WINDOW);
    builder
}

/// A place in the connection table for a new connection from `remote`, another one closed to
/// make room if need be; `None` when it must be closed on arrival.
fn admit(
    table: &Arc<Connections>,
    remote: SocketAddr,
    trusted_proxy: bool,
    metrics: &Metrics,
    warnings: &ConnWarnings,
) -> Option<Admitted> {
    match table.admit(remote.ip(), trusted_proxy) {
        Ok((admitted, evicted)) => {
            if evicted != Evicted::None {
                let state = if evicted == Evicted::Silent { "silent" } else { "idle" };
                metrics.connections_evicted.get_or_create(&StateLabels { state }).inc();
                if let Some(held) = warnings.evictions.allow() {
                    tracing::warn!(peer = %remote, closed = state, similar_since_last = held,
                        "connection limit reached: closed the connection with least claim to make room");
                }
            }
            Some(admitted)
        }
        Err(refused) => {
            metrics.connections_refused.inc();
            if let Some(held) = warnings.refusals.allow() {
                let why = match refused {
                    Refused::Full { max } => {
                        format!("{max} connections (--http-max-connections) are open, each busy or proven")
                    }
                    Refused::ClientShare { per_client } => format!(
                        "this address holds {per_client} connections (--http-max-connections-per-client), each busy or proven"
                    ),
                };
                tracing::warn!(peer = %remote, similar_since_last = held, "connection closed on arrival: {why}");
            }
            None
        }
    }
}

/// A connection just accepted and admitted.
struct Arrival {
    stream: TcpStream,
    remote: SocketAddr,
    trusted_proxy: bool,
    admitted: Admitted,
}

/// One connection's life: the PROXY header and TLS handshakes within the first request's
/// deadline (the connection may give way during them), then its requests.
async fn connection(a: Arrival, conn: Conn, acceptor: Option<TlsAcceptor>, warnings: Arc<ConnWarnings>) {
    let metrics = conn.metrics.clone();
    metrics.connections_open.inc();
    let _open = scopeguard(|| {
        metrics.connections_open.dec();
    });
    let state = a.admitted.state.clone();
    let first = tokio::time::Instant::from_std(state.deadline(conn.deadlines).unwrap_or_else(Instant::now));
    let tls = acceptor.is_some();
    let ready = tokio::select! {
        r = tokio::time::timeout_at(first, handshakes(a.stream, a.remote, a.trusted_proxy, acceptor, &state, &warnings)) => match r {
            Ok(r) => r,
            Err(_) => {
                let state = if tls { "handshake" } else { "first_request" };
                metrics.connections_timed_out.get_or_create(&StateLabels { state }).inc();
                None
            }
        },
        _ = state.evicted() => None,
    };
    if let Some((io, client)) = ready {
        conn.serve(io, client, a.admitted).await;
    }
}

/// The PROXY protocol header (from a trusted proxy) and the TLS handshake, if any: the stream
/// to serve and who is at its other end, or `None` when either fails.
async fn handshakes(
    mut stream: TcpStream,
    remote: SocketAddr,
    trusted_proxy: bool,
    acceptor: Option<TlsAcceptor>,
    state: &ConnState,
    warnings: &ConnWarnings,
) -> Option<(Io, ClientInfo)> {
    let mut client = ClientInfo {
        peer: Some(remote),
        ..Default::default()
    };
    if trusted_proxy {
        match proxy_header(&mut stream).await {
            Ok(forwarded) => client.forwarded = forwarded,
            Err(e) => {
                if let Some(held) = warnings.proxy.allow() {
                    tracing::warn!(peer = %remote, error = %e, similar_since_last = held, "bad PROXY protocol header");
                }
                return None;
            }
        }
    }
    let Some(acceptor) = acceptor else {
        return Some((Io::Plain(stream), client));
    };
    match acceptor.accept(stream).await {
        Ok(tls) => {
            client.certificate = crate::http::tls::client_certificate(tls.get_ref().1);
            if client.certificate.is_some() {
                state.prove();
            }
            Some((Io::Tls(Box::new(tls)), client))
        }
        Err(e) => {
            if let Some(held) = warnings.tls.allow() {
                tracing::warn!(client = %client, error = %crate::http::shown(&e.to_string()),
                    similar_since_last = held, "TLS handshake failed");
            }
            None
        }
    }
}

/// Warnings any peer can trigger at will, each at most once a second.
#[derive(Default)]
struct ConnWarnings {
    tls: RateLimit,
    proxy: RateLimit,
    refusals: RateLimit,
    evictions: RateLimit,
}

/// A plain or TLS connection.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
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
    deadlines: Deadlines,
    metrics: Arc<Metrics>,
}

impl Conn {
    async fn serve<I>(self, io: I, client: ClientInfo, admitted: Admitted)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            router,
            builder,
            watcher,
            proxies,
            deadlines,
            metrics,
        } = self;
        let state = admitted.state.clone();
        let in_service = state.clone();
        let keep_alive = HeaderValue::from_str(&format!("timeout={}", deadlines.idle.as_secs())).ok();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let in_flight = in_service.request();
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
            req.extensions_mut().insert(ConnHandle(in_service.clone()));
            let http1 = req.version() < hyper::Version::HTTP_2;
            let (method, path) = (req.method().clone(), req.uri().path().to_string());
            let started = Instant::now();
            let response = router.clone().oneshot(req);
            let keep_alive = keep_alive.clone();
            async move {
                let _in_flight = in_flight;
                let mut response = response.await;
                if let Ok(r) = &mut response {
                    if let Ok(v) = HeaderValue::from_str(&id.0) {
                        r.headers_mut().insert("x-request-id", v);
                    }
                    // Tells clients that honour it (Lodestar's agent) how long an idle
                    // connection stays open, so they never send on one being closed.
                    if http1 && let Some(v) = keep_alive {
                        r.headers_mut().insert("keep-alive", v);
                    }
                    // Health endpoints answer 503 by design while not ready; the monitor logs
                    // changes. Other server errors are logged where they are decided, and a
                    // client can cause them at will (busy answers), so only at most once a second.
                    if r.status().is_server_error() && path != "/readyz" && path != "/healthcheck" {
                        static SERVER_ERRORS: RateLimit = RateLimit::new();
                        if let Some(held) = SERVER_ERRORS.allow() {
                            tracing::warn!(status = r.status().as_u16(), %method, path = %crate::http::shown(&path),
                                ms = started.elapsed().as_millis() as u64, similar_since_last = held, "answered with a server error");
                        }
                    }
                }
                response
            }
            .instrument(span)
        });
        let io = Watched {
            inner: io,
            state: state.clone(),
        };
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let conn = watcher.watch(conn);
        tokio::pin!(conn);
        // Deadlines move as the connection changes phase, so they are looked at again at
        // least every `TICK`.
        const TICK: Duration = Duration::from_millis(500);
        loop {
            let wake = state
                .deadline(deadlines)
                .map_or(Instant::now() + TICK, |d| d.min(Instant::now() + TICK));
            tokio::select! {
                _ = &mut conn => return,
                _ = state.evicted() => return,
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    if state.deadline(deadlines).is_some_and(|d| d <= Instant::now()) {
                        let phase = match state.phase() {
                            Phase::First => "first_request",
                            Phase::Head => "header",
                            _ => "idle",
                        };
                        metrics.connections_timed_out.get_or_create(&StateLabels { state: phase }).inc();
                        return; // dropping the connection closes it
                    }
                }
            }
        }
    }
}

/// The connection a request came on, for the middleware that learns the client proved itself.
#[derive(Clone)]
pub struct ConnHandle(Arc<ConnState>);

impl ConnHandle {
    /// An accepted bearer token: this connection never gives way to a new one.
    pub fn prove(&self) {
        self.0.prove()
    }
}

/// An I/O stream that tells the connection's state when bytes arrive.
struct Watched<I> {
    inner: I,
    state: Arc<ConnState>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.received(&buf.filled()[before..]);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
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
