//! A validator's BLS secret key. It cannot be cloned, printed or serialised; blst zeroes
//! the scalar when it is dropped.

use std::fmt;

use zeroize::Zeroizing;

use crate::types::{PublicKey, Signature, SigningRoot};

/// The Ethereum consensus ciphersuite: BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_.
const DST: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

pub struct SecretKey {
    /// Boxed so that its address is stable and its page can be locked out of swap.
    inner: Box<blst::min_pk::SecretKey>,
    public: PublicKey,
}

/// Why bytes are not a secret key. Never carries the bytes themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretKeyError {
    #[error("private key must be 32 bytes of hex")]
    NotHex,
    #[error("not a valid BLS12-381 secret key")]
    OutOfRange,
}

impl SecretKey {
    /// From the 32-byte big-endian scalar; refuses zero and values not below the group order.
    pub fn from_bytes(bytes: &Zeroizing<[u8; 32]>) -> Result<Self, SecretKeyError> {
        let inner =
            Box::new(blst::min_pk::SecretKey::from_bytes(bytes.as_ref()).map_err(|_| SecretKeyError::OutOfRange)?);
        crate::process::lock_in_memory(inner.as_ref());
        let public = PublicKey(inner.sk_to_pk().to_bytes());
        Ok(Self { inner, public })
    }

    /// A new key from 32 bytes of input keying material (the BLS `KeyGen`, as blst does it).
    pub fn generate(ikm: &Zeroizing<[u8; 32]>) -> Self {
        let inner = Box::new(blst::min_pk::SecretKey::key_gen(ikm.as_ref(), &[]).expect("32 bytes of keying material"));
        crate::process::lock_in_memory(inner.as_ref());
        let public = PublicKey(inner.sk_to_pk().to_bytes());
        Self { inner, public }
    }

    /// From `0x`-prefixed hex (Web3Signer `file-raw` key definitions).
    pub fn from_hex(hex_str: &str) -> Result<Self, SecretKeyError> {
        let h = hex_str.trim();
        let h = h.strip_prefix("0x").unwrap_or(h);
        let mut bytes = Zeroizing::new([0u8; 32]);
        if h.len() != 64 || hex::decode_to_slice(h, bytes.as_mut()).is_err() {
            return Err(SecretKeyError::NotHex);
        }
        Self::from_bytes(&bytes)
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    pub fn sign(&self, root: &SigningRoot) -> Signature {
        Signature(self.inner.sign(root.as_bytes(), DST, &[]).to_bytes())
    }

    /// The scalar, for writing a keystore (Key Manager export is not offered; tests and the
    /// benchmark's keystore generator use this).
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.inner.to_bytes())
    }
}

/// Whether `signature` is `pubkey`'s over `root` in the consensus ciphersuite (both points
/// checked: on the curve and in their subgroups).
pub fn verify(pubkey: &PublicKey, root: &SigningRoot, signature: &Signature) -> bool {
    let (Ok(pk), Ok(sig)) = (
        blst::min_pk::PublicKey::key_validate(&pubkey.0),
        blst::min_pk::Signature::sig_validate(&signature.0, true),
    ) else {
        return false;
    };
    sig.verify(false, root.as_bytes(), DST, &[], &pk, false) == blst::BLST_ERROR::BLST_SUCCESS
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SecretKey({}, <redacted>)", self.public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interop key 0 (public test key).
    const SK0: &str = "0x25295f0d1d592a90b333e26e85149708208e9f8e8bc18f6c77bd62f8ad7a6866";
    const PK0: &str =
        "0xa99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";

    #[test]
    fn derives_public_key_and_never_prints_the_secret() {
        let sk = SecretKey::from_hex(SK0).unwrap();
        assert_eq!(sk.public_key().to_string(), PK0);
        let dbg = format!("{sk:?}");
        assert!(!dbg.contains(&SK0[2..]), "{dbg}");
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn signature_verifies() {
        let sk = SecretKey::from_hex(SK0).unwrap();
        let root = SigningRoot([7; 32]);
        let sig = sk.sign(&root);
        let pk = blst::min_pk::PublicKey::from_bytes(&sk.public_key().0).unwrap();
        let sig = blst::min_pk::Signature::from_bytes(&sig.0).unwrap();
        assert_eq!(
            sig.verify(true, root.as_bytes(), DST, &[], &pk, true),
            blst::BLST_ERROR::BLST_SUCCESS
        );
    }

    #[test]
    fn refuses_invalid_scalars() {
        assert!(SecretKey::from_hex(&format!("0x{}", "00".repeat(32))).is_err());
        assert!(SecretKey::from_hex(&format!("0x{}", "ff".repeat(32))).is_err());
        assert!(SecretKey::from_hex("0x1234").is_err());
    }
}
