//! What a split, a refresh and a reshare all deal: a random polynomial with a chosen constant
//! term, its Feldman commitments, and each holder's evaluation encrypted to a G1 key of that
//! holder (ECIES: HKDF-SHA-256 and AES-256-GCM), checked on receipt against the commitments.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use bls12_381::{G1Affine, G1Projective, Scalar};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::threshold::{VerificationVector, random_scalar};
use crate::types::PublicKey;

/// A polynomial's coefficients, lowest first; zeroed when dropped.
pub(super) struct Polynomial(Zeroizing<Vec<Scalar>>);

impl Polynomial {
    /// `constant + a1 x + ... + a(t-1) x^(t-1)` with random `a`: any `t` points give `constant`.
    pub fn random(constant: &Scalar, t: usize) -> Polynomial {
        let mut coefficients = Zeroizing::new(vec![*constant]);
        for _ in 1..t {
            coefficients.push(*random_scalar());
        }
        Polynomial(coefficients)
    }

    pub fn at(&self, index: u32) -> Zeroizing<Scalar> {
        let x = Scalar::from(u64::from(index));
        let mut y = Zeroizing::new(Scalar::zero());
        for c in self.0.iter().rev() {
            *y = *y * x + c;
        }
        y
    }

    /// The Feldman commitments `g * a_k`.
    pub fn commitments(&self) -> Vec<G1Affine> {
        self.0
            .iter()
            .map(|c| G1Affine::from(G1Projective::generator() * c))
            .collect()
    }
}

/// The committed polynomial at `index`, in G1: what `g * share(index)` must be.
pub(super) fn committed_at(commitments: &[G1Projective], index: u32) -> G1Projective {
    let x = Scalar::from(u64::from(index));
    let mut acc = G1Projective::identity();
    for c in commitments.iter().rev() {
        acc = acc * x + c;
    }
    acc
}

pub(super) fn hex48(p: &G1Affine) -> String {
    format!("0x{}", hex::encode(p.to_compressed()))
}

pub(super) fn point(s: &str) -> Option<G1Affine> {
    let b: [u8; 48] = hex::decode(s.trim_start_matches("0x")).ok()?.try_into().ok()?;
    Option::from(G1Affine::from_compressed(&b))
}

pub(super) fn key_point(k: &PublicKey) -> Option<G1Affine> {
    Option::from(G1Affine::from_compressed(&k.0))
}

/// What names a group state: the hash of its verification vector.
pub fn vector_hash(v: &VerificationVector) -> String {
    let mut h = Sha256::new();
    for k in &v.0 {
        h.update(k.0);
    }
    format!("0x{}", hex::encode(h.finalize()))
}

/// One holder's evaluation, encrypted to its key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubShare {
    pub to: u32,
    /// The ephemeral public key (G1, compressed).
    pub ephemeral: String,
    pub ciphertext: String,
}

/// The AES key for one sub-share: `purpose` keeps a refresh's and a reshare's apart.
fn cipher(purpose: &[u8], shared: &G1Affine, ephemeral: &G1Affine, dealer: u32, to: u32) -> Aes256Gcm {
    let hk = Hkdf::<Sha256>::new(Some(&ephemeral.to_compressed()), &shared.to_compressed());
    let mut key = Zeroizing::new([0u8; 32]);
    let info = [purpose, &dealer.to_le_bytes(), &to.to_le_bytes()].concat();
    hk.expand(&info, key.as_mut()).expect("32 bytes from HKDF-SHA-256");
    Aes256Gcm::new_from_slice(key.as_ref()).expect("a 32-byte key")
}

/// The root a dealer signs, from its fields before these: the commitments and sub-shares.
pub(super) fn finish_deal_root(
    mut h: Sha256,
    commitments: &[String],
    sub_shares: &[SubShare],
) -> crate::types::SigningRoot {
    for c in commitments {
        h.update(c.as_bytes());
    }
    for s in sub_shares {
        h.update(s.to.to_le_bytes());
        h.update(s.ephemeral.as_bytes());
        h.update(s.ciphertext.as_bytes());
    }
    crate::types::SigningRoot(h.finalize().into())
}

/// A deal's commitments, once its signature is found to be its dealer's share's (`dealer_pk`)
/// over `root`.
pub(super) fn signed_commitments(
    dealer_pk: &PublicKey,
    root: &crate::types::SigningRoot,
    signature: &str,
    commitments: &[String],
) -> Result<Vec<G1Projective>, &'static str> {
    let signature = crate::types::parse_hex_array::<96>(signature).map(crate::types::Signature);
    if !signature.is_ok_and(|sig| super::secret::verify(dealer_pk, root, &sig)) {
        return Err("its signature is not its dealer's share's");
    }
    commitments
        .iter()
        .map(|c| point(c).map(G1Projective::from))
        .collect::<Option<_>>()
        .ok_or("a commitment is not a G1 point")
}

/// `y` for holder `to`, encrypted to `recipient` (a fresh ephemeral key each time, so the zero
/// nonce is never reused under one key).
pub(super) fn seal(purpose: &[u8], dealer: u32, to: u32, recipient: &G1Affine, y: &Scalar) -> SubShare {
    let r = random_scalar();
    let ephemeral = G1Affine::from(G1Projective::generator() * *r);
    let shared = G1Affine::from(G1Projective::from(*recipient) * *r);
    let plain = Zeroizing::new(y.to_bytes());
    let ciphertext = cipher(purpose, &shared, &ephemeral, dealer, to)
        .encrypt(
            Nonce::from_slice(&[0u8; 12]),
            Payload {
                msg: plain.as_ref(),
                aad: b"",
            },
        )
        .expect("AES-GCM encrypts");
    SubShare {
        to,
        ephemeral: hex48(&ephemeral),
        ciphertext: format!("0x{}", hex::encode(ciphertext)),
    }
}

/// Decrypts `sub` with the recipient's secret `own` and checks it against the dealer's
/// `commitments` (Feldman): the scalar, or why it cannot be used.
pub(super) fn open(
    purpose: &[u8],
    dealer: u32,
    own: &Scalar,
    sub: &SubShare,
    commitments: &[G1Projective],
) -> Result<Zeroizing<Scalar>, &'static str> {
    let ephemeral = point(&sub.ephemeral).ok_or("the ephemeral key is not a G1 point")?;
    let shared = G1Affine::from(G1Projective::from(ephemeral) * own);
    let ciphertext = hex::decode(sub.ciphertext.trim_start_matches("0x")).map_err(|_| "the ciphertext is not hex")?;
    let plain = Zeroizing::new(
        cipher(purpose, &shared, &ephemeral, dealer, sub.to)
            .decrypt(
                Nonce::from_slice(&[0u8; 12]),
                Payload {
                    msg: &ciphertext,
                    aad: b"",
                },
            )
            .map_err(|_| "its sub-share for this holder does not decrypt")?,
    );
    let mut bytes = Zeroizing::new([0u8; 32]);
    if plain.len() != 32 {
        return Err("a sub-share is not 32 bytes");
    }
    bytes.copy_from_slice(&plain);
    let y: Zeroizing<Scalar> =
        Zeroizing::new(Option::from(Scalar::from_bytes(&bytes)).ok_or("a sub-share is not a scalar")?);
    if G1Affine::from(G1Projective::generator() * *y) != G1Affine::from(committed_at(commitments, sub.to)) {
        return Err("its sub-share does not match its commitments");
    }
    Ok(y)
}
