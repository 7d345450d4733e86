//! EIP-3076 slashing-protection interchange, format version 5.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{Epoch, PublicKey, Root, SigningRoot, Slot};

pub const FORMAT_VERSION: &str = "5";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interchange {
    pub metadata: Metadata,
    pub data: Vec<ValidatorData>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(deserialize_with = "version_string")]
    pub interchange_format_version: String,
    pub genesis_validators_root: Root,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValidatorData {
    pub pubkey: PublicKey,
    #[serde(default)]
    pub signed_blocks: Vec<SignedBlock>,
    #[serde(default)]
    pub signed_attestations: Vec<SignedAttestation>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignedBlock {
    pub slot: Slot,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_root: Option<SigningRoot>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignedAttestation {
    pub source_epoch: Epoch,
    pub target_epoch: Epoch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_root: Option<SigningRoot>,
}

/// The version is a string in EIP-3076; a bare number is accepted and normalised.
fn version_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        S(String),
        N(u64),
    }
    Ok(match V::deserialize(d)? {
        V::S(s) => s,
        V::N(n) => n.to_string(),
    })
}

/// What one validator's imported history does to its watermarks, plus the rows to keep.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportedValidator {
    /// Highest slot, and the root at it when every entry at that slot agrees on one.
    pub max_block: Option<(Slot, Option<SigningRoot>)>,
    pub max_source: Option<Epoch>,
    /// Highest target, and (source, root) of the attestation there when unambiguous.
    pub max_target: Option<(Epoch, Option<(Epoch, SigningRoot)>)>,
    pub blocks: Vec<(Slot, Option<SigningRoot>)>,
    pub attestations: Vec<(Epoch, Epoch, Option<SigningRoot>)>,
}

fn nonzero(r: Option<SigningRoot>) -> Option<SigningRoot> {
    r.filter(|r| !r.is_zero())
}

impl Interchange {
    /// Parses and checks an interchange file. Errors name the field (`data.3.pubkey: ...`).
    pub fn from_json(json: &str) -> Result<Interchange, String> {
        let i: Interchange = crate::json::parse_at("", json)?;
        i.validate()?;
        Ok(i)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.metadata.interchange_format_version != FORMAT_VERSION {
            return Err(format!(
                "metadata.interchange_format_version is `{}`; only version {FORMAT_VERSION} is supported",
                self.metadata.interchange_format_version
            ));
        }
        // Each key once: checking a point costs a subgroup check, and a file may repeat a key
        // hundreds of thousands of times.
        let mut checked = std::collections::HashSet::new();
        for (i, v) in self.data.iter().enumerate() {
            if checked.insert(v.pubkey) {
                v.pubkey
                    .validate_point()
                    .map_err(|e| format!("data[{i}].pubkey: {e}"))?;
            }
        }
        Ok(())
    }

    /// Groups entries by pubkey (a pubkey may appear more than once) and sorts them.
    pub fn by_validator(&self) -> BTreeMap<PublicKey, ImportedValidator> {
        let mut out: BTreeMap<PublicKey, ImportedValidator> = BTreeMap::new();
        for v in &self.data {
            let e = out.entry(v.pubkey).or_default();
            e.blocks
                .extend(v.signed_blocks.iter().map(|b| (b.slot, nonzero(b.signing_root))));
            e.attestations.extend(
                v.signed_attestations
                    .iter()
                    .map(|a| (a.source_epoch, a.target_epoch, nonzero(a.signing_root))),
            );
        }
        for e in out.values_mut() {
            // Duplicates (a key listed many times) are written once.
            e.blocks.sort();
            e.blocks.dedup();
            e.attestations.sort();
            e.attestations.dedup();
            if let Some(max) = e.blocks.iter().map(|b| b.0).max() {
                let roots: Vec<_> = e.blocks.iter().filter(|b| b.0 == max).map(|b| b.1).collect();
                let root = roots[0].filter(|r| roots.iter().all(|x| *x == Some(*r)));
                e.max_block = Some((max, root));
            }
            e.max_source = e.attestations.iter().map(|a| a.0).max();
            if let Some(max) = e.attestations.iter().map(|a| a.1).max() {
                let at: Vec<_> = e.attestations.iter().filter(|a| a.1 == max).collect();
                let first = at[0];
                let unique = at.iter().all(|a| a.0 == first.0 && a.2 == first.2);
                let signed = first.2.filter(|_| unique).map(|r| (first.0, r));
                e.max_target = Some((max, signed));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PK: &str =
        "0xa99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";

    fn doc(version: &str, data: &str) -> String {
        format!(
            r#"{{"metadata":{{"interchange_format_version":{version},"genesis_validators_root":"0x{}"}},"data":{data}}}"#,
            "00".repeat(32)
        )
    }

    #[test]
    fn parses_and_summarises() {
        let json = doc(
            "\"5\"",
            &format!(
                r#"[{{"pubkey":"{PK}","signed_blocks":[{{"slot":"10","signing_root":"0x{r1}"}},{{"slot":"3"}}],
                    "signed_attestations":[{{"source_epoch":"1","target_epoch":"4","signing_root":"0x{r1}"}},{{"source_epoch":"3","target_epoch":"2"}}]}},
                   {{"pubkey":"{PK}","signed_blocks":[{{"slot":"10","signing_root":"0x{r2}"}}]}}]"#,
                r1 = "01".repeat(32),
                r2 = "02".repeat(32)
            ),
        );
        let i = Interchange::from_json(&json).unwrap();
        let m = i.by_validator();
        assert_eq!(m.len(), 1);
        let v = m.values().next().unwrap();
        // Two different roots at slot 10: no root survives.
        assert_eq!(v.max_block, Some((Slot(10), None)));
        assert_eq!(v.max_source, Some(Epoch(3)));
        assert_eq!(v.max_target, Some((Epoch(4), Some((Epoch(1), SigningRoot([1; 32]))))));
        assert_eq!(v.blocks.len(), 3);
    }

    #[test]
    fn refuses_bad_input_naming_the_field() {
        let e = Interchange::from_json(&doc("\"4\"", "[]")).unwrap_err();
        assert!(e.contains("interchange_format_version"), "{e}");
        assert!(Interchange::from_json(&doc("5", "[]")).is_ok());
        let e = Interchange::from_json(&doc("\"5\"", r#"[{"pubkey":"0x1234","signed_blocks":[]}]"#)).unwrap_err();
        assert!(e.contains("data[0].pubkey"), "{e}");
        let e = Interchange::from_json(&doc(
            "\"5\"",
            &format!(r#"[{{"pubkey":"{PK}","signed_blocks":[{{"slot":"-1"}}]}}]"#),
        ))
        .unwrap_err();
        assert!(e.contains("data[0].signed_blocks[0].slot"), "{e}");
        let e = Interchange::from_json(&doc(
            "\"5\"",
            &format!(
                r#"[{{"pubkey":"{PK}","signed_attestations":[{{"source_epoch":"1","target_epoch":"18446744073709551616"}}]}}]"#
            ),
        ))
        .unwrap_err();
        assert!(e.contains("target_epoch"), "{e}");
        let mut bad_point = PK.to_string();
        bad_point.replace_range(96.., "d");
        let e = Interchange::from_json(&doc("\"5\"", &format!(r#"[{{"pubkey":"{bad_point}"}}]"#))).unwrap_err();
        assert!(e.contains("data[0].pubkey"), "{e}");
    }
}
