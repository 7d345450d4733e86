//! The one seam every key source plugs into: a source lists what it holds (files, secrets,
//! database rows; I/O, cheap), and each listed key is unlocked later on the CPU pool (a KDF,
//! or parsing a hex key). A new store is one `KeySource` implementation.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use zeroize::Zeroizing;

use super::handle::SigningKey;
use super::keystore::{Keystore, KeystoreError};
use super::origin::Origin;
use super::secret::{SecretKey, SecretKeyError};
use super::threshold::ShareKey;
use crate::types::PublicKey;

/// How a keystore is unlocked.
pub enum Password {
    /// Read when the key is unlocked (a password file).
    File(PathBuf),
    Given(Arc<Zeroizing<String>>),
}

/// What unlocks to one or more keys.
pub enum Material {
    Keystore {
        keystore: Box<Keystore>,
        password: Password,
    },
    /// A hex secret key (`file-raw`).
    Raw(Zeroizing<String>),
    /// A secret store's value: one hex key per line.
    Secret(Zeroizing<String>),
    /// A key ready as it is (a threshold group, signed for by its share nodes).
    Ready(Arc<dyn SigningKey>),
}

/// One listed key (or secret holding several), before it is unlocked.
pub struct Pending {
    pub origin: Arc<Origin>,
    /// The pubkey, when the source says it before unlocking (keystores, database rows).
    pub declared: Option<PublicKey>,
    pub material: Material,
}

/// A unit of a source that could not be read or unlocked.
#[derive(Clone, Debug)]
pub struct Failure {
    /// What failed, for logs and health (a file, a secret, a definition).
    pub label: String,
    pub reason: String,
    /// The unit (`Origin::unit`) that failed: keys it gave before are kept by a reload. `None`
    /// when nothing was ever loaded from it.
    pub unit: Option<String>,
    /// The key, when known.
    pub pubkey: Option<PublicKey>,
    /// Where the key would have come from, when the source knows (what a Key Manager
    /// deletion of a failed key goes by).
    pub origin: Option<Arc<Origin>>,
}

/// What one source holds now.
#[derive(Default)]
pub struct Found {
    pub keys: Vec<Pending>,
    pub failures: Vec<Failure>,
    /// Units that could not be read, reported elsewhere: what they gave before is kept.
    pub keep: Vec<String>,
}

impl Found {
    pub fn fail(&mut self, label: impl Into<String>, unit: Option<String>, reason: impl Into<String>) {
        self.failures.push(Failure {
            label: label.into(),
            reason: reason.into(),
            unit,
            pubkey: None,
            origin: None,
        });
    }
}

/// A source that could not be listed at all (a folder gone, a store down): a reload keeps
/// every key it gave before.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// A place keys come from.
pub trait KeySource: Send + Sync {
    /// Names the source in logs and health (`--keystores-path /srv/keys`, ...); keys it gives
    /// carry it in `Origin::source`.
    fn name(&self) -> &Arc<str>;

    /// Whether listing crosses the network: startup waits for local sources before it
    /// listens, and lists remote ones in the background.
    fn remote(&self) -> bool {
        false
    }

    /// Everything the source holds now.
    fn list(&self) -> BoxFuture<'_, Result<Found, SourceError>>;
}

/// Why a listed key could not be unlocked.
#[derive(Debug, thiserror::Error)]
pub enum UnlockError {
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    /// Its password file could not be read.
    #[error("{0}")]
    Password(String),
    #[error(transparent)]
    RawKey(#[from] SecretKeyError),
    /// A secret store's value that is not one or more keys.
    #[error("{0}")]
    Secret(String),
    /// A share keystore whose share its own verification vector does not commit to.
    #[error("{0}")]
    Share(String),
}

/// Reads a password file as UTF-8 text (normalisation strips a trailing newline later).
pub fn read_password(path: &std::path::Path) -> Result<Zeroizing<String>, String> {
    let bytes =
        Zeroizing::new(std::fs::read(path).map_err(|e| format!("cannot read password file {}: {e}", path.display()))?);
    std::str::from_utf8(&bytes)
        .map(|s| Zeroizing::new(s.to_string()))
        .map_err(|_| format!("password file {} is not UTF-8", path.display()))
}

impl Pending {
    /// The expensive step: run the KDF and decrypt, or parse the key(s).
    pub fn unlock(&self) -> Result<Vec<Arc<dyn SigningKey>>, UnlockError> {
        let whole = |k: SecretKey| -> Arc<dyn SigningKey> { Arc::new(k) };
        match &self.material {
            Material::Raw(hex) => Ok(vec![whole(SecretKey::from_hex(hex)?)]),
            Material::Secret(value) => Ok(super::stores::keys_in(value)
                .map_err(UnlockError::Secret)?
                .into_iter()
                .map(whole)
                .collect()),
            Material::Keystore { keystore, password } => {
                let pw = match password {
                    Password::Given(p) => p.clone(),
                    Password::File(path) => Arc::new(read_password(path).map_err(UnlockError::Password)?),
                };
                let secret = keystore.decrypt(&pw)?;
                Ok(vec![match &keystore.threshold {
                    Some(info) => Arc::new(ShareKey::new(secret, info.clone()).map_err(UnlockError::Share)?),
                    None => whole(secret),
                }])
            }
            Material::Ready(key) => Ok(vec![key.clone()]),
        }
    }
}
