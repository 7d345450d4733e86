//! Key Manager API operations (ethereum/keymanager-APIs `/eth/v1/keystores`).
//!
//! Import: keystores are decrypted first (no side effects), then their slashing-protection
//! data is imported in one transaction, then the keys are enabled in the database and stored
//! (keystore and password, mode 0600) in the Key Manager's folder, and only then do they
//! become usable. Delete: the key is disabled in the database first, so every replica
//! refuses it from then on, then dropped here and its files moved aside so that a restart
//! does not load it again, and its protection data returned.

use std::path::PathBuf;
use std::sync::Arc;

use rayon::prelude::*;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::app::disabled::DisabledKeys;
use crate::fsutil::{Existing, move_aside, private_dir, write_private};
use crate::keys::keystore::Keystore;
use crate::keys::{KeyRegistry, Lookup, Origin, OriginKind, SecretKey};
use crate::protection::interchange::{FORMAT_VERSION, Metadata};
use crate::protection::{ChainPin, Interchange, ProtectionError, SlashingDatabase};
use crate::types::{PublicKey, Root};

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

/// One entry of `GET /eth/v1/keystores`.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub validating_pubkey: PublicKey,
    pub derivation_path: String,
    /// The API cannot delete it (a YAML definition, or a folder Palisade cannot write).
    pub readonly: bool,
}

pub struct KeyManager {
    keys: Arc<KeyRegistry>,
    db: Arc<SlashingDatabase>,
    chain: Arc<ChainPin>,
    disabled: Arc<DisabledKeys>,
    /// Where imported keystores and their passwords are stored (loaded again at startup).
    pub dir: PathBuf,
    /// One import or deletion at a time: two concurrent imports of one key cannot both
    /// answer `imported`.
    busy: tokio::sync::Mutex<()>,
}

impl KeyManager {
    pub fn new(
        keys: Arc<KeyRegistry>,
        db: Arc<SlashingDatabase>,
        chain: Arc<ChainPin>,
        disabled: Arc<DisabledKeys>,
        dir: PathBuf,
    ) -> Self {
        Self {
            keys,
            db,
            chain,
            disabled,
            dir,
            busy: tokio::sync::Mutex::new(()),
        }
    }

    pub fn list(&self) -> Vec<Listed> {
        self.keys
            .ready_pubkeys()
            .into_iter()
            .filter(|pk| !self.disabled.contains(pk))
            .map(|pk| Listed {
                validating_pubkey: pk,
                derivation_path: String::new(),
                readonly: self.keys.origin(&pk).is_some_and(|o| o.read_only_reason().is_some()),
            })
            .collect()
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
        if keystores.len() > MAX_KEYSTORES_PER_IMPORT {
            return Err(KeyManagerError::BadRequest(format!(
                "{} keystores in one request; at most {MAX_KEYSTORES_PER_IMPORT}: split the import",
                keystores.len()
            )));
        }
        let _busy = self.busy.lock().await;

        // Decrypt on all cores without blocking the async runtime. A keystore not started
        // before the deadline, or after the client went away, is not decrypted at all.
        let deadline = std::time::Instant::now() + IMPORT_DEADLINE;
        let cancelled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(cancelled.clone());
        let decrypted: Vec<Result<Imported, String>> = tokio::task::spawn_blocking(move || {
            keystores
                .into_par_iter()
                .zip(passwords.into_par_iter())
                .map(|(json, password)| {
                    if cancelled.load(std::sync::atomic::Ordering::Relaxed) {
                        return Err("import cancelled: the client went away".to_string());
                    }
                    if std::time::Instant::now() > deadline {
                        return Err(format!(
                            "not decrypted within {} s of the request: import fewer keystores at once",
                            IMPORT_DEADLINE.as_secs()
                        ));
                    }
                    let ks = Keystore::from_json(&json).map_err(|e| e.to_string())?;
                    let key = ks.decrypt(&password).map_err(|e| e.to_string())?;
                    Ok(Imported { key, json, password })
                })
                .collect()
        })
        .await
        .map_err(|e| KeyManagerError::BadRequest(format!("decryption task failed: {e}")))?;

        if let Some(i) = &interchange {
            self.chain.import(&self.db, i).await?;
        }

        let pubkeys: Vec<PublicKey> = decrypted
            .iter()
            .filter_map(|d| d.as_ref().ok().map(|i| i.key.public_key()))
            .collect();
        let disabled: std::collections::HashSet<PublicKey> = self
            .db
            .key_states(&pubkeys)
            .await?
            .into_iter()
            .filter(|(_, enabled)| !enabled)
            .map(|(pk, _)| pk)
            .collect();

        // A key already loaded and enabled is a duplicate; a loaded key that was deleted (on
        // this or another replica) is disabled, and importing it enables it again.
        let mut statuses = Vec::with_capacity(decrypted.len());
        let mut fresh: Vec<(usize, Imported)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, d) in decrypted.into_iter().enumerate() {
            match d {
                Err(reason) => statuses.push(Status::new("error", reason)),
                Ok(imported) => {
                    let pk = imported.key.public_key();
                    let loaded = matches!(self.keys.lookup(&pk), Lookup::Ready(_) | Lookup::Loading);
                    if !seen.insert(pk) || (loaded && !disabled.contains(&pk)) {
                        statuses.push(Status::new("duplicate", ""));
                    } else {
                        statuses.push(Status::new("imported", ""));
                        fresh.push((i, imported));
                    }
                }
            }
        }

