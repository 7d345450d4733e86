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

/// `GET /readyz`: readiness for load balancers, from the database monitor's last probe
/// (no database round trip per probe). 503 when this replica cannot sign blocks and
/// attestations.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.signer.db_health.ready(crate::serve::DB_PROBE_INTERVAL * 3) {
        (StatusCode::OK, "READY").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "NOT READY: slashing-protection database unreachable",
        )
            .into_response()
    }
}

/// `GET /healthcheck`: 200 while blocks and attestations can be signed, 503 when the
/// slashing-protection database cannot be reached. Key failures are reported, not fatal.
pub async fn healthcheck(State(state): State<AppState>) -> Response {
    let signer = &state.signer;
    let db = tokio::time::timeout(Duration::from_secs(2), signer.db.ping()).await;
    let (db_up, db_check) = match db {
        Ok(Ok(latency)) => {
            signer.db_health.set(true);
            signer.metrics.database_up.set(1);
            signer.metrics.database_latency_seconds.set(latency.as_secs_f64());
            (
                true,
                json!({"id": "slashing-protection-database", "status": "UP",
                       "data": {"backend": signer.db.backend_name(), "latency_ms": latency.as_secs_f64() * 1e3}}),
            )
        }
        Ok(Err(e)) => {
            signer.db_health.set(false);
            signer.metrics.database_up.set(0);
            (
                false,
                json!({"id": "slashing-protection-database", "status": "DOWN",
                           "data": {"backend": signer.db.backend_name(), "error": e.to_string()}}),
            )
        }
        Err(_) => {
            signer.db_health.set(false);
            signer.metrics.database_up.set(0);
            (
                false,
                json!({"id": "slashing-protection-database", "status": "DOWN",
                           "data": {"backend": signer.db.backend_name(), "error": "no answer within 2 s"}}),
            )
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
    let code = if db_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let m = &state.signer.metrics;
    m.set_keys(state.signer.keys.counts());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}
