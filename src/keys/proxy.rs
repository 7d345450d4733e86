//! Commit-Boost proxy keys: keys a consensus key delegates to (BLS, or secp256k1), made on a
//! module's request. They sign only Commit-Boost roots (`CommitBoostRoot`), never a consensus
//! message. Kept encrypted: EIP-2335 for BLS, Web3 Secret Storage for secp256k1 (as Web3Signer).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k256::ecdsa::SigningKey as EcdsaKey;
use rand::RngCore;
use sha3::{Digest, Keccak256};
use zeroize::Zeroizing;

use super::keystore::{KdfChoice, Keystore, KeystoreError};
use super::keystore_v3::KeystoreV3;
use super::secret::SecretKey;
use crate::consensus::commit_boost::CommitBoostRoot;
use crate::types::{Address, PublicKey, Signature};

/// pbkdf2 rounds for the keystores Palisade writes (Web3Signer: 2^16 for BLS proxies).
pub const KEYSTORE_ROUNDS: u32 = 1 << 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Bls,
    Ecdsa,
}

impl Scheme {
    /// Web3Signer's folder name for the scheme.
    pub fn folder(self) -> &'static str {
        match self {
            Scheme::Bls => "BLS",
            Scheme::Ecdsa => "SECP256K1",
        }
    }
}

/// A proxy key's public identity: a BLS public key, or a compressed secp256k1 public key
/// (with the address Commit-Boost names it by).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyId {
    Bls(PublicKey),
    Ecdsa { compressed: [u8; 33], address: Address },
}

impl ProxyId {
    pub fn scheme(&self) -> Scheme {
        match self {
            ProxyId::Bls(_) => Scheme::Bls,
            ProxyId::Ecdsa { .. } => Scheme::Ecdsa,
        }
    }

    /// How Web3Signer names the key (and its file): the public key in hex.
    pub fn key_hex(&self) -> String {
        match self {
            ProxyId::Bls(p) => p.to_string(),
            ProxyId::Ecdsa { compressed, .. } => format!("0x{}", hex::encode(compressed)),
        }
    }

    pub fn key_bytes(&self) -> Vec<u8> {
        match self {
            ProxyId::Bls(p) => p.0.to_vec(),
            ProxyId::Ecdsa { compressed, .. } => compressed.to_vec(),
        }
    }
}

enum Secret {
    Bls(SecretKey),
    /// `k256`'s key zeroizes itself on drop.
    Ecdsa(EcdsaKey),
}

/// A proxy key, whose consensus key delegated to it, and the module it was made for (`None`
/// for keys found in a Web3Signer folder, which any module allowed that consensus key may use).
pub struct ProxyKey {
    pub delegator: PublicKey,
    pub module: Option<String>,
    pub id: ProxyId,
    secret: Secret,
}

impl std::fmt::Debug for ProxyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ProxyKey({}, of {}, module {:?})",
            self.id.key_hex(),
            self.delegator,
            self.module
        )
    }
}

/// Why a stored proxy key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProxyKeyError {
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    #[error("not a secp256k1 secret key")]
    InvalidEcdsa,
}

fn ecdsa_id(key: &EcdsaKey) -> ProxyId {
    let public = key.verifying_key();
    let compressed: [u8; 33] = public
        .to_encoded_point(true)
        .as_bytes()
        .try_into()
        .expect("a compressed point is 33 bytes");
    let uncompressed = public.to_encoded_point(false);
    let hash = Keccak256::digest(&uncompressed.as_bytes()[1..]);
    ProxyId::Ecdsa {
        compressed,
        address: Address::from_slice(&hash[12..]),
    }
}

impl ProxyKey {
    /// A new random key of `scheme`.
    pub fn generate(scheme: Scheme, delegator: PublicKey, module: Option<String>) -> ProxyKey {
        let mut ikm = Zeroizing::new([0u8; 32]);
        let secret = loop {
            rand::rng().fill_bytes(ikm.as_mut());
            match scheme {
                Scheme::Bls => break Secret::Bls(SecretKey::generate(&ikm)),
                Scheme::Ecdsa => {
                    if let Ok(k) = EcdsaKey::from_bytes(ikm.as_ref().into()) {
                        break Secret::Ecdsa(k);
                    }
                }
            }
        };
        Self::with(secret, delegator, module)
    }

