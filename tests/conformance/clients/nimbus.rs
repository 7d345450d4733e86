//! Nimbus, from status-im/nimbus-eth2 `beacon_chain/spec/eth2_apis/rest_types.nim`
//! (`Web3SignerRequest.init`: no `signingRoot` unless asked), `eth2_rest_serialization.nim`
//! (`writeValue` of `Web3SignerRequest`: BLOCK_V2 with `{version, block_header}` at every
//! fork and the optional top-level `proofs` of the verifying mode; `AGGREGATE_AND_PROOF` with
//! the phase0 container before Electra, `AGGREGATE_AND_PROOF_V2` with `{version, data}`
//! after) and `beacon_chain/validators/validator_pool.nim` (`getBuilderSignature`: a
//! registration with `fork_info` whose `genesis_validators_root` is all zeros; deposits
//! without `fork_info`). Answers: 200 with `{"signature"}`, 404 unknown key, 412 slashing.

use serde_json::{Value, json};

use super::{
    Answer, Client, Outcome, body, fork_epoch, fork_info, keys_from_json, signature_from_json, simple_payload,
    version_name,
};
use crate::chain::{Chain, ELECTRA, hex0x};
use crate::messages::Msg;

pub fn client() -> Client {
    Client {
        name: "Nimbus",
        sources: "status-im/nimbus-eth2 beacon_chain/spec/eth2_apis/rest_types.nim, beacon_chain/spec/eth2_apis/eth2_rest_serialization.nim, beacon_chain/validators/validator_pool.nim",
        headers: &[("Content-Type", "application/json"), ("Accept", "application/json")],
        sends_root: false,
        request,
        read,
        read_keys: Some(|a| keys_from_json(&a.body)),
    }
}

fn request(chain: &Chain, msg: &Msg) -> Option<Value> {
    let fi = Some(fork_info(chain, fork_epoch(msg)));
    Some(match msg {
        Msg::Block { slot, header, .. } => body(
            "BLOCK_V2",
            fi,
            "beacon_block",
            json!({"version": version_name(chain, *slot), "block_header": header}),
        ),
        Msg::Aggregate { value, .. } if chain.fork_at(msg.signing_slot() / 32) >= ELECTRA => body(
            "AGGREGATE_AND_PROOF_V2",
            fi,
            "aggregate_and_proof",
            json!({"version": version_name(chain, msg.signing_slot()), "data": value}),
        ),
        Msg::Aggregate { value, .. } => body("AGGREGATE_AND_PROOF", fi, "aggregate_and_proof", value.clone()),
        Msg::Registration(r) => {
            // The node's current fork, and a zero genesis validators root.
            let current = json!({"fork": chain.fork_object(u64::MAX / 64), "genesis_validators_root": hex0x(&[0; 32])});
            body(
                "VALIDATOR_REGISTRATION",
                Some(current),
                "validator_registration",
                r.clone(),
            )
        }
        Msg::Deposit(d) => body("DEPOSIT", None, "deposit", d.clone()),
        other => {
            let (t, field, payload) = simple_payload(other)?;
            body(t, fi, field, payload)
        }
    })
}

fn read(a: &Answer) -> Outcome {
    match a.status {
        200 => signature_from_json(&a.body).map_or_else(Outcome::Failed, Outcome::Signed),
        404 => Outcome::UnknownKey,
        412 => Outcome::SlashingRefused,
        s => Outcome::Failed(format!("remote signer answered {s}")),
    }
}

/// Nimbus's verifying mode adds Merkle proofs of block body fields at the top level.
pub fn with_proofs(mut request: Value) -> Value {
    if request["type"] == "BLOCK_V2" {
        request["proofs"] = json!([{"index": "105", "proof": [hex0x(&[7; 32]), hex0x(&[8; 32])]}]);
    }
    request
}
