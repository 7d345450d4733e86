//! The HTTP server loop: accepts connections (plain or TLS, behind trusted proxies with the
//! PROXY protocol or not), tags each request with who sent it and a request id that every log
//! line of it carries, logs every server error, and on shutdown stops accepting, lets
//! in-flight requests finish, then returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderValue;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::Instrument;

use crate::http::client::{ClientInfo, RequestId, TrustedProxies};

/// A client that does not finish the TLS handshake (or a proxy its PROXY header) in this time
/// is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the server accepts connections.
#[derive(Clone, Default)]
pub struct ServerOptions {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub trusted_proxies: TrustedProxies,
}

pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let builder = Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let acceptor = options.tls.clone().map(TlsAcceptor::from);
    let proxies = Arc::new(options.trusted_proxies);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (router, builder, watcher) = (router.clone(), builder.clone(), graceful.watcher());
                let (acceptor, proxies) = (acceptor.clone(), proxies.clone());
                tokio::spawn(async move {
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
                        None => serve_connection(stream, client, proxies, router, builder, watcher).await,
                        Some(acceptor) => {
                            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => tls,
                                Ok(Err(e)) => {
                                    tracing::warn!(client = %client, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::warn!(client = %client, "TLS handshake timed out");
                                    return;
                                }
                            };
                            client.certificate = crate::tls::client_certificate(tls.get_ref().1);
                            serve_connection(tls, client, proxies, router, builder, watcher).await;
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

async fn serve_connection<I>(
    io: I,
    client: ClientInfo,
    proxies: Arc<TrustedProxies>,
    router: Router,
    builder: Builder<TokioExecutor>,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
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
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let _ = watcher.watch(conn).await;
}