        let fresh_keys: Vec<PublicKey> = fresh.iter().map(|(_, i)| i.key.public_key()).collect();
        self.db.set_enabled(&fresh_keys, true).await?;
        self.disabled.remove(&fresh_keys);

        for (i, imported) in fresh {
            let pk = imported.key.public_key();
            if matches!(self.keys.lookup(&pk), Lookup::Ready(_)) {
                tracing::info!(pubkey = %pk, "key imported again through the Key Manager API: enabled");
                continue;
            }
            match self.store(&imported) {
                Ok(origin) => {
                    self.keys.insert_ready(imported.key, &origin);
                    tracing::info!(pubkey = %pk, "key imported through the Key Manager API");
                }
                Err(e) => {
                    tracing::error!(pubkey = %pk, error = %e, "cannot store an imported keystore");
                    statuses[i] = Status::new(
                        "error",
                        format!("cannot store the keystore in {}: {e}", self.dir.display()),
                    );
                }
            }
        }
        Ok(statuses)
    }

    /// Writes an imported keystore and its password (mode 0600, in a 0700 folder) where
    /// startup loads them from.
    fn store(&self, imported: &Imported) -> std::io::Result<Arc<Origin>> {
        private_dir(&self.dir)?;
        let stem = format!("keystore-{}", hex::encode(imported.key.public_key().0));
        let keystore = self.dir.join(format!("{stem}.json"));
        let password = self.dir.join(format!("{stem}.txt"));
        write_private(&password, imported.password.as_bytes(), Existing::Replace)?;
        write_private(&keystore, imported.json.as_bytes(), Existing::Replace)?;
        Ok(Origin::files(keystore.display().to_string(), vec![keystore, password]))
    }

    pub async fn delete(&self, pubkeys: Vec<PublicKey>) -> Result<(Vec<Status>, Interchange), KeyManagerError> {
        let _busy = self.busy.lock().await;
        let known: std::collections::HashSet<PublicKey> = self
            .db
            .key_states(&pubkeys)
            .await?
            .into_iter()
            .map(|(pk, _)| pk)
            .collect();

        let mut plan = Vec::with_capacity(pubkeys.len());
        let mut to_disable = Vec::new();
        for pk in &pubkeys {
            let step = match self.keys.origin(pk) {
                Some(origin) => match origin.read_only_reason() {
                    Some(reason) => Step::ReadOnly(reason),
                    None => Step::Unload(origin),
                },
                None if known.contains(pk) => Step::Inactive,
                None => Step::NotFound,
            };
            if matches!(step, Step::Unload(_) | Step::Inactive) {
                to_disable.push(*pk);
            }
            plan.push(step);
        }
        // Disable first: from here on every replica refuses these keys. Unknown keys are
        // not recorded at all.
        self.db.set_enabled(&to_disable, false).await?;
        self.disabled.add(&to_disable);

        let chain = self.db.pinned_chain().await?;
        let interchange = match chain {
            Some(_) if !to_disable.is_empty() => self.db.export(Some(&to_disable)).await?,
            _ => Interchange {
                metadata: Metadata {
                    interchange_format_version: FORMAT_VERSION.into(),
                    genesis_validators_root: chain.or(self.chain.get()).unwrap_or(Root::ZERO),
                },
                data: vec![],
            },
        };

        let mut statuses = Vec::with_capacity(plan.len());
        for (pk, step) in pubkeys.iter().zip(plan) {
            statuses.push(match step {
                Step::ReadOnly(reason) => Status::new("error", reason),
                Step::NotFound => Status::new("not_found", ""),
                Step::Inactive => Status::new("not_active", ""),
                Step::Unload(origin) => {
                    self.keys.remove(pk);
                    tracing::info!(pubkey = %pk, source = %origin, "key deleted through the Key Manager API");
                    match set_aside(&origin) {
                        Ok(()) => Status::new("deleted", ""),
                        Err(e) => {
                            tracing::error!(pubkey = %pk, error = %e, "cannot move a deleted key's files aside");
                            Status::new(
                                "error",
                                format!(
                                    "disabled and unloaded, but its files could not be moved aside ({e}): \
                                     it will be loaded again at the next start (and refused)"
                                ),
                            )
                        }
                    }
                }
            });
        }
        Ok((statuses, interchange))
    }
}

/// What a deletion does to one key.
enum Step {
    ReadOnly(String),
    Unload(Arc<Origin>),
    /// Not loaded here, but known to the database (loaded on another replica, or deleted).
    Inactive,
    NotFound,
}

fn set_aside(origin: &Origin) -> std::io::Result<()> {
    if let OriginKind::Files(files) = &origin.kind {
        for f in files.iter().filter(|f| f.exists()) {
            move_aside(f)?;
        }
    }
    Ok(())
}

/// Keystores in one Key Manager import request.
pub const MAX_KEYSTORES_PER_IMPORT: usize = 1000;
/// Keystores not started within this are answered with an error (bounded KDFs take at most
/// a few seconds each).
const IMPORT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

/// Sets the flag when the import's future is dropped (the client disconnected).
struct CancelOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A keystore that decrypted, with what is needed to store it.
struct Imported {
    key: SecretKey,
    json: String,
    password: Zeroizing<String>,
}
