//! The fleet secret (`--shared-keystore-secret-file`): what every replica of one fleet is
//! given, and never the database. Keystores imported through the Key Manager API are shared
//! through the database as they came (EIP-2335, encrypted by their own password); their
//! passwords are sealed with a key derived from this secret (AES-256-GCM, bound to the
//! keystore's pubkey). A copy of the database alone unlocks nothing.

use std::fmt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::types::PublicKey;

/// Bytes a fleet secret must have at least (`openssl rand -hex 32` gives 64).
pub const MIN_SECRET_BYTES: usize = 32;
const SALT: &[u8] = b"palisade fleet secret";
const SEAL_INFO: &[u8] = b"palisade keystore password sealing v1";
const ID_INFO: &[u8] = b"palisade fleet secret id v1";
const VERSION: u8 = 1;

pub struct FleetSecret {
    key: Zeroizing<[u8; 32]>,
    /// Names the secret without revealing it (an HKDF output): stored beside what it sealed,
    /// so that a replica given another secret can say so.
    id: String,
}

impl fmt::Debug for FleetSecret {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FleetSecret({}, <redacted>)", self.id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    #[error("--shared-keystore-secret-file {file}: {why}")]
    File { file: String, why: String },
    #[error("{0}")]
    Access(String),
    /// Sealed with another fleet secret than this replica's.
    #[error("sealed with fleet secret {sealed_with}, but this replica's --shared-keystore-secret-file is {ours}")]
    OtherSecret { sealed_with: String, ours: String },
    #[error("the sealed password is corrupt or was not sealed for this key")]
    Corrupt,
}

/// Distinct byte values 32 random bytes have at the very least (they have ~30): fewer means
/// a pattern someone typed, which a stolen database could be tried against.
const MIN_DISTINCT_BYTES: usize = 16;

