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

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use bls12_381::{G1Affine, G1Projective, Scalar};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::secret::{SecretKey, verify};
use super::threshold::{Share, VerificationVector, random_scalar, scalar_of, secret_of};
use crate::types::{PublicKey, Signature, SigningRoot};

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

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubShare {
    pub to: u32,
    /// The ephemeral public key (G1, compressed).
    pub ephemeral: String,
    pub ciphertext: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    #[error("deal of {dealer}: {reason}")]
    Deal { dealer: u32, reason: String },
    #[error("{0}")]
    Round(String),
}

fn hex48(p: &G1Affine) -> String {
    format!("0x{}", hex::encode(p.to_compressed()))
}

fn point(s: &str) -> Option<G1Affine> {
    let b: [u8; 48] = hex::decode(s.trim_start_matches("0x")).ok()?.try_into().ok()?;
    Option::from(G1Affine::from_compressed(&b))
}

/// What names a group state: the hash of its verification vector.
pub fn vector_hash(v: &VerificationVector) -> String {
    let mut h = Sha256::new();
    for k in &v.0 {
        h.update(k.0);
    }
    format!("0x{}", hex::encode(h.finalize()))
}

/// The root a dealer signs: every field of the deal but the signature.
fn deal_root(d: &Deal) -> SigningRoot {
    let mut h = Sha256::new();
    h.update(b"palisade threshold refresh deal v1");
    h.update(d.version.to_le_bytes());
    h.update(d.group_public_key.0);
    h.update(d.refreshes.as_bytes());
    h.update(d.dealer.to_le_bytes());
    for c in &d.commitments {
        h.update(c.as_bytes());
    }
    for s in &d.sub_shares {
        h.update(s.to.to_le_bytes());
        h.update(s.ephemeral.as_bytes());
        h.update(s.ciphertext.as_bytes());
    }
    SigningRoot(h.finalize().into())
}

fn cipher(shared: &G1Affine, ephemeral: &G1Affine, dealer: u32, to: u32) -> Aes256Gcm {
    let hk = Hkdf::<Sha256>::new(Some(&ephemeral.to_compressed()), &shared.to_compressed());
    let mut key = Zeroizing::new([0u8; 32]);
    let info = [
        b"palisade refresh sub-share".as_slice(),
        &dealer.to_le_bytes(),
        &to.to_le_bytes(),
    ]
    .concat();
    hk.expand(&info, key.as_mut()).expect("32 bytes from HKDF-SHA-256");
    Aes256Gcm::new_from_slice(key.as_ref()).expect("a 32-byte key")
}

/// Deals a sharing of zero for the group of `vector`, as holder `share`.
pub fn deal(share: &Share, vector: &VerificationVector, shares: usize) -> Result<Deal, RefreshError> {
    let t = vector.threshold();
    let mut coefficients: Zeroizing<Vec<Scalar>> = Zeroizing::new(vec![Scalar::zero()]);
    for _ in 1..t {
        coefficients.push(*random_scalar());
    }
    let commitments = coefficients
        .iter()
        .map(|c| hex48(&G1Affine::from(G1Projective::generator() * c)))
        .collect();
    let mut sub_shares = Vec::new();
    for to in 1..=shares as u32 {
        let x = Scalar::from(u64::from(to));
        let mut y = Zeroizing::new(Scalar::zero());
        for c in coefficients.iter().rev() {
            *y = *y * x + c;
        }
        let recipient = vector
            .share_public_key(to)
            .ok()
            .and_then(|p| point(&p.to_string()))
            .ok_or_else(|| RefreshError::Round(format!("share {to} has no public key in the vector")))?;
        let r = random_scalar();
        let ephemeral = G1Affine::from(G1Projective::generator() * *r);
        let shared = G1Affine::from(G1Projective::from(recipient) * *r);
        let plain = Zeroizing::new(y.to_bytes());
        let ciphertext = cipher(&shared, &ephemeral, share.index, to)
            .encrypt(
                Nonce::from_slice(&[0u8; 12]),
                Payload {
                    msg: plain.as_ref(),
                    aad: b"",
                },
            )
            .expect("AES-GCM encrypts");
        sub_shares.push(SubShare {
            to,
            ephemeral: hex48(&ephemeral),
            ciphertext: format!("0x{}", hex::encode(ciphertext)),
        });
    }
    let mut d = Deal {
        version: 1,
        group_public_key: vector.group_public_key(),
        refreshes: vector_hash(vector),
        dealer: share.index,
        commitments,
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
    let old: Vec<G1Projective> = vector
        .0
        .iter()
        .map(|p| point(&p.to_string()).map(G1Projective::from))
        .collect::<Option<_>>()
        .ok_or_else(|| RefreshError::Round("the verification vector is not valid".into()))?;
    let mut new = old.clone();
    let mut sum = Zeroizing::new(*scalar_of(&share.secret));
    let own = scalar_of(&share.secret);
    let x = Scalar::from(u64::from(share.index));
    for d in deals {
        let bad = |reason: &str| RefreshError::Deal {
            dealer: d.dealer,
            reason: reason.to_string(),
        };
        if d.version != 1 || d.group_public_key != vector.group_public_key() || d.refreshes != state {
            return Err(bad("it refreshes another group or another state of it"));
        }
        let dealer_pk = vector.share_public_key(d.dealer).map_err(|e| bad(&e.to_string()))?;
        let signature = crate::types::parse_hex_array::<96>(&d.signature).map(Signature);
        if !signature.is_ok_and(|sig| verify(&dealer_pk, &deal_root(d), &sig)) {
            return Err(bad("its signature is not its dealer's share's"));
        }
        let commitments: Vec<G1Affine> = d
            .commitments
            .iter()
            .map(|c| point(c))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("a commitment is not a G1 point"))?;
        if commitments.len() != t || !bool::from(commitments[0].is_identity()) {
            return Err(bad("it does not deal a sharing of zero of the group's threshold"));
        }
        let sub = d
            .sub_shares
            .iter()
            .find(|s| s.to == share.index)
            .ok_or_else(|| bad("no sub-share for this holder"))?;
        let ephemeral = point(&sub.ephemeral).ok_or_else(|| bad("the ephemeral key is not a G1 point"))?;
        let shared = G1Affine::from(G1Projective::from(ephemeral) * *own);
        let ciphertext =
            hex::decode(sub.ciphertext.trim_start_matches("0x")).map_err(|_| bad("the ciphertext is not hex"))?;
        let plain = Zeroizing::new(
            cipher(&shared, &ephemeral, d.dealer, share.index)
                .decrypt(
                    Nonce::from_slice(&[0u8; 12]),
                    Payload {
                        msg: &ciphertext,
                        aad: b"",
                    },
                )
                .map_err(|_| bad("its sub-share for this holder does not decrypt"))?,
        );
        let bytes: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| bad("a sub-share is not 32 bytes"))?;
        let y: Scalar = Option::from(Scalar::from_bytes(&bytes)).ok_or_else(|| bad("a sub-share is not a scalar"))?;
        // Feldman: the sub-share is the committed polynomial at this holder's index.
        let mut expected = G1Projective::identity();
        for c in commitments.iter().rev() {
            expected = expected * x + G1Projective::from(*c);
        }
        if G1Affine::from(G1Projective::generator() * y) != G1Affine::from(expected) {
            return Err(bad("its sub-share does not match its commitments"));
        }
        *sum += y;
        for (k, c) in commitments.iter().enumerate() {
            new[k] += G1Projective::from(*c);
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
