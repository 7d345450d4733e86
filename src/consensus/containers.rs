//! The consensus-specs containers Palisade signs, with their JSON form (Web3Signer API) and
//! their SSZ `hash_tree_root`. Only what a validator signs is here.

use serde::{Deserialize, Serialize};
use ssz_types::{BitList, BitVector, FixedVector, VariableList};
use tree_hash_derive::TreeHash;
use typenum::{U2, U16, U33, U128, U2048};

use super::preset::Preset;
use crate::types::{Address, Epoch, PublicKeyBytes, Root, SignatureBytes, Slot, Version, quoted_u64};

// ---------------------------------------------------------------- signing envelope

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
pub struct Fork {
    pub previous_version: Version,
    pub current_version: Version,
    pub epoch: Epoch,
}

#[derive(Clone, Debug, TreeHash)]
pub struct ForkData {
    pub current_version: Version,
    pub genesis_validators_root: Root,
}

#[derive(Clone, Debug, TreeHash)]
pub struct SigningData {
    pub object_root: Root,
    pub domain: Root,
}

// ---------------------------------------------------------------- phase0

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub epoch: Epoch,
    pub root: Root,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
pub struct AttestationData {
    pub slot: Slot,
    #[serde(with = "quoted_u64")]
    pub index: u64,
    pub beacon_block_root: Root,
    pub source: Checkpoint,
    pub target: Checkpoint,
}

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    pub aggregation_bits: BitList<U2048>,
    pub data: AttestationData,
    pub signature: SignatureBytes,
}

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
pub struct IndexedAttestation {
    #[serde(with = "ssz_types::serde_utils::quoted_u64_var_list")]
    pub attesting_indices: VariableList<u64, U2048>,
    pub data: AttestationData,
    pub signature: SignatureBytes,
}

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
pub struct AttesterSlashing {
    pub attestation_1: IndexedAttestation,
    pub attestation_2: IndexedAttestation,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
pub struct BeaconBlockHeader {
    pub slot: Slot,
    #[serde(with = "quoted_u64")]
    pub proposer_index: u64,
    pub parent_root: Root,
    pub state_root: Root,
    pub body_root: Root,
}

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
pub struct SignedBeaconBlockHeader {
    pub message: BeaconBlockHeader,
    pub signature: SignatureBytes,
}

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
pub struct ProposerSlashing {
    pub signed_header_1: SignedBeaconBlockHeader,
    pub signed_header_2: SignedBeaconBlockHeader,
}

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
pub struct Eth1Data {
    pub deposit_root: Root,
    #[serde(with = "quoted_u64")]
    pub deposit_count: u64,
    pub block_hash: Root,
}

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
pub struct DepositData {
    pub pubkey: PublicKeyBytes,
    pub withdrawal_credentials: Root,
    #[serde(with = "quoted_u64")]
    pub amount: u64,
    pub signature: SignatureBytes,
}

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
pub struct Deposit {
    pub proof: FixedVector<Root, U33>,
    pub data: DepositData,
}

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
pub struct VoluntaryExit {
    pub epoch: Epoch,
    #[serde(with = "quoted_u64")]
    pub validator_index: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
pub struct SignedVoluntaryExit {
    pub message: VoluntaryExit,
    pub signature: SignatureBytes,
}

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
pub struct BeaconBlockBodyPhase0 {
    pub randao_reveal: SignatureBytes,
    pub eth1_data: Eth1Data,
    pub graffiti: Root,
    pub proposer_slashings: VariableList<ProposerSlashing, U16>,
    pub attester_slashings: VariableList<AttesterSlashing, U2>,
    pub attestations: VariableList<Attestation, U128>,
    pub deposits: VariableList<Deposit, U16>,
    pub voluntary_exits: VariableList<SignedVoluntaryExit, U16>,
}

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
pub struct BeaconBlockPhase0 {
    pub slot: Slot,
    #[serde(with = "quoted_u64")]
    pub proposer_index: u64,
    pub parent_root: Root,
    pub state_root: Root,
    pub body: BeaconBlockBodyPhase0,
}

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
pub struct AggregateAndProof {
    #[serde(with = "quoted_u64")]
    pub aggregator_index: u64,
    pub aggregate: Attestation,
    pub selection_proof: SignatureBytes,
}

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
pub struct DepositMessage {
    pub pubkey: PublicKeyBytes,
    pub withdrawal_credentials: Root,
    #[serde(with = "quoted_u64")]
    pub amount: u64,
}

// ---------------------------------------------------------------- altair

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
#[serde(bound = "")]
pub struct SyncAggregate<P: Preset> {
    pub sync_committee_bits: BitVector<P::SyncCommitteeSize>,
    pub sync_committee_signature: SignatureBytes,
}

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
#[serde(bound = "")]
pub struct BeaconBlockBodyAltair<P: Preset> {
    pub randao_reveal: SignatureBytes,
    pub eth1_data: Eth1Data,
    pub graffiti: Root,
    pub proposer_slashings: VariableList<ProposerSlashing, U16>,
    pub attester_slashings: VariableList<AttesterSlashing, U2>,
    pub attestations: VariableList<Attestation, U128>,
    pub deposits: VariableList<Deposit, U16>,
    pub voluntary_exits: VariableList<SignedVoluntaryExit, U16>,
    pub sync_aggregate: SyncAggregate<P>,
}

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
#[serde(bound = "")]
pub struct BeaconBlockAltair<P: Preset> {
    pub slot: Slot,
    #[serde(with = "quoted_u64")]
    pub proposer_index: u64,
    pub parent_root: Root,
    pub state_root: Root,
    pub body: BeaconBlockBodyAltair<P>,
}

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
pub struct SyncAggregatorSelectionData {
    pub slot: Slot,
    #[serde(with = "quoted_u64")]
    pub subcommittee_index: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
#[serde(bound = "")]
pub struct SyncCommitteeContribution<P: Preset> {
    pub slot: Slot,
    pub beacon_block_root: Root,
    #[serde(with = "quoted_u64")]
    pub subcommittee_index: u64,
    pub aggregation_bits: BitVector<P::SyncSubcommitteeSize>,
    pub signature: SignatureBytes,
}

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
#[serde(bound = "")]
pub struct ContributionAndProof<P: Preset> {
    #[serde(with = "quoted_u64")]
    pub aggregator_index: u64,
    pub contribution: SyncCommitteeContribution<P>,
    pub selection_proof: SignatureBytes,
}

// ---------------------------------------------------------------- electra

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
#[serde(bound = "")]
pub struct AttestationElectra<P: Preset> {
    pub aggregation_bits: BitList<P::MaxValidatorsPerSlot>,
    pub data: AttestationData,
    pub signature: SignatureBytes,
    pub committee_bits: BitVector<P::MaxCommitteesPerSlot>,
}

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
#[serde(bound = "")]
pub struct AggregateAndProofElectra<P: Preset> {
    #[serde(with = "quoted_u64")]
    pub aggregator_index: u64,
    pub aggregate: AttestationElectra<P>,
    pub selection_proof: SignatureBytes,
}

// ---------------------------------------------------------------- builder-specs

#[derive(Clone, Debug, Serialize, Deserialize, TreeHash)]
#[serde(deny_unknown_fields)]
pub struct ValidatorRegistration {
    pub fee_recipient: Address,
    #[serde(with = "quoted_u64")]
    pub gas_limit: u64,
    #[serde(with = "quoted_u64")]
    pub timestamp: u64,
    pub pubkey: PublicKeyBytes,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::preset::Mainnet;
    use tree_hash::TreeHash;

