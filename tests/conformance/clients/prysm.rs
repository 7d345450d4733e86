//! Prysm, from OffchainLabs/prysm `validator/keymanager/remote-web3signer/`:
//! `types/requests.go` and `types/web3signer_types.go` (`signingRoot` always; type BLOCK
//! with the phase0 block, BLOCK_V2 with the full block for ALTAIR and `block_header` after;
//! `AGGREGATE_AND_PROOF_V2` with `{version, data}` at every fork; registrations without
//! `fork_info`; no DEPOSIT), `types/custom_mappers.go` (`MapForkInfo`: the fork at the
//! signing slot's epoch), `internal/client.go` (`Content-Type: application/json`; 404 is
//! "public key not found", 412 a slashing-protection failure, 400 and 500 errors; a JSON
//! Content-Type is read as `{"signature"}`, anything else as bare hex; the key list is a JSON
//! array whose first key must be 48 bytes).

use serde_json::{Value, json};

use super::{
    Answer, Client, Outcome, body, fork_epoch, fork_info, is_json, keys_from_json, signature_from_hex,
    signature_from_json, simple_payload, version_name,
};
use crate::chain::{ALTAIR, Chain, PHASE0};
use crate::messages::Msg;

pub fn client() -> Client {
    Client {
        name: "Prysm",
        sources: "OffchainLabs/prysm validator/keymanager/remote-web3signer/types/requests.go, types/web3signer_types.go, types/custom_mappers.go, keymanager.go, internal/client.go",
        headers: &[
            ("Content-Type", "application/json"),
            ("Accept-Encoding", "gzip"),
            ("User-Agent", "Go-http-client/1.1"),
        ],
        sends_root: true,
        request,
        read,
        read_keys: Some(read_keys),
    }
}

fn request(chain: &Chain, msg: &Msg) -> Option<Value> {
    let fi = Some(fork_info(chain, fork_epoch(msg)));
    Some(match msg {
        Msg::Block { slot, full, header } => match chain.fork_at(slot / 32) {
            PHASE0 => body("BLOCK", fi, "block", full.clone().unwrap()),
            ALTAIR => body(
                "BLOCK_V2",
                fi,
                "beacon_block",
                json!({"version": "ALTAIR", "block": full.clone().unwrap()}),
            ),
            _ => body(
                "BLOCK_V2",
                fi,
                "beacon_block",
                json!({"version": version_name(chain, *slot), "block_header": header}),
            ),
        },
        Msg::Aggregate { value, .. } => body(
            "AGGREGATE_AND_PROOF_V2",
            fi,
            "aggregate_and_proof",
            json!({"version": version_name(chain, msg.signing_slot()), "data": value}),
        ),
        Msg::Deposit(_) => return None,
        Msg::Registration(r) => body("VALIDATOR_REGISTRATION", None, "validator_registration", r.clone()),
        other => {
            let (t, field, payload) = simple_payload(other)?;
            body(t, fi, field, payload)
        }
    })
}

fn read(a: &Answer) -> Outcome {
    match a.status {
        404 => return Outcome::UnknownKey,
        412 => return Outcome::SlashingRefused,
        500 => return Outcome::Failed("internal Web3Signer server error".into()),
        400 => return Outcome::Failed("bad request format".into()),
        _ => {}
    }
    let parsed = if is_json(a) {
        signature_from_json(&a.body)
    } else {
        signature_from_hex(&a.body)
    };
    parsed.map_or_else(|e| Outcome::Failed(format!("HTTP {}: {e}", a.status)), Outcome::Signed)
}

fn read_keys(a: &Answer) -> Result<Vec<String>, String> {
    let keys = keys_from_json(&a.body)?;
    if let Some(first) = keys.first() {
        let b = hex::decode(first.strip_prefix("0x").ok_or("unable to decode public key")?)
            .map_err(|e| format!("unable to decode public key: {e}"))?;
        if b.len() != 48 {
            return Err(format!("invalid public key length of {} bytes", b.len()));
        }
    }
    Ok(keys)
}
