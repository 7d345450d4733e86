//! A signing job: everything the rest of Palisade needs to know about a request, computed
//! from the body before any key is touched.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::types::{PublicKey, Root, SigningRoot, SlashableMessage, Slot};

/// The Web3Signer eth2 request types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SignType {
    Block,
    BlockV2,
    Attestation,
    AggregationSlot,
    AggregateAndProof,
    AggregateAndProofV2,
    Deposit,
    RandaoReveal,
    VoluntaryExit,
    SyncCommitteeMessage,
    SyncCommitteeSelectionProof,
    SyncCommitteeContributionAndProof,
    ValidatorRegistration,
}

impl SignType {
    pub const ALL: [SignType; 13] = [
        SignType::Block,
        SignType::BlockV2,
        SignType::Attestation,
        SignType::AggregationSlot,
        SignType::AggregateAndProof,
        SignType::AggregateAndProofV2,
        SignType::Deposit,
        SignType::RandaoReveal,
        SignType::VoluntaryExit,
        SignType::SyncCommitteeMessage,
        SignType::SyncCommitteeSelectionProof,
        SignType::SyncCommitteeContributionAndProof,
        SignType::ValidatorRegistration,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SignType::Block => "BLOCK",
            SignType::BlockV2 => "BLOCK_V2",
            SignType::Attestation => "ATTESTATION",
            SignType::AggregationSlot => "AGGREGATION_SLOT",
            SignType::AggregateAndProof => "AGGREGATE_AND_PROOF",
            SignType::AggregateAndProofV2 => "AGGREGATE_AND_PROOF_V2",
            SignType::Deposit => "DEPOSIT",
            SignType::RandaoReveal => "RANDAO_REVEAL",
            SignType::VoluntaryExit => "VOLUNTARY_EXIT",
            SignType::SyncCommitteeMessage => "SYNC_COMMITTEE_MESSAGE",
            SignType::SyncCommitteeSelectionProof => "SYNC_COMMITTEE_SELECTION_PROOF",
            SignType::SyncCommitteeContributionAndProof => "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF",
            SignType::ValidatorRegistration => "VALIDATOR_REGISTRATION",
        }
    }
}

impl SignType {
    /// How many epochs ahead of the wall clock honest clients sign this type. Selection
    /// proofs are computed ahead: Lighthouse up to 2 epochs for sync committees
    /// (`duties_service/sync.rs`, `AGGREGATION_PRE_COMPUTE_EPOCHS`), Teku and Nimbus for the
    /// next epoch's attestation duties (`AttestationDutyScheduler`, `duties_service.nim`).
    /// Everything else is signed for the current slot.
    pub fn epochs_ahead(self) -> u64 {
        match self {
            SignType::AggregationSlot | SignType::SyncCommitteeSelectionProof => 2,
            _ => 0,
        }
    }
}

impl fmt::Display for SignType {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SignType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SignType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown signing type `{s}`"))
    }
}

/// A parsed, validated signing request: the one value that travels the sign path.
#[derive(Clone, Debug)]
pub struct SigningJob {
    pub pubkey: PublicKey,
    pub sign_type: SignType,
    pub signing_root: SigningRoot,
    /// For blocks and attestations, what slashing protection must decide on first.
    pub slashable: Option<SlashableMessage>,
    /// The chain the signature is bound to (`fork_info.genesis_validators_root`), checked
    /// against the chain pin; `None` for DEPOSIT and VALIDATOR_REGISTRATION, whose domains do
    /// not use the genesis validators root.
    pub chain: Option<Root>,
    /// The slot the message belongs to, for the clock window (the start of the epoch for
    /// RANDAO reveals; the later of the slot and the target's first slot for attestations);
    /// `None` for the types that are not bound to a time (exits, deposits, registrations).
    pub slot: Option<Slot>,
}
