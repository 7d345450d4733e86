//! Proactive refresh of a threshold key's shares, without the key ever existing: each share
//! holder deals a random sharing of zero (a polynomial with constant term 0), committed with
//! Feldman commitments, its sub-share for every holder encrypted to that holder's share public
//! key (ECIES on BLS12-381 G1: HKDF-SHA-256 and AES-256-GCM). Each holder adds the sub-shares
//! dealt to it to its share. The group key is unchanged (every constant term is 0), the
//! verification vector moves by the sum of the commitments, and shares from before the refresh
//! no longer combine with shares from after it.
//!
//! A deal is public: it names the group state it refreshes (a hash of the verification vector),
//! is signed by the dealer's old share, and every sub-share is checked against the dealer's
//! commitments before it is used.

use bls12_381::{G1Affine, G1Projective, Scalar};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::dealing::{
    Polynomial, SubShare, finish_deal_root, hex48, key_point, open, seal, signed_commitments, vector_hash,
};
use super::secret::SecretKey;
use super::threshold::{Share, VerificationVector, scalar_of, secret_of};
use crate::types::{PublicKey, SigningRoot};

const PURPOSE: &[u8] = b"palisade refresh sub-share";

/// A dealer's contribution to one refresh.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Deal {
    pub version: u32,
    pub group_public_key: PublicKey,
    /// SHA-256 of the verification vector being refreshed: deals of one round name the same.
    pub refreshes: String,
    pub dealer: u32,
    /// Commitments to the zero polynomial's coefficients (the first is the identity).
    pub commitments: Vec<String>,
    pub sub_shares: Vec<SubShare>,
    /// The dealer's old share's signature of everything above.
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    #[error("deal of {dealer}: {reason}")]
    Deal { dealer: u32, reason: String },
    #[error("{0}")]
    Round(String),
}

/// The root a dealer signs: every field of the deal but the signature.
fn deal_root(d: &Deal) -> SigningRoot {
    let mut h = Sha256::new();
    h.update(b"palisade threshold refresh deal v1");
    h.update(d.version.to_le_bytes());
    h.update(d.group_public_key.0);
    h.update(d.refreshes.as_bytes());
    h.update(d.dealer.to_le_bytes());
    finish_deal_root(h, &d.commitments, &d.sub_shares)
}

/// Deals a sharing of zero for the group of `vector`, as holder `share`.
pub fn deal(share: &Share, vector: &VerificationVector, shares: usize) -> Result<Deal, RefreshError> {
    let zero = Polynomial::random(&Scalar::zero(), vector.threshold());
    let mut sub_shares = Vec::new();
    for to in 1..=shares as u32 {
        let recipient = vector
            .share_public_key(to)
            .ok()
            .and_then(|p| key_point(&p))
            .ok_or_else(|| RefreshError::Round(format!("share {to} has no public key in the vector")))?;
        sub_shares.push(seal(PURPOSE, share.index, to, &recipient, &zero.at(to)));
    }
    let mut d = Deal {
        version: 1,
        group_public_key: vector.group_public_key(),
        refreshes: vector_hash(vector),
        dealer: share.index,
        commitments: zero.commitments().iter().map(hex48).collect(),
        sub_shares,
        signature: String::new(),
    };
    d.signature = share.secret.sign(&deal_root(&d)).to_string();
    Ok(d)
}

