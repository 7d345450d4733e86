//! Admin endpoints (bearer token): EIP-3076 import and export, the Key Manager API, and key
//! reloads.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::AppState;
use super::error::{ApiError, KeyManagerApiError, body_rejection};
use crate::json::{body_text, parse_body};
use crate::protection::{Interchange, ProtectionError};
use crate::types::PublicKey;

/// `POST /api/v1/eth2/slashing-protection/import`: all or nothing.
pub async fn import(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = body.map_err(|r| body_rejection(r, super::MAX_ADMIN_BODY_BYTES))?;
    let interchange = Interchange::from_json(body_text(&body).map_err(ApiError::BadRequest)?)
        .map_err(|e| ApiError::Protection(ProtectionError::InvalidInterchange(e)))?;
    let n = state.slashing.import(&interchange).await?;
    Ok(Json(json!({ "imported_validators": n })))
}

/// `pubkey=0x..` parameters of a query string (may repeat).
fn pubkeys_of(query: Option<&str>) -> Result<Option<Vec<PublicKey>>, ApiError> {
    let mut keys = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != "pubkey" {
            return Err(ApiError::BadRequest(format!("unknown query parameter `{k}`")));
        }
        for one in v.split(',').filter(|s| !s.is_empty()) {
            keys.push(
                one.parse()
                    .map_err(|e| ApiError::BadRequest(format!("pubkey `{one}`: {e}")))?,
            );
        }
    }
    Ok((!keys.is_empty()).then_some(keys))
}

/// `GET /api/v1/eth2/slashing-protection/export[?pubkey=0x..]`
pub async fn export(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Json<Interchange>, ApiError> {
    let keys = pubkeys_of(query.as_deref())?;
    Ok(Json(state.slashing.export(keys.as_deref()).await?))
}

/// `GET /eth/v1/keystores`
pub async fn list_keystores(State(state): State<AppState>) -> Response {
    Json(json!({ "data": state.keymanager.list() })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportKeystores {
    keystores: Vec<String>,
    passwords: Vec<String>,
    slashing_protection: Option<String>,
}

/// `POST /eth/v1/keystores`
pub async fn import_keystores(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, KeyManagerApiError> {
    let body = body.map_err(|r| body_rejection(r, super::MAX_ADMIN_BODY_BYTES))?;
    let parsed = parse_body::<ImportKeystores>(&body);
    super::body::zeroize_body(body);
    let req = parsed.map_err(|e| ApiError::BadRequest(redact_passwords(e)))?;
    let passwords = req.passwords.into_iter().map(Zeroizing::new).collect();
    let statuses = state
        .keymanager
        .import(req.keystores, passwords, req.slashing_protection)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(json!({ "data": statuses })).into_response())
}

/// A serde error about `passwords` must not quote a password.
fn redact_passwords(e: String) -> String {
    if e.starts_with("passwords") {
        "passwords: must be an array of strings".into()
    } else {
        e
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteKeystores {
    pubkeys: Vec<PublicKey>,
}

/// `DELETE /eth/v1/keystores`
pub async fn delete_keystores(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, KeyManagerApiError> {
    let body = body.map_err(|r| body_rejection(r, super::MAX_ADMIN_BODY_BYTES))?;
    let req: DeleteKeystores = parse_body(&body).map_err(ApiError::BadRequest)?;
    let (statuses, interchange) = state.keymanager.delete(req.pubkeys).await.map_err(ApiError::from)?;
    Ok(Json(json!({
        "data": statuses,
        "slashing_protection": serde_json::to_string(&interchange).expect("interchange serialises"),
    }))
    .into_response())
}
/// `POST /reload`: as Web3Signer, 202 and the reload runs in the background (`GET /reload`
/// tells how it went), or 409 while one runs.
pub async fn reload(State(state): State<AppState>) -> Response {
    match state.reloads.start("api") {
        Ok(()) => (
            axum::http::StatusCode::ACCEPTED,
            Json(json!({
                "status": "accepted",
                "message": "Reload operation accepted and is running in the background. Use GET /reload to check status."
            })),
        )
            .into_response(),
        Err(e) => (
            axum::http::StatusCode::CONFLICT,
            Json(json!({"status": "error", "message": e.to_string()})),
        )
            .into_response(),
    }
}

/// `GET /reload`: the state of the last reload, with what it added, removed and could not load.
pub async fn reload_status(State(state): State<AppState>) -> Response {
    Json(state.reloads.state()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pubkeys() {
        let pk = "0xa99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";
        assert_eq!(pubkeys_of(None).unwrap(), None);
        assert_eq!(pubkeys_of(Some(&format!("pubkey={pk}"))).unwrap().unwrap().len(), 1);
        assert_eq!(
            pubkeys_of(Some(&format!("pubkey={pk}&pubkey={pk}")))
                .unwrap()
                .unwrap()
                .len(),
            2
        );
        assert!(pubkeys_of(Some("pubkey=0x12")).is_err());
        assert!(pubkeys_of(Some("validator=1")).is_err());
    }
}