impl FleetSecret {
    /// From the secret's bytes: at least 32, and random-looking.
    pub fn from_bytes(secret: &[u8]) -> Result<Self, String> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "has {} bytes; a fleet secret needs at least {MIN_SECRET_BYTES} random bytes (`openssl rand -hex 32`)",
                secret.len()
            ));
        }
        let distinct = secret.iter().collect::<std::collections::HashSet<_>>().len();
        if distinct < MIN_DISTINCT_BYTES {
            return Err(format!(
                "does not look random ({distinct} distinct byte values); generate one with `openssl rand -hex 32`"
            ));
        }
        let hk = Hkdf::<Sha256>::new(Some(SALT), secret);
        let mut key = Zeroizing::new([0u8; 32]);
        hk.expand(SEAL_INFO, key.as_mut())
            .expect("32 bytes is a valid HKDF length");
        let mut id = [0u8; 8];
        hk.expand(ID_INFO, &mut id).expect("8 bytes is a valid HKDF length");
        Ok(FleetSecret {
            key,
            id: hex::encode(id),
        })
    }

    /// Reads the secret from `file`: hex (`openssl rand -hex 32`), surrounding whitespace
    /// ignored.
    pub fn load(file: &Path) -> Result<Self, FleetError> {
        let err = |why: String| FleetError::File {
            file: file.display().to_string(),
            why,
        };
        let text = crate::fsutil::read_access_file(file, "--shared-keystore-secret-file")
            .map_err(|e| FleetError::Access(e.to_string()))?;
        let hex_text = text.trim_ascii();
        let hex_text = hex_text.strip_prefix(b"0x").unwrap_or(hex_text);
        let bytes = Zeroizing::new(
            hex::decode(hex_text)
                .map_err(|_| err("must hold the secret as hex (`openssl rand -hex 32 > FILE`)".into()))?,
        );
        Self::from_bytes(&bytes).map_err(err)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.key.as_ref()).expect("a 32-byte key")
    }

    fn aad(pubkey: &PublicKey) -> Vec<u8> {
        let mut aad = b"palisade keystore password for ".to_vec();
        aad.extend_from_slice(&pubkey.0);
        aad
    }

    /// `password` sealed for the keystore of `pubkey`: version, nonce, ciphertext and tag.
    pub fn seal(&self, pubkey: &PublicKey, password: &str) -> Vec<u8> {
        use rand::RngCore;
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: password.as_bytes(),
                    aad: &Self::aad(pubkey),
                },
            )
            .expect("AES-GCM encrypts any length we use");
        let mut out = Vec::with_capacity(1 + 12 + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// The password `sealed` for `pubkey` with the fleet secret named `sealed_with`.
    pub fn unseal(
        &self,
        pubkey: &PublicKey,
        sealed: &[u8],
        sealed_with: &str,
    ) -> Result<Zeroizing<String>, FleetError> {
        if sealed_with != self.id {
            return Err(FleetError::OtherSecret {
                sealed_with: sealed_with.to_string(),
                ours: self.id.clone(),
            });
        }
        if sealed.len() < 1 + 12 + 16 || sealed[0] != VERSION {
            return Err(FleetError::Corrupt);
        }
        let plain = Zeroizing::new(
            self.cipher()
                .decrypt(
                    Nonce::from_slice(&sealed[1..13]),
                    Payload {
                        msg: &sealed[13..],
                        aad: &Self::aad(pubkey),
                    },
                )
                .map_err(|_| FleetError::Corrupt)?,
        );
        std::str::from_utf8(&plain)
            .map(|p| Zeroizing::new(p.to_string()))
            .map_err(|_| FleetError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pk(b: u8) -> PublicKey {
        PublicKey([b; 48])
    }

    /// 32 distinct bytes (test material, not a secret).
    fn random_looking(seed: u8) -> Vec<u8> {
        (0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(seed)).collect()
    }

    #[test]
    fn loads_hex_files_and_names_the_option() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("fleet");
        let write =
            |text: &str| crate::fsutil::write_private(&f, text.as_bytes(), crate::fsutil::Existing::Replace).unwrap();
        write(&format!("{}\n", hex::encode(random_looking(3))));
        assert_eq!(
            FleetSecret::load(&f).unwrap().id(),
            FleetSecret::from_bytes(&random_looking(3)).unwrap().id()
        );
        write("correct horse battery staple and more words to be long");
        let e = FleetSecret::load(&f).unwrap_err().to_string();
        assert!(
            e.starts_with("--shared-keystore-secret-file") && e.contains("hex"),
            "{e}"
        );
    }

    #[test]
    fn seals_and_unseals_bound_to_the_key() {
        let f = FleetSecret::from_bytes(&random_looking(7)).unwrap();
        let sealed = f.seal(&pk(1), "correct horse");
        assert!(!sealed.windows(13).any(|w| w == b"correct horse"));
        assert_eq!(f.unseal(&pk(1), &sealed, f.id()).unwrap().as_str(), "correct horse");
        // Moved to another key's row, or altered: refused.
        assert_eq!(f.unseal(&pk(2), &sealed, f.id()).unwrap_err(), FleetError::Corrupt);
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(f.unseal(&pk(1), &bad, f.id()).unwrap_err(), FleetError::Corrupt);
        // Two seals of one password differ (random nonce).
        assert_ne!(f.seal(&pk(1), "x"), f.seal(&pk(1), "x"));
    }

    #[test]
    fn another_secret_is_named_not_tried() {
        let a = FleetSecret::from_bytes(&random_looking(1)).unwrap();
        let b = FleetSecret::from_bytes(&random_looking(2)).unwrap();
        assert_ne!(a.id(), b.id());
        let sealed = a.seal(&pk(1), "pw");
        match b.unseal(&pk(1), &sealed, a.id()) {
            Err(FleetError::OtherSecret { sealed_with, ours }) => {
                assert_eq!((sealed_with.as_str(), ours.as_str()), (a.id(), b.id()))
            }
            other => panic!("{other:?}"),
        }
        assert!(FleetSecret::from_bytes(b"short").is_err());
        // Long enough, but typed: refused.
        assert!(
            FleetSecret::from_bytes(&b"5e".repeat(32))
                .unwrap_err()
                .contains("random")
        );
        assert!(!format!("{a:?}").contains("\\x01"));
    }
}
