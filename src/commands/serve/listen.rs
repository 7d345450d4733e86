//! Step 6: HTTP: the signing listener (TLS if configured) and, if asked, a separate metrics
//! listener, until SIGTERM or SIGINT; in-flight requests get `SHUTDOWN_GRACE`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use tokio::net::TcpListener;

use super::app::App;
use super::configuration::Config;
use crate::commands::cli::ServeArgs;
use crate::http;
use crate::http::client::TrustedProxies;
use crate::http::server::ServerOptions;

/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The signing port, bound, and its TLS configuration: before anything runs in the
/// background, so that a bad certificate or a port in use ends the start with nothing begun.
pub struct Bound {
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
}

pub async fn bind(args: &ServeArgs) -> anyhow::Result<Bound> {
    let tls = tls(args)?;
    let listener = TcpListener::bind((args.http_host.as_str(), args.http_port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.http_host, args.http_port))?;
    Ok(Bound { listener, tls })
}

pub async fn serve(args: &ServeArgs, config: &Config, app: &App, bound: Bound) -> anyhow::Result<()> {
    let Bound { listener, tls } = bound;
    announce(args, config, app, listener.local_addr()?, tls.is_some());
    let guard = Arc::new(crate::http::guard::HttpGuard::new(
        &args.http_host_allowlist,
        &args.http_host,
        &args.http_cors_origins,
    ));
    match guard.hosts() {
        Some(hosts) => {
            tracing::info!(hosts = %hosts.join(","), "answering requests for these host names only (--http-host-allowlist)")
        }
        None => tracing::info!("answering requests for any host name (--http-host-allowlist *)"),
    }
    if let (true, Some(port)) = (args.metrics, args.metrics_port) {
        metrics_listener(args, app, port).await?;
    }
    let router = http::router(
        app.state.clone(),
        http::HttpOptions {
            // With its own listener, not on the signing port.
            metrics: args.metrics && args.metrics_port.is_none(),
            guard,
            body_timeout: Duration::from_secs(args.http_body_timeout_secs.max(1)),
            body_budget: crate::http::body::BodyBudget::new(
                (args.http_body_budget_mb.max(2) as usize) << 20,
                app.metrics.bodies_refused.clone(),
            ),
        },
    );
    let options = ServerOptions {
        tls,
        trusted_proxies: TrustedProxies::parse(&args.trusted_proxies)
            .map_err(|e| anyhow!(e))?
            .with_header(args.trusted_proxy_header),
        limits: limits(args),
        metrics: Some(app.metrics.clone()),
    };
    crate::http::server::serve(listener, router, options, shutdown_signal(), SHUTDOWN_GRACE).await;
    Ok(())
}

fn tls(args: &ServeArgs) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    Ok(match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => Some(
            crate::http::tls::server_config(&crate::http::tls::TlsOptions {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: args.tls_client_ca_file.clone(),
            })
            .map_err(|e| anyhow!(e))?,
        ),
        _ => None,
    })
}

/// The startup lines: what runs, where, and a warning for clear text off loopback.
fn announce(args: &ServeArgs, config: &Config, app: &App, addr: SocketAddr, tls: bool) {
    tracing::info!(
        network = %config.network.name,
        chain = %app.protection.chain().map_or("pinned on first request".to_string(), |r| r.to_string()),
        database = %app.protection.backend_name(),
        replica = %app.health.replica_id(),
        keys = app.state.signer.listed_pubkeys().len(),
        "Palisade {} started",
        env!("CARGO_PKG_VERSION")
    );
    let scheme = if tls { "https" } else { "http" };
    tracing::info!(
        client_certificates = args.tls_client_ca_file.is_some(),
        "listening on {scheme}://{addr}"
    );
    if !tls && !addr.ip().is_loopback() {
        tracing::warn!(
            "listening on {addr} without TLS: requests, signatures and Key Manager passwords cross the network \
             in clear text; set --tls-cert-file and --tls-key-file, or listen on loopback behind a TLS proxy"
        );
    }
}

fn limits(args: &ServeArgs) -> crate::http::server::ConnectionLimits {
    let max_connections = args
        .http_max_connections
        .unwrap_or_else(crate::http::server::default_max_connections);
    crate::http::server::ConnectionLimits {
        header_timeout: Duration::from_secs(args.http_header_timeout_secs.max(1)),
        idle_timeout: Duration::from_secs(args.http_idle_timeout_secs.max(1)),
        max_connections,
        max_connections_per_client: args
            .http_max_connections_per_client
            .unwrap_or_else(|| crate::http::server::default_per_client(max_connections)),
        http2_max_streams: args.http2_max_streams.max(1),
    }
}

/// `/metrics` on its own port (`--metrics-port`), behind its own host allow-list.
async fn metrics_listener(args: &ServeArgs, app: &App, port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind((args.metrics_host.as_str(), port))
        .await
        .with_context(|| format!("--metrics-port: cannot listen on {}:{port}", args.metrics_host))?;
    let guard = Arc::new(crate::http::guard::HttpGuard::new(
        &args.metrics_host_allowlist,
        &args.metrics_host,
        &[],
    ));
    tracing::info!("metrics listening on http://{}/metrics", listener.local_addr()?);
    tokio::spawn(crate::http::server::serve(
        listener,
        http::metrics_router(app.state.clone(), guard),
        ServerOptions {
            tls: None,
            trusted_proxies: TrustedProxies::default(),
            limits: crate::http::server::ConnectionLimits::default(),
            metrics: None,
        },
        std::future::pending::<()>(),
        SHUTDOWN_GRACE,
    ));
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
