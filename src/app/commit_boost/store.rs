//! Where proxy keys are kept: encrypted files under `--proxy-keystores-path` in Web3Signer's
//! layout (`0x<consensus key>/BLS/0x<proxy>.json`, `.../SECP256K1/0x<compressed key>.json`;
//! Palisade puts a module's keys one folder deeper, `.../BLS/<module>/`), written atomically
//! with mode 0600; and, on PostgreSQL, the database, so that every replica has them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::keys::proxy::{ProxyKey, ProxyKeys, Scheme};
use crate::protection::{SlashingDatabase, StoredProxy};
use crate::types::PublicKey;

pub struct ProxyStore {
    dir: PathBuf,
    /// The password as Palisade uses it (final line break removed) and the file's bytes as
    /// they are (Web3Signer's secp256k1 keystores were written with those).
    password: Zeroizing<Vec<u8>>,
    raw_password: Zeroizing<Vec<u8>>,
    db: Arc<SlashingDatabase>,
    replica: String,
    following: tokio::sync::Mutex<()>,
    last_follow: std::sync::Mutex<Option<std::time::Instant>>,
    /// Shared rows this replica could not decrypt.
    failed: std::sync::Mutex<std::collections::HashSet<Vec<u8>>>,
}

/// How often requests may make a replica reread the shared proxy keys.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl std::fmt::Debug for ProxyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProxyStore({})", self.dir.display())
    }
}

fn scheme_name(s: Scheme) -> &'static str {
    match s {
        Scheme::Bls => "bls",
        Scheme::Ecdsa => "ecdsa",
    }
}

impl ProxyStore {
    pub fn open(dir: &Path, password_file: &Path, db: Arc<SlashingDatabase>, replica: String) -> Result<Self, String> {
        let raw = crate::fsutil::read_access_file(password_file, "--proxy-keystores-password-file")
            .map_err(|e| e.to_string())?;
        let mut password = raw.clone();
        while password.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            password.pop();
        }
        if password.is_empty() {
            return Err(format!(
                "--proxy-keystores-password-file {} is empty",
                password_file.display()
            ));
        }
        crate::fsutil::private_dir(dir).map_err(|e| format!("--proxy-keystores-path {}: {e}", dir.display()))?;
        Ok(ProxyStore {
            dir: dir.to_path_buf(),
            password,
            raw_password: raw,
            db,
            replica,
            following: Default::default(),
            last_follow: Default::default(),
            failed: Default::default(),
        })
    }

    /// Keeps `key` for good: its file, then (PostgreSQL) the database row every replica reads;
    /// if the row cannot be written the file is removed again, so that no replica ever holds a
    /// proxy the others cannot have. The key is handed back only once both are written.
    pub async fn keep(self: &Arc<Self>, key: ProxyKey) -> Result<ProxyKey, String> {
        let me = self.clone();
        // Encryption (pbkdf2) and fsync: off the async threads.
        let (key, file, row) = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let json = key.to_keystore_json(&me.password);
            let mut path = me.dir.join(key.delegator.to_string()).join(key.id.scheme().folder());
            if let Some(m) = &key.module {
                path = path.join(m);
            }
            crate::fsutil::private_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let file = path.join(format!("{}.json", key.id.key_hex()));
            crate::fsutil::write_private(&file, json.as_bytes(), crate::fsutil::Existing::Keep)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let row = StoredProxy {
                proxy: key.id.key_bytes(),
                delegator: key.delegator,
                scheme: scheme_name(key.id.scheme()).into(),
                module: key.module.clone(),
                keystore: json,
            };
            Ok((key, file, row))
        })
        .await
        .map_err(|e| e.to_string())??;
        if let Err(e) = self.db.store_proxy(&row, &self.replica).await {
            let _ = std::fs::remove_file(&file);
            return Err(e.to_string());
        }
        Ok(key)
    }

    /// Reads the keys in the folder (at startup); a file that cannot be read is reported and
    /// skipped, as Web3Signer does.
    pub fn load_files(&self, into: &ProxyKeys) -> Vec<String> {
        let mut problems = Vec::new();
        let Ok(delegators) = std::fs::read_dir(&self.dir) else {
            return problems;
        };
        for d in delegators.flatten() {
            let Some(delegator) = d.file_name().to_str().and_then(|n| n.parse::<PublicKey>().ok()) else {
                continue;
            };
            for scheme in [Scheme::Bls, Scheme::Ecdsa] {
                let folder = d.path().join(scheme.folder());
                self.load_folder(&folder, scheme, delegator, None, into, &mut problems);
                for sub in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
                    if sub.path().is_dir()
                        && let Some(module) = sub.file_name().to_str()
                    {
                        self.load_folder(
                            &sub.path(),
                            scheme,
                            delegator,
                            Some(module.to_string()),
                            into,
                            &mut problems,
                        );
                    }
                }
            }
        }
        problems
    }

    fn load_folder(
        &self,
        folder: &Path,
        scheme: Scheme,
        delegator: PublicKey,
        module: Option<String>,
        into: &ProxyKeys,
        problems: &mut Vec<String>,
    ) {
        for f in std::fs::read_dir(folder).into_iter().flatten().flatten() {
            let path = f.path();
            if path.extension().is_none_or(|e| e != "json") || !path.is_file() {
                continue;
            }
            let loaded = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|json| self.decrypt(scheme, &json, delegator, module.clone()));
            match loaded {
                Ok(key) => {
                    into.insert(key);
                }
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            }
        }
    }

    fn decrypt(
        &self,
        scheme: Scheme,
        json: &str,
        delegator: PublicKey,
        module: Option<String>,
    ) -> Result<ProxyKey, String> {
        ProxyKey::from_keystore_json(scheme, json, &self.password, &self.raw_password, delegator, module)
            .map_err(|e| e.to_string())
    }

    /// Adds the keys other replicas made (PostgreSQL); returns how many were new. At most one
    /// reread a second and one at a time, however many requests ask; a row this replica cannot
    /// decrypt (another password file) is reported once and not tried again.
    pub async fn follow(self: &Arc<Self>, into: &Arc<ProxyKeys>) -> Result<usize, String> {
        let Ok(_turn) = self.following.try_lock() else {
            return Ok(0);
        };
        {
            let mut last = self.last_follow.lock().expect("proxy store");
            if last.is_some_and(|t| t.elapsed() < FOLLOW_EVERY) {
                return Ok(0);
            }
            *last = Some(std::time::Instant::now());
        }
        let rows = self.db.stored_proxies().await.map_err(|e| e.to_string())?;
        let failed = self.failed.lock().expect("proxy store").clone();
        let new: Vec<StoredProxy> = rows
            .into_iter()
            .filter(|r| !failed.contains(&r.proxy) && into.find(&r.proxy).is_none())
            .collect();
        if new.is_empty() {
            return Ok(0);
        }
        let (me, into) = (self.clone(), into.clone());
        tokio::task::spawn_blocking(move || {
            let mut added = 0;
            for r in new {
                let scheme = if r.scheme == "bls" { Scheme::Bls } else { Scheme::Ecdsa };
                match me.decrypt(scheme, &r.keystore, r.delegator, r.module.clone()) {
                    Ok(key) => added += usize::from(into.insert(key)),
                    Err(e) => {
                        tracing::warn!(proxy = ?r, error = %e, "a shared Commit-Boost proxy key cannot be decrypted with this replica's --proxy-keystores-password-file (not tried again until a restart)");
                        me.failed.lock().expect("proxy store").insert(r.proxy);
                    }
                }
            }
            added
        })
        .await
        .map_err(|e| e.to_string())
    }
}
