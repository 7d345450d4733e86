//! Web3 Secret Storage (version 3) keystores for secp256k1 keys: how Web3Signer and web3j keep
//! Commit-Boost ECDSA proxy keys. The KDFs are EIP-2335's (shared with `keystore`); the MAC is
//! keccak256 of the key's second half and the ciphertext, and the password is used as raw bytes.

use aes::Aes128;
use ctr::cipher::{KeyIvInit, StreamCipher};
use serde::{Deserialize, Serialize};
use sha3::{Digest, Keccak256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::keystore::{KdfParams, KeystoreError, Module, derive_key, unhex};

type Aes128Ctr = ctr::Ctr128BE<Aes128>;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeystoreV3 {
    pub version: u32,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub crypto: CryptoV3,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CryptoV3 {
    pub cipher: String,
    pub cipherparams: super::keystore::CipherParams,
    pub ciphertext: String,
    pub kdf: String,
    pub kdfparams: KdfParams,
    pub mac: String,
}

impl KeystoreV3 {
    pub fn from_json(json: &str) -> Result<Self, KeystoreError> {
        let ks: KeystoreV3 = crate::json::parse_at("", json).map_err(KeystoreError::Format)?;
        if ks.version != 3 {
            return Err(KeystoreError::Unsupported(format!(
                "version {} (expected 3)",
                ks.version
            )));
        }
        Ok(ks)
    }

    fn kdf(&self) -> Module<KdfParams> {
        Module {
            function: self.crypto.kdf.clone(),
            params: self.crypto.kdfparams.clone(),
            message: String::new(),
        }
    }

    /// The 32-byte secret, after the MAC has been checked.
    pub fn decrypt(&self, password: &[u8]) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
        let c = &self.crypto;
        if c.cipher != "aes-128-ctr" {
            return Err(KeystoreError::Unsupported(format!("cipher `{}`", c.cipher)));
        }
        let iv = unhex("crypto.cipherparams.iv", &c.cipherparams.iv)?;
        let ciphertext = unhex("crypto.ciphertext", &c.ciphertext)?;
        if iv.len() != 16 || ciphertext.len() != 32 {
            return Err(KeystoreError::Format(
                "crypto.cipherparams.iv must be 16 bytes and crypto.ciphertext 32".into(),
            ));
        }
        let mac = unhex("crypto.mac", &c.mac)?;
        let dk = derive_key(&self.kdf(), password)?;
        let expected = Keccak256::new()
            .chain_update(&dk[16..32])
            .chain_update(&ciphertext)
            .finalize();
        if !bool::from(expected.as_slice().ct_eq(&mac)) {
            return Err(KeystoreError::WrongPassword);
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&ciphertext);
        Aes128Ctr::new(dk[..16].into(), iv.as_slice().into()).apply_keystream(secret.as_mut());
        Ok(secret)
    }

    /// A new keystore for `secret` (pbkdf2-hmac-sha256 with `rounds`; salt, IV and id random).
    pub fn encrypt(secret: &[u8; 32], password: &[u8], rounds: u32, address: Option<String>) -> KeystoreV3 {
        use rand::RngCore;
        let mut rng = rand::rng();
        let (mut salt, mut iv, mut id) = ([0u8; 32], [0u8; 16], [0u8; 16]);
        rng.fill_bytes(&mut salt);
        rng.fill_bytes(&mut iv);
        rng.fill_bytes(&mut id);
        id[6] = (id[6] & 0x0f) | 0x40;
        id[8] = (id[8] & 0x3f) | 0x80;
        let kdfparams = KdfParams::Pbkdf2 {
            dklen: 32,
            c: rounds,
            prf: "hmac-sha256".into(),
            salt: hex::encode(salt),
        };
        let kdf = Module {
            function: "pbkdf2".to_string(),
            params: kdfparams.clone(),
            message: String::new(),
        };
        let dk = derive_key(&kdf, password).expect("own parameters are valid");
        let mut ciphertext = *secret;
        Aes128Ctr::new(dk[..16].into(), (&iv).into()).apply_keystream(&mut ciphertext);
        let mac = Keccak256::new()
            .chain_update(&dk[16..32])
            .chain_update(ciphertext)
            .finalize();
        let u = hex::encode(id);
        KeystoreV3 {
            version: 3,
            id: format!(
                "{}-{}-{}-{}-{}",
                &u[0..8],
                &u[8..12],
                &u[12..16],
                &u[16..20],
                &u[20..32]
            ),
            address,
            crypto: CryptoV3 {
                cipher: "aes-128-ctr".into(),
                cipherparams: super::keystore::CipherParams { iv: hex::encode(iv) },
                ciphertext: hex::encode(ciphertext),
                kdf: "pbkdf2".into(),
                kdfparams,
                mac: hex::encode(mac),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Web3 Secret Storage definition's pbkdf2 test vector (password "testpassword").
    #[test]
    fn decrypts_the_specifications_vector() {
        let json = r#"{"crypto":{"cipher":"aes-128-ctr","cipherparams":{"iv":"6087dab2f9fdbbfaddc31a909735c1e6"},
            "ciphertext":"5318b4d5bcd28de64ee5559e671353e16f075ecae9f99c7a79a38af5f869aa46","kdf":"pbkdf2",
            "kdfparams":{"c":262144,"dklen":32,"prf":"hmac-sha256","salt":"ae3cd4e7013836a3df6bd7241b12db061dbe2c6785853cce422d148a624ce0bd"},
            "mac":"517ead924a9d0dc3124507e3393d175ce3ff7c1e96529c6c555ce9e51205e9b2"},
            "id":"3198bc9c-6672-5ab3-d995-4942343ae5b6","version":3}"#;
        let ks = KeystoreV3::from_json(json).unwrap();
        assert_eq!(
            hex::encode(*ks.decrypt(b"testpassword").unwrap()),
            "7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d"
        );
        assert_eq!(ks.decrypt(b"testpassword\n").unwrap_err(), KeystoreError::WrongPassword);
    }

    #[test]
    fn what_it_writes_it_reads() {
        let secret = [7u8; 32];
        let ks = KeystoreV3::encrypt(&secret, b"pw", 2, None);
        let back = KeystoreV3::from_json(&serde_json::to_string(&ks).unwrap()).unwrap();
        assert_eq!(*back.decrypt(b"pw").unwrap(), secret);
        assert!(back.decrypt(b"other").is_err());
    }
}