/// Holder `share` applies one deal from every holder: its new share and the group's new
/// verification vector. Every deal must refresh this state, be signed by its dealer's share,
/// deal a sharing of zero, and deal this holder a sub-share its commitments agree with.
pub fn apply(
    share: &Share,
    vector: &VerificationVector,
    shares: usize,
    deals: &[Deal],
) -> Result<(Share, VerificationVector), RefreshError> {
    let t = vector.threshold();
    let mut dealers: Vec<u32> = deals.iter().map(|d| d.dealer).collect();
    dealers.sort_unstable();
    if dealers != (1..=shares as u32).collect::<Vec<_>>() {
        return Err(RefreshError::Round(format!(
            "a refresh needs one deal from each of the {shares} holders, got dealers {dealers:?}"
        )));
    }
    let state = vector_hash(vector);
    let mut new: Vec<G1Projective> = vector
        .0
        .iter()
        .map(|p| key_point(p).map(G1Projective::from))
        .collect::<Option<_>>()
        .ok_or_else(|| RefreshError::Round("the verification vector is not valid".into()))?;
    let own = scalar_of(&share.secret);
    let mut sum = Zeroizing::new(*own);
    for d in deals {
        let bad = |reason: &str| RefreshError::Deal {
            dealer: d.dealer,
            reason: reason.to_string(),
        };
        if d.version != 1 || d.group_public_key != vector.group_public_key() || d.refreshes != state {
            return Err(bad("it refreshes another group or another state of it"));
        }
        let dealer_pk = vector.share_public_key(d.dealer).map_err(|e| bad(&e.to_string()))?;
        let commitments = signed_commitments(&dealer_pk, &deal_root(d), &d.signature, &d.commitments).map_err(bad)?;
        if commitments.len() != t || !bool::from(commitments[0].is_identity()) {
            return Err(bad("it does not deal a sharing of zero of the group's threshold"));
        }
        let sub = d
            .sub_shares
            .iter()
            .find(|s| s.to == share.index)
            .ok_or_else(|| bad("no sub-share for this holder"))?;
        *sum += *open(PURPOSE, d.dealer, &own, sub, &commitments).map_err(bad)?;
        for (k, c) in commitments.iter().enumerate() {
            new[k] += c;
        }
    }
    let secret: SecretKey = secret_of(&sum).ok_or_else(|| RefreshError::Round("the new share is zero".into()))?;
    let vector = VerificationVector(
        new.iter()
            .map(|p| PublicKey(G1Affine::from(p).to_compressed()))
            .collect(),
    );
    if vector.share_public_key(share.index).ok() != Some(secret.public_key()) {
        return Err(RefreshError::Round(
            "the new share does not match the new verification vector".into(),
        ));
    }
    Ok((
        Share {
            index: share.index,
            secret,
        },
        vector,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::threshold::{combine_signatures, split};
    use crate::types::Signature;

    #[test]
    fn a_refresh_keeps_the_key_and_old_shares_stop_combining_with_new_ones() {
        let key = SecretKey::generate(&Zeroizing::new([3u8; 32]));
        let (shares, vector) = split(&key, 3, 4).unwrap();
        let deals: Vec<Deal> = shares.iter().map(|s| deal(s, &vector, 4).unwrap()).collect();
        let renewed: Vec<(Share, VerificationVector)> =
            shares.iter().map(|s| apply(s, &vector, 4, &deals).unwrap()).collect();
        let new_vector = renewed[0].1.clone();
        assert!(
            renewed.iter().all(|(_, v)| *v == new_vector),
            "holders disagree on the new vector"
        );
        assert_eq!(new_vector.group_public_key(), key.public_key());
        assert_ne!(new_vector, vector);
        let root = SigningRoot([8u8; 32]);
        let whole = key.sign(&root);
        let new: Vec<(u32, Signature)> = renewed.iter().map(|(s, _)| (s.index, s.secret.sign(&root))).collect();
        assert_eq!(combine_signatures(&new[1..], 3).unwrap(), whole);
        let old: Vec<(u32, Signature)> = shares.iter().map(|s| (s.index, s.secret.sign(&root))).collect();
        let mixed = [old[0], old[1], new[2]];
        assert_ne!(
            combine_signatures(&mixed, 3).unwrap(),
            whole,
            "old and new shares combined"
        );

        // A deal tampered with, or missing, is refused with the dealer named.
        let mut forged = deals.clone();
        forged[1].sub_shares[0].ciphertext = deals[2].sub_shares[0].ciphertext.clone();
        let e = apply(&shares[0], &vector, 4, &forged).unwrap_err();
        assert!(matches!(e, RefreshError::Deal { dealer: 2, .. }), "{e}");
        assert!(apply(&shares[0], &vector, 4, &deals[..3]).is_err());
        // Deals of this round do not apply to the refreshed state.
        assert!(apply(&renewed[0].0, &new_vector, 4, &deals).is_err());
    }
}
