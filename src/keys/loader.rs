//! Finding key sources and decrypting them on all cores.
//!
//! Discovery is cheap (read small JSON/YAML files, learn pubkeys) and happens before the
//! server starts; decryption is the expensive KDF and runs in the background so the server
//! answers at once. A source that fails is named with its reason, never with its password,
//! and the rest load.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use zeroize::Zeroizing;

use super::definitions::{self, KeyDefinition};
use super::keystore::{Keystore, KeystoreError};
use super::origin::Origin;
use super::registry::KeyRegistry;
use super::secret::{SecretKey, SecretKeyError};
use crate::types::PublicKey;

/// Where keys come from (`serve` options).
#[derive(Clone, Debug, Default)]
pub struct KeyOptions {
    pub keystores_path: Option<PathBuf>,
    pub keystores_passwords_path: Option<PathBuf>,
    pub keystores_password_file: Option<PathBuf>,
    pub key_config_path: Option<PathBuf>,
    /// Where Key Manager imports are kept (each keystore with `<stem>.txt` beside it).
    pub keymanager_path: Option<PathBuf>,
}

enum Password {
    File(PathBuf),
    Shared(Arc<Zeroizing<String>>),
}

enum Material {
    Keystore {
        keystore: Box<Keystore>,
        password: Password,
    },
    Raw(Zeroizing<String>),
}

/// One key to load, before its secret is known.
pub struct KeySource {
    pub origin: Arc<Origin>,
    pub declared: Option<PublicKey>,
    material: Material,
}

/// The outcome of discovery: sources to decrypt, and sources that already failed.
#[derive(Default)]
pub struct Discovered {
    pub sources: Vec<KeySource>,
    pub failures: Vec<(String, String)>,
}

impl std::fmt::Debug for Discovered {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let origins: Vec<&str> = self.sources.iter().map(|s| s.origin.label.as_str()).collect();
        f.debug_struct("Discovered")
            .field("sources", &origins)
            .field("failures", &self.failures)
            .finish()
    }
}

/// Reads a password file as UTF-8 text (normalisation strips a trailing newline later).
fn read_password(path: &Path) -> Result<Zeroizing<String>, String> {
    let bytes =
        Zeroizing::new(std::fs::read(path).map_err(|e| format!("cannot read password file {}: {e}", path.display()))?);
    std::str::from_utf8(&bytes)
        .map(|s| Zeroizing::new(s.to_string()))
        .map_err(|_| format!("password file {} is not UTF-8", path.display()))
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
    #[error("cannot read {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    /// The shared password file (`--keystores-password-file`).
    #[error("{0}")]
    Password(String),
}

