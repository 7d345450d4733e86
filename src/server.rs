//! The HTTP server loop: accepts connections (plain or TLS), tags each request with who sent
//! it, logs every server error, and on shutdown stops accepting, lets in-flight requests
//! finish, then returns.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::service::ClientInfo;

/// A client that does not finish the TLS handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let builder = Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let acceptor = tls.map(TlsAcceptor::from);
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
                let mut client = ClientInfo { remote: Some(remote), certificate: None };
                match acceptor.clone() {
                    None => {
                        tokio::spawn(serve_connection(stream, client, router, builder, watcher));
                    }
                    Some(acceptor) => {
                        tokio::spawn(async move {
                            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => tls,
                                Ok(Err(e)) => {
                                    tracing::warn!(client = %remote, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::warn!(client = %remote, "TLS handshake timed out");
                                    return;
                                }
                            };
                            client.certificate = crate::tls::client_subject(tls.get_ref().1);
                            serve_connection(tls, client, router, builder, watcher).await;
                        });
                    }
                }
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

async fn serve_connection<I>(
    io: I,
    client: ClientInfo,
    router: Router,
    builder: Builder<TokioExecutor>,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(client.clone());
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let remote = client.remote;
        let response = router.clone().oneshot(req);
        async move {
            let response = response.await;
            // Health endpoints answer 503 by design while not ready; the monitor logs changes.
            if let Ok(r) = &response
                && r.status().is_server_error()
                && path != "/readyz"
                && path != "/healthcheck"
            {
                tracing::warn!(status = r.status().as_u16(), %method, %path, client = ?remote, "answered with a server error");
            }
            response
        }
    });
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let _ = watcher.watch(conn).await;
}
