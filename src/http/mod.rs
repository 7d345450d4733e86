//! The HTTP API: routes only; the work happens in `service` and `keymanager`.

pub mod admin;
pub mod auth;
pub mod error;
pub mod health;
pub mod sign;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::keymanager::KeyManager;
use crate::service::Signer;
use auth::ApiToken;
use error::ApiError;

/// Large enough for a phase0/altair block with every list full; small enough that a
/// client cannot make the signer buffer gigabytes.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Key Manager imports carry many keystores.
pub const MAX_ADMIN_BODY_BYTES: usize = 64 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub signer: Arc<Signer>,
    pub keymanager: Arc<KeyManager>,
    pub token: Arc<ApiToken>,
}

pub fn router(state: AppState, metrics: bool) -> Router {
    let admin = Router::new()
        .route("/api/v1/eth2/slashing-protection/import", post(admin::import))
        .route("/api/v1/eth2/slashing-protection/export", get(admin::export))
        .route(
            "/eth/v1/keystores",
            get(admin::list_keystores)
                .post(admin::import_keystores)
                .delete(admin::delete_keystores),
        )
        .layer(DefaultBodyLimit::max(MAX_ADMIN_BODY_BYTES))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token));

    let mut public = Router::new()
        .route("/api/v1/eth2/sign/{identifier}", post(sign::sign))
        .route("/api/v1/eth2/publicKeys", get(sign::public_keys))
        .route("/upcheck", get(health::upcheck))
        .route("/healthcheck", get(health::healthcheck))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    if metrics {
        public = public.route("/metrics", get(health::metrics));
    }

    public
        .merge(admin)
        .fallback(|req: Request| async move {
            ApiError::NotFound(format!("no route for {} {}", req.method(), req.uri().path())).into_response()
        })
        .method_not_allowed_fallback(|req: Request| async move {
            (
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(serde_json::json!({
                    "error": format!("method {} is not allowed on {}", req.method(), req.uri().path())
                })),
            )
        })
        .with_state(state)
}
