//! The HTTP API: the router, the accept loop (plain or TLS) and thin handlers that reach only
//! `app` (the signer, the Key Manager, the slashing-protection admin calls, health, reloads,
//! Commit-Boost), where the work happens.

pub mod admin;
pub mod auth;
pub mod body;
pub mod client;
pub mod commit_boost;
pub mod connections;
pub mod error;
pub mod exposition;
pub mod guard;
pub mod health;
pub mod server;
pub mod sign;
pub mod tls;
pub mod watermarks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::routing::{MethodRouter, delete, get, post};

use crate::app::health::Health;
use crate::app::keymanager::KeyManager;
use crate::app::reload::Reloads;
use crate::app::signer::Signer;
use crate::app::slashing::SlashingAdmin;
use auth::ApiToken;
use error::ApiError;

/// The largest real signing request is a phase0/altair block with every list full, about
/// 405 KB of JSON (since Bellatrix clients send a block header: under 64 KiB); a client may
/// not make the signer hold more per request.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Key Manager imports carry many keystores.
pub const MAX_ADMIN_BODY_BYTES: usize = 64 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub signer: Arc<Signer>,
    pub keymanager: Arc<KeyManager>,
    pub reloads: Arc<Reloads>,
    pub health: Arc<Health>,
    /// The slashing-protection admin endpoints (import, export, watermarks).
    pub slashing: Arc<SlashingAdmin>,
    pub token: Arc<ApiToken>,
    /// Required on the signing routes when set (`--signing-token-file`).
    pub signing_token: Option<Arc<ApiToken>>,
    /// The Commit-Boost signer API, when enabled.
    pub commit_boost: Option<Arc<crate::app::commit_boost::CommitBoost>>,
}

/// A value a client chose, fit for a log line or an error message: control characters and
/// anything beyond ASCII escaped, and cut after 100 characters (with the full length said), so
/// that no client can size or shape the log.
pub fn shown(value: &str) -> String {
    const MAX: usize = 100;
    let mut out = String::new();
    for c in value.chars() {
        if out.len() >= MAX {
            out.push_str(&format!("... ({} bytes)", value.len()));
            break;
        }
        if c.is_ascii_graphic() || c == ' ' {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

/// What the HTTP layer enforces before any handler runs.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    pub metrics: bool,
    pub guard: Arc<guard::HttpGuard>,
    pub body_timeout: std::time::Duration,
    /// Bodies of the public and signing routes in memory at once.
    pub body_budget: Arc<body::BodyBudget>,
}

/// Who may call an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Public, unless `--signing-token-file` is set.
    Signing,
    /// Bearer token from `--api-token-file`.
    Admin,
    /// A Commit-Boost module's JWT (checked by the handler: it covers the body).
    Module,
    /// A threshold coordinator's client certificate (mutual TLS; checked by the handler).
    Coordinator,
}

/// One served endpoint. `openapi.yaml` must describe exactly these (a test checks it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

const fn ep(method: &'static str, path: &'static str, access: Access) -> Endpoint {
    Endpoint { method, path, access }
}

/// Every endpoint with its handler; the router is built from this table alone.
fn endpoints(metrics: bool) -> Vec<(Endpoint, MethodRouter<AppState>)> {
    use Access::*;
    let mut v: Vec<(Endpoint, MethodRouter<AppState>)> = vec![
        (ep("POST", "/api/v1/eth2/sign/{identifier}", Signing), post(sign::sign)),
        (ep("GET", "/api/v1/eth2/publicKeys", Signing), get(sign::public_keys)),
        (
            ep("POST", "/internal/v1/threshold/sign/{identifier}", Coordinator),
            post(sign::sign_partial),
        ),
        (ep("GET", "/upcheck", Public), get(health::upcheck)),
        (ep("GET", "/healthcheck", Public), get(health::healthcheck)),
        (ep("GET", "/readyz", Public), get(health::readyz)),
        (
            ep("POST", "/api/v1/eth2/slashing-protection/import", Admin),
            post(admin::import),
        ),
        (
            ep("GET", "/api/v1/eth2/slashing-protection/export", Admin),
            get(admin::export),
        ),
        (
            ep("POST", "/api/v1/eth2/slashing-protection/repair", Admin),
            post(watermarks::repair),
        ),
        (
            ep("GET", "/api/v1/eth2/highWatermark", Public),
            get(watermarks::high_watermark),
        ),
        (
            ep("POST", "/api/v1/eth2/highWatermark", Admin),
            post(watermarks::set_high_watermark),
        ),
        (
            ep("DELETE", "/api/v1/eth2/highWatermark", Admin),
            delete(watermarks::clear_high_watermark),
        ),
        (ep("GET", "/eth/v1/keystores", Admin), get(admin::list_keystores)),
        (ep("POST", "/eth/v1/keystores", Admin), post(admin::import_keystores)),
        (
            ep("DELETE", "/eth/v1/keystores", Admin),
            delete(admin::delete_keystores),
        ),
        (ep("POST", "/reload", Admin), post(admin::reload)),
        (ep("GET", "/reload", Admin), get(admin::reload_status)),
    ];
    if metrics {
        v.push((ep("GET", "/metrics", Public), get(health::metrics)));
    }
    // Routed always; without --commit-boost-api-enabled they answer 404 saying so.
    {
        use commit_boost as cb;
        v.extend([
            (ep("GET", "/signer/v1/get_pubkeys", Module), get(cb::get_pubkeys)),
            (
                ep("POST", "/signer/v1/request_signature", Module),
                post(cb::request_signature),
            ),
            (
                ep("POST", "/signer/v1/request_signature/bls", Module),
                post(cb::request_signature),
            ),
            (
                ep("POST", "/signer/v1/request_signature/proxy-bls", Module),
                post(cb::request_signature),
            ),
            (
                ep("POST", "/signer/v1/request_signature/proxy-ecdsa", Module),
                post(cb::request_signature),
            ),
            (
                ep("POST", "/signer/v1/generate_proxy_key", Module),
                post(cb::generate_proxy_key),
            ),
        ]);
    }
    v
}

/// The endpoints this build serves (with metrics on).
pub fn endpoint_table() -> Vec<Endpoint> {
    endpoints(true).into_iter().map(|(e, _)| e).collect()
}

/// `/metrics` alone, for the metrics listener (`--metrics-port`), behind its own host check.
pub fn metrics_router(state: AppState, guard: Arc<guard::HttpGuard>) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .fallback(|req: Request| async move {
            let path = req.uri().path();
            ApiError::NotFound(format!(
                "no route for {} {path}: this listener serves /metrics only",
                req.method()
            ))
            .for_path(path)
        })
        .layer(axum::middleware::from_fn_with_state(guard, guard::middleware))
        .with_state(state)
}

