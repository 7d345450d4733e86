//! Each validator client's Web3Signer requests, built as its own source builds them, and its
//! reading of the answers. Each file names the source it follows.

pub mod lighthouse;
pub mod lodestar;
pub mod nimbus;
pub mod prysm;
pub mod teku;

use serde_json::{Map, Value, json};

use super::chain::{Chain, FORKS, SLOTS_PER_EPOCH, hex0x};
use super::messages::Msg;

/// What a client makes of an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Signed([u8; 96]),
    /// The client recognised a slashing-protection refusal as such.
    SlashingRefused,
    /// The client recognised an unknown key as such.
    UnknownKey,
    /// Any other failure, as the client reports it.
    Failed(String),
}

/// An HTTP answer as the client sees it.
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

/// How a client reads `GET /api/v1/eth2/publicKeys`.
pub type KeyListReader = fn(&Answer) -> Result<Vec<String>, String>;

pub struct Client {
    pub name: &'static str,
    /// The source files the shapes below are taken from.
    pub sources: &'static str,
    /// Header name and value pairs the client sends with a sign request.
    pub headers: &'static [(&'static str, &'static str)],
    /// Whether the client sends a `signingRoot`.
    pub sends_root: bool,
    /// The body for `msg` (the root is added or removed by the caller).
    pub request: fn(&Chain, &Msg) -> Option<Value>,
    pub read: fn(&Answer) -> Outcome,
    /// Reading `GET /api/v1/eth2/publicKeys`, for the clients that fetch keys.
    pub read_keys: Option<KeyListReader>,
}

pub fn all() -> Vec<Client> {
    vec![
        lighthouse::client(),
        teku::client(),
        prysm::client(),
        nimbus::client(),
        lodestar::client(),
    ]
}

/// `{fork, genesis_validators_root}` as a beacon node describes the fork at `epoch`.
pub fn fork_info(chain: &Chain, epoch: u64) -> Value {
    json!({"fork": chain.fork_object(epoch), "genesis_validators_root": hex0x(&chain.gvr)})
}

pub fn epoch_of_slot(slot: u64) -> u64 {
    slot / SLOTS_PER_EPOCH
}

/// The fork name a client writes in `version` fields.
pub fn version_name(chain: &Chain, slot: u64) -> &'static str {
    FORKS[chain.fork_at(epoch_of_slot(slot))]
}

/// `{"type": .., "fork_info": .., <field>: <payload>}` in that order.
pub fn body(t: &str, fork_info: Option<Value>, field: &str, payload: Value) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), t.into());
    if let Some(fi) = fork_info {
        m.insert("fork_info".into(), fi);
    }
    m.insert(field.into(), payload);
    Value::Object(m)
}

/// The payload field and value most clients send for the simple types.
pub fn simple_payload(msg: &Msg) -> Option<(&'static str, &'static str, Value)> {
    Some(match msg {
        Msg::Attestation(a) => ("ATTESTATION", "attestation", a.clone()),
        Msg::AggregationSlot(s) => ("AGGREGATION_SLOT", "aggregation_slot", json!({"slot": s.to_string()})),
        Msg::Randao(e) => ("RANDAO_REVEAL", "randao_reveal", json!({"epoch": e.to_string()})),
        Msg::Exit(x) => ("VOLUNTARY_EXIT", "voluntary_exit", x.clone()),
        Msg::SyncMessage { slot, root } => (
            "SYNC_COMMITTEE_MESSAGE",
            "sync_committee_message",
            json!({"beacon_block_root": root, "slot": slot.to_string()}),
        ),
        Msg::SyncSelection(s) => (
            "SYNC_COMMITTEE_SELECTION_PROOF",
            "sync_aggregator_selection_data",
            s.clone(),
        ),
        Msg::Contribution(c) => (
            "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF",
            "contribution_and_proof",
            c.clone(),
        ),
        Msg::Registration(r) => ("VALIDATOR_REGISTRATION", "validator_registration", r.clone()),
        Msg::Deposit(d) => ("DEPOSIT", "deposit", d.clone()),
        Msg::Block { .. } | Msg::Aggregate { .. } => return None,
    })
}

/// The epoch a beacon-node style `fork_info` is taken at for `msg`.
pub fn fork_epoch(msg: &Msg) -> u64 {
    match msg {
        Msg::Attestation(a) => a["target"]["epoch"].as_str().unwrap().parse().unwrap(),
        Msg::Randao(e) => *e,
        Msg::Exit(x) => x["epoch"].as_str().unwrap().parse().unwrap(),
        other => epoch_of_slot(other.signing_slot()),
    }
}

/// A JSON `{"signature": "0x.."}` body, read into 96 bytes.
pub fn signature_from_json(body: &str) -> Result<[u8; 96], String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let s = v["signature"].as_str().ok_or("no signature field")?;
    signature_from_hex(s)
}

pub fn signature_from_hex(s: &str) -> Result<[u8; 96], String> {
    let b = hex::decode(s.trim().strip_prefix("0x").ok_or("no 0x prefix")?).map_err(|e| e.to_string())?;
    b.try_into().map_err(|_| "not 96 bytes".to_string())
}

pub fn is_json(a: &Answer) -> bool {
    a.content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/json"))
}

/// A JSON array of 0x pubkeys.
pub fn keys_from_json(body: &str) -> Result<Vec<String>, String> {
    serde_json::from_str(body).map_err(|e| format!("invalid key list: {e}"))
}
