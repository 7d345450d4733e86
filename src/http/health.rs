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

/// `GET /readyz`: readiness for load balancers, from the last probe (no round trip per
/// call): 200 only when this replica can sign blocks and attestations safely now (a durable
/// commit went through within a second, the chain is pinned, the keys are loaded).
pub async fn readyz(State(state): State<AppState>) -> Response {
    let r = state.health.readiness();
    if r.ready() {
        (StatusCode::OK, "READY").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("NOT READY: {}", r.reasons.join("; ")),
        )
            .into_response()
    }
}

/// `GET /healthcheck`: 200 while blocks and attestations can be signed, 503 (with every
/// reason) when not. The database verdict is refreshed first when older than half a second.
///
/// Without the admin token it shows states and counts only: which files failed and why, and
/// the database's error text, describe the host to whoever asks.
pub async fn healthcheck(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let details = super::auth::is_admin(&state, &headers);
    let health = &state.health;
    health.probe_if_older(Duration::from_millis(500)).await;
    let db = health.verdict();
    let db_check = match db.error() {
        None if db.up_and_fresh() => json!({"id": "slashing-protection-database", "status": "UP",
            "data": {"backend": health.backend(), "latency_ms": db.latency().as_secs_f64() * 1e3,
                     "replicas": db.replicas()}}),
        e => {
            let error = if details {
                e.unwrap_or_else(|| "not checked recently".into())
            } else {
                "unavailable (details with the admin token)".into()
            };
            json!({"id": "slashing-protection-database", "status": "DOWN",
                "data": {"backend": health.backend(), "error": error}})
        }
    };
    let counts = health.key_counts();
    let (failures, stale) = if details {
        (json!(health.key_failures()), json!(health.stale_key_sources()))
    } else {
        let hidden = json!("hidden: send the admin token to see them");
        (hidden.clone(), hidden)
    };
    let readiness = health.readiness();
    let keys_status = if counts.loading > 0 {
        "LOADING"
    } else if readiness.reasons.iter().any(|r| r.contains("keys")) {
        "DOWN"
    } else {
        "UP"
    };
    let keys_check = json!({
        "id": "keys-check",
        "status": keys_status,
        "data": {"loaded": counts.loaded, "loading": counts.loading, "failed": counts.failed,
                 "failures": failures, "stale": counts.stale, "stale_sources": stale},
    });
    let status = if readiness.ready() { "UP" } else { "DOWN" };
    let body = json!({
        "status": status,
        "outcome": status,
        "checks": [db_check, keys_check],
        "chain": health.chain().map(|r| r.to_string()),
        "reasons": readiness.reasons,
    });
    let code = if readiness.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    use crate::http::exposition::{OPENMETRICS, PROMETHEUS_TEXT, to_prometheus_text, wants_openmetrics};
    let text = state.health.metrics_text();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if wants_openmetrics(accept) {
        ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response()
    } else {
        ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], to_prometheus_text(&text)).into_response()
    }
}
