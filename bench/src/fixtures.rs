//! Key material for every benchmark: deterministic keys and instant-to-load key definitions.

use std::path::Path;

use palisade::keys::SecretKey;
use palisade::types::PublicKey;
use rayon::prelude::*;
use zeroize::Zeroizing;

/// Deterministic benchmark keys (scalar i + 1): public, never for real funds.
pub fn secret(i: usize) -> SecretKey {
    let mut b = Zeroizing::new([0u8; 32]);
    b[24..].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    SecretKey::from_bytes(&b).expect("small scalars are valid keys")
}

/// Writes `n` Web3Signer `file-raw` key definitions (instant to load) and returns the pubkeys.
pub fn raw_key_config(dir: &Path, n: usize) -> anyhow::Result<Vec<PublicKey>> {
    std::fs::create_dir_all(dir)?;
    let keys: Vec<SecretKey> = (0..n).into_par_iter().map(secret).collect();
    let mut yaml = String::new();
    for k in &keys {
        yaml.push_str(&format!(
            "---\ntype: file-raw\nkeyType: BLS\nprivateKey: '0x{}'\n",
            hex::encode(*k.to_bytes())
        ));
    }
    std::fs::write(dir.join("bench-keys.yaml"), yaml)?;
    Ok(keys.iter().map(|k| k.public_key()).collect())
}
