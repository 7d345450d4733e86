//! Watermark repair and the high watermark: the operator's way out of a bricked key.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::client::ClientInfo;
use super::error::{ApiError, body_rejection};
use crate::json::parse_body;
use crate::protection::HighWatermarkChange;
use crate::protection::repair::{RepairRequest, Repaired};
use crate::types::{Epoch, PublicKey, Slot};

fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| body_rejection(r, super::MAX_ADMIN_BODY_BYTES))
}

fn actor(client: &Option<Extension<ClientInfo>>) -> String {
    format!("api:{}", client.as_ref().map_or("unknown".into(), |c| c.0.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Repair {
    pubkeys: Vec<PublicKey>,
    block_slot: Option<Slot>,
    attestation_source: Option<Epoch>,
    attestation_target: Option<Epoch>,
    reason: String,
    #[serde(default)]
    confirm: bool,
    #[serde(default)]
    discard_past_messages: bool,
}

/// `POST /api/v1/eth2/slashing-protection/repair`
pub async fn repair(
    State(state): State<AppState>,
    client: Option<Extension<ClientInfo>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body_of(body)?;
    let r: Repair = parse_body(&body).map_err(ApiError::BadRequest)?;
    if !r.confirm {
        return Err(ApiError::BadRequest(
            "a repair changes slashing protection: send \"confirm\": true to apply it".into(),
        ));
    }
    // Discarding a message whose slot has passed may allow signing a slashable pair: only on
    // the host itself (the CLI), never with a token that could have leaked.
    if r.discard_past_messages {
        return Err(ApiError::Forbidden(
            "discarding messages whose slot has passed is allowed only on the host: \
             `palisade slashing-protection repair --discard-past-messages`. Over HTTP a repair may discard \
             messages the wall clock has not reached yet, nothing that may have been broadcast"
                .into(),
        ));
    }
    let attestation = match (r.attestation_source, r.attestation_target) {
        (Some(s), Some(t)) => Some((s, t)),
        (None, None) => None,
        _ => {
            return Err(ApiError::BadRequest(
                "give attestation_source and attestation_target together".into(),
            ));
        }
    };
    let req = RepairRequest {
        pubkeys: r.pubkeys,
        block_slot: r.block_slot,
        attestation,
        reason: r.reason,
        actor: actor(&client),
        clock: None,
        discard_past: false,
    };
    let done: Vec<Repaired> = state.slashing.repair(req).await?;
    Ok(Json(json!({ "data": done })))
}

/// `GET /api/v1/eth2/highWatermark`: `{"slot", "epoch"}`, or `{}` when none is set
/// (Web3Signer's answer).
pub async fn high_watermark(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(match state.slashing.high_watermark().await? {
        Some((slot, epoch)) => json!({"slot": slot, "epoch": epoch}),
        None => json!({}),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HighWatermark {
    slot: Slot,
    epoch: Epoch,
    pubkeys: Option<Vec<PublicKey>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Keys {
    pubkeys: Option<Vec<PublicKey>>,
}

/// `POST /api/v1/eth2/highWatermark`: nothing at or above `slot` (blocks) or `epoch`
/// (attestations) is signed, for all keys or only `pubkeys`.
pub async fn set_high_watermark(
    State(state): State<AppState>,
    client: Option<Extension<ClientInfo>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body_of(body)?;
    let h: HighWatermark = parse_body(&body).map_err(ApiError::BadRequest)?;
    let who = actor(&client);
    let change = HighWatermarkChange {
        value: Some((h.slot, h.epoch)),
        keys: h.pubkeys.as_deref(),
        actor: &who,
    };
    state.slashing.set_high_watermark(change).await?;
    Ok(Json(json!({"slot": h.slot, "epoch": h.epoch})))
}

/// `DELETE /api/v1/eth2/highWatermark`: clears it (for all keys, or `pubkeys`).
pub async fn clear_high_watermark(
    State(state): State<AppState>,
    client: Option<Extension<ClientInfo>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body_of(body)?;
    let k: Keys = if body.trim_ascii().is_empty() {
        Keys::default()
    } else {
        parse_body(&body).map_err(ApiError::BadRequest)?
    };
    let who = actor(&client);
    let change = HighWatermarkChange {
        value: None,
        keys: k.pubkeys.as_deref(),
        actor: &who,
    };
    state.slashing.set_high_watermark(change).await?;
    Ok(Json(json!({})))
}
