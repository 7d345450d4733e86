//! Secret stores that hold validator keys (as Web3Signer's YAML definitions name them): AWS
//! Secrets Manager, HashiCorp Vault (KV v2) and Azure Key Vault, spoken to over HTTPS with the
//! crates the signer already has. Each store's value is one key in hex, or several, one per
//! line (bulk secrets). And the share nodes of a threshold group, which hold a key no
//! one holds whole (`threshold`).

pub mod aws;
pub mod azure;
pub mod http;
pub mod threshold;
pub mod vault;

use zeroize::Zeroizing;

use super::secret::{SecretKey, SecretKeyError};

/// The keys in a secret's value: one hex key per line (`0x` optional), blank lines and
/// surrounding space ignored. All or nothing: one bad line fails the whole secret.
pub fn keys_in(value: &Zeroizing<String>) -> Result<Vec<SecretKey>, String> {
    let mut keys = Vec::new();
    for (i, line) in value.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match SecretKey::from_hex(line) {
            Ok(k) => keys.push(k),
            Err(SecretKeyError::NotHex) => return Err(format!("line {}: not 32 bytes of hex", i + 1)),
            Err(e) => return Err(format!("line {}: {e}", i + 1)),
        }
    }
    if keys.is_empty() {
        return Err("the secret holds no key".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SK0: &str = "25295f0d1d592a90b333e26e85149708208e9f8e8bc18f6c77bd62f8ad7a6866";
    const SK1: &str = "51d0b65185db6989ab0b560d6deed19c7ead0e24b9b6372cbecb1f26bdfad000";

    #[test]
    fn one_or_many_keys_all_or_nothing() {
        let one = keys_in(&Zeroizing::new(format!("0x{SK0}\n"))).unwrap();
        assert_eq!(one.len(), 1);
        let two = keys_in(&Zeroizing::new(format!("{SK0}\r\n\n  0x{SK1}  \n"))).unwrap();
        assert_eq!(two.len(), 2);
        let bad = keys_in(&Zeroizing::new(format!("{SK0}\nnot-a-key\n"))).unwrap_err();
        assert!(bad.contains("line 2") && !bad.contains(SK0), "{bad}");
        assert!(keys_in(&Zeroizing::new("\n".into())).is_err());
    }
}