    /// A block header and its full block share one root: that is why Web3Signer can take a
    /// `block_header` for later forks.
    #[test]
    fn header_root_equals_block_root() {
        let sig = format!("0x{}", "c0".repeat(96));
        let root = |b: u8| format!("0x{}", hex::encode([b; 32]));
        let json = format!(
            r#"{{"slot":"12","proposer_index":"1","parent_root":"{}","state_root":"{}",
              "body":{{"randao_reveal":"{sig}",
              "eth1_data":{{"deposit_root":"{}","deposit_count":"8","block_hash":"{}"}},
              "graffiti":"{}","proposer_slashings":[],"attester_slashings":[],"attestations":[],
              "deposits":[],"voluntary_exits":[],
              "sync_aggregate":{{"sync_committee_bits":"0x{}","sync_committee_signature":"{sig}"}}}}}}"#,
            root(1),
            root(2),
            root(3),
            root(4),
            root(0),
            "ff".repeat(64)
        );
        let block: BeaconBlockAltair<Mainnet> = serde_json::from_str(&json).unwrap();
        let header = BeaconBlockHeader {
            slot: block.slot,
            proposer_index: block.proposer_index,
            parent_root: block.parent_root,
            state_root: block.state_root,
            body_root: block.body.tree_hash_root(),
        };
        assert_eq!(header.tree_hash_root(), block.tree_hash_root());
    }

    #[test]
    fn wrong_bitvector_length_is_refused() {
        // A minimal-preset contribution has 8 bits; 16 bits is a different container.
        let json = |bits: &str| {
            format!(
                r#"{{"slot":"1","beacon_block_root":"0x{}","subcommittee_index":"0","aggregation_bits":"0x{bits}","signature":"0x{}"}}"#,
                "00".repeat(32),
                "c0".repeat(96)
            )
        };
        type MinimalContribution = SyncCommitteeContribution<crate::consensus::preset::Minimal>;
        assert!(serde_json::from_str::<MinimalContribution>(&json("ff")).is_ok());
        assert!(serde_json::from_str::<MinimalContribution>(&json("ffff")).is_err());
        assert!(serde_json::from_str::<SyncCommitteeContribution<Mainnet>>(&json("ff")).is_err());
        assert!(serde_json::from_str::<SyncCommitteeContribution<Mainnet>>(&json(&"ff".repeat(16))).is_ok());
    }
}
