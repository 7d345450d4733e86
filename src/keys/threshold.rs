//! Threshold BLS: a validator key split t-of-n (Shamir over the BLS12-381 scalar field), with
//! the Feldman verification vector that lets anyone check a share or a partial signature, and
//! the Lagrange combination of t partial signatures into the group signature. BLS signing is
//! linear, so t partials combine to exactly the signature the whole key would make.
//!
//! Secrets here are scalars zeroed when dropped; the whole key exists only while splitting (or
//! in the emergency `combine_secret`).

use bls12_381::{G1Affine, G1Projective, Scalar};
use futures::future::BoxFuture;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::dealing::{Polynomial, committed_at};
use super::handle::{KeyError, SignRequest, SigningKey};
use super::secret::SecretKey;
use crate::types::{PublicKey, Signature, SigningRoot};

/// What a share keystore says about its group (its `threshold` object).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShareInfo {
    pub index: u32,
    pub threshold: usize,
    pub shares: usize,
    pub group_public_key: PublicKey,
    pub verification_vector: Vec<PublicKey>,
}

impl ShareInfo {
    /// Share `index` of the `shares` of the group committed to by `vector`.
    pub fn of(index: u32, vector: &VerificationVector, shares: usize) -> ShareInfo {
        ShareInfo {
            index,
            threshold: vector.threshold(),
            shares,
            group_public_key: vector.group_public_key(),
            verification_vector: vector.0.clone(),
        }
    }

    /// Checks the object against itself: the vector's first key is the group's, its length the
    /// threshold, and `share` is the share the vector commits to at the index.
    pub fn check(&self, share: &PublicKey) -> Result<(), String> {
        let vector = VerificationVector(self.verification_vector.clone());
        if self.verification_vector.first() != Some(&self.group_public_key) || vector.threshold() != self.threshold {
            return Err("threshold: the verification vector does not match the group key and threshold".into());
        }
        if self.threshold > self.shares {
            return Err("threshold: more needed than there are shares".into());
        }
        match vector.share_public_key(self.index) {
            Ok(k) if k == *share => Ok(()),
            Ok(_) => Err(format!(
                "threshold: share {} does not match the verification vector",
                self.index
            )),
            Err(e) => Err(format!("threshold: {e}")),
        }
    }
}

/// A share node's key: a share of the group key, found under the group's public key; it signs
/// partially.
pub struct ShareKey {
    secret: SecretKey,
    info: ShareInfo,
}

impl ShareKey {
    /// The share, checked against its group's verification vector.
    pub fn new(secret: SecretKey, info: ShareInfo) -> Result<ShareKey, String> {
        info.check(&secret.public_key())?;
        Ok(ShareKey { secret, info })
    }
}

impl std::fmt::Debug for ShareKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShareKey({} of {})", self.info.index, self.info.group_public_key)
    }
}

impl SigningKey for ShareKey {
    fn public_key(&self) -> PublicKey {
        self.info.group_public_key
    }

    fn sign<'a>(&'a self, root: &'a SigningRoot, _: SignRequest<'a>) -> BoxFuture<'a, Result<Signature, KeyError>> {
        Box::pin(std::future::ready(Ok(self.secret.sign(root))))
    }

    fn share_index(&self) -> Option<u32> {
        Some(self.info.index)
    }
}

/// Why shares or partials cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    #[error("threshold {t} of {n}: need 1 <= t <= n <= 255")]
    Parameters { t: usize, n: usize },
    #[error("share index {0}: indices run from 1 to 255, each once")]
    Index(u32),
    #[error("{got} shares or partial signatures where {need} are needed")]
    TooFew { got: usize, need: usize },
    #[error("the verification vector is not {0} valid public keys")]
    Vector(usize),
    #[error("partial signature of share {0} is not a valid signature")]
    Partial(u32),
    #[error("the combined shares are not a valid secret key")]
    Secret,
}

/// Feldman commitments to the polynomial's coefficients: `vector[0]` is the group public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerificationVector(pub Vec<PublicKey>);

impl VerificationVector {
    pub fn group_public_key(&self) -> PublicKey {
        self.0[0]
    }

    pub fn threshold(&self) -> usize {
        self.0.len()
    }