    fn with(secret: Secret, delegator: PublicKey, module: Option<String>) -> ProxyKey {
        let id = match &secret {
            Secret::Bls(sk) => ProxyId::Bls(sk.public_key()),
            Secret::Ecdsa(k) => ecdsa_id(k),
        };
        ProxyKey {
            delegator,
            module,
            id,
            secret,
        }
    }

    /// A BLS proxy signs a Commit-Boost root.
    pub fn sign_bls(&self, root: &CommitBoostRoot) -> Option<Signature> {
        match &self.secret {
            Secret::Bls(sk) => Some(sk.sign(root.signing_root())),
            Secret::Ecdsa(_) => None,
        }
    }

    /// Current Commit-Boost: the root itself as the prehash, `r || s || v` with v 27 or 28.
    pub fn sign_ecdsa(&self, root: &CommitBoostRoot) -> Option<[u8; 65]> {
        let Secret::Ecdsa(k) = &self.secret else { return None };
        let (sig, recid) = k.sign_prehash_recoverable(&root.signing_root().0).ok()?;
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&sig.to_bytes());
        out[64] = 27 + recid.to_byte();
        Some(out)
    }

    /// Web3Signer (and Commit-Boost before v0.8): SHA-256 of the root signed, `r || s`.
    pub fn sign_ecdsa_legacy(&self, root: &CommitBoostRoot) -> Option<[u8; 64]> {
        use k256::ecdsa::signature::Signer;
        let Secret::Ecdsa(k) = &self.secret else { return None };
        let sig: k256::ecdsa::Signature = k.sign(&root.signing_root().0);
        Some(sig.to_bytes().into())
    }

    /// The key encrypted with `password` (EIP-2335 or Web3 Secret Storage by scheme).
    pub fn to_keystore_json(&self, password: &[u8]) -> String {
        match &self.secret {
            Secret::Bls(sk) => {
                let text = String::from_utf8_lossy(password);
                let mut ks = Keystore::encrypt(sk, &text, KdfChoice::Pbkdf2 { c: KEYSTORE_ROUNDS });
                ks.description = Some("Commit-Boost proxy key (Palisade)".into());
                serde_json::to_string_pretty(&ks).expect("a keystore serializes")
            }
            Secret::Ecdsa(k) => {
                let secret: Zeroizing<[u8; 32]> = Zeroizing::new(k.to_bytes().into());
                let address = match self.id {
                    ProxyId::Ecdsa { address, .. } => Some(hex::encode(address)),
                    ProxyId::Bls(_) => None,
                };
                let ks = KeystoreV3::encrypt(&secret, password, KEYSTORE_ROUNDS, address);
                serde_json::to_string_pretty(&ks).expect("a keystore serializes")
            }
        }
    }

    /// Reads a stored key. A secp256k1 keystore is tried with the password as written too
    /// (Web3Signer uses its password file's bytes, a final newline included).
    pub fn from_keystore_json(
        scheme: Scheme,
        json: &str,
        password: &[u8],
        raw_password: &[u8],
        delegator: PublicKey,
        module: Option<String>,
    ) -> Result<ProxyKey, ProxyKeyError> {
        let secret = match scheme {
            Scheme::Bls => Secret::Bls(Keystore::from_json(json)?.decrypt(&String::from_utf8_lossy(password))?),
            Scheme::Ecdsa => {
                let ks = KeystoreV3::from_json(json)?;
                let bytes = match ks.decrypt(password) {
                    Err(KeystoreError::WrongPassword) if raw_password != password => ks.decrypt(raw_password)?,
                    other => other?,
                };
                Secret::Ecdsa(EcdsaKey::from_bytes(bytes.as_ref().into()).map_err(|_| ProxyKeyError::InvalidEcdsa)?)
            }
        };
        Ok(Self::with(secret, delegator, module))
    }
}

