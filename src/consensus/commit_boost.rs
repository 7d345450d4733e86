//! Commit-Boost's signed messages. Every root it signs is wrapped in its own domain type
//! (`0x6d6d6f43`, "mmoC"), which no consensus message uses: a signing root is
//! `sha256(object_root || domain)`, so a Commit-Boost signature could pass for a consensus one
//! only through a SHA-256 collision, whatever root a module supplies. `CommitBoostRoot` can
//! only be made here, always with that domain.
//!
//! Read from Commit-Boost v0.11.0 (`crates/common/src/signature.rs`, `types.rs`,
//! `signer/schemes`) and Web3Signer 25.x (`SigningRootGenerator`, `ProxyDelegation`).

use alloy_primitives::{FixedBytes, U256};
use tree_hash::TreeHash;
use tree_hash_derive::TreeHash;

use super::domain::{DomainType, compute_domain, compute_signing_root};
use crate::types::{Address, PublicKey, PublicKeyBytes, Root, SigningRoot, Version};

/// Commit-Boost's domain type (`COMMIT_BOOST_DOMAIN`).
pub const COMMIT_BOOST: DomainType = DomainType([0x6d, 0x6d, 0x6f, 0x43]);

/// Commit-Boost's domain on a chain: its genesis fork version and a zero genesis validators
/// root (as Commit-Boost and Web3Signer compute it). Only `domain` makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitBoostDomain(Root);

impl CommitBoostDomain {
    pub fn root(&self) -> Root {
        self.0
    }
}

pub fn domain(genesis_fork_version: Version) -> CommitBoostDomain {
    CommitBoostDomain(compute_domain(COMMIT_BOOST, genesis_fork_version, Root::ZERO))
}

/// A signing root under Commit-Boost's domain: the only kind of root the Commit-Boost routes
/// can have signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitBoostRoot(SigningRoot);

impl CommitBoostRoot {
    pub fn signing_root(&self) -> &SigningRoot {
        &self.0
    }

    fn wrap(object_root: Root, domain: CommitBoostDomain) -> Self {
        CommitBoostRoot(compute_signing_root(object_root, domain.0))
    }

    /// Web3Signer's (and Commit-Boost's before v0.8) request: the module's root itself.
    pub fn legacy(object_root: Root, domain: CommitBoostDomain) -> Self {
        Self::wrap(object_root, domain)
    }

    /// Current Commit-Boost: the module's root bound to the module, a nonce and the chain.
    pub fn for_module(
        object_root: Root,
        module_signing_id: Root,
        nonce: u64,
        chain_id: u64,
        domain: CommitBoostDomain,
    ) -> Self {
        let info = PropCommitSigningInfo {
            data: object_root,
            module_signing_id,
            nonce,
            chain_id: U256::from(chain_id),
        };
        Self::wrap(info.tree_hash_root(), domain)
    }

    /// The delegation of a proxy key by a consensus key.
    pub fn delegation(delegator: &PublicKey, proxy: &DelegatedProxy, domain: CommitBoostDomain) -> Self {
        let delegator = PublicKeyBytes::from(delegator.0);
        let root = match proxy {
            DelegatedProxy::Bls(p) => ProxyDelegationBls {
                delegator,
                proxy: PublicKeyBytes::from(p.0),
            }
            .tree_hash_root(),
            DelegatedProxy::Address(a) => ProxyDelegationEcdsa { delegator, proxy: *a }.tree_hash_root(),
            DelegatedProxy::Compressed(k) => ProxyDelegationSecp {
                delegator,
                proxy: FixedBytes::from(*k),
            }
            .tree_hash_root(),
        };
        Self::wrap(root, domain)
    }
}

/// What a delegation hands signing rights to: a BLS proxy key, or a secp256k1 proxy by its
/// address (current Commit-Boost) or by its compressed key (Web3Signer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DelegatedProxy {
    Bls(PublicKey),
    Address(Address),
    Compressed([u8; 33]),
}

#[derive(TreeHash)]
struct PropCommitSigningInfo {
    data: Root,
    module_signing_id: Root,
    nonce: u64,
    chain_id: U256,
}

#[derive(TreeHash)]
struct ProxyDelegationBls {
    delegator: PublicKeyBytes,
    proxy: PublicKeyBytes,
}

#[derive(TreeHash)]
struct ProxyDelegationSecp {
    delegator: PublicKeyBytes,
    proxy: FixedBytes<33>,
}

#[derive(TreeHash)]
struct ProxyDelegationEcdsa {
    delegator: PublicKeyBytes,
    proxy: Address,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Web3Signer's `SigningRootGeneratorTest` domains (mainnet, holesky).
    #[test]
    fn domains_match_web3signers() {
        assert_eq!(
            domain(Version::ZERO).root().to_string(),
            "0x6d6d6f43f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a9"
        );
        assert_eq!(
            domain(Version::from([0x01, 0x01, 0x70, 0x00])).root().to_string(),
            "0x6d6d6f435b83a23759c560b2d0c64576e1dcfc34ea94c4988f3e0d9f77f05387"
        );
    }

    /// Commit-Boost's own vectors: `signer/schemes/ecdsa.rs` (Hoodi, a module root) and the
    /// root without signing info (Holesky), as its tests have them.
    #[test]
    fn roots_match_commit_boosts_vectors() {
        let hoodi = domain(Version::from([0x10, 0x00, 0x09, 0x10]));
        let got = CommitBoostRoot::for_module(Root::repeat_byte(1), Root::repeat_byte(2), 42, 560048, hoodi);
        assert_eq!(
            got.signing_root().to_string(),
            "0x0b95fcdb3f003fc6f0fd3238d906f359809e97fe7ec71f56771cb05bee4150bd"
        );
        let holesky = domain(Version::from([0x01, 0x01, 0x70, 0x00]));
        assert_eq!(
            CommitBoostRoot::legacy(Root::repeat_byte(1), holesky)
                .signing_root()
                .to_string(),
            "0x219ca7a673b2cbbf67bec6c9f60f78bd051336d57b68d1540190f30667e86725"
        );
    }
}