    fn points(&self) -> Result<Vec<G1Projective>, ThresholdError> {
        self.0
            .iter()
            .map(|p| Option::<G1Affine>::from(G1Affine::from_compressed(&p.0)).map(G1Projective::from))
            .collect::<Option<Vec<_>>>()
            .ok_or(ThresholdError::Vector(self.0.len()))
    }

    /// The public key share `index` must have: the committed polynomial at `index`.
    pub fn share_public_key(&self, index: u32) -> Result<PublicKey, ThresholdError> {
        check_index(index)?;
        Ok(PublicKey(
            G1Affine::from(committed_at(&self.points()?, index)).to_compressed(),
        ))
    }
}

/// One share of a split key.
pub struct Share {
    pub index: u32,
    pub secret: SecretKey,
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share({}, {})", self.index, self.secret.public_key())
    }
}

fn check_index(index: u32) -> Result<(), ThresholdError> {
    if (1..=255).contains(&index) {
        Ok(())
    } else {
        Err(ThresholdError::Index(index))
    }
}

pub(super) fn scalar_of(sk: &SecretKey) -> Zeroizing<Scalar> {
    let mut le = *sk.to_bytes();
    le.reverse();
    let s = Option::<Scalar>::from(Scalar::from_bytes(&le)).expect("a valid secret key is below the group order");
    zeroize::Zeroize::zeroize(&mut le);
    Zeroizing::new(s)
}

pub(super) fn secret_of(s: &Scalar) -> Option<SecretKey> {
    let mut be = Zeroizing::new(s.to_bytes());
    be.reverse();
    SecretKey::from_bytes(&be).ok()
}

pub(super) fn random_scalar() -> Zeroizing<Scalar> {
    let mut wide = Zeroizing::new([0u8; 64]);
    rand::rng().fill_bytes(wide.as_mut());
    Zeroizing::new(Scalar::from_bytes_wide(&wide))
}

/// Splits `key` into `n` shares, any `t` of which sign for it, and the verification vector.
pub fn split(key: &SecretKey, t: usize, n: usize) -> Result<(Vec<Share>, VerificationVector), ThresholdError> {
    if t == 0 || t > n || n > 255 {
        return Err(ThresholdError::Parameters { t, n });
    }
    loop {
        let polynomial = Polynomial::random(&scalar_of(key), t);
        let vector = VerificationVector(
            polynomial
                .commitments()
                .iter()
                .map(|c| PublicKey(c.to_compressed()))
                .collect(),
        );
        let shares: Option<Vec<Share>> = (1..=n as u32)
            .map(|i| secret_of(&polynomial.at(i)).map(|secret| Share { index: i, secret }))
            .collect();
        // A share of zero (probability ~n/2^255) is no key: draw another polynomial.
        if let Some(shares) = shares {
            return Ok((shares, vector));
        }
    }
}

/// The Lagrange coefficients at zero for the shares `indices`.
pub(super) fn lagrange(indices: &[u32]) -> Result<Vec<Scalar>, ThresholdError> {
    let mut seen = std::collections::HashSet::new();
    for i in indices {
        check_index(*i)?;
        if !seen.insert(*i) {
            return Err(ThresholdError::Index(*i));
        }
    }
    Ok(indices
        .iter()
        .map(|&i| {
            let xi = Scalar::from(u64::from(i));
            let (mut num, mut den) = (Scalar::one(), Scalar::one());
            for &j in indices.iter().filter(|&&j| j != i) {
                let xj = Scalar::from(u64::from(j));
                num *= xj;
                den *= xj - xi;
            }
            num * Option::<Scalar>::from(den.invert()).expect("distinct indices")
        })
        .collect())
}

/// Combines `t` partial signatures (share index, signature) into the group signature. The
/// caller verifies each partial first (and the result against the group key).
pub fn combine_signatures(partials: &[(u32, Signature)], t: usize) -> Result<Signature, ThresholdError> {
    if partials.len() < t {
        return Err(ThresholdError::TooFew {
            got: partials.len(),
            need: t,
        });
    }
    let used = &partials[..t];
    let indices: Vec<u32> = used.iter().map(|(i, _)| *i).collect();
    let coefficients = lagrange(&indices)?;
    let mut acc = blst::blst_p2::default();
    for (n, ((index, sig), l)) in used.iter().zip(coefficients).enumerate() {
        let term = g2_times(sig, &l).ok_or(ThresholdError::Partial(*index))?;
        if n == 0 {
            acc = term;
        } else {
            // SAFETY: blst's point addition on two valid, initialised projective points.
            unsafe { blst::blst_p2_add_or_double(&mut acc, &acc, &term) };
        }
    }
    let mut out = [0u8; 96];
    // SAFETY: `out` is the 96 bytes a compressed G2 point takes.
    unsafe { blst::blst_p2_compress(out.as_mut_ptr(), &acc) };
    Ok(Signature(out))
}

