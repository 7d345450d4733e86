//! Keys and messages for the slashing-protection tests.

use palisade::protection::Proposal;
use palisade::types::{Epoch, PublicKey, SigningRoot, Slot};

/// Distinct, valid pubkeys (imports check that pubkeys are curve points).
pub fn pk(i: u64) -> PublicKey {
    let mut sk = zeroize::Zeroizing::new([0u8; 32]);
    sk[24..].copy_from_slice(&(i + 1).to_be_bytes());
    palisade::keys::SecretKey::from_bytes(&sk).unwrap().public_key()
}

pub fn root(b: u64) -> SigningRoot {
    let mut r = [0u8; 32];
    r[24..].copy_from_slice(&b.to_be_bytes());
    SigningRoot(r)
}

pub fn att(s: u64, t: u64, r: u64) -> Proposal {
    Proposal::Attestation {
        source: Epoch(s),
        target: Epoch(t),
        root: root(r),
    }
}

pub fn block(slot: u64, r: u64) -> Proposal {
    Proposal::Block {
        slot: Slot(slot),
        root: root(r),
    }
}
