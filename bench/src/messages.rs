//! Web3Signer request bodies for every duty of a mainnet validator (Fulu fork), as the load
//! generator sends them. Signatures inside payloads are placeholders: the signer does not
//! verify them, it signs over their roots.

use serde_json::{Value, json};

pub const MAINNET_GVR: &str = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95";
/// Mainnet's first Fulu epoch.
pub const FULU_EPOCH: u64 = 411_392;

fn fork_info() -> Value {
    json!({"fork": {"previous_version": "0x05000000", "current_version": "0x06000000", "epoch": FULU_EPOCH.to_string()},
           "genesis_validators_root": MAINNET_GVR})
}

pub fn root(tag: u64) -> String {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&tag.to_be_bytes());
    b[31] = 1;
    format!("0x{}", hex::encode(b))
}

fn sig() -> String {
    format!("0x{}{}", "a5", "5a".repeat(95))
}

pub fn attestation(slot: u64, source: u64, target: u64, head: &str) -> Value {
    json!({"type": "ATTESTATION", "fork_info": fork_info(),
        "attestation": {"slot": slot.to_string(), "index": "0", "beacon_block_root": head,
            "source": {"epoch": source.to_string(), "root": root(source)},
            "target": {"epoch": target.to_string(), "root": root(target)}}})
}

pub fn randao(epoch: u64) -> Value {
    json!({"type": "RANDAO_REVEAL", "fork_info": fork_info(), "randao_reveal": {"epoch": epoch.to_string()}})
}

pub fn block(slot: u64, proposer: u64, state: &str) -> Value {
    json!({"type": "BLOCK_V2", "fork_info": fork_info(),
        "beacon_block": {"version": "FULU", "block_header": {"slot": slot.to_string(), "proposer_index": proposer.to_string(),
            "parent_root": root(slot.wrapping_sub(1)), "state_root": state, "body_root": root(slot ^ 0xb0d1)}}})
}

pub fn aggregation_slot(slot: u64) -> Value {
    json!({"type": "AGGREGATION_SLOT", "fork_info": fork_info(), "aggregation_slot": {"slot": slot.to_string()}})
}

/// An Electra/Fulu aggregate of one committee of `committee_size` members.
pub fn aggregate(slot: u64, aggregator: u64, source: u64, target: u64, head: &str, committee_size: usize) -> Value {
    // SSZ bitlist: committee_size bits (every other one set), then the length delimiter.
    let mut bits = vec![0x55u8; committee_size / 8 + 1];
    let last = committee_size / 8;
    bits[last] = (bits[last] & ((1 << (committee_size % 8)) - 1)) | (1 << (committee_size % 8));
    json!({"type": "AGGREGATE_AND_PROOF_V2", "fork_info": fork_info(),
        "aggregate_and_proof": {"version": "FULU", "data": {"aggregator_index": aggregator.to_string(),
            "aggregate": {"aggregation_bits": format!("0x{}", hex::encode(bits)),
                "data": {"slot": slot.to_string(), "index": "0", "beacon_block_root": head,
                    "source": {"epoch": source.to_string(), "root": root(source)},
                    "target": {"epoch": target.to_string(), "root": root(target)}},
                "signature": sig(), "committee_bits": "0x0100000000000000"},
            "selection_proof": sig()}}})
}

pub fn sync_message(slot: u64, head: &str) -> Value {
    json!({"type": "SYNC_COMMITTEE_MESSAGE", "fork_info": fork_info(),
        "sync_committee_message": {"beacon_block_root": head, "slot": slot.to_string()}})
}

pub fn sync_selection(slot: u64, subcommittee: u64) -> Value {
    json!({"type": "SYNC_COMMITTEE_SELECTION_PROOF", "fork_info": fork_info(),
        "sync_aggregator_selection_data": {"slot": slot.to_string(), "subcommittee_index": subcommittee.to_string()}})
}

pub fn contribution(slot: u64, aggregator: u64, subcommittee: u64, head: &str) -> Value {
    json!({"type": "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF", "fork_info": fork_info(),
        "contribution_and_proof": {"aggregator_index": aggregator.to_string(), "selection_proof": sig(),
            "contribution": {"slot": slot.to_string(), "beacon_block_root": head, "subcommittee_index": subcommittee.to_string(),
                "aggregation_bits": format!("0x{}", "ff".repeat(16)), "signature": sig()}}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade::network::Network;
    use palisade::signing::parse_signing_request;
    use palisade::types::PublicKey;

    /// Every body the load generator sends is one the signer accepts.
    #[test]
    fn every_message_parses() {
        let net = Network::load("mainnet").unwrap();
        let pk = PublicKey([0; 48]);
        let head = root(7);
        let slot = FULU_EPOCH * 32 + 5;
        for (name, v) in [
            ("attestation", attestation(slot, FULU_EPOCH, FULU_EPOCH + 1, &head)),
            ("randao", randao(FULU_EPOCH)),
            ("block", block(slot, 3, &head)),
            ("aggregation slot", aggregation_slot(slot)),
            ("aggregate", aggregate(slot, 9, FULU_EPOCH, FULU_EPOCH + 1, &head, 500)),
            (
                "aggregate of 8",
                aggregate(slot, 9, FULU_EPOCH, FULU_EPOCH + 1, &head, 8),
            ),
            ("sync message", sync_message(slot, &head)),
            ("sync selection", sync_selection(slot, 2)),
            ("contribution", contribution(slot, 9, 2, &head)),
        ] {
            let body = serde_json::to_vec(&v).unwrap();
            parse_signing_request(&net, &pk.to_string(), &body).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