pub fn router(state: AppState, options: HttpOptions) -> Router {
    let metrics = options.metrics;
    // Access is decided per method, so one path can be public for GET and need the token for
    // POST (`/api/v1/eth2/highWatermark`, as Web3Signer's).
    let mut paths: std::collections::BTreeMap<&str, MethodRouter<AppState>> = Default::default();
    for (e, handler) in endpoints(metrics) {
        // Admin bodies are read only once the token is accepted.
        let (max_bytes, budget) = match e.access {
            Access::Admin => (MAX_ADMIN_BODY_BYTES, None),
            _ => (MAX_BODY_BYTES, Some(options.body_budget.clone())),
        };
        let limits = body::BodyLimits {
            max_bytes,
            timeout: options.body_timeout,
            budget,
        };
        let handler = handler
            .layer(DefaultBodyLimit::max(max_bytes))
            .layer(axum::middleware::from_fn(move |req, next| {
                body::read_whole(limits.clone(), req, next)
            }));
        let handler = match e.access {
            Access::Public | Access::Module | Access::Coordinator => handler,
            Access::Signing => handler.layer(axum::middleware::from_fn_with_state(
                state.clone(),
                auth::require_signing_token,
            )),
            Access::Admin => handler.layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token)),
        };
        let merged = match paths.remove(e.path) {
            Some(existing) => existing.merge(handler),
            None => handler,
        };
        paths.insert(e.path, merged);
    }
    let mut router = Router::new();
    for (path, handler) in paths {
        router = router.route(path, handler);
    }
    router
        .fallback(|req: Request| async move {
            let path = req.uri().path();
            ApiError::NotFound(format!("no route for {} {path}", req.method())).for_path(path)
        })
        .method_not_allowed_fallback(|req: Request| async move {
            let path = req.uri().path();
            ApiError::MethodNotAllowed(format!("method {} is not allowed on {path}", req.method())).for_path(path)
        })
        .layer(axum::middleware::from_fn_with_state(options.guard, guard::middleware))
        .with_state(state)
}
