//! Web3Signer-style YAML key definitions (`--key-config-path`): one or more YAML documents
//! per file, each `type: file-keystore` (`keystoreFile`, `keystorePasswordFile`) or
//! `type: file-raw` (`privateKey`). Relative paths are relative to the YAML file.
//! Palisade's own optional fields, `allowedSigningTypes` and `deniedSigningTypes`, narrow the
//! signer's signing policy for that key.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::signing::policy::TypeSet;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDefinition {
    #[serde(rename = "type")]
    kind: Option<String>,
    key_type: Option<String>,
    keystore_file: Option<String>,
    keystore_password_file: Option<String>,
    private_key: Option<String>,
    allowed_signing_types: Option<Vec<String>>,
    denied_signing_types: Option<Vec<String>>,
}

/// One YAML document: the key, and the signing types it is limited to, if any.
#[derive(Debug)]
pub struct Definition {
    pub key: KeyDefinition,
    pub signing_types: Option<TypeSet>,
}

pub enum KeyDefinition {
    Keystore { keystore: PathBuf, password: PathBuf },
    Raw { private_key: Zeroizing<String> },
}

impl std::fmt::Debug for KeyDefinition {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            KeyDefinition::Keystore { keystore, password } => f
                .debug_struct("Keystore")
                .field("keystore", keystore)
                .field("password", password)
                .finish(),
            KeyDefinition::Raw { .. } => f.write_str("Raw(<redacted>)"),
        }
    }
}

/// Reads every definition in `file`. Errors name the file, the document and the field.
pub fn read_file(file: &Path) -> Result<Vec<Definition>, String> {
    let text = Zeroizing::new(std::fs::read_to_string(file).map_err(|e| format!("cannot read: {e}"))?);
    let base = file.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let n = i + 1;
        let raw = RawDefinition::deserialize(doc)
            .map_err(|e| format!("document {n}: {}", redact_yaml_error(&e.to_string())))?;
        let signing_types = match (&raw.allowed_signing_types, &raw.denied_signing_types) {
            (None, None) => None,
            (allow, deny) => Some(
                TypeSet::from_lists(
                    allow.as_deref().unwrap_or_default(),
                    deny.as_deref().unwrap_or_default(),
                )
                .map_err(|e| format!("document {n}: allowedSigningTypes/deniedSigningTypes: {e}"))?,
            ),
        };
        let key = definition(raw, base).map_err(|e| format!("document {n}: {e}"))?;
        out.push(Definition { key, signing_types });
    }
    if out.is_empty() {
        return Err("no key definition in the file".into());
    }
    Ok(out)
}

/// serde_yaml errors may quote the offending value; a private key must never reach a log.
fn redact_yaml_error(e: &str) -> String {
    if e.contains("privateKey") || e.len() > 200 {
        "invalid YAML key definition".into()
    } else {
        e.to_string()
    }
}

fn definition(raw: RawDefinition, base: &Path) -> Result<KeyDefinition, String> {
    if let Some(kt) = raw.key_type.as_deref()
        && !kt.eq_ignore_ascii_case("BLS")
    {
        return Err(format!("keyType `{kt}` is not supported (BLS only)"));
    }
    let resolve = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
    };
    match raw.kind.as_deref() {
        Some("file-keystore") => Ok(KeyDefinition::Keystore {
            keystore: resolve(raw.keystore_file.as_deref().ok_or("missing field `keystoreFile`")?),
            password: resolve(
                raw.keystore_password_file
                    .as_deref()
                    .ok_or("missing field `keystorePasswordFile`")?,
            ),
        }),
        Some("file-raw") => Ok(KeyDefinition::Raw {
            private_key: Zeroizing::new(raw.private_key.ok_or("missing field `privateKey`")?),
        }),
        Some(other) => Err(format!("type `{other}` is not supported (file-keystore or file-raw)")),
        None => Err("missing field `type`".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_kinds_and_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("keys.yaml");
        std::fs::write(
            &f,
            "type: file-keystore\nkeyType: BLS\nkeystoreFile: ks/k.json\nkeystorePasswordFile: /abs/pw.txt\n---\ntype: file-raw\nprivateKey: '0x25295f0d1d592a90b333e26e85149708208e9f8e8bc18f6c77bd62f8ad7a6866'\n",
        )
        .unwrap();
        let defs = read_file(&f).unwrap();
        assert_eq!(defs.len(), 2);
        match &defs[0].key {
            KeyDefinition::Keystore { keystore, password } => {
                assert_eq!(keystore, &dir.path().join("ks/k.json"));
                assert_eq!(password, Path::new("/abs/pw.txt"));
            }
            _ => panic!("expected a keystore definition"),
        }
        assert!(matches!(&defs[1].key, KeyDefinition::Raw { .. }));
        assert!(defs.iter().all(|d| d.signing_types.is_none()));
    }

    #[test]
    fn errors_name_document_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad.yaml");
        std::fs::write(&f, "type: file-raw\n---\ntype: hashicorp\n").unwrap();
        let e = read_file(&f).unwrap_err();
        assert!(e.contains("document 1") && e.contains("privateKey"), "{e}");
        std::fs::write(&f, "type: file-keystore\nkeystoreFile: a.json\n").unwrap();
        let e = read_file(&f).unwrap_err();
        assert!(e.contains("keystorePasswordFile"), "{e}");
        std::fs::write(&f, "type: file-raw\nkeyType: SECP256K1\nprivateKey: '0x00'\n").unwrap();
        assert!(read_file(&f).unwrap_err().contains("keyType"));
    }
}