fn sorted_files(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>, KeyConfigError> {
    let rd = std::fs::read_dir(dir).map_err(|source| KeyConfigError::Unreadable {
        path: dir.into(),
        source,
    })?;
    let mut files: Vec<PathBuf> = rd
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

/// Configuration errors (a missing folder, no password option) stop startup; a bad
/// individual keystore does not.
pub fn discover(opts: &KeyOptions) -> Result<Discovered, KeyConfigError> {
    let mut found = Discovered::default();

    if let Some(dir) = &opts.keystores_path {
        let passwords = match (&opts.keystores_passwords_path, &opts.keystores_password_file) {
            (Some(_), Some(_)) => return Err(KeyConfigError::TwoPasswordOptions),
            (None, None) => return Err(KeyConfigError::NoPasswordOption),
            (Some(pw_dir), None) => Passwords::PerKey(directory("--keystores-passwords-path", pw_dir)?.into()),
            (None, Some(file)) => Passwords::Shared(Arc::new(read_password(file).map_err(KeyConfigError::Password)?)),
        };
        directory("--keystores-path", dir)?;
        discover_folder(&mut found, dir, &passwords)?;
    }

    // Keystores imported through the Key Manager API, each with its own password beside it.
    if let Some(dir) = &opts.keymanager_path
        && dir.is_dir()
    {
        discover_folder(&mut found, dir, &Passwords::PerKey(dir.clone()))?;
    }

    if let Some(dir) = &opts.key_config_path {
        for file in sorted_files(directory("--key-config-path", dir)?, &["yaml", "yml"])? {
            let label = file.display().to_string();
            match definitions::read_file(&file) {
                Err(reason) => found.failures.push((label, reason)),
                Ok(defs) => {
                    for (i, def) in defs.into_iter().enumerate() {
                        let label = if i == 0 {
                            label.clone()
                        } else {
                            format!("{label}#{}", i + 1)
                        };
                        let types = def.signing_types;
                        match def.key {
                            KeyDefinition::Raw { private_key } => found.sources.push(KeySource {
                                origin: Origin::definition(label, types),
                                declared: None,
                                material: Material::Raw(private_key),
                            }),
                            KeyDefinition::Keystore { keystore, password } => {
                                let label = format!("{label} ({})", keystore.display());
                                match read_keystore(&keystore) {
                                    Ok(Some(ks)) => push_keystore(
                                        &mut found,
                                        Origin::definition(label, types),
                                        ks,
                                        Password::File(password),
                                    ),
                                    Ok(None) => found
                                        .failures
                                        .push((label, format!("{} is not an EIP-2335 keystore", keystore.display()))),
                                    Err(reason) => found.failures.push((label, reason)),
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(found)
}

/// `path`, if it is a directory (`option` names where it was configured).
fn directory<'a>(option: &'static str, path: &'a Path) -> Result<&'a Path, KeyConfigError> {
    if path.is_dir() {
        Ok(path)
    } else {
        Err(KeyConfigError::NotADirectory {
            option,
            path: path.into(),
        })
    }
}

/// How the keystores of one folder are unlocked.
enum Passwords {
    /// `<keystore file stem>.txt` in this folder.
    PerKey(PathBuf),
    Shared(Arc<Zeroizing<String>>),
}

/// Every `*.json` keystore of `dir`. A key from here is deletable through the Key Manager API:
/// its keystore and its own password file are what a deletion moves aside.
fn discover_folder(found: &mut Discovered, dir: &Path, passwords: &Passwords) -> Result<(), KeyConfigError> {
    // Reading and parsing thousands of small files is worth doing on every core: the server
    // listens only after this.
    let files = sorted_files(dir, &["json"])?;
    let parsed: Vec<(PathBuf, Result<Option<Keystore>, String>)> = files
        .into_par_iter()
        .map(|path| {
            let ks = read_keystore(&path);
            (path, ks)
        })
        .collect();
    for (path, keystore) in parsed {
        let label = path.display().to_string();
        let (pw, files) = match passwords {
            Passwords::Shared(shared) => (Password::Shared(shared.clone()), vec![path.clone()]),
            Passwords::PerKey(pw_dir) => {
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
                let pw_file = pw_dir.join(format!("{stem}.txt"));
                (Password::File(pw_file.clone()), vec![path.clone(), pw_file])
            }
        };
        match keystore {
            Ok(Some(ks)) => push_keystore(found, Origin::files(label, files), ks, pw),
            Ok(None) => {
                tracing::warn!(file = %label, "skipping JSON file that is not an EIP-2335 keystore (no `crypto` object)")
            }
            Err(reason) => found.failures.push((label, reason)),
        }
    }
    Ok(())
}

fn push_keystore(found: &mut Discovered, origin: Arc<Origin>, ks: Keystore, password: Password) {
    match ks.declared_pubkey() {
        Ok(declared) => found.sources.push(KeySource {
            origin,
            declared,
            material: Material::Keystore {
                keystore: Box::new(ks),
                password,
            },
        }),
        Err(e) => found.failures.push((origin.label.clone(), e.to_string())),
    }
}

/// `Ok(None)`: valid JSON that is not a keystore (skipped). `Err`: a keystore that is broken.
fn read_keystore(path: &Path) -> Result<Option<Keystore>, String> {
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

/// Why a discovered key could not be decrypted.
#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    /// Its password file could not be read.
    #[error("{0}")]
    Password(String),
    /// A raw secret key in a key definition that is not one.
    #[error(transparent)]
    RawKey(#[from] SecretKeyError),
}

impl KeySource {
    /// The expensive step: run the KDF and decrypt.
    pub fn decrypt(&self) -> Result<SecretKey, DecryptError> {
        match &self.material {
            Material::Raw(hex) => Ok(SecretKey::from_hex(hex)?),
            Material::Keystore { keystore, password } => {
                let pw = match password {
                    Password::Shared(p) => p.clone(),
                    Password::File(path) => Arc::new(read_password(path).map_err(DecryptError::Password)?),
                };
                Ok(keystore.decrypt(&pw)?)
            }
        }
    }
}

/// Totals of one load.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadReport {
    pub loaded: usize,
    pub failed: usize,
    pub duplicates: usize,
    pub elapsed: Duration,
}

/// Registers what discovery found: known pubkeys become `Loading` at once, failures are
/// recorded and logged. Returns the sources still to decrypt.
pub fn announce(found: Discovered, registry: &KeyRegistry) -> Vec<KeySource> {
    for (label, reason) in found.failures {
        tracing::error!(source = %label, %reason, "key failed to load");
        registry.fail(None, &Origin::definition(label, None), reason);
    }
    let mut sources = Vec::with_capacity(found.sources.len());
    for s in found.sources {
        if let Some(pk) = s.declared
            && !registry.announce(pk, &s.origin)
        {
            tracing::warn!(source = %s.origin, pubkey = %pk, "key is defined more than once; keeping the first definition");
            continue;
        }
        sources.push(s);
    }
    sources
}

/// Decrypts every source on the rayon pool (one thread per core), installing each key as
/// soon as it is ready, with a progress line every 10% (for 20 keys or more).
pub fn decrypt_all(sources: Vec<KeySource>, registry: &KeyRegistry) -> LoadReport {
    let total = sources.len();
    let start = Instant::now();
    if total == 0 {
        return LoadReport::default();
    }
    tracing::info!(keys = total, threads = rayon::current_num_threads(), "decrypting keys");
    let done = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let duplicates = AtomicUsize::new(0);
    let step = (total / 10).max(1);
    sources.into_par_iter().with_max_len(1).for_each(|s| {
        match s.decrypt() {
            Ok(sk) => {
                let pk = sk.public_key();
                if !registry.insert_ready(sk, &s.origin) {
                    duplicates.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(source = %s.origin, pubkey = %pk, "key is defined more than once; keeping the first definition");
                }
            }
            Err(reason) => {
                failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(source = %s.origin, %reason, "key failed to load");
                registry.fail(s.declared, &s.origin, reason.to_string());
            }
        }
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        if total >= 20 && n.is_multiple_of(step) && n < total {
            let elapsed = start.elapsed();
            let left = elapsed.mul_f64((total - n) as f64 / n as f64);
            tracing::info!(
                "decrypted {n}/{total} keys ({}%), {} failed, {:.1}s elapsed, ~{:.0}s left",
                n * 100 / total,
                failed.load(Ordering::Relaxed),
                elapsed.as_secs_f64(),
                left.as_secs_f64()
            );
        }
    });
    let failed = failed.into_inner();
    let duplicates = duplicates.into_inner();
    let report = LoadReport {
        loaded: total - failed - duplicates,
        failed,
        duplicates,
        elapsed: start.elapsed(),
    };
    tracing::info!(
        loaded = report.loaded,
        failed = report.failed,
        "keys decrypted in {:.2}s",
        report.elapsed.as_secs_f64()
    );
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::registry::Lookup;

    const INTEROP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/test-keys/interop");

    /// The interop folder holds keys.json (not a keystore): it is skipped, the 8 load.
    #[test]
    fn loads_a_folder_with_one_password() {
        let opts = KeyOptions {
            keystores_path: Some(INTEROP.into()),
            keystores_password_file: Some(format!("{INTEROP}/password.txt").into()),
            ..Default::default()
        };
        let found = discover(&opts).unwrap();
        assert_eq!(found.sources.len(), 8);
        assert!(found.failures.is_empty());
        let reg = KeyRegistry::new();
        let sources = announce(found, &reg);
        assert_eq!(reg.counts().loading, 8);
        let report = decrypt_all(sources, &reg);
        assert_eq!((report.loaded, report.failed), (8, 0));
        assert_eq!(reg.ready_pubkeys().len(), 8);
    }

    #[test]
    fn a_bad_keystore_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::create_dir(&pw).unwrap();
        for i in 0..3 {
            std::fs::copy(
                format!("{INTEROP}/keystore-{i}.json"),
                dir.path().join(format!("k{i}.json")),
            )
            .unwrap();
        }
        std::fs::write(pw.join("k0.txt"), "interop-test-password\n").unwrap();
        std::fs::write(pw.join("k1.txt"), "wrong password").unwrap();
        // k2 has no password file; corrupt.json is not JSON at all.
        std::fs::write(dir.path().join("corrupt.json"), "{\"crypto\": ").unwrap();
        let opts = KeyOptions {
            keystores_path: Some(dir.path().into()),
            keystores_passwords_path: Some(pw.clone()),
            ..Default::default()
        };
        let found = discover(&opts).unwrap();
        let reg = KeyRegistry::new();
        let sources = announce(found, &reg);
        let report = decrypt_all(sources, &reg);
        assert_eq!((report.loaded, report.failed), (1, 2));
        let failures = reg.failures();
        assert_eq!(failures.len(), 3, "{failures:?}");
        let text = format!("{failures:?}");
        assert!(text.contains("wrong password"), "{text}");
        assert!(text.contains("k2.txt"), "{text}");
        assert!(text.contains("corrupt JSON"), "{text}");
        assert!(!text.contains("interop-test-password"));
        let pk1: PublicKey =
            "0xb89bebc699769726a318c8e9971bd3171297c61aea4a6578a7a4f94b547dcba5bac16a89108b6b6a1fe3695d1a874a0b"
                .parse()
                .unwrap();
        assert!(matches!(reg.lookup(&pk1), Lookup::Failed(_)));
    }

    #[test]
    fn configuration_errors_stop_startup() {
        let opts = KeyOptions {
            keystores_path: Some(INTEROP.into()),
            ..Default::default()
        };
        assert!(
            discover(&opts)
                .unwrap_err()
                .to_string()
                .contains("--keystores-password")
        );
        let opts = KeyOptions {
            keystores_path: Some("/nonexistent".into()),
            keystores_password_file: Some(format!("{INTEROP}/password.txt").into()),
            ..Default::default()
        };
        assert!(discover(&opts).unwrap_err().to_string().contains("/nonexistent"));
    }
}
