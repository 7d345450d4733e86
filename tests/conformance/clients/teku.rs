//! Teku, from Consensys/teku `validator/client/src/main/java/tech/pegasys/teku/validator/client/signer/`
//! `ExternalSigner.java` (`signingRoot` always; `Content-Type: application/json` and no
//! Accept; 412 read as a slashing-protection refusal; a 200 parsed as JSON when its
//! Content-Type starts with application/json, else as bare hex), `SigningRequestBody.java`
//! (`AGGREGATE_AND_PROOF` with the container of the fork named by `fork_info`'s current
//! version, the Electra one from Electra on; registrations without `fork_info`) and
//! `ExternalSignerBlockRequestProvider.java` (type BLOCK with the phase0 block, BLOCK_V2
//! with the full block for ALTAIR, headers after).

use serde_json::{Value, json};

use super::{
    Answer, Client, Outcome, body, fork_epoch, fork_info, is_json, keys_from_json, signature_from_hex,
    signature_from_json, simple_payload, version_name,
};
use crate::chain::{ALTAIR, Chain, PHASE0};
use crate::messages::Msg;

pub fn client() -> Client {
    Client {
        name: "Teku",
        sources: "Consensys/teku validator/client/src/main/java/tech/pegasys/teku/validator/client/signer/ExternalSigner.java, SigningRequestBody.java, ExternalSignerBlockRequestProvider.java; validator/api/src/main/java/tech/pegasys/teku/validator/api/signer/BlockWrapper.java",
        headers: &[("Content-Type", "application/json")],
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
        Msg::Aggregate { value, .. } => body("AGGREGATE_AND_PROOF", fi, "aggregate_and_proof", value.clone()),
        Msg::Deposit(_) => return None,
        Msg::Registration(r) => body("VALIDATOR_REGISTRATION", None, "validator_registration", r.clone()),
        other => {
            let (t, field, payload) = simple_payload(other)?;
            body(t, fi, field, payload)
        }
    })
}

fn read(a: &Answer) -> Outcome {
    if a.status == 412 {
        return Outcome::SlashingRefused;
    }
    if a.status != 200 {
        return Outcome::Failed(format!("Invalid response status code: {}", a.status));
    }
    let parsed = if is_json(a) {
        signature_from_json(&a.body)
    } else {
        signature_from_hex(&a.body)
    };
    parsed.map_or_else(
        |e| Outcome::Failed(format!("Returned an invalid signature: {e}")),
        Outcome::Signed,
    )
}

/// `ExternalSignerPublicKeyProvider`: a JSON array of keys.
fn read_keys(a: &Answer) -> Result<Vec<String>, String> {
    if a.status != 200 {
        return Err(format!("status {}", a.status));
    }
    keys_from_json(&a.body)
}
