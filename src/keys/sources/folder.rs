//! A folder of EIP-2335 keystores (`--keystores-path`, and the Key Manager's own folder on a
//! single host): every `*.json` file, unlocked by one shared password or by a
//! `<stem>.txt` password file per keystore. A key from here can be deleted through the Key
//! Manager API: its keystore and its own password file are moved aside.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use rayon::prelude::*;
use zeroize::Zeroizing;

use crate::keys::keystore::Keystore;
use crate::keys::origin::{Origin, OriginKind};
use crate::keys::source::{Found, KeySource, Material, Password, Pending, SourceError};

/// How the keystores of the folder are unlocked.
#[derive(Clone)]
pub enum Passwords {
    /// `<keystore file stem>.txt` in this folder.
    PerKey(PathBuf),
    Shared(Arc<Zeroizing<String>>),
}

pub struct KeystoreFolder {
    name: Arc<str>,
    dir: PathBuf,
    passwords: Passwords,
    /// The Key Manager's folder may not exist yet: then it holds nothing.
    optional: bool,
}

impl KeystoreFolder {
    pub fn new(name: impl Into<String>, dir: PathBuf, passwords: Passwords, optional: bool) -> Self {
        KeystoreFolder {
            name: Arc::from(name.into()),
            dir,
            passwords,
            optional,
        }
    }
}

/// `*.<ext>` files of `dir`, sorted (extensions compared without case).
pub fn sorted_files(dir: &Path, exts: &[&str]) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// `Ok(None)`: valid JSON that is not a keystore (skipped). `Err`: a keystore that is broken
/// (or half written).
pub fn read_keystore(path: &Path) -> Result<Option<Keystore>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    match Keystore::from_json(&text) {
        Ok(ks) => Ok(Some(ks)),
        // Only on failure: is it a broken keystore, or some other JSON file?
        Err(e) => {
            let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("corrupt JSON: {e}"))?;
            if value.get("crypto").is_none() {
                Ok(None)
            } else {
                Err(e.to_string())
            }
        }
    }
}

/// Adds a parsed keystore to `found` (its pubkey, when declared, is known at once).
pub fn push_keystore(found: &mut Found, origin: Arc<Origin>, ks: Keystore, password: Password) {
    match ks.identity() {
        Ok(declared) => found.keys.push(Pending {
            origin,
            declared,
            material: Material::Keystore {
                keystore: Box::new(ks),
                password,
            },
        }),
        Err(e) => {
            let unit = origin.unit.clone();
            found.fail(origin.label.clone(), Some(unit), e.to_string())
        }
    }
}

impl KeySource for KeystoreFolder {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn list(&self) -> BoxFuture<'_, Result<Found, SourceError>> {
        Box::pin(async move {
            let (name, dir, passwords, optional) = (
                self.name.clone(),
                self.dir.clone(),
                self.passwords.clone(),
                self.optional,
            );
            let label = name.clone();
            tokio::task::spawn_blocking(move || list_folder(&name, &dir, &passwords, optional))
                .await
                .map_err(|e| SourceError(format!("listing {label}: {e}")))?
        })
    }
}

fn list_folder(name: &Arc<str>, dir: &Path, passwords: &Passwords, optional: bool) -> Result<Found, SourceError> {
    if optional && !dir.is_dir() {
        return Ok(Found::default());
    }
    let files =
        sorted_files(dir, &["json"]).map_err(|e| SourceError(format!("{name}: cannot read {}: {e}", dir.display())))?;
    // Reading and parsing thousands of small files is worth doing on every core: the server
    // listens only after this.
    let parsed: Vec<(PathBuf, Result<Option<Keystore>, String>)> = files
        .into_par_iter()
        .map(|path| {
            let ks = read_keystore(&path);
            (path, ks)
        })
        .collect();
    let mut found = Found::default();
    let mut readable = Vec::new();
    for (path, keystore) in parsed {
        let label = path.display().to_string();
        let (password, files) = match passwords {
            Passwords::Shared(shared) => (Password::Given(shared.clone()), vec![path.clone()]),
            Passwords::PerKey(pw_dir) => {
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
                let pw_file = pw_dir.join(format!("{stem}.txt"));
                if crate::fsutil::readable_by_others(&pw_file).is_some() {
                    readable.push(pw_file.clone());
                }
                (Password::File(pw_file.clone()), vec![path.clone(), pw_file])
            }
        };
        match keystore {
            Ok(Some(ks)) => {
                let origin = Origin::new(name, label.clone(), label, OriginKind::Files(files), None);
                push_keystore(&mut found, origin, ks, password)
            }
            Ok(None) => {
                tracing::warn!(file = %label, "skipping JSON file that is not an EIP-2335 keystore (no `crypto` object)")
            }
            Err(reason) => found.fail(label.clone(), Some(label), reason),
        }
    }
    // Warned, not refused: every migration from another signer would break on it.
    if let Some(first) = readable.first() {
        tracing::warn!(source = %name, files = readable.len(), example = %first.display(),
            "keystore password files can be read by other users: chmod 600 them");
    }
    Ok(found)
}
