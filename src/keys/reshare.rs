//! Resharing a threshold key to a new set of holders (a node added, replaced or removed, or a
//! new threshold), without the key ever existing: at least `t` current holders each deal a
//! random sharing of their own share to the new holders (new threshold `t'`), its sub-shares
//! encrypted to each new holder's recipient key. A new holder's share is the Lagrange-weighted
//! sum of what it received, so the new polynomial's constant term is still the group key while
//! every share, old holders' included, is new; the new verification vector is the weighted sum
//! of the commitments.
//!
//! A deal carries the verification vector it reshares, so a new node, which holds no share yet,
//! can check every dealer: the deal is signed by the dealer's share and commits to exactly that
//! share (its first commitment is the share's public key in the vector). All new holders must
//! apply the same set of deals, or their shares lie on different polynomials: the apply step
//! prints the new vector's hash for the operator to compare.

use bls12_381::{G1Affine, G1Projective};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::dealing::{Polynomial, SubShare, finish_deal_root, hex48, key_point, open, seal, signed_commitments};
use super::refresh::RefreshError;
use super::secret::SecretKey;
use super::threshold::{Share, VerificationVector, lagrange, scalar_of, secret_of};
use crate::types::{PublicKey, SigningRoot};

const PURPOSE: &[u8] = b"palisade reshare sub-share";

/// A new holder: its share index and the G1 key its sub-shares are encrypted to (a holder that
/// stays may use its current share's key; a new node, a recipient key made for the purpose).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Recipient {
    pub index: u32,
    pub public_key: PublicKey,
}

/// One current holder's contribution to a reshare.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReshareDeal {
    pub version: u32,
    pub group_public_key: PublicKey,
    /// The verification vector of the shares being reshared.
    pub verification_vector: Vec<PublicKey>,
    pub dealer: u32,
    /// The new threshold.
    pub threshold: usize,
    /// The new holders, indices 1 to n'.
    pub recipients: Vec<Recipient>,
    /// Commitments to the dealt polynomial; the first is the dealer's share's public key.
    pub commitments: Vec<String>,
    pub sub_shares: Vec<SubShare>,
    /// The dealer's share's signature of everything above.
    pub signature: String,
}

fn deal_root(d: &ReshareDeal) -> SigningRoot {
    let mut h = Sha256::new();
    h.update(b"palisade threshold reshare deal v1");
    h.update(d.version.to_le_bytes());
    h.update(d.group_public_key.0);
    for k in &d.verification_vector {
        h.update(k.0);
    }
    h.update(d.dealer.to_le_bytes());
    h.update((d.threshold as u64).to_le_bytes());
    for r in &d.recipients {
        h.update(r.index.to_le_bytes());
        h.update(r.public_key.0);
    }
    finish_deal_root(h, &d.commitments, &d.sub_shares)
}

fn check_recipients(threshold: usize, recipients: &[Recipient]) -> Result<(), RefreshError> {
    let n = recipients.len();
    if threshold == 0 || threshold > n || n > 255 {
        return Err(RefreshError::Round(format!(
            "threshold {threshold} of {n}: need 1 <= t <= n <= 255"
        )));
    }
    let indices: Vec<u32> = recipients.iter().map(|r| r.index).collect();
    if indices != (1..=n as u32).collect::<Vec<_>>() {
        return Err(RefreshError::Round(format!(
            "the new holders must be numbered 1 to {n} in order, got {indices:?}"
        )));
    }
    Ok(())
}

