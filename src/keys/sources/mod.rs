//! The key sources a replica is configured with, each a `KeySource`; `configure` turns the
//! `serve` options into them (the shared-keystore source, which needs the database, is added
//! by the application).

pub mod aws_bulk;
pub mod definitions;
pub mod folder;

use std::path::PathBuf;
use std::sync::Arc;

use zeroize::Zeroizing;

use self::aws_bulk::{AwsBulk, AwsBulkSource};
use self::definitions::{LocalDefinitions, StoreDefinitions};
use self::folder::{KeystoreFolder, Passwords};
use super::source::{KeySource, read_password};

/// Where keys come from (`serve` options).
#[derive(Clone, Debug, Default)]
pub struct KeyOptions {
    pub keystores_path: Option<PathBuf>,
    pub keystores_passwords_path: Option<PathBuf>,
    pub keystores_password_file: Option<PathBuf>,
    pub key_config_path: Option<PathBuf>,
    /// Where Key Manager imports are kept on one host (each keystore with `<stem>.txt`).
    pub keymanager_path: Option<PathBuf>,
    /// `--aws-secrets-enabled` and its options.
    pub aws_bulk: Option<AwsBulk>,
}

/// A key configuration that stops startup (a bad individual keystore does not).
#[derive(Debug, thiserror::Error)]
pub enum KeyConfigError {
    #[error("give --keystores-passwords-path or --keystores-password-file, not both")]
    TwoPasswordOptions,
    #[error(
        "--keystores-path needs --keystores-passwords-path (one <name>.txt per keystore) or \
         --keystores-password-file (one password for all)"
    )]
    NoPasswordOption,
    #[error("{option} {} is not a directory", path.display())]
    NotADirectory { option: &'static str, path: PathBuf },
    /// The shared password file (`--keystores-password-file`).
    #[error("{0}")]
    Password(String),
}

/// The configured sources, and the name of the Key Manager folder's (its imports carry it).
pub struct Configured {
    pub sources: Vec<Arc<dyn KeySource>>,
    pub keymanager_source: Option<Arc<str>>,
}

fn directory(option: &'static str, path: &std::path::Path) -> Result<(), KeyConfigError> {
    if path.is_dir() {
        Ok(())
    } else {
        Err(KeyConfigError::NotADirectory {
            option,
            path: path.into(),
        })
    }
}

/// Checks the options (missing folders and password options stop startup) and builds the
/// sources.
pub fn configure(opts: &KeyOptions) -> Result<Configured, KeyConfigError> {
    let mut sources: Vec<Arc<dyn KeySource>> = Vec::new();
    if let Some(dir) = &opts.keystores_path {
        let passwords = match (&opts.keystores_passwords_path, &opts.keystores_password_file) {
            (Some(_), Some(_)) => return Err(KeyConfigError::TwoPasswordOptions),
            (None, None) => return Err(KeyConfigError::NoPasswordOption),
            (Some(pw_dir), None) => {
                directory("--keystores-passwords-path", pw_dir)?;
                Passwords::PerKey(pw_dir.clone())
            }
            (None, Some(file)) => {
                if let Some(mode) = crate::fsutil::readable_by_others(file) {
                    tracing::warn!(file = %file.display(),
                        "the keystores' password file can be read by other users (mode {mode:o}): chmod 600 it");
                }
                let pw: Zeroizing<String> = read_password(file).map_err(KeyConfigError::Password)?;
                Passwords::Shared(Arc::new(pw))
            }
        };
        directory("--keystores-path", dir)?;
        sources.push(Arc::new(KeystoreFolder::new(
            format!("--keystores-path {}", dir.display()),
            dir.clone(),
            passwords,
            false,
        )));
    }
    let mut keymanager_source = None;
    if let Some(dir) = &opts.keymanager_path {
        let folder = KeystoreFolder::new(
            format!("Key Manager folder {}", dir.display()),
            dir.clone(),
            Passwords::PerKey(dir.clone()),
            true,
        );
        keymanager_source = Some(folder.name().clone());
        sources.push(Arc::new(folder));
    }
    if let Some(dir) = &opts.key_config_path {
        directory("--key-config-path", dir)?;
        sources.push(Arc::new(LocalDefinitions::new(dir.clone())));
        sources.push(Arc::new(StoreDefinitions::new(dir.clone())));
    }
    if let Some(aws) = &opts.aws_bulk {
        sources.push(Arc::new(AwsBulkSource::new(aws.clone())));
    }
    Ok(Configured {
        sources,
        keymanager_source,
    })
}
