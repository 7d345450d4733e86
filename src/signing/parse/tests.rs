//! Signing roots against independently computed vectors, and refusals of malformed bodies.

use super::*;
use serde_json::Value;

fn network_for(name: &str) -> Network {
    match name {
        "minimal" => Network::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/lodestar-dev-minimal.yaml"
        ))
        .unwrap(),
        other => Network::load(other).unwrap(),
    }
}

fn vectors() -> Vec<Value> {
    include_str!("../../../tests/data/signing-vectors/sample.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every recorded vector: the root Palisade computes is the independently computed one.
#[test]
fn signing_roots_match_the_vectors() {
    let vs = vectors();
    assert_eq!(vs.len(), 36);
    for v in vs {
        let name = v["name"].as_str().unwrap();
        let net = network_for(v["network"].as_str().unwrap());
        let pk: PublicKey = v["pubkey"].as_str().unwrap().parse().unwrap();
        let body = serde_json::to_vec(&v["request"]).unwrap();
        let job = parse_signing_request(&net, &pk.to_string(), &body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            job.signing_root.to_string(),
            v["signing_root"].as_str().unwrap(),
            "{name}"
        );
    }
}

/// Every one of the 13 types is covered by the vectors.
#[test]
fn vectors_cover_every_type() {
    let types: std::collections::HashSet<String> = vectors()
        .iter()
        .map(|v| v["request"]["type"].as_str().unwrap().to_string())
        .collect();
    for t in SignType::ALL {
        assert!(types.contains(t.as_str()), "no vector for {t}");
    }
}

fn mainnet() -> Network {
    Network::load("mainnet").unwrap()
}

fn pk() -> PublicKey {
    "0xa99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c"
        .parse()
        .unwrap()
}

/// A valid mainnet Electra request of each of a few shapes, as JSON values.
fn electra_header(slot: u64, version: &str) -> Value {
    serde_json::json!({
        "type": "BLOCK_V2",
        "fork_info": {"fork": {"previous_version": "0x04000000", "current_version": "0x05000000", "epoch": "364032"},
                      "genesis_validators_root": "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"},
        "beacon_block": {"version": version, "block_header": {"slot": slot.to_string(), "proposer_index": "5",
            "parent_root": format!("0x{}", "11".repeat(32)), "state_root": format!("0x{}", "22".repeat(32)),
            "body_root": format!("0x{}", "33".repeat(32))}}
    })
}

fn parse(v: &Value) -> Result<SigningJob, ParseError> {
    parse_signing_request(&mainnet(), &pk().to_string(), v.to_string().as_bytes())
}

fn error(v: &Value) -> String {
    parse(v).unwrap_err().to_string()
}

const ELECTRA_SLOT: u64 = 364_033 * 32;

#[test]
fn nothing_unknown_is_dropped() {
    let good = electra_header(ELECTRA_SLOT, "ELECTRA");
    assert!(parse(&good).is_ok());
    let mut top = good.clone();
    top["extra"] = 1.into();
    assert!(error(&top).contains("unknown field `extra`"), "{}", error(&top));
    let mut inner = good.clone();
    inner["beacon_block"]["block_header"]["graffiti"] = "0x00".into();
    let e = error(&inner);
    assert!(e.contains("beacon_block.block_header") && e.contains("graffiti"), "{e}");
    let mut other_payload = good.clone();
    other_payload["attestation"] = serde_json::json!({});
    assert!(
        error(&other_payload).contains("`attestation` does not belong"),
        "{}",
        error(&other_payload)
    );
    // Nimbus's verifying mode: Merkle proofs beside the header are tolerated.
    let mut proofs = good.clone();
    proofs["proofs"] = serde_json::json!([{"index": "105", "proof": []}]);
    assert_eq!(parse(&proofs).unwrap().signing_root, parse(&good).unwrap().signing_root);
    // Trailing data after the document.
    let trailing = format!("{good} x");
    assert!(parse_signing_request(&mainnet(), &pk().to_string(), trailing.as_bytes()).is_err());
}

#[test]
fn the_version_must_be_the_slots_fork() {
    let e = error(&electra_header(ELECTRA_SLOT, "DENEB"));
    assert!(e.contains("DENEB") && e.contains("ELECTRA"), "{e}");
    let mut block_v1 = electra_header(ELECTRA_SLOT, "ELECTRA");
    block_v1["type"] = "BLOCK".into();
    block_v1["block"] = serde_json::json!({"slot": ELECTRA_SLOT.to_string()});
    block_v1.as_object_mut().unwrap().remove("beacon_block");
    let e = error(&block_v1);
    assert!(e.contains("BLOCK_V2") && e.contains("ELECTRA"), "{e}");
}

#[test]
fn registrations_and_deposits_ignore_fork_info() {
    let reg = |fork_info: Option<Value>| {
        let mut v = serde_json::json!({"type": "VALIDATOR_REGISTRATION", "validator_registration": {
            "fee_recipient": format!("0x{}", "ab".repeat(20)), "gas_limit": "30000000", "timestamp": "1700000000",
            "pubkey": pk().to_string()}});
        if let Some(fi) = fork_info {
            v["fork_info"] = fi;
        }
        parse(&v).unwrap()
    };
    let none = reg(None);
    assert_eq!(none.chain, None);
    let zero = reg(Some(serde_json::json!({"fork": {"previous_version": "0x05000000",
        "current_version": "0x06000000", "epoch": "411392"}, "genesis_validators_root": format!("0x{}", "00".repeat(32))})));
    assert_eq!((zero.chain, zero.signing_root), (None, none.signing_root));
    // Whatever it holds: it is not read.
    assert_eq!(reg(Some("garbage".into())).signing_root, none.signing_root);
}