/// Holder `share` of the group of `vector` deals a sharing of its share to `recipients`, any
/// `threshold` of whom will sign.
pub fn deal(
    share: &Share,
    vector: &VerificationVector,
    threshold: usize,
    recipients: &[Recipient],
) -> Result<ReshareDeal, RefreshError> {
    check_recipients(threshold, recipients)?;
    let polynomial = Polynomial::random(&scalar_of(&share.secret), threshold);
    let sub_shares = recipients
        .iter()
        .map(|r| {
            let key = key_point(&r.public_key)
                .ok_or_else(|| RefreshError::Round(format!("recipient {}: not a public key", r.index)))?;
            Ok(seal(PURPOSE, share.index, r.index, &key, &polynomial.at(r.index)))
        })
        .collect::<Result<_, RefreshError>>()?;
    let mut d = ReshareDeal {
        version: 1,
        group_public_key: vector.group_public_key(),
        verification_vector: vector.0.clone(),
        dealer: share.index,
        threshold,
        recipients: recipients.to_vec(),
        commitments: polynomial.commitments().iter().map(hex48).collect(),
        sub_shares,
        signature: String::new(),
    };
    d.signature = share.secret.sign(&deal_root(&d)).to_string();
    Ok(d)
}

/// What one new holder ends with.
#[derive(Debug)]
pub struct Reshared {
    pub share: Share,
    pub vector: VerificationVector,
    pub shares: usize,
}

