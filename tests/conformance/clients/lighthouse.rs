//! Lighthouse, from sigp/lighthouse `validator_client/signing_method/src/web3signer.rs`
//! (`SigningRequest`, `Web3SignerObject`: BLOCK_V2 always, full blocks for PHASE0/ALTAIR and
//! headers after; `AGGREGATE_AND_PROOF` with the bare `AggregateAndProofRef`, the Electra
//! container from Electra on) and `validator_client/signing_method/src/lib.rs`
//! (`get_signature_from_root`: `signingRoot` always, `fork_info` from the spec's fork at
//! the signing epoch and none for registrations; `Accept: application/json`, reqwest
//! `.json()`; any non-2xx status is `Web3SignerRequestFailed`).

use serde_json::{Value, json};

use super::{Answer, Client, Outcome, body, fork_epoch, fork_info, signature_from_json, simple_payload, version_name};
use crate::chain::{ALTAIR, Chain};
use crate::messages::Msg;

pub fn client() -> Client {
    Client {
        name: "Lighthouse",
        sources: "sigp/lighthouse validator_client/signing_method/src/web3signer.rs, validator_client/signing_method/src/lib.rs",
        headers: &[("Accept", "application/json"), ("Content-Type", "application/json")],
        sends_root: true,
        request,
        read,
        read_keys: None,
    }
}

fn request(chain: &Chain, msg: &Msg) -> Option<Value> {
    let fi = Some(fork_info(chain, fork_epoch(msg)));
    Some(match msg {
        Msg::Block { slot, full, header } => {
            let version = version_name(chain, *slot);
            let inner = match full {
                Some(b) if chain.fork_at(slot / 32) <= ALTAIR => json!({"version": version, "block": b}),
                _ => json!({"version": version, "block_header": header}),
            };
            body("BLOCK_V2", fi, "beacon_block", inner)
        }
        Msg::Aggregate { value, .. } => body("AGGREGATE_AND_PROOF", fi, "aggregate_and_proof", value.clone()),
        // `Web3SignerObject::Deposit` is never built by the validator client.
        Msg::Deposit(_) => return None,
        Msg::Registration(r) => body("VALIDATOR_REGISTRATION", None, "validator_registration", r.clone()),
        other => {
            let (t, field, payload) = simple_payload(other)?;
            body(t, fi, field, payload)
        }
    })
}

fn read(a: &Answer) -> Outcome {
    if !(200..300).contains(&a.status) {
        return Outcome::Failed(format!("Web3SignerRequestFailed: HTTP status {}", a.status));
    }
    match signature_from_json(&a.body) {
        Ok(s) => Outcome::Signed(s),
        Err(e) => Outcome::Failed(format!("Web3SignerJsonParsingFailed: {e}")),
    }
}
