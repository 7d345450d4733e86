//! Domain primitives shared by every layer: slots, epochs, roots, public keys, fork versions.
//!
//! uint64 values travel as decimal strings (Web3Signer API, EIP-3076); the parser is strict
//! (ASCII digits only, no sign, no overflow) so that a malformed number is refused, never
//! wrapped or truncated.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use tree_hash::{PackedEncoding, TreeHash, TreeHashType};

/// A 32-byte SSZ root (block roots, state roots, checkpoint roots).
pub type Root = tree_hash::Hash256;
/// A 4-byte fork version.
pub type Version = alloy_primitives::FixedBytes<4>;
/// A compressed BLS signature as it appears inside consensus containers.
pub type SignatureBytes = alloy_primitives::FixedBytes<96>;
/// A compressed BLS public key as it appears inside consensus containers.
pub type PublicKeyBytes = alloy_primitives::FixedBytes<48>;
/// An execution-layer address (validator registrations).
pub type Address = alloy_primitives::Address;

/// Parses a uint64 written as a decimal string: digits only, at most u64::MAX.
pub fn parse_u64_decimal(s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err("empty string where a decimal uint64 was expected".into());
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{s}` is not a decimal uint64 (digits only)"));
    }
    s.parse::<u64>().map_err(|_| format!("`{s}` does not fit in a uint64"))
}

/// Serde helpers for uint64 fields written as decimal strings (plain JSON integers are
/// also accepted, since some clients send them).
pub mod quoted_u64 {
    use super::*;

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = u64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a uint64 as a decimal string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<u64, E> {
                parse_u64_decimal(s).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
                Ok(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
                u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
                Err(E::custom(format!("{v} is not an integer uint64")))
            }
        }
        d.deserialize_any(V)
    }
}

macro_rules! u64_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl $name {
            pub const fn new(v: u64) -> Self {
                Self(v)
            }
            pub const fn as_u64(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                parse_u64_decimal(s).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                quoted_u64::serialize(&self.0, s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                quoted_u64::deserialize(d).map(Self)
            }
        }

        impl TreeHash for $name {
            fn tree_hash_type() -> TreeHashType {
                u64::tree_hash_type()
            }
            fn tree_hash_packed_encoding(&self) -> PackedEncoding {
                self.0.tree_hash_packed_encoding()
            }
            fn tree_hash_packing_factor() -> usize {
                u64::tree_hash_packing_factor()
            }
            fn tree_hash_root(&self) -> Root {
                self.0.tree_hash_root()
            }
        }
    };
}

u64_newtype!(
    /// A beacon-chain slot.
    Slot
);
u64_newtype!(
    /// A beacon-chain epoch.
    Epoch
);

impl Slot {
    pub fn epoch(self, slots_per_epoch: u64) -> Epoch {
        Epoch(self.0 / slots_per_epoch)
    }
}

/// Parses `0x`- or `0X`-prefixed (or bare) hex of exactly `N` bytes, digits in any case
/// (Web3Signer normalises identifiers the same way).
pub fn parse_hex_array<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let h = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    if h.len() != N * 2 {
        return Err(format!(
            "expected {N} bytes as hex ({} hex digits), got {} hex digits",
            N * 2,
            h.len()
        ));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(h, &mut out).map_err(|e| format!("invalid hex: {e}"))?;
    Ok(out)
}

macro_rules! bytes_newtype {
    ($(#[$doc:meta])* $name:ident, $n:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $n]);

        impl $name {
            pub const LEN: usize = $n;
            pub fn as_bytes(&self) -> &[u8; $n] {
                &self.0
            }
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                <[u8; $n]>::try_from(b).ok().map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "0x{}", hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                parse_hex_array::<$n>(s).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(de::Error::custom)
            }
        }
    };
}

bytes_newtype!(
    /// A validator's BLS public key (48-byte compressed G1 point), the identity of a key
    /// throughout Palisade.
    PublicKey,
    48
);
bytes_newtype!(
    /// The 32-byte root a BLS signature is made over: `hash_tree_root(SigningData)`.
    SigningRoot,
    32
);

impl SigningRoot {
    /// EIP-3076: an absent or all-zero signing root never equals anything.
    pub fn is_zero(&self) -> bool {
        self.0 == [0u8; 32]
    }
}

impl From<Root> for SigningRoot {
    fn from(r: Root) -> Self {
        SigningRoot(r.0)
    }
}

impl PublicKey {
    /// Checks that the bytes are a valid compressed BLS12-381 G1 point (not only 48 bytes).
    pub fn validate_point(&self) -> Result<(), String> {
        blst::min_pk::PublicKey::key_validate(&self.0)
            .map(|_| ())
            .map_err(|e| format!("{self} is not a valid BLS public key ({e:?})"))
    }
}

/// The BLS signature Palisade returns (96-byte compressed G2 point).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 96]);

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A message that can get a validator slashed, as slashing protection decides on it: a block
/// at a slot, or an attestation from a source to a target epoch, with its signing root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlashableMessage {
    Block {
        slot: Slot,
        root: SigningRoot,
    },
    Attestation {
        source: Epoch,
        target: Epoch,
        root: SigningRoot,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_u64_is_strict() {
        assert_eq!(parse_u64_decimal("0"), Ok(0));
        assert_eq!(parse_u64_decimal("18446744073709551615"), Ok(u64::MAX));
        assert!(parse_u64_decimal("18446744073709551616").is_err());
        for bad in ["", "-1", "+1", " 1", "1 ", "0x10", "1e3", "1.0"] {
            assert!(parse_u64_decimal(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn slot_serde_roundtrip_and_errors() {
        let s: Slot = serde_json::from_str("\"18446744073709551615\"").unwrap();
        assert_eq!(s, Slot(u64::MAX));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"18446744073709551615\"");
        let n: Epoch = serde_json::from_str("12").unwrap();
        assert_eq!(n, Epoch(12));
        assert!(serde_json::from_str::<Slot>("-1").is_err());
        assert!(serde_json::from_str::<Slot>("\"abc\"").is_err());
        assert!(serde_json::from_str::<Slot>("1.5").is_err());
    }

    #[test]
    fn pubkey_parse_and_display() {
        let hex = "0xa99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";
        let pk: PublicKey = hex.parse().unwrap();
        assert_eq!(pk.to_string(), hex);
        assert!(pk.validate_point().is_ok());
        assert!("0x1234".parse::<PublicKey>().is_err());
        let upper = format!("0X{}", hex[2..].to_uppercase());
        assert_eq!(upper.parse::<PublicKey>().unwrap(), pk);
        let mut bad = pk;
        bad.0[47] ^= 1;
        assert!(bad.validate_point().is_err());
    }

    #[test]
    fn signing_root_zero() {
        assert!(SigningRoot([0; 32]).is_zero());
        assert!(!SigningRoot([1; 32]).is_zero());
    }
}
