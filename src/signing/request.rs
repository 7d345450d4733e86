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

/// The top level of a sign request. Unknown top-level fields are refused, except the ones a
/// client is known to send that cannot change the signing root.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<'a> {
    #[serde(rename = "type")]
    pub sign_type: SignType,
    /// Parsed only for the types whose domain uses it: DEPOSIT and VALIDATOR_REGISTRATION
    /// ignore it (Nimbus sends registrations with a zero `genesis_validators_root` there).
    #[serde(borrow)]
    pub fork_info: Option<&'a RawValue>,
    pub signing_root: Option<Root>,
    #[serde(rename = "signingRoot")]
    pub signing_root_camel: Option<Root>,
    /// Nimbus in its verifying-web3signer mode sends Merkle proofs of block body fields
    /// (`validator_pool.nim`); they prove fields of the header, they do not change its root.
    #[serde(borrow, rename = "proofs")]
    pub _proofs: Option<&'a RawValue>,

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

impl<'a> Envelope<'a> {
    /// Every payload field with its name, present or not.
    pub fn payloads(&self) -> [(&'static str, Option<&'a RawValue>); 12] {
        [
            ("block", self.block),
            ("beacon_block", self.beacon_block),
            ("attestation", self.attestation),
            ("aggregation_slot", self.aggregation_slot),
            ("aggregate_and_proof", self.aggregate_and_proof),
            ("deposit", self.deposit),
            ("randao_reveal", self.randao_reveal),
            ("voluntary_exit", self.voluntary_exit),
            ("sync_committee_message", self.sync_committee_message),
            ("sync_aggregator_selection_data", self.sync_aggregator_selection_data),
            ("contribution_and_proof", self.contribution_and_proof),
            ("validator_registration", self.validator_registration),
        ]
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkInfo {
    pub fork: Fork,
    pub genesis_validators_root: Root,
}

/// `beacon_block` of BLOCK_V2.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockV2<'a> {
    pub version: ForkName,
    #[serde(borrow)]
    pub block: Option<&'a RawValue>,
    pub block_header: Option<BeaconBlockHeader>,
}

/// `aggregate_and_proof` in its wrapped form `{version, data}` (either aggregate type).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionedAggregate<'a> {
    pub version: ForkName,
    #[serde(borrow)]
    pub data: &'a RawValue,
}

/// Tells the wrapped form of an aggregate from the bare one; other keys are left to the
/// strict parse that follows.
#[derive(Deserialize)]
pub struct AggregateForm<'a> {
    pub version: Option<serde::de::IgnoredAny>,
    #[serde(borrow)]
    pub data: Option<&'a RawValue>,
}

/// Just the slot of a block, read before its container is chosen.
#[derive(Deserialize)]
pub struct SlotProbe {
    pub slot: Slot,
}

/// Just `aggregate.data.slot` of an aggregate, read before its container is chosen.
#[derive(Deserialize)]
pub struct AggregateSlotProbe {
    pub aggregate: AttestationSlotProbe,
}

#[derive(Deserialize)]
pub struct AttestationSlotProbe {
    pub data: SlotProbe,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationSlot {
    pub slot: Slot,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandaoReveal {
    pub epoch: Epoch,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncCommitteeMessage {
    pub beacon_block_root: Root,
    pub slot: Slot,
}

/// `deposit` of DEPOSIT: a `DepositMessage` plus the fork version the deposit is for.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    pub pubkey: PublicKeyBytes,
    pub withdrawal_credentials: Root,
    #[serde(with = "crate::types::quoted_u64")]
    pub amount: u64,
    pub genesis_fork_version: Version,
}
