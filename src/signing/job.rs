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

/// Everything about a signing type but how its root is computed (`parse::message_root`), one
/// row per type in the enum's order. Adding a type: a variant and its row here, its arm in
/// `message_root` (and its container in `consensus`), its schema in `openapi.yaml`; the
/// conformance and openapi tests name what is missing.
pub struct TypeRow {
    pub sign_type: SignType,
    /// As the signing API spells it.
    pub name: &'static str,
    /// The body field that carries the type's payload.
    pub payload_field: &'static str,
    /// A block or an attestation: checked and recorded by slashing protection.
    pub slashable: bool,
    /// How many epochs ahead of the wall clock honest clients sign it. Selection proofs are
    /// computed ahead: Lighthouse up to 2 epochs for sync committees (`duties_service/sync.rs`,
    /// `AGGREGATION_PRE_COMPUTE_EPOCHS`), Teku and Nimbus for the next epoch's attestation
    /// duties (`AttestationDutyScheduler`, `duties_service.nim`); the rest for the current slot.
    pub epochs_ahead: u64,
}

const fn row(
    sign_type: SignType,
    name: &'static str,
    payload_field: &'static str,
    slashable: bool,
    epochs_ahead: u64,
) -> TypeRow {
    TypeRow {
        sign_type,
        name,
        payload_field,
        slashable,
        epochs_ahead,
    }
}

pub const TYPES: [TypeRow; 13] = [
    row(SignType::Block, "BLOCK", "block", true, 0),
    row(SignType::BlockV2, "BLOCK_V2", "beacon_block", true, 0),
    row(SignType::Attestation, "ATTESTATION", "attestation", true, 0),
    row(
        SignType::AggregationSlot,
        "AGGREGATION_SLOT",
        "aggregation_slot",
        false,
        2,
    ),
    row(
        SignType::AggregateAndProof,
        "AGGREGATE_AND_PROOF",
        "aggregate_and_proof",
        false,
        0,
    ),
    row(
        SignType::AggregateAndProofV2,
        "AGGREGATE_AND_PROOF_V2",
        "aggregate_and_proof",
        false,
        0,
    ),
    row(SignType::Deposit, "DEPOSIT", "deposit", false, 0),
    row(SignType::RandaoReveal, "RANDAO_REVEAL", "randao_reveal", false, 0),
    row(SignType::VoluntaryExit, "VOLUNTARY_EXIT", "voluntary_exit", false, 0),
    row(
        SignType::SyncCommitteeMessage,
        "SYNC_COMMITTEE_MESSAGE",
        "sync_committee_message",
        false,
        0,
    ),
    row(
        SignType::SyncCommitteeSelectionProof,
        "SYNC_COMMITTEE_SELECTION_PROOF",
        "sync_aggregator_selection_data",
        false,
        2,
    ),
    row(
        SignType::SyncCommitteeContributionAndProof,
        "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF",
        "contribution_and_proof",
        false,
        0,
    ),
    row(
        SignType::ValidatorRegistration,
        "VALIDATOR_REGISTRATION",
        "validator_registration",
        false,
        0,
    ),
];

impl SignType {
    pub const ALL: [SignType; TYPES.len()] = {
        let mut all = [SignType::Block; TYPES.len()];
        let mut i = 0;
        while i < TYPES.len() {
            all[i] = TYPES[i].sign_type;
            i += 1;
        }
        all
    };

    /// Its row of `TYPES` (the rows are in the enum's order; a test holds it).
    pub fn row(self) -> &'static TypeRow {
        &TYPES[self as usize]
    }

    pub fn as_str(self) -> &'static str {
        self.row().name
    }

    /// The body field that carries its payload (BLOCK_V2 carries `beacon_block`, ...).
    pub fn payload_field(self) -> &'static str {
        self.row().payload_field
    }

    /// How many epochs ahead of the wall clock honest clients sign this type.
    pub fn epochs_ahead(self) -> u64 {
        self.row().epochs_ahead
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_one_row_per_type_in_order_and_names_as_serde_spells_them() {
        for (i, t) in SignType::ALL.iter().enumerate() {
            assert_eq!(*t as usize, i, "{t:?}: rows out of the enum's order");
            let serde_name = serde_json::to_value(t).unwrap();
            assert_eq!(serde_name, t.as_str(), "{t:?}");
            assert_eq!(t.as_str().parse::<SignType>().unwrap(), *t);
        }
        let slashable: Vec<_> = TYPES.iter().filter(|r| r.slashable).map(|r| r.name).collect();
        assert_eq!(slashable, ["BLOCK", "BLOCK_V2", "ATTESTATION"]);
    }
}
