//! Key Manager API operations (ethereum/keymanager-APIs `/eth/v1/keystores`).
//!
//! Import: keystores are decrypted first (no side effects), then their slashing-protection
//! data is imported in one transaction, then the keys are enabled in the database, and only
//! then do they become usable. Delete: the key is disabled in the database first, so every
//! replica refuses it from then on, then dropped here, and its protection data returned.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::keys::keystore::Keystore;
use crate::keys::{Lookup, SecretKey};
use crate::protection::interchange::{FORMAT_VERSION, Metadata};
use crate::protection::{Interchange, ProtectionError};
use crate::service::Signer;
use crate::types::{PublicKey, Root};

pub const ORIGIN: &str = "keymanager";

#[derive(Debug, thiserror::Error)]
pub enum KeyManagerError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Protection(#[from] ProtectionError),
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub status: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl Status {
    fn new(status: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// Where imported keystores are written so they survive a restart: the `--keystores-path`
/// folder with one password file per keystore (`--keystores-passwords-path`).
#[derive(Clone, Debug)]
pub struct PersistDirs {
    pub keystores: PathBuf,
    pub passwords: PathBuf,
}

pub struct KeyManager {
    pub signer: Arc<Signer>,
    pub persist: Option<PersistDirs>,
}

fn file_stem(pk: &PublicKey) -> String {
    format!("keymanager-{}", hex::encode(pk.0))
}

/// Writes a file atomically with mode 0600 (temp file, fsync, rename).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl KeyManager {
    pub fn list(&self) -> Vec<PublicKey> {
        self.signer.keys.ready_pubkeys()
    }

    pub async fn import(
        &self,
        keystores: Vec<String>,
        passwords: Vec<Zeroizing<String>>,
        slashing_protection: Option<String>,
    ) -> Result<Vec<Status>, KeyManagerError> {
        if keystores.len() != passwords.len() {
            return Err(KeyManagerError::BadRequest(format!(
                "{} keystores but {} passwords: passwords[i] must unlock keystores[i]",
                keystores.len(),
                passwords.len()
            )));
        }
        let interchange = slashing_protection
            .map(|s| {
                Interchange::from_json(&s).map_err(|e| KeyManagerError::BadRequest(format!("slashing_protection: {e}")))
            })
            .transpose()?;

        // Decrypt on all cores without blocking the async runtime.
        let decrypted: Vec<Result<Imported, String>> = tokio::task::spawn_blocking(move || {
            keystores
                .into_par_iter()
                .zip(passwords.into_par_iter())
                .map(|(json, password)| {
                    let ks = Keystore::from_json(&json).map_err(|e| e.to_string())?;
                    let key = ks.decrypt(&password).map_err(|e| e.to_string())?;
                    Ok(Imported { key, json, password })
                })
                .collect()
        })
        .await
        .map_err(|e| KeyManagerError::BadRequest(format!("decryption task failed: {e}")))?;

        if let Some(i) = &interchange {
            let pinned = self
                .signer
                .chain
                .resolve(&self.signer.db, i.metadata.genesis_validators_root)
                .await?;
            if pinned != i.metadata.genesis_validators_root {
                return Err(ProtectionError::WrongChain {
                    pinned,
                    given: i.metadata.genesis_validators_root,
                }
                .into());
            }
            self.signer.db.import(i).await?;
        }

        let mut statuses = Vec::with_capacity(decrypted.len());
        let mut fresh: Vec<Imported> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for d in decrypted {
            match d {
                Err(reason) => statuses.push(Some(Status::new("error", reason))),
                Ok(imported) => {
                    let pk = imported.key.public_key();
                    let loaded = matches!(self.signer.keys.lookup(&pk), Lookup::Ready(_) | Lookup::Loading);
                    if loaded || !seen.insert(pk) {
                        statuses.push(Some(Status::new("duplicate", "")));
                    } else {
                        statuses.push(None);
                        fresh.push(imported);
                    }
                }
            }
        }
        let fresh_keys: Vec<PublicKey> = fresh.iter().map(|i| i.key.public_key()).collect();
        // A key deleted earlier is disabled in the database: importing it enables it again.
        self.signer.db.set_enabled(&fresh_keys, true).await?;

        let mut fresh = fresh.into_iter();
        let mut out = Vec::with_capacity(statuses.len());
        for s in statuses {
            match s {
                Some(s) => out.push(s),
                None => {
                    let imported = fresh.next().expect("one fresh key per empty status");
                    let message = self.persist(&imported);
                    let pk = imported.key.public_key();
                    self.signer.keys.insert_ready(imported.key, ORIGIN);
                    tracing::info!(pubkey = %pk, "key imported through the Key Manager API");
                    out.push(Status::new("imported", message));
                }
            }
        }
        Ok(out)
    }

    /// Writes an imported keystore and its password (mode 0600) into the folders Palisade
    /// loads at startup; returns a note for the response when it cannot.
    fn persist(&self, imported: &Imported) -> String {
        let Some(dirs) = &self.persist else {
            return "imported for this run only: start Palisade with --keystores-path and \
                    --keystores-passwords-path to keep Key Manager imports across restarts"
                .into();
        };
        let stem = file_stem(&imported.key.public_key());
        let result = write_private(
            &dirs.passwords.join(format!("{stem}.txt")),
            imported.password.as_bytes(),
        )
        .and_then(|_| write_private(&dirs.keystores.join(format!("{stem}.json")), imported.json.as_bytes()));
        match result {
            Ok(()) => String::new(),
            Err(e) => {
                tracing::error!(pubkey = %imported.key.public_key(), error = %e, "cannot persist an imported keystore");
                format!("imported for this run only: cannot write the keystore file: {e}")
            }
        }
    }

    pub async fn delete(&self, pubkeys: Vec<PublicKey>) -> Result<(Vec<Status>, Interchange), KeyManagerError> {
        // Disable first: from here on every replica refuses these keys.
        self.signer.db.set_enabled(&pubkeys, false).await?;
        let chain = self.signer.db.pinned_chain().await?;
        let interchange = match chain {
            Some(_) => self.signer.db.export(Some(&pubkeys)).await?,
            None => Interchange {
                metadata: Metadata {
                    interchange_format_version: FORMAT_VERSION.into(),
                    genesis_validators_root: self.signer.chain.get().unwrap_or(Root::ZERO),
                },
                data: vec![],
            },
        };
        let mut statuses = Vec::with_capacity(pubkeys.len());
        for pk in &pubkeys {
            let was_loaded = self.signer.keys.remove(pk);
            if was_loaded {
                self.forget_files(pk);
                tracing::info!(pubkey = %pk, "key deleted through the Key Manager API");
            }
            let has_history = interchange
                .data
                .iter()
                .any(|v| v.pubkey == *pk && (!v.signed_blocks.is_empty() || !v.signed_attestations.is_empty()));
            statuses.push(match (was_loaded, has_history) {
                (true, _) => Status::new("deleted", ""),
                (false, true) => Status::new("not_active", ""),
                (false, false) => Status::new("not_found", ""),
            });
        }
        Ok((statuses, interchange))
    }

    fn forget_files(&self, pk: &PublicKey) {
        if let Some(dirs) = &self.persist {
            let stem = file_stem(pk);
            let _ = std::fs::remove_file(dirs.keystores.join(format!("{stem}.json")));
            let _ = std::fs::remove_file(dirs.passwords.join(format!("{stem}.txt")));
        }
    }
}

/// A keystore that decrypted, with what is needed to persist it.
struct Imported {
    key: SecretKey,
    json: String,
    password: Zeroizing<String>,
}
