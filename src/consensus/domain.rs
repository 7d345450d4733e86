//! Signature domains and signing roots (consensus-specs `compute_domain`,
//! `compute_signing_root`).

use tree_hash::TreeHash;

use super::containers::{ForkData, SigningData};
use crate::types::{Root, SigningRoot, Version};

/// The 4-byte domain type that separates one kind of signed message from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainType(pub [u8; 4]);

impl DomainType {
    pub const BEACON_PROPOSER: Self = Self([0, 0, 0, 0]);
    pub const BEACON_ATTESTER: Self = Self([1, 0, 0, 0]);
    pub const RANDAO: Self = Self([2, 0, 0, 0]);
    pub const DEPOSIT: Self = Self([3, 0, 0, 0]);
    pub const VOLUNTARY_EXIT: Self = Self([4, 0, 0, 0]);
    pub const SELECTION_PROOF: Self = Self([5, 0, 0, 0]);
    pub const AGGREGATE_AND_PROOF: Self = Self([6, 0, 0, 0]);
    pub const SYNC_COMMITTEE: Self = Self([7, 0, 0, 0]);
    pub const SYNC_COMMITTEE_SELECTION_PROOF: Self = Self([8, 0, 0, 0]);
    pub const CONTRIBUTION_AND_PROOF: Self = Self([9, 0, 0, 0]);
    pub const APPLICATION_BUILDER: Self = Self([0, 0, 0, 1]);
}

/// `compute_domain(domain_type, fork_version, genesis_validators_root)`.
pub fn compute_domain(domain_type: DomainType, version: Version, gvr: Root) -> Root {
    let fork_data_root = ForkData {
        current_version: version,
        genesis_validators_root: gvr,
    }
    .tree_hash_root();
    let mut domain = [0u8; 32];
    domain[..4].copy_from_slice(&domain_type.0);
    domain[4..].copy_from_slice(&fork_data_root.0[..28]);
    Root::from(domain)
}

/// `compute_signing_root(object, domain)`.
pub fn compute_signing_root(object_root: Root, domain: Root) -> SigningRoot {
    SigningData { object_root, domain }.tree_hash_root().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mainnet's well-known deposit domain (genesis fork version, zero root).
    #[test]
    fn mainnet_deposit_domain() {
        let d = compute_domain(DomainType::DEPOSIT, Version::ZERO, Root::ZERO);
        assert_eq!(
            d.to_string(),
            "0x03000000f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a9"
        );
    }
}
