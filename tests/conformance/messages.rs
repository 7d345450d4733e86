//! The messages a validator signs at each fork, in their consensus JSON form, and the root
//! each must be signed over, computed by the suite's own SSZ (`ssz.rs`) and the spec's
//! domain rules.

use serde_json::{Value, json};

use super::chain::{ALTAIR, BELLATRIX, CAPELLA, Chain, DENEB, ELECTRA, SLOTS_PER_EPOCH, hex0x};
use super::ssz;

fn bytes(seed: u64, n: usize) -> String {
    let v: Vec<u8> = (0..n)
        .map(|i| (seed as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect();
    hex0x(&v)
}

/// A signature-shaped 96 bytes (contents do not matter to a signer).
fn sig(seed: u64) -> String {
    bytes(seed, 96)
}

pub fn attestation_data(slot: u64, source: u64, target: u64, seed: u64) -> Value {
    json!({
        "slot": slot.to_string(),
        "index": (seed % 64).to_string(),
        "beacon_block_root": bytes(seed, 32),
        "source": {"epoch": source.to_string(), "root": bytes(seed + 1, 32)},
        "target": {"epoch": target.to_string(), "root": bytes(seed + 2, 32)},
    })
}

fn header(slot: u64, seed: u64) -> Value {
    json!({
        "slot": slot.to_string(),
        "proposer_index": (seed % 1000).to_string(),
        "parent_root": bytes(seed, 32),
        "state_root": bytes(seed + 1, 32),
        "body_root": bytes(seed + 2, 32),
    })
}

fn indexed(slot: u64, seed: u64) -> Value {
    json!({
        "attesting_indices": ["1", "5", (seed % 900 + 10).to_string()],
        "data": attestation_data(slot, 1, 2, seed),
        "signature": sig(seed),
    })
}

/// A full phase0 or altair block with one of every operation, so the lists are exercised.
fn full_block(slot: u64, altair: bool, seed: u64) -> Value {
    let mut body = json!({
        "randao_reveal": sig(seed),
        "eth1_data": {"deposit_root": bytes(seed, 32), "deposit_count": "4096", "block_hash": bytes(seed + 3, 32)},
        "graffiti": bytes(seed + 4, 32),
        "proposer_slashings": [{
            "signed_header_1": {"message": header(slot - 5, seed), "signature": sig(seed + 1)},
            "signed_header_2": {"message": header(slot - 5, seed + 9), "signature": sig(seed + 2)},
        }],
        "attester_slashings": [{"attestation_1": indexed(slot - 7, seed), "attestation_2": indexed(slot - 7, seed + 5)}],
        "attestations": [{
            "aggregation_bits": "0x0b",
            "data": attestation_data(slot - 1, 3, 4, seed),
            "signature": sig(seed + 3),
        }],
        "deposits": [{
            "proof": (0..33).map(|i| bytes(seed + i, 32)).collect::<Vec<_>>(),
            "data": {"pubkey": bytes(seed, 48), "withdrawal_credentials": bytes(seed + 1, 32),
                     "amount": "32000000000", "signature": sig(seed + 4)},
        }],
        "voluntary_exits": [{"message": {"epoch": "3", "validator_index": "77"}, "signature": sig(seed + 5)}],
    });
    if altair {
        body["sync_aggregate"] =
            json!({"sync_committee_bits": bytes(seed, 64), "sync_committee_signature": sig(seed + 6)});
    }
    json!({
        "slot": slot.to_string(),
        "proposer_index": (seed % 1000).to_string(),
        "parent_root": bytes(seed + 7, 32),
        "state_root": bytes(seed + 8, 32),
        "body": body,
    })
}

fn aggregate(slot: u64, target: u64, electra: bool, seed: u64) -> Value {
    let mut a = json!({
        "aggregation_bits": if electra { "0x0f00000000000001" } else { "0x3f01" },
        "data": attestation_data(slot, target - 1, target, seed),
        "signature": sig(seed),
    });
    if electra {
        a["data"]["index"] = "0".into();
        a["committee_bits"] = "0x0100000000000000".into();
    }
    json!({"aggregator_index": (seed % 500).to_string(), "aggregate": a, "selection_proof": sig(seed + 1)})
}

/// One message to sign, with what the oracle needs to compute its root.
#[derive(Clone, Debug)]
pub enum Msg {
    Block {
        slot: u64,
        full: Option<Value>,
        header: Value,
    },
    Attestation(Value),
    AggregationSlot(u64),
    Aggregate {
        electra: bool,
        value: Value,
    },
    Randao(u64),
    Exit(Value),
    SyncMessage {
        slot: u64,
        root: String,
    },
    SyncSelection(Value),
    Contribution(Value),
    Registration(Value),
    Deposit(Value),
}

impl Msg {
    pub fn kind(&self) -> &'static str {
        match self {
            Msg::Block { .. } => "block",
            Msg::Attestation(_) => "attestation",
            Msg::AggregationSlot(_) => "aggregation slot",
            Msg::Aggregate { .. } => "aggregate",
            Msg::Randao(_) => "randao",
            Msg::Exit(_) => "exit",
            Msg::SyncMessage { .. } => "sync message",
            Msg::SyncSelection(_) => "sync selection proof",
            Msg::Contribution(_) => "contribution",
            Msg::Registration(_) => "registration",
            Msg::Deposit(_) => "deposit",
        }
    }

    /// The slot whose fork a client picks the container and `fork_info` from.
    pub fn signing_slot(&self) -> u64 {
        let slot_of = |v: &Value| v["slot"].as_str().unwrap().parse::<u64>().unwrap();
        match self {
            Msg::Block { slot, .. } | Msg::AggregationSlot(slot) | Msg::SyncMessage { slot, .. } => *slot,
            Msg::Attestation(a) => self::epoch_of(a["target"]["epoch"].as_str().unwrap()) * SLOTS_PER_EPOCH,
            Msg::Aggregate { value, .. } => slot_of(&value["aggregate"]["data"]),
            Msg::Randao(e) => e * SLOTS_PER_EPOCH,
            Msg::Exit(x) => self::epoch_of(x["epoch"].as_str().unwrap()) * SLOTS_PER_EPOCH,
            Msg::SyncSelection(s) => slot_of(s),
            Msg::Contribution(c) => slot_of(&c["contribution"]),
            Msg::Registration(_) | Msg::Deposit(_) => 0,
        }
    }

    /// The epoch whose fork the domain is taken from (spec: the message's epoch).
    fn domain_epoch(&self) -> u64 {
        match self {
            Msg::Attestation(a) => epoch_of(a["target"]["epoch"].as_str().unwrap()),
            Msg::Randao(e) => *e,
            Msg::Exit(x) => epoch_of(x["epoch"].as_str().unwrap()),
            other => other.signing_slot() / SLOTS_PER_EPOCH,
        }
    }

    /// The root a correct signer signs, by the consensus specs.
    pub fn signing_root(&self, chain: &Chain) -> [u8; 32] {
        let epoch = self.domain_epoch();
        let version = chain.version(chain.fork_at(epoch));
        let on_chain = |t: [u8; 4]| ssz::domain(t, version, chain.gvr);
        let (object, domain) = match self {
            Msg::Block { header, .. } => (
                ssz::hash_tree_root(&ssz::block_header(), header),
                on_chain([0, 0, 0, 0]),
            ),
            Msg::Attestation(a) => (ssz::hash_tree_root(&ssz::attestation_data(), a), on_chain([1, 0, 0, 0])),
            Msg::Randao(e) => (
                ssz::hash_tree_root(&ssz::Ty::U64, &Value::from(e.to_string())),
                on_chain([2, 0, 0, 0]),
            ),
            Msg::Exit(x) => {
                // EIP-7044: from Deneb on, exits are signed with the Capella version.
                let v = if chain.fork_at(epoch) >= DENEB {
                    chain.version(CAPELLA)
                } else {
                    version
                };
                (
                    ssz::hash_tree_root(&ssz::voluntary_exit(), x),
                    ssz::domain([4, 0, 0, 0], v, chain.gvr),
                )
            }
            Msg::AggregationSlot(s) => (
                ssz::hash_tree_root(&ssz::Ty::U64, &Value::from(s.to_string())),
                on_chain([5, 0, 0, 0]),
            ),
            Msg::Aggregate { electra, value } => (
                ssz::hash_tree_root(&ssz::aggregate_and_proof(*electra), value),
                on_chain([6, 0, 0, 0]),
            ),
            Msg::SyncMessage { root, .. } => (
                ssz::hex_bytes(&Value::from(root.clone())).try_into().unwrap(),
                on_chain([7, 0, 0, 0]),
            ),
            Msg::SyncSelection(s) => (
                ssz::hash_tree_root(&ssz::sync_aggregator_selection_data(), s),
                on_chain([8, 0, 0, 0]),
            ),
            Msg::Contribution(c) => (
                ssz::hash_tree_root(&ssz::contribution_and_proof(), c),
                on_chain([9, 0, 0, 0]),
            ),
            Msg::Registration(r) => (
                ssz::hash_tree_root(&ssz::validator_registration(), r),
                ssz::domain([0, 0, 0, 1], chain.version(0), [0; 32]),
            ),
            Msg::Deposit(d) => {
                let message = json!({"pubkey": d["pubkey"], "withdrawal_credentials": d["withdrawal_credentials"], "amount": d["amount"]});
                let v: [u8; 4] = ssz::hex_bytes(&d["genesis_fork_version"]).try_into().unwrap();
                (
                    ssz::hash_tree_root(&ssz::deposit_message(), &message),
                    ssz::domain([3, 0, 0, 0], v, [0; 32]),
                )
            }
        };
        ssz::signing_root(object, domain)
    }
}

fn epoch_of(s: &str) -> u64 {
    s.parse().unwrap()
}

/// Everything a validator signs at `fork` (sync duties from Altair, registrations from
/// Bellatrix), for the validator `pubkey`, at `offset` epochs into the fork. Blocks and
/// attestations rise with `offset`, so each key's sequence is never slashable.
pub fn duties(chain: &Chain, fork: usize, offset: u64, pubkey: &str, seed: u64) -> Vec<Msg> {
    let epoch = chain.epoch_in(fork, offset);
    let slot = epoch * SLOTS_PER_EPOCH + 3;
    let full = (fork <= ALTAIR).then(|| full_block(slot, fork == ALTAIR, seed));
    let header = match &full {
        Some(b) => {
            let body_root = ssz::hash_tree_root(&ssz::body(fork == ALTAIR), &b["body"]);
            let h = json!({"slot": b["slot"], "proposer_index": b["proposer_index"], "parent_root": b["parent_root"],
                   "state_root": b["state_root"], "body_root": hex0x(&body_root)});
            // A header and its block share one root (why Web3Signer takes headers).
            assert_eq!(
                ssz::hash_tree_root(&ssz::block(fork == ALTAIR), b),
                ssz::hash_tree_root(&ssz::block_header(), &h)
            );
            h
        }
        None => header(slot, seed),
    };
    let mut out = vec![
        Msg::Randao(epoch),
        Msg::Block { slot, full, header },
        Msg::Attestation(attestation_data(slot, epoch - 1, epoch, seed)),
        Msg::AggregationSlot(slot + 1),
        Msg::Aggregate {
            electra: fork >= ELECTRA,
            value: aggregate(slot + 1, epoch, fork >= ELECTRA, seed),
        },
        Msg::Exit(json!({"epoch": epoch.to_string(), "validator_index": (seed % 1000).to_string()})),
    ];
    if fork >= ALTAIR {
        out.extend([
            Msg::SyncMessage { slot: slot + 2, root: bytes(seed + 11, 32) },
            Msg::SyncSelection(json!({"slot": (slot + 2).to_string(), "subcommittee_index": "2"})),
            Msg::Contribution(json!({
                "aggregator_index": (seed % 700).to_string(),
                "contribution": {"slot": (slot + 2).to_string(), "beacon_block_root": bytes(seed + 12, 32),
                                 "subcommittee_index": "2", "aggregation_bits": bytes(seed, 16), "signature": sig(seed + 8)},
                "selection_proof": sig(seed + 9),
            })),
        ]);
    }
    if fork >= BELLATRIX {
        out.push(Msg::Registration(json!({
            "fee_recipient": bytes(seed, 20),
            "gas_limit": "36000000",
            "timestamp": (1_700_000_000 + epoch).to_string(),
            "pubkey": pubkey,
        })));
    }
    out.push(Msg::Deposit(json!({
        "pubkey": pubkey,
        "withdrawal_credentials": format!("0x01{}{}", "00".repeat(11), &bytes(seed, 20)[2..]),
        "amount": "32000000000",
        "genesis_fork_version": hex0x(&chain.version(0)),
    })));
    out
}
