//! Lodestar, from ChainSafe/lodestar `packages/validator/src/util/externalSignerClient.ts`
//! (`externalSignerPostSignature`: `signingRoot` always; `fork_info.fork.epoch` is the epoch
//! of the signing slot, not the fork's; BLOCK_V2 with the full block for PHASE0/ALTAIR and
//! `block_header` after; `AGGREGATE_AND_PROOF_V2` with `{version, data}` from Electra on;
//! registrations and deposits without `fork_info`; `Accept` and `Content-Type`
//! application/json; an answer must say application/json or it is an error) and
//! `packages/validator/src/services/validatorStore.ts` (the signing slot of each duty).

use serde_json::{Value, json};

use super::{
    Answer, Client, Outcome, body, epoch_of_slot, is_json, keys_from_json, signature_from_json, simple_payload,
    version_name,
};
use crate::chain::{ALTAIR, Chain, ELECTRA, hex0x};
use crate::messages::Msg;

pub fn client() -> Client {
    Client {
        name: "Lodestar",
        sources: "ChainSafe/lodestar packages/validator/src/util/externalSignerClient.ts, packages/validator/src/services/validatorStore.ts",
        headers: &[("Accept", "application/json"), ("Content-Type", "application/json")],
        sends_root: true,
        request,
        read,
        read_keys: Some(read_keys),
    }
}

/// `config.getForkInfo(signingSlot)` with the signing slot's own epoch.
fn fork_info(chain: &Chain, slot: u64) -> Value {
    let fork = chain.fork_at(epoch_of_slot(slot));
    json!({
        "fork": {
            "previous_version": hex0x(&chain.version(fork.saturating_sub(1))),
            "current_version": hex0x(&chain.version(fork)),
            "epoch": epoch_of_slot(slot).to_string(),
        },
        "genesis_validators_root": hex0x(&chain.gvr),
    })
}

fn request(chain: &Chain, msg: &Msg) -> Option<Value> {
    let fi = Some(fork_info(chain, msg.signing_slot()));
    Some(match msg {
        Msg::Block { slot, full, header } => {
            let version = version_name(chain, *slot);
            let inner = match full {
                Some(b) if chain.fork_at(epoch_of_slot(*slot)) <= ALTAIR => json!({"version": version, "block": b}),
                _ => json!({"version": version, "block_header": header}),
            };
            body("BLOCK_V2", fi, "beacon_block", inner)
        }
        Msg::Aggregate { value, .. } if chain.fork_at(epoch_of_slot(msg.signing_slot())) >= ELECTRA => body(
            "AGGREGATE_AND_PROOF_V2",
            fi,
            "aggregate_and_proof",
            json!({"version": version_name(chain, msg.signing_slot()), "data": value}),
        ),
        Msg::Aggregate { value, .. } => body("AGGREGATE_AND_PROOF", fi, "aggregate_and_proof", value.clone()),
        Msg::Registration(_) | Msg::Deposit(_) => {
            let (t, field, payload) = simple_payload(msg)?;
            body(t, None, field, payload)
        }
        other => {
            let (t, field, payload) = simple_payload(other)?;
            body(t, fi, field, payload)
        }
    })
}

/// `handleExternalSignerResponse`.
fn read(a: &Answer) -> Outcome {
    if !(200..300).contains(&a.status) {
        return Outcome::Failed(if a.body.is_empty() {
            format!("HTTP {}", a.status)
        } else {
            a.body.clone()
        });
    }
    if !is_json(a) {
        return Outcome::Failed(format!("Unsupported response media type: {:?}", a.content_type));
    }
    signature_from_json(&a.body).map_or_else(
        |e| Outcome::Failed(format!("Invalid json response: {e}")),
        Outcome::Signed,
    )
}

fn read_keys(a: &Answer) -> Result<Vec<String>, String> {
    if !(200..300).contains(&a.status) {
        return Err(a.body.clone());
    }
    if !is_json(a) {
        return Err(format!("Unsupported response media type: {:?}", a.content_type));
    }
    keys_from_json(&a.body)
}
