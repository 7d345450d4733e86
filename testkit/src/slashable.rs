//! Keys and messages for the slashing-protection tests.

use palisade::protection::{Interchange, SlashableMessage};
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

pub fn att(s: u64, t: u64, r: u64) -> SlashableMessage {
    SlashableMessage::Attestation {
        source: Epoch(s),
        target: Epoch(t),
        root: root(r),
    }
}

pub fn block(slot: u64, r: u64) -> SlashableMessage {
    SlashableMessage::Block {
        slot: Slot(slot),
        root: root(r),
    }
}

/// Whether `export` holds exactly this message for `key`.
pub fn in_export(export: &Interchange, key: &PublicKey, p: &SlashableMessage) -> bool {
    let Some(v) = export.data.iter().find(|v| v.pubkey == *key) else {
        return false;
    };
    match *p {
        SlashableMessage::Block { slot, root } => v
            .signed_blocks
            .iter()
            .any(|b| b.slot == slot && b.signing_root == Some(root)),
        SlashableMessage::Attestation { source, target, root } => v
            .signed_attestations
            .iter()
            .any(|a| a.source_epoch == source && a.target_epoch == target && a.signing_root == Some(root)),
    }
}

/// Whether signing both would be slashable (a double proposal, a double vote or a surround).
pub fn slashable(a: &SlashableMessage, b: &SlashableMessage) -> bool {
    match (*a, *b) {
        (SlashableMessage::Block { slot: s1, root: r1 }, SlashableMessage::Block { slot: s2, root: r2 }) => {
            s1 == s2 && r1 != r2
        }
        (
            SlashableMessage::Attestation {
                source: s1,
                target: t1,
                root: r1,
            },
            SlashableMessage::Attestation {
                source: s2,
                target: t2,
                root: r2,
            },
        ) => (t1 == t2 && r1 != r2) || (s1 < s2 && t2 < t1) || (s2 < s1 && t1 < t2),
        _ => false,
    }
}
