//! EIP-2335 BLS keystores: scrypt or pbkdf2 (HMAC-SHA256), AES-128-CTR, SHA-256 checksum.
//! No maintained crate implements EIP-2335 on current RustCrypto, so the format lives here;
//! every primitive comes from RustCrypto.

use aes::Aes128;
use ctr::cipher::{KeyIvInit, StreamCipher};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::password::normalise;
use super::secret::SecretKey;
use crate::types::PublicKey;

type Aes128Ctr = ctr::Ctr128BE<Aes128>;

/// The most memory a keystore's scrypt may ask for (the EIP-2335 default is 256 MiB):
/// a keystore from the Key Manager API must not be able to exhaust the machine.
const MAX_SCRYPT_BYTES: u64 = 1 << 30;
/// scrypt's work is n·r·p block mixes; the EIP-2335 default (n=2^18, r=8, p=1) is 2^21. Four
/// times that is allowed: more is a keystore built to burn the signer's CPU.
const MAX_SCRYPT_WORK: u64 = 1 << 23;
/// Real keystores use p = 1; scrypt also allocates 128·r·p bytes at once.
const MAX_SCRYPT_P: u32 = 16;
/// pbkdf2 iterations allowed (the default is 2^18).
const MAX_PBKDF2_ROUNDS: u32 = 1 << 24;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeystoreError {
    #[error("not an EIP-2335 keystore: {0}")]
    Format(String),
    #[error("unsupported keystore: {0}")]
    Unsupported(String),
    #[error("wrong password (the keystore checksum does not match)")]
    WrongPassword,
    #[error("the decrypted secret is not a valid BLS secret key")]
    InvalidSecret,
    #[error("keystore declares pubkey {declared} but its secret key is for {derived}")]
    PubkeyMismatch { declared: PublicKey, derived: PublicKey },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Keystore {
    pub crypto: Crypto,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Optional in EIP-2335; when present it must match the decrypted key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pubkey: Option<String>,
    #[serde(default)]
    pub path: String,
    pub uuid: String,
    pub version: u32,
    /// A share of a threshold key (`palisade keys split`): its group, index and vector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<super::threshold::ShareInfo>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Crypto {
    pub kdf: Module<KdfParams>,
    pub checksum: Module<serde_json::Value>,
    pub cipher: Module<CipherParams>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Module<P> {
    pub function: String,
    pub params: P,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KdfParams {
    Scrypt {
        dklen: u32,
        n: u64,
        r: u32,
        p: u32,
        salt: String,
    },
    Pbkdf2 {
        dklen: u32,
        c: u32,
        prf: String,
        salt: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CipherParams {
    pub iv: String,
}

pub(super) fn unhex(field: &str, s: &str) -> Result<Vec<u8>, KeystoreError> {
    hex::decode(s.strip_prefix("0x").unwrap_or(s))
        .map_err(|e| KeystoreError::Format(format!("{field} is not hex: {e}")))
}

impl Keystore {
    /// Parses keystore JSON; `Format` errors mean "this file is not a keystore".
    pub fn from_json(json: &str) -> Result<Self, KeystoreError> {
        let ks: Keystore = crate::json::parse_at("", json).map_err(KeystoreError::Format)?;
        if ks.version != 4 {
            return Err(KeystoreError::Unsupported(format!(
                "version {} (only version 4 is defined)",
                ks.version
            )));
        }
        Ok(ks)
    }

    /// The key this keystore signs for: a share's group key, else its own `pubkey`.
    pub fn identity(&self) -> Result<Option<PublicKey>, KeystoreError> {
        match &self.threshold {
            Some(info) => Ok(Some(info.group_public_key)),
            None => self.declared_pubkey(),
        }
    }

    /// The `pubkey` field, when present and well-formed.
    pub fn declared_pubkey(&self) -> Result<Option<PublicKey>, KeystoreError> {
        self.pubkey
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().map_err(|e| KeystoreError::Format(format!("pubkey: {e}"))))
            .transpose()
    }

    /// Derives the decryption key from `password` (the expensive step), checks the checksum
    /// and decrypts the secret key.
    pub fn decrypt(&self, password: &str) -> Result<SecretKey, KeystoreError> {
        let c = &self.crypto;
        if c.checksum.function != "sha256" {
            return Err(KeystoreError::Unsupported(format!(
                "checksum function `{}`",
                c.checksum.function
            )));
        }
        if c.cipher.function != "aes-128-ctr" {
            return Err(KeystoreError::Unsupported(format!("cipher `{}`", c.cipher.function)));
        }
        let iv = unhex("crypto.cipher.params.iv", &c.cipher.params.iv)?;
        if iv.len() != 16 {
            return Err(KeystoreError::Format("crypto.cipher.params.iv must be 16 bytes".into()));
        }
        let ciphertext = unhex("crypto.cipher.message", &c.cipher.message)?;
        if ciphertext.len() != 32 {
            return Err(KeystoreError::Format(
                "crypto.cipher.message must be 32 bytes (a BLS secret key)".into(),
            ));
        }
        let checksum = unhex("crypto.checksum.message", &c.checksum.message)?;

        let dk = derive_key(&c.kdf, &normalise(password))?;
        let mut h = Sha256::new();
        h.update(&dk[16..32]);
        h.update(&ciphertext);
        if !bool::from(h.finalize().as_slice().ct_eq(&checksum)) {
            return Err(KeystoreError::WrongPassword);
        }

        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&ciphertext);
        let mut cipher = Aes128Ctr::new(dk[..16].into(), iv.as_slice().into());
        cipher.apply_keystream(secret.as_mut());
        let sk = SecretKey::from_bytes(&secret).map_err(|_| KeystoreError::InvalidSecret)?;

        if let Some(declared) = self.declared_pubkey()?
            && declared != sk.public_key()
        {
            return Err(KeystoreError::PubkeyMismatch {
                declared,
                derived: sk.public_key(),
            });
        }
        Ok(sk)
    }

    /// Writes `sk` into a new keystore. `kdf` picks the function and its cost; salt, IV and
    /// UUID are random.
    pub fn encrypt(sk: &SecretKey, password: &str, kdf: KdfChoice) -> Keystore {
        use rand::RngCore;
        let mut rng = rand::rng();
        let mut salt = [0u8; 32];
        let mut iv = [0u8; 16];
        rng.fill_bytes(&mut salt);
        rng.fill_bytes(&mut iv);
        let kdf_params = match kdf {
            KdfChoice::Scrypt { log_n } => KdfParams::Scrypt {
                dklen: 32,
                n: 1 << log_n,
                r: 8,
                p: 1,
                salt: hex::encode(salt),
            },
            KdfChoice::Pbkdf2 { c } => KdfParams::Pbkdf2 {
                dklen: 32,
                c,
                prf: "hmac-sha256".into(),
                salt: hex::encode(salt),
            },
        };
        let function = match kdf {
            KdfChoice::Scrypt { .. } => "scrypt",
            KdfChoice::Pbkdf2 { .. } => "pbkdf2",
        };
        let kdf_module = Module {
            function: function.into(),
            params: kdf_params,
            message: String::new(),
        };
        let dk = derive_key(&kdf_module, &normalise(password)).expect("own parameters are valid");
        let mut ciphertext = *sk.to_bytes();
        Aes128Ctr::new(dk[..16].into(), (&iv).into()).apply_keystream(&mut ciphertext);
        let mut h = Sha256::new();
        h.update(&dk[16..32]);
        h.update(ciphertext);
        let mut uuid = [0u8; 16];
        rng.fill_bytes(&mut uuid);
        uuid[6] = (uuid[6] & 0x0f) | 0x40;
        uuid[8] = (uuid[8] & 0x3f) | 0x80;
        let u = hex::encode(uuid);
        Keystore {
            crypto: Crypto {
                kdf: kdf_module,
                checksum: Module {
                    function: "sha256".into(),
                    params: serde_json::json!({}),
                    message: hex::encode(h.finalize()),
                },
                cipher: Module {
                    function: "aes-128-ctr".into(),
                    params: CipherParams { iv: hex::encode(iv) },
                    message: hex::encode(ciphertext),
                },
            },
            description: None,
            pubkey: Some(hex::encode(sk.public_key().0)),
            path: String::new(),
            uuid: format!(
                "{}-{}-{}-{}-{}",
                &u[0..8],
                &u[8..12],
                &u[12..16],
                &u[16..20],
                &u[20..32]
            ),
            version: 4,
            threshold: None,
        }
    }
}

impl Keystore {
    /// Test and benchmark fixtures only: encrypts many keys under one password with one salt,
    /// so the KDF runs once for all of them. Loading them still costs one full KDF each. Real
    /// keystores must each have their own salt (use `encrypt`).
    #[doc(hidden)]
    pub fn encrypt_fixtures_sharing_one_salt(keys: &[SecretKey], password: &str, kdf: KdfChoice) -> Vec<Keystore> {
        let Some(first) = keys.first() else { return Vec::new() };
        let template = Keystore::encrypt(first, password, kdf);
        let dk = derive_key(&template.crypto.kdf, &normalise(password)).expect("own parameters are valid");
        keys.iter()
            .map(|sk| {
                use rand::RngCore;
                let mut iv = [0u8; 16];
                rand::rng().fill_bytes(&mut iv);
                let mut ciphertext = *sk.to_bytes();
                Aes128Ctr::new(dk[..16].into(), (&iv).into()).apply_keystream(&mut ciphertext);
                let mut h = Sha256::new();
                h.update(&dk[16..32]);
                h.update(ciphertext);
                let mut ks = template.clone();
                ks.crypto.checksum.message = hex::encode(h.finalize());
                ks.crypto.cipher.params.iv = hex::encode(iv);
                ks.crypto.cipher.message = hex::encode(ciphertext);
                ks.pubkey = Some(hex::encode(sk.public_key().0));
                ks
            })
            .collect()
    }
}

/// KDF and cost for `Keystore::encrypt`.
#[derive(Clone, Copy, Debug)]
pub enum KdfChoice {
    Scrypt { log_n: u8 },
    Pbkdf2 { c: u32 },
}

/// The memory scrypt may use at once, across every thread that decrypts keystores
/// (`--kdf-memory-mb`). A keystore whose scrypt needs more than the whole budget runs alone.
pub struct KdfMemory {
    budget: std::sync::atomic::AtomicU64,
    in_use: std::sync::Mutex<u64>,
    freed: std::sync::Condvar,
}

/// 1 GiB by default: four EIP-2335 default keystores (256 MiB each) at once.
pub const DEFAULT_KDF_MEMORY: u64 = 1 << 30;

pub static KDF_MEMORY: KdfMemory = KdfMemory {
    budget: std::sync::atomic::AtomicU64::new(DEFAULT_KDF_MEMORY),
    in_use: std::sync::Mutex::new(0),
    freed: std::sync::Condvar::new(),
};

/// Memory taken from a `KdfMemory`, given back when dropped.
pub struct KdfMemoryTaken {
    from: &'static KdfMemory,
    bytes: u64,
}

impl KdfMemory {
    pub fn set_budget(&self, bytes: u64) {
        self.budget.store(bytes.max(1), std::sync::atomic::Ordering::Relaxed);
        self.freed.notify_all();
    }

    /// Waits until `bytes` fit in the budget (or nothing else is running), and takes them.
    pub fn take(&'static self, bytes: u64) -> KdfMemoryTaken {
        let budget = self.budget.load(std::sync::atomic::Ordering::Relaxed);
        let mut used = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        while *used > 0 && *used + bytes > budget {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += bytes;
        KdfMemoryTaken { from: self, bytes }
    }

    pub fn in_use(&self) -> u64 {
        *self.in_use.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for KdfMemoryTaken {
    fn drop(&mut self) {
        let mut used = self.from.in_use.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(self.bytes);
        self.from.freed.notify_all();
    }
}

pub(super) fn derive_key(kdf: &Module<KdfParams>, password: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    match (kdf.function.as_str(), &kdf.params) {
        ("scrypt", KdfParams::Scrypt { dklen, n, r, p, salt }) => {
            check_dklen(*dklen)?;
            if *n < 2 || !n.is_power_of_two() {
                return Err(KeystoreError::Format(
                    "crypto.kdf.params.n must be a power of two".into(),
                ));
            }
            // Checked before anything is allocated or computed.
            if *r == 0 || *p == 0 || *p > MAX_SCRYPT_P {
                return Err(KeystoreError::Unsupported(format!(
                    "scrypt r={r} p={p}: r and p must be at least 1, p at most {MAX_SCRYPT_P}"
                )));
            }
            if n.saturating_mul(u64::from(*r)).saturating_mul(128) > MAX_SCRYPT_BYTES {
                return Err(KeystoreError::Unsupported(format!(
                    "scrypt n={n} r={r} needs more than {} MiB",
                    MAX_SCRYPT_BYTES >> 20
                )));
            }
            if n.saturating_mul(u64::from(*r)).saturating_mul(u64::from(*p)) > MAX_SCRYPT_WORK {
                return Err(KeystoreError::Unsupported(format!(
                    "scrypt n={n} r={r} p={p}: n·r·p is more than {MAX_SCRYPT_WORK} (4 times the EIP-2335 default cost)"
                )));
            }
            let params = scrypt::Params::new(n.trailing_zeros() as u8, *r, *p, *dklen as usize)
                .map_err(|e| KeystoreError::Format(format!("crypto.kdf.params: {e}")))?;
            let salt = unhex("crypto.kdf.params.salt", salt)?;
            let mut dk = Zeroizing::new(vec![0u8; *dklen as usize]);
            // scrypt's memory counts against the process-wide budget: keystores decrypted on
            // every core at once must not take the machine's memory with them.
            let _memory = KDF_MEMORY.take(n.saturating_mul(u64::from(*r)).saturating_mul(128));
            scrypt::scrypt(password, &salt, &params, &mut dk)
                .map_err(|e| KeystoreError::Format(format!("crypto.kdf.params: {e}")))?;
            Ok(dk)
        }
        ("pbkdf2", KdfParams::Pbkdf2 { dklen, c, prf, salt }) => {
            check_dklen(*dklen)?;
            if prf != "hmac-sha256" {
                return Err(KeystoreError::Unsupported(format!("pbkdf2 prf `{prf}`")));
            }
            if *c == 0 || *c > MAX_PBKDF2_ROUNDS {
                return Err(KeystoreError::Unsupported(format!("pbkdf2 c={c}")));
            }
            let salt = unhex("crypto.kdf.params.salt", salt)?;
            let mut dk = Zeroizing::new(vec![0u8; *dklen as usize]);
            pbkdf2::pbkdf2_hmac::<Sha256>(password, &salt, *c, &mut dk);
            Ok(dk)
        }
        (f @ ("scrypt" | "pbkdf2"), _) => Err(KeystoreError::Format(format!(
            "crypto.kdf.params do not match the `{f}` function"
        ))),
        (other, _) => Err(KeystoreError::Unsupported(format!("kdf `{other}`"))),
    }
}

fn check_dklen(dklen: u32) -> Result<(), KeystoreError> {
    if !(32..=64).contains(&dklen) {
        return Err(KeystoreError::Format(format!(
            "crypto.kdf.params.dklen is {dklen}; EIP-2335 needs 32"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/test-keys");
    const EIP_SECRET: &str = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";
    const EIP_PUBKEY: &str =
        "0x9612d7a727c9d0a22e185a1c768478dfe919cada9266988cb32359c11f2b7b27f4ae4040902382ae2910c15e2b420d07";

    fn read(rel: &str) -> String {
        std::fs::read_to_string(format!("{DATA}/{rel}")).unwrap()
    }

    #[test]
    fn eip2335_vectors_decrypt() {
        let pw = read("eip2335-vectors/password.txt");
        for f in ["scrypt.json", "pbkdf2.json"] {
            let ks = Keystore::from_json(&read(&format!("eip2335-vectors/{f}"))).unwrap();
            let sk = ks.decrypt(&pw).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert_eq!(hex::encode(*sk.to_bytes()), EIP_SECRET, "{f}");
            assert_eq!(sk.public_key().to_string(), EIP_PUBKEY, "{f}");
        }
    }

    #[test]
    fn wrong_password_is_refused_without_echoing_it() {
        let ks = Keystore::from_json(&read("eip2335-vectors/pbkdf2.json")).unwrap();
        let e = ks.decrypt("hunter2-not-the-password").unwrap_err();
        assert_eq!(e, KeystoreError::WrongPassword);
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn tampered_keystores_are_refused() {
        let pw = read("eip2335-vectors/password.txt");
        let original: serde_json::Value = serde_json::from_str(&read("eip2335-vectors/pbkdf2.json")).unwrap();

        let mut flip_cipher = original.clone();
        let msg = flip_cipher["crypto"]["cipher"]["message"].as_str().unwrap().to_string();
        let flipped = format!("{}{}", if &msg[..1] == "0" { "1" } else { "0" }, &msg[1..]);
        flip_cipher["crypto"]["cipher"]["message"] = flipped.into();
        let ks = Keystore::from_json(&flip_cipher.to_string()).unwrap();
        assert_eq!(ks.decrypt(&pw).unwrap_err(), KeystoreError::WrongPassword);

        let mut bad_checksum = original.clone();
        bad_checksum["crypto"]["checksum"]["message"] = "00".repeat(32).into();
        let ks = Keystore::from_json(&bad_checksum.to_string()).unwrap();
        assert_eq!(ks.decrypt(&pw).unwrap_err(), KeystoreError::WrongPassword);

        let mut other_pubkey = original.clone();
        other_pubkey["pubkey"] =
            "a99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c".into();
        let ks = Keystore::from_json(&other_pubkey.to_string()).unwrap();
        assert!(matches!(
            ks.decrypt(&pw).unwrap_err(),
            KeystoreError::PubkeyMismatch { .. }
        ));

        let mut unknown_kdf = original.clone();
        unknown_kdf["crypto"]["kdf"]["function"] = "argon2".into();
        let ks = Keystore::from_json(&unknown_kdf.to_string()).unwrap();
        assert!(matches!(ks.decrypt(&pw).unwrap_err(), KeystoreError::Unsupported(_)));

        for (n, r, p, what) in [
            (2u64, 1u32, 536_870_912u32, "p at most"),
            (1 << 19, 8, 4, "n·r·p"),
            (2, 1, 0, "at least 1"),
        ] {
            let mut v: serde_json::Value = serde_json::from_str(&read("eip2335-vectors/scrypt.json")).unwrap();
            v["crypto"]["kdf"]["params"]["n"] = n.into();
            v["crypto"]["kdf"]["params"]["r"] = r.into();
            v["crypto"]["kdf"]["params"]["p"] = p.into();
            let started = std::time::Instant::now();
            let e = Keystore::from_json(&v.to_string()).unwrap().decrypt("x").unwrap_err();
            assert!(matches!(&e, KeystoreError::Unsupported(m) if m.contains(what)), "{e}");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(2),
                "refused before any work"
            );
        }
        let mut huge_scrypt: serde_json::Value = serde_json::from_str(&read("eip2335-vectors/scrypt.json")).unwrap();
        huge_scrypt["crypto"]["kdf"]["params"]["n"] = (1u64 << 40).into();
        let ks = Keystore::from_json(&huge_scrypt.to_string()).unwrap();
        assert!(matches!(ks.decrypt(&pw).unwrap_err(), KeystoreError::Unsupported(_)));
    }

    #[test]
    fn corrupt_json_names_the_problem() {
        let e = Keystore::from_json("{\"crypto\": 5}").unwrap_err();
        assert!(matches!(e, KeystoreError::Format(ref m) if m.contains("crypto")), "{e}");
        let e = Keystore::from_json("not json").unwrap_err();
        assert!(matches!(e, KeystoreError::Format(_)));
    }

    #[test]
    fn interop_keystores_decrypt() {
        let keys: serde_json::Value = serde_json::from_str(&read("interop/keys.json")).unwrap();
        let pw = read("interop/password.txt");
        for k in keys["keys"].as_array().unwrap() {
            let ks = Keystore::from_json(&read(&format!("interop/{}", k["keystore"].as_str().unwrap()))).unwrap();
            let sk = ks.decrypt(&pw).unwrap();
            assert_eq!(sk.public_key().to_string(), k["pubkey"].as_str().unwrap());
        }
    }

    #[test]
    fn shared_salt_fixtures_decrypt_to_their_own_keys() {
        let keys: Vec<SecretKey> = (1..4u8)
            .map(|i| {
                let mut b = Zeroizing::new([0u8; 32]);
                b[31] = i;
                SecretKey::from_bytes(&b).unwrap()
            })
            .collect();
        let stores = Keystore::encrypt_fixtures_sharing_one_salt(&keys, "pw", KdfChoice::Scrypt { log_n: 4 });
        for (k, ks) in keys.iter().zip(&stores) {
            let json = serde_json::to_string(ks).unwrap();
            let back = Keystore::from_json(&json).unwrap().decrypt("pw").unwrap();
            assert_eq!(back.public_key(), k.public_key());
        }
    }

    #[test]
    fn encrypt_roundtrips_with_both_kdfs() {
        let sk = SecretKey::from_hex(EIP_SECRET).unwrap();
        for kdf in [KdfChoice::Scrypt { log_n: 4 }, KdfChoice::Pbkdf2 { c: 16 }] {
            let ks = Keystore::encrypt(&sk, "pässword\n", kdf);
            let json = serde_json::to_string(&ks).unwrap();
            let back = Keystore::from_json(&json).unwrap().decrypt("pässword").unwrap();
            assert_eq!(back.public_key(), sk.public_key());
        }
    }

    #[test]
    fn kdf_memory_is_shared_within_its_budget() {
        let memory: &'static KdfMemory = Box::leak(Box::new(KdfMemory {
            budget: std::sync::atomic::AtomicU64::new(100),
            in_use: std::sync::Mutex::new(0),
            freed: std::sync::Condvar::new(),
        }));
        let first = memory.take(60);
        // A second taker that does not fit waits until the first gives its memory back.
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _second = memory.take(60);
            tx.send(memory.in_use()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200)).is_err(),
            "ran beyond the budget"
        );
        drop(first);
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap(), 60);
        waiter.join().unwrap();
        assert_eq!(memory.in_use(), 0);
        // One that needs more than the whole budget runs, alone.
        let big = memory.take(1000);
        assert_eq!(memory.in_use(), 1000);
        drop(big);
    }
}