/// New holder `index`, whose recipient key is `own`, applies the deals of at least `t` current
/// holders of `group`: its new share and the new verification vector.
pub fn apply(own: &SecretKey, index: u32, group: &PublicKey, deals: &[ReshareDeal]) -> Result<Reshared, RefreshError> {
    let first = deals.first().ok_or_else(|| RefreshError::Round("no deals".into()))?;
    let vector = VerificationVector(first.verification_vector.clone());
    if vector.0.first() != Some(group) {
        return Err(RefreshError::Round(format!(
            "the deals reshare {}, not {group}",
            first.group_public_key
        )));
    }
    check_recipients(first.threshold, &first.recipients)?;
    match first.recipients.iter().find(|r| r.index == index) {
        Some(r) if r.public_key == own.public_key() => {}
        Some(r) => {
            return Err(RefreshError::Round(format!(
                "new holder {index}'s recipient key is {}, not this keystore's {}",
                r.public_key,
                own.public_key()
            )));
        }
        None => return Err(RefreshError::Round(format!("no new holder {index} in the deals"))),
    }
    let mut dealers: Vec<u32> = deals.iter().map(|d| d.dealer).collect();
    dealers.sort_unstable();
    dealers.dedup();
    if dealers.len() != deals.len() || dealers.len() < vector.threshold() {
        return Err(RefreshError::Round(format!(
            "a reshare needs one deal from each of at least {} current holders, got dealers {:?}",
            vector.threshold(),
            deals.iter().map(|d| d.dealer).collect::<Vec<_>>()
        )));
    }
    let own_scalar = scalar_of(own);
    let weights = lagrange(&deals.iter().map(|d| d.dealer).collect::<Vec<_>>())
        .map_err(|e| RefreshError::Round(e.to_string()))?;
    let mut share = Zeroizing::new(bls12_381::Scalar::zero());
    let mut new = vec![G1Projective::identity(); first.threshold];
    for (d, weight) in deals.iter().zip(weights) {
        let bad = |reason: &str| RefreshError::Deal {
            dealer: d.dealer,
            reason: reason.to_string(),
        };
        if d.version != 1
            || d.group_public_key != *group
            || d.verification_vector != first.verification_vector
            || d.threshold != first.threshold
            || d.recipients != first.recipients
        {
            return Err(bad(
                "it belongs to another reshare (group, vector, threshold or holders differ)",
            ));
        }
        let dealer_pk = vector.share_public_key(d.dealer).map_err(|e| bad(&e.to_string()))?;
        let commitments = signed_commitments(&dealer_pk, &deal_root(d), &d.signature, &d.commitments).map_err(bad)?;
        if commitments.len() != d.threshold || key_point(&dealer_pk).map(G1Projective::from) != Some(commitments[0]) {
            return Err(bad("it does not deal its own share at the new threshold"));
        }
        let sub = d
            .sub_shares
            .iter()
            .find(|s| s.to == index)
            .ok_or_else(|| bad("no sub-share for this holder"))?;
        *share += *open(PURPOSE, d.dealer, &own_scalar, sub, &commitments).map_err(bad)? * weight;
        for (k, c) in commitments.iter().enumerate() {
            new[k] += c * weight;
        }
    }
    let secret = secret_of(&share).ok_or_else(|| RefreshError::Round("the new share is zero".into()))?;
    let vector = VerificationVector(
        new.iter()
            .map(|p| PublicKey(G1Affine::from(p).to_compressed()))
            .collect(),
    );
    if vector.group_public_key() != *group || vector.share_public_key(index).ok() != Some(secret.public_key()) {
        return Err(RefreshError::Round(
            "the new share does not match the new verification vector".into(),
        ));
    }
    Ok(Reshared {
        share: Share { index, secret },
        vector,
        shares: first.recipients.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::threshold::{combine_signatures, split};

    fn recipient_key(seed: u8) -> SecretKey {
        SecretKey::generate(&Zeroizing::new([seed; 32]))
    }

    #[test]
    fn a_node_replaced_and_one_added_sign_for_the_same_key_and_old_shares_do_not_mix() {
        let key = SecretKey::generate(&Zeroizing::new([5u8; 32]));
        let (old, vector) = split(&key, 3, 4).unwrap();
        // Node 2 is replaced by a new machine, a fifth node joins; 3-of-5 from now on.
        let (new2, new5) = (recipient_key(20), recipient_key(50));
        let recipient_secret = |i: u32| match i {
            2 => &new2,
            5 => &new5,
            i => &old[i as usize - 1].secret,
        };
        let recipients: Vec<Recipient> = (1..=5)
            .map(|index| Recipient {
                index,
                public_key: recipient_secret(index).public_key(),
            })
            .collect();
        // Node 2 is gone: 1, 3 and 4 deal.
        let deals: Vec<ReshareDeal> = [0, 2, 3]
            .iter()
            .map(|&i| deal(&old[i], &vector, 3, &recipients).unwrap())
            .collect();
        let group = key.public_key();
        let reshared: Vec<Reshared> = (1..=5)
            .map(|i| apply(recipient_secret(i), i, &group, &deals).unwrap())
            .collect();
        let new_vector = &reshared[0].vector;
        assert!(reshared.iter().all(|r| r.vector == *new_vector && r.shares == 5));
        assert_eq!(new_vector.group_public_key(), group);
        let root = SigningRoot([9u8; 32]);
        let whole = key.sign(&root);
        let partial = |r: &Reshared| (r.share.index, r.share.secret.sign(&root));
        for picked in [[0, 1, 4], [1, 2, 3], [2, 3, 4]] {
            let partials: Vec<_> = picked.iter().map(|&i| partial(&reshared[i])).collect();
            assert_eq!(combine_signatures(&partials, 3).unwrap(), whole, "{picked:?}");
        }
        // The replaced node's old share does not combine with the new ones.
        let mixed = [
            (2, old[1].secret.sign(&root)),
            partial(&reshared[0]),
            partial(&reshared[2]),
        ];
        assert_ne!(combine_signatures(&mixed, 3).unwrap(), whole);

        // Too few dealers, a deal from another round, the wrong recipient key: refused.
        assert!(apply(&new5, 5, &group, &deals[..2]).is_err());
        let other = deal(&old[1], &vector, 2, &recipients).unwrap();
        let e = apply(&new5, 5, &group, &[deals[0].clone(), deals[1].clone(), other]).unwrap_err();
        assert!(matches!(e, RefreshError::Deal { dealer: 2, .. }), "{e}");
        assert!(apply(&new2, 5, &group, &deals).is_err());
        // A dealer that deals something other than its share is named.
        let mut forged = deals.clone();
        forged[1].commitments.swap(0, 1);
        let e = apply(&new5, 5, &group, &forged).unwrap_err();
        assert!(matches!(e, RefreshError::Deal { dealer: 3, .. }), "{e}");
        assert!(apply(&new5, 5, &recipient_key(1).public_key(), &deals).is_err());
    }
}
