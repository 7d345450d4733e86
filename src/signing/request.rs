//! The JSON body of `POST /api/v1/eth2/sign/{pubkey}` as Web3Signer defines it.
//!
//! The body is read in two steps: an envelope with the common fields and each payload kept
//! as raw JSON, then only the payload of the request's `type`. Each step reports the path of
//! a bad field (`attestation.source.epoch: ...`).

use serde::Deserialize;
use serde_json::value::RawValue;

use super::job::SignType;
use crate::consensus::containers::{BeaconBlockHeader, Fork};
use crate::network::ForkName;
use crate::types::{Epoch, PublicKeyBytes, Root, Slot, Version};

#[derive(Deserialize)]
pub struct Envelope<'a> {
    #[serde(rename = "type")]
    pub sign_type: SignType,
    pub fork_info: Option<ForkInfo>,
    pub signing_root: Option<Root>,
    #[serde(rename = "signingRoot")]
    pub signing_root_camel: Option<Root>,

    #[serde(borrow)]
    pub block: Option<&'a RawValue>,
    #[serde(borrow)]
    pub beacon_block: Option<&'a RawValue>,
    #[serde(borrow)]
    pub attestation: Option<&'a RawValue>,
    #[serde(borrow)]
    pub aggregation_slot: Option<&'a RawValue>,
    #[serde(borrow)]
    pub aggregate_and_proof: Option<&'a RawValue>,
    #[serde(borrow)]
    pub deposit: Option<&'a RawValue>,
    #[serde(borrow)]
    pub randao_reveal: Option<&'a RawValue>,
    #[serde(borrow)]
    pub voluntary_exit: Option<&'a RawValue>,
    #[serde(borrow)]
    pub sync_committee_message: Option<&'a RawValue>,
    #[serde(borrow)]
    pub sync_aggregator_selection_data: Option<&'a RawValue>,
    #[serde(borrow)]
    pub contribution_and_proof: Option<&'a RawValue>,
    #[serde(borrow)]
    pub validator_registration: Option<&'a RawValue>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ForkInfo {
    pub fork: Fork,
    pub genesis_validators_root: Root,
}

/// `beacon_block` of BLOCK_V2.
#[derive(Deserialize)]
pub struct BlockV2<'a> {
    pub version: ForkName,
    #[serde(borrow)]
    pub block: Option<&'a RawValue>,
    pub block_header: Option<BeaconBlockHeader>,
}

/// `aggregate_and_proof` of AGGREGATE_AND_PROOF_V2.
#[derive(Deserialize)]
pub struct VersionedAggregate<'a> {
    pub version: ForkName,
    #[serde(borrow)]
    pub data: &'a RawValue,
}

#[derive(Deserialize)]
pub struct AggregationSlot {
    pub slot: Slot,
}

#[derive(Deserialize)]
pub struct RandaoReveal {
    pub epoch: Epoch,
}

#[derive(Deserialize)]
pub struct SyncCommitteeMessage {
    pub beacon_block_root: Root,
    pub slot: Slot,
}

/// `deposit` of DEPOSIT: a `DepositMessage` plus the fork version the deposit is for.
#[derive(Deserialize)]
pub struct DepositRequest {
    pub pubkey: PublicKeyBytes,
    pub withdrawal_credentials: Root,
    #[serde(with = "crate::types::quoted_u64")]
    pub amount: u64,
    pub genesis_fork_version: Version,
}

/// Parses JSON and reports a failure with the path of the offending field, under `prefix`
/// (`attestation.source.epoch: invalid type ...`).
pub fn parse_at<'a, T: Deserialize<'a>>(prefix: &str, json: &'a str) -> Result<T, String> {
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match (prefix.is_empty(), path.as_str()) {
            (true, ".") => inner.to_string(),
            (true, p) => format!("{p}: {inner}"),
            (false, ".") => format!("{prefix}: {inner}"),
            (false, p) => format!("{prefix}.{p}: {inner}"),
        }
    })
}