/// The proxy keys in memory, by public key and (secp256k1) by address.
#[derive(Default)]
pub struct ProxyKeys {
    keys: RwLock<HashMap<ProxyId, Arc<ProxyKey>>>,
}

impl ProxyKeys {
    /// Adds `key`; false if it was there already.
    pub fn insert(&self, key: ProxyKey) -> bool {
        let mut keys = self.keys.write().expect("proxy keys");
        if keys.contains_key(&key.id) {
            return false;
        }
        keys.insert(key.id, Arc::new(key));
        true
    }

    pub fn contains(&self, id: &ProxyId) -> bool {
        self.keys.read().expect("proxy keys").contains_key(id)
    }

    /// The key named by `hex`: a BLS public key, a compressed secp256k1 key, or an address.
    pub fn find(&self, hex_id: &[u8]) -> Option<Arc<ProxyKey>> {
        let keys = self.keys.read().expect("proxy keys");
        keys.values()
            .find(|k| match &k.id {
                ProxyId::Bls(p) => p.0[..] == *hex_id,
                ProxyId::Ecdsa { compressed, address } => compressed[..] == *hex_id || address[..] == *hex_id,
            })
            .cloned()
    }

    /// Every proxy of `delegator`.
    pub fn of(&self, delegator: &PublicKey) -> Vec<Arc<ProxyKey>> {
        let keys = self.keys.read().expect("proxy keys");
        let mut v: Vec<_> = keys.values().filter(|k| k.delegator == *delegator).cloned().collect();
        v.sort_by_key(|k| k.id.key_hex());
        v
    }

    /// How many proxies of `delegator` were made for `module`.
    pub fn count_of(&self, delegator: &PublicKey, module: &str) -> usize {
        let keys = self.keys.read().expect("proxy keys");
        keys.values()
            .filter(|k| k.delegator == *delegator && k.module.as_deref() == Some(module))
            .count()
    }

    pub fn len(&self) -> usize {
        self.keys.read().expect("proxy keys").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Root, Version};

    fn root() -> CommitBoostRoot {
        let d = crate::consensus::commit_boost::domain(Version::ZERO);
        CommitBoostRoot::legacy(Root::repeat_byte(9), d)
    }

    #[test]
    fn stored_keys_come_back_the_same() {
        let delegator = SecretKey::generate(&Zeroizing::new([1u8; 32])).public_key();
        for scheme in [Scheme::Bls, Scheme::Ecdsa] {
            let key = ProxyKey::generate(scheme, delegator, Some("m".into()));
            let json = key.to_keystore_json(b"pw");
            let back = ProxyKey::from_keystore_json(scheme, &json, b"pw", b"pw", delegator, None).unwrap();
            assert_eq!(back.id, key.id);
            assert!(ProxyKey::from_keystore_json(scheme, &json, b"no", b"no\n", delegator, None).is_err());
        }
    }

    #[test]
    fn an_ecdsa_proxy_recovers_to_its_address() {
        let delegator = SecretKey::generate(&Zeroizing::new([1u8; 32])).public_key();
        let key = ProxyKey::generate(Scheme::Ecdsa, delegator, None);
        let sig = key.sign_ecdsa(&root()).unwrap();
        let recid = k256::ecdsa::RecoveryId::from_byte(sig[64] - 27).unwrap();
        let s = k256::ecdsa::Signature::from_slice(&sig[..64]).unwrap();
        let vk = k256::ecdsa::VerifyingKey::recover_from_prehash(&root().signing_root().0, &s, recid).unwrap();
        let ProxyId::Ecdsa { compressed, .. } = key.id else {
            panic!()
        };
        assert_eq!(vk.to_encoded_point(true).as_bytes(), compressed);
        assert!(key.sign_bls(&root()).is_none());
    }
}