/// `sig * l` in G2, with blst (an order of magnitude faster than the pure-Rust curve); `None`
/// when `sig` is not a point of the G2 subgroup.
fn g2_times(sig: &Signature, l: &Scalar) -> Option<blst::blst_p2> {
    let mut affine = blst::blst_p2_affine::default();
    // SAFETY: blst reads 96 bytes from the array and writes the affine point it decodes.
    let decoded = unsafe { blst::blst_p2_uncompress(&mut affine, sig.0.as_ptr()) };
    // SAFETY: reads an initialised affine point.
    if decoded != blst::BLST_ERROR::BLST_SUCCESS || !unsafe { blst::blst_p2_affine_in_g2(&affine) } {
        return None;
    }
    let (mut point, mut product) = (blst::blst_p2::default(), blst::blst_p2::default());
    let scalar = l.to_bytes(); // little-endian, as blst_p2_mult reads it
    // SAFETY: initialised inputs; the scalar is 32 bytes, of which 255 bits are read.
    unsafe {
        blst::blst_p2_from_affine(&mut point, &affine);
        blst::blst_p2_mult(&mut product, &point, scalar.as_ptr(), 255);
    }
    Some(product)
}

/// Emergency recovery: the whole key from `t` shares. Never part of signing.
pub fn combine_secret(shares: &[Share], t: usize) -> Result<SecretKey, ThresholdError> {
    if shares.len() < t {
        return Err(ThresholdError::TooFew {
            got: shares.len(),
            need: t,
        });
    }
    let used = &shares[..t];
    let indices: Vec<u32> = used.iter().map(|s| s.index).collect();
    let mut acc = Zeroizing::new(Scalar::zero());
    for (share, l) in used.iter().zip(lagrange(&indices)?) {
        *acc += *scalar_of(&share.secret) * l;
    }
    secret_of(&acc).ok_or(ThresholdError::Secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SigningRoot;

    fn key() -> SecretKey {
        SecretKey::generate(&Zeroizing::new([7u8; 32]))
    }

    #[test]
    fn any_t_partials_make_the_whole_keys_signature_and_fewer_do_not() {
        let sk = key();
        let (shares, vv) = split(&sk, 3, 4).unwrap();
        assert_eq!(vv.group_public_key(), sk.public_key());
        for s in &shares {
            assert_eq!(vv.share_public_key(s.index).unwrap(), s.secret.public_key());
        }
        let root = SigningRoot([5u8; 32]);
        let whole = sk.sign(&root);
        let partials: Vec<(u32, Signature)> = shares.iter().map(|s| (s.index, s.secret.sign(&root))).collect();
        for skip in 0..4 {
            let some: Vec<_> = partials
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, p)| *p)
                .collect();
            assert_eq!(
                combine_signatures(&some, 3).unwrap(),
                whole,
                "without share {}",
                skip + 1
            );
        }
        // Two shares interpolate a line through other points: not the key's signature.
        let two = combine_signatures(&partials[..2], 2).unwrap();
        assert_ne!(two, whole);
        assert!(matches!(
            combine_signatures(&partials[..2], 3),
            Err(ThresholdError::TooFew { .. })
        ));
        let back = combine_secret(&shares[1..], 3).unwrap();
        assert_eq!(back.public_key(), sk.public_key());
    }

    #[test]
    fn bad_parameters_and_indices_are_refused() {
        assert!(split(&key(), 0, 3).is_err());
        assert!(split(&key(), 4, 3).is_err());
        assert!(split(&key(), 2, 256).is_err());
        let root = SigningRoot([1u8; 32]);
        let p = key().sign(&root);
        assert_eq!(combine_signatures(&[(1, p), (1, p)], 2), Err(ThresholdError::Index(1)));
        assert_eq!(combine_signatures(&[(0, p), (2, p)], 2), Err(ThresholdError::Index(0)));
    }
}
