//! Liveness, health and metrics.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

/// `GET /upcheck`: 200 as soon as the server listens.
pub async fn upcheck() -> &'static str {
    "OK"
}

/// `GET /healthcheck`: 200 while blocks and attestations can be signed, 503 when the
/// slashing-protection database cannot be reached. Key failures are reported, not fatal.
pub async fn healthcheck(State(state): State<AppState>) -> Response {
    let signer = &state.signer;
    let db = tokio::time::timeout(Duration::from_secs(2), signer.db.ping()).await;
    let (db_up, db_check) = match db {
        Ok(Ok(latency)) => {
            signer.metrics.database_up.set(1);
            signer.metrics.database_latency_seconds.set(latency.as_secs_f64());
            (
                true,
                json!({"id": "slashing-protection-database", "status": "UP",
                       "data": {"backend": signer.db.backend_name(), "latency_ms": latency.as_secs_f64() * 1e3}}),
            )
        }
        Ok(Err(e)) => {
            signer.metrics.database_up.set(0);
            (false, json!({"id": "slashing-protection-database", "status": "DOWN",
                           "data": {"backend": signer.db.backend_name(), "error": e.to_string()}}))
        }
        Err(_) => {
            signer.metrics.database_up.set(0);
            (false, json!({"id": "slashing-protection-database", "status": "DOWN",
                           "data": {"backend": signer.db.backend_name(), "error": "no answer within 2 s"}}))
        }
    };
    let counts = signer.keys.counts();
    signer.metrics.set_keys(counts);
    let failures = signer.keys.failures();
    let keys_check = json!({
        "id": "keys-check",
        "status": if counts.loading > 0 { "LOADING" } else { "UP" },
        "data": {"loaded": counts.loaded, "loading": counts.loading, "failed": counts.failed,
                 "failures": failures},
    });
    let status = if db_up { "UP" } else { "DOWN" };
    let body = json!({
        "status": status,
        "outcome": status,
        "checks": [db_check, keys_check],
        "chain": signer.chain.get().map(|r| r.to_string()),
    });
    let code = if db_up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let m = &state.signer.metrics;
    m.set_keys(state.signer.keys.counts());
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        m.encode(),
    )
        .into_response()
}
