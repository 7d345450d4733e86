//! Type-level presets: the few SSZ sizes that differ between mainnet and minimal and that
//! change a container's `hash_tree_root`.

use std::fmt::Debug;

use typenum::{U4, U8, U32, U64, U128, U512, U8192, U131072, Unsigned};

pub trait Preset: 'static + Send + Sync + Clone + Debug + Default {
    /// `SYNC_COMMITTEE_SIZE`: bits of an Altair `SyncAggregate`.
    type SyncCommitteeSize: Unsigned + Clone + Debug + Send + Sync;
    /// `SYNC_COMMITTEE_SIZE / SYNC_COMMITTEE_SUBNET_COUNT`: bits of a sync contribution.
    type SyncSubcommitteeSize: Unsigned + Clone + Debug + Send + Sync;
    /// `MAX_COMMITTEES_PER_SLOT`: Electra `committee_bits`.
    type MaxCommitteesPerSlot: Unsigned + Clone + Debug + Send + Sync;
    /// `MAX_VALIDATORS_PER_COMMITTEE * MAX_COMMITTEES_PER_SLOT`: Electra `aggregation_bits`.
    type MaxValidatorsPerSlot: Unsigned + Clone + Debug + Send + Sync;
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Mainnet;

#[derive(Clone, Copy, Debug, Default)]
pub struct Minimal;

impl Preset for Mainnet {
    type SyncCommitteeSize = U512;
    type SyncSubcommitteeSize = U128;
    type MaxCommitteesPerSlot = U64;
    type MaxValidatorsPerSlot = U131072;
}

impl Preset for Minimal {
    type SyncCommitteeSize = U32;
    type SyncSubcommitteeSize = U8;
    type MaxCommitteesPerSlot = U4;
    type MaxValidatorsPerSlot = U8192;
}
