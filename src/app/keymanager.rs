//! Key Manager API operations (ethereum/keymanager-APIs `/eth/v1/keystores`).
//!
//! Import: keystores are decrypted first (no side effects), then their slashing-protection
//! data is imported in one transaction, then the keys are enabled in the database and stored,
//! and only then do they become usable. Where they are stored decides who loads them: on a
//! PostgreSQL fleet in the database, the password sealed with the fleet secret, for every
//! replica (now and after any restart); on one host (SQLite) in the Key Manager's folder,
//! keystore and password (mode 0600). Delete: the key is disabled in the database first, so
//! every replica refuses it from then on, then dropped here, its stored keystore removed (the
//! database row, or the files moved aside), and its protection data returned.

use std::path::PathBuf;
use std::sync::Arc;

use rayon::prelude::*;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::app::disabled::DisabledKeys;
use crate::app::shared_keystores::SharedKeystores;
use crate::fsutil::{Existing, move_aside, private_dir, write_private};
use crate::keys::fleet::FleetSecret;
use crate::keys::keystore::Keystore;
use crate::keys::{KeyRegistry, Lookup, Origin, OriginKind, SecretKey};
use crate::protection::interchange::{FORMAT_VERSION, Metadata};
use crate::protection::{Interchange, Protection, ProtectionError, SlashingDatabase, StoredKeystore};
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

/// Where imports are kept.
pub enum ImportStore {
    /// One host: keystore and password files in `dir`, loaded again by the source `source`.
    Folder { dir: PathBuf, source: Arc<str> },
    /// A fleet on PostgreSQL: in the database, for every replica (the source `source` reads
    /// them back). Without a fleet secret, imports are refused: no other replica could
    /// unlock them.
    Shared {
        secret: Option<Arc<FleetSecret>>,
        source: Arc<str>,
        replica: String,
    },
}

pub struct KeyManager {
    keys: Arc<KeyRegistry>,
    protection: Arc<Protection>,
    disabled: Arc<DisabledKeys>,
    store: ImportStore,
    /// Held for each import or deletion, and by key loads while they decide what changes:
    /// two concurrent imports of one key cannot both answer `imported`, and a reload never
    /// works from a picture of the keys that an import makes stale.
    changes: Arc<tokio::sync::Mutex<()>>,
}

impl KeyManager {
    pub fn new(
        keys: Arc<KeyRegistry>,
        protection: Arc<Protection>,
        disabled: Arc<DisabledKeys>,
        store: ImportStore,
        changes: Arc<tokio::sync::Mutex<()>>,
    ) -> Self {
        Self {
            keys,
            protection,
            disabled,
            store,
            changes,
        }
    }

    fn db(&self) -> &SlashingDatabase {
        self.protection.database()
    }

    /// Why imports cannot be kept here now, if they cannot (checked before any work).
    async fn cannot_store(&self) -> Result<Option<String>, KeyManagerError> {
        let ImportStore::Shared { secret, .. } = &self.store else {
            return Ok(None);
        };
        let Some(secret) = secret else {
            return Ok(Some(
                "this replica shares Key Manager imports with every replica through the PostgreSQL database, \
                 and has no --shared-keystore-secret-file to seal them with: start every replica with the same \
                 fleet secret (e.g. `openssl rand -hex 32`)"
                    .into(),
            ));
        };
        match self.db().fleet_secret_id().await? {
            Some(pinned) if pinned != secret.id() => Ok(Some(
                ProtectionError::FleetSecretMismatch {
                    pinned,
                    ours: secret.id().to_string(),
                }
                .to_string(),
            )),
            _ => Ok(None),
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
        self: &Arc<Self>,
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
        if let Some(why) = self.cannot_store().await? {
            tracing::warn!(keystores = keystores.len(), reason = %why, "Key Manager import refused");
            return Ok(keystores.iter().map(|_| Status::new("error", why.clone())).collect());
        }

        // Decrypt on all cores without blocking the async runtime, and without the change
        // lock (reloads go on meanwhile). A keystore not started before the deadline, or after
        // the client went away, is not decrypted at all.
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

        // From here on the import runs to its end even if the client goes away: a half-done
        // import (protection data in, key not stored) would answer nothing true.
        let me = self.clone();
        tokio::spawn(async move { me.apply(decrypted, interchange).await })
            .await
            .map_err(|e| KeyManagerError::BadRequest(format!("import task failed: {e}")))?
    }

    /// The second half of an import, under the change lock: protection data, enable, store,
    /// install.
    async fn apply(
        &self,
        decrypted: Vec<Result<Imported, String>>,
        interchange: Option<Interchange>,
    ) -> Result<Vec<Status>, KeyManagerError> {
        let _changes = self.changes.lock().await;
        if let Some(i) = &interchange {
            self.protection.import(i).await?;
        }

        let pubkeys: Vec<PublicKey> = decrypted
            .iter()
            .filter_map(|d| d.as_ref().ok().map(|i| i.key.public_key()))
            .collect();
        let disabled: std::collections::HashSet<PublicKey> = self
            .db()
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
                    let loaded = self.keys.holds(&pk);
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
        self.db().set_enabled(&fresh_keys, true).await?;
        self.disabled.remove(&fresh_keys);

        // Stored, even a key still loaded here that a deletion elsewhere disabled: on a fleet
        // its row is gone, and the other replicas must load it again.
        match self.store(&fresh).await {
            Ok(origins) => {
                for ((_, imported), origin) in fresh.into_iter().zip(origins) {
                    let pk = imported.key.public_key();
                    if matches!(self.keys.lookup(&pk), Lookup::Ready(_)) {
                        self.keys.update_origin(&pk, &origin);
                        tracing::info!(pubkey = %pk, stored = %origin, "key imported again through the Key Manager API: enabled");
                        continue;
                    }
                    let key: Arc<dyn crate::keys::SigningKey> = Arc::new(imported.key);
                    self.keys.insert_ready(key, &origin, false);
                    tracing::info!(pubkey = %pk, stored = %origin, "key imported through the Key Manager API");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot store imported keystores");
                for (i, _) in &fresh {
                    statuses[*i] = Status::new("error", format!("cannot store the keystore: {e}"));
                }
            }
        }
        Ok(statuses)
    }

    /// Keeps imported keystores where they are loaded from again; the origin of each.
    async fn store(&self, imported: &[(usize, Imported)]) -> Result<Vec<Arc<Origin>>, String> {
        match &self.store {
            ImportStore::Folder { dir, source } => {
                let mut origins = Vec::with_capacity(imported.len());
                for (_, i) in imported {
                    origins.push(store_files(dir, source, i).map_err(|e| format!("{}: {e}", dir.display()))?);
                }
                Ok(origins)
            }
            ImportStore::Shared {
                secret,
                source,
                replica,
            } => {
                let secret = secret.as_ref().ok_or("no fleet secret")?;
                let rows: Vec<StoredKeystore> = imported
                    .iter()
                    .map(|(_, i)| {
                        let pubkey = i.key.public_key();
                        StoredKeystore {
                            pubkey,
                            keystore: i.json.clone(),
                            sealed_password: secret.seal(&pubkey, &i.password),
                            sealed_with: secret.id().to_string(),
                        }
                    })
                    .collect();
                if !rows.is_empty() {
                    self.db()
                        .store_keystores(&rows, secret.id(), replica)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(rows
                    .iter()
                    .map(|r| SharedKeystores::origin(source, &r.pubkey))
                    .collect())
            }
        }
    }

    /// Runs to its end even if the client goes away (a deletion half done would leave a key
    /// disabled with its keystore still stored).
    pub async fn delete(
        self: &Arc<Self>,
        pubkeys: Vec<PublicKey>,
    ) -> Result<(Vec<Status>, Interchange), KeyManagerError> {
        let me = self.clone();
        tokio::spawn(async move { me.delete_now(pubkeys).await })
            .await
            .map_err(|e| KeyManagerError::BadRequest(format!("deletion task failed: {e}")))?
    }

    async fn delete_now(&self, pubkeys: Vec<PublicKey>) -> Result<(Vec<Status>, Interchange), KeyManagerError> {
        let _changes = self.changes.lock().await;
        let known: std::collections::HashSet<PublicKey> = self
            .db()
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
        self.db().set_enabled(&to_disable, false).await?;
        self.disabled.add(&to_disable);

        let chain = self.db().pinned_chain().await?;
        let interchange = match chain {
            Some(_) if !to_disable.is_empty() => self.protection.export(Some(&to_disable)).await?,
            _ => Interchange {
                metadata: Metadata {
                    interchange_format_version: FORMAT_VERSION.into(),
                    genesis_validators_root: chain.or(self.protection.chain()).unwrap_or(Root::ZERO),
                },
                data: vec![],
            },
        };

        let mut statuses = Vec::with_capacity(plan.len());
        for (pk, step) in pubkeys.iter().zip(plan) {
            statuses.push(match step {
                Step::ReadOnly(reason) => Status::new("error", reason),
                Step::NotFound => Status::new("not_found", ""),
                Step::Inactive => {
                    // Not loaded here, but maybe imported elsewhere a moment ago: its stored
                    // keystore goes too, or every replica would keep a disabled key's keystore.
                    if matches!(self.store, ImportStore::Shared { .. })
                        && let Err(e) = self.db().delete_stored_keystores(&[*pk]).await
                    {
                        tracing::error!(pubkey = %pk, error = %e, "cannot remove a deleted key's stored keystore");
                    }
                    Status::new("not_active", "")
                }
                Step::Unload(origin) => {
                    self.keys.remove(pk);
                    tracing::info!(pubkey = %pk, source = %origin, "key deleted through the Key Manager API");
                    match self.unstore(pk, &origin).await {
                        Ok(()) => Status::new("deleted", ""),
                        Err(e) => {
                            tracing::error!(pubkey = %pk, error = %e, "cannot remove a deleted key's stored keystore");
                            Status::new(
                                "error",
                                format!(
                                    "disabled and unloaded, but its stored keystore could not be removed ({e}): \
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

    /// Removes a deleted key's stored keystore: its database row, or its files (moved aside).
    async fn unstore(&self, pk: &PublicKey, origin: &Origin) -> Result<(), String> {
        match &origin.kind {
            OriginKind::Shared => self
                .db()
                .delete_stored_keystores(&[*pk])
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            OriginKind::Files(files) => {
                for f in files.iter().filter(|f| f.exists()) {
                    move_aside(f).map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
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

/// Writes an imported keystore and its password (mode 0600, in a 0700 folder) where the
/// Key Manager folder's source loads them from.
fn store_files(dir: &std::path::Path, source: &Arc<str>, imported: &Imported) -> std::io::Result<Arc<Origin>> {
    private_dir(dir)?;
    let stem = format!("keystore-{}", hex::encode(imported.key.public_key().0));
    let keystore = dir.join(format!("{stem}.json"));
    let password = dir.join(format!("{stem}.txt"));
    write_private(&password, imported.password.as_bytes(), Existing::Replace)?;
    write_private(&keystore, imported.json.as_bytes(), Existing::Replace)?;
    let label = keystore.display().to_string();
    Ok(Origin::new(
        source,
        label.clone(),
        label,
        OriginKind::Files(vec![keystore, password]),
        None,
    ))
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
