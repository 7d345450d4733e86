//! The YAML key definitions of `--key-config-path`, as two sources over one folder: the local
//! definitions (`file-keystore`, `file-raw`), listed before the server listens, and those
//! held by a secret store (`aws-secret`, `hashicorp`, `azure-secret`), fetched over the
//! network in the background. Each file is one unit: a file that cannot be read (half
//! written, invalid) fails whole, and a reload keeps what it gave before.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use zeroize::Zeroizing;

use super::folder::{push_keystore, read_keystore, sorted_files};
use crate::keys::definitions::{self, AwsAuth, Definition, KeyDefinition};
use crate::keys::handle::SigningKey;
use crate::keys::origin::{Origin, OriginKind};
use crate::keys::source::{Found, KeySource, Material, Password, Pending, SourceError};
use crate::keys::stores::aws::{CredentialSource, Credentials, SecretsManager};
use crate::keys::stores::http::{self as store_http, ClientOptions, StoreError, with_retries};
use crate::keys::stores::{azure, vault};

/// How many secrets are fetched at once.
const FETCH_CONCURRENCY: usize = 16;

/// A definitions file, with its definitions or why it cannot be read.
type DefinitionFile = (PathBuf, Result<Vec<Definition>, String>);

/// The files of the folder.
fn read_folder(dir: &Path) -> Result<Vec<DefinitionFile>, SourceError> {
    let files = sorted_files(dir, &["yaml", "yml"])
        .map_err(|e| SourceError(format!("--key-config-path: cannot read {}: {e}", dir.display())))?;
    Ok(files
        .into_iter()
        .map(|f| {
            let defs = definitions::read_file(&f);
            (f, defs)
        })
        .collect())
}

fn doc_label(file: &Path, i: usize) -> String {
    if i == 0 {
        file.display().to_string()
    } else {
        format!("{}#{}", file.display(), i + 1)
    }
}

fn is_store(d: &KeyDefinition) -> bool {
    matches!(
        d,
        KeyDefinition::Aws(_) | KeyDefinition::Vault(_) | KeyDefinition::Azure(_)
    )
}

/// `file-keystore` and `file-raw` definitions.
pub struct LocalDefinitions {
    name: Arc<str>,
    dir: PathBuf,
}

impl LocalDefinitions {
    pub fn new(dir: PathBuf) -> Self {
        LocalDefinitions {
            name: Arc::from(format!("--key-config-path {}", dir.display())),
            dir,
        }
    }
}

impl KeySource for LocalDefinitions {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn list(&self) -> BoxFuture<'_, Result<Found, SourceError>> {
        Box::pin(async move {
            let (name, dir) = (self.name.clone(), self.dir.clone());
            tokio::task::spawn_blocking(move || list_local(&name, &dir))
                .await
                .map_err(|e| SourceError(format!("--key-config-path: {e}")))?
        })
    }
}

fn list_local(name: &Arc<str>, dir: &Path) -> Result<Found, SourceError> {
    let mut found = Found::default();
    for (file, defs) in read_folder(dir)? {
        let unit = file.display().to_string();
        let defs = match defs {
            Ok(d) => d,
            // Reported here once (the store definitions' source keeps quiet about it).
            Err(reason) => {
                found.fail(unit.clone(), Some(unit), reason);
                continue;
            }
        };
        for (i, def) in defs.into_iter().enumerate() {
            let label = doc_label(&file, i);
            let types = def.signing_types;
            match def.key {
                KeyDefinition::Threshold(group) => {
                    let label = format!("{label} (threshold group {})", group.group_file.display());
                    match crate::keys::stores::threshold::ThresholdKey::open(&group) {
                        Ok(key) => found.keys.push(Pending {
                            declared: Some(key.public_key()),
                            origin: Origin::new(name, unit.clone(), label, OriginKind::Definition, types),
                            material: Material::Ready(std::sync::Arc::new(key)),
                        }),
                        Err(reason) => found.fail(label, Some(unit.clone()), reason),
                    }
                }
                KeyDefinition::Raw { private_key } => found.keys.push(Pending {
                    origin: Origin::new(name, unit.clone(), label, OriginKind::Definition, types),
                    declared: None,
                    material: Material::Raw(private_key),
                }),
                KeyDefinition::Keystore { keystore, password } => {
                    let label = format!("{label} ({})", keystore.display());
                    match read_keystore(&keystore) {
                        Ok(Some(ks)) => push_keystore(
                            &mut found,
                            Origin::new(name, unit.clone(), label, OriginKind::Definition, types),
                            ks,
                            Password::File(password),
                        ),
                        Ok(None) => found.fail(
                            label,
                            Some(unit.clone()),
                            format!("{} is not an EIP-2335 keystore", keystore.display()),
                        ),
                        Err(reason) => found.fail(label, Some(unit.clone()), reason),
                    }
                }
                _ => {}
            }
        }
    }
    Ok(found)
}

/// `aws-secret`, `hashicorp` and `azure-secret` definitions.
pub struct StoreDefinitions {
    name: Arc<str>,
    dir: PathBuf,
}

impl StoreDefinitions {
    pub fn new(dir: PathBuf) -> Self {
        StoreDefinitions {
            name: Arc::from(format!("--key-config-path {} (secret stores)", dir.display())),
            dir,
        }
    }
}

impl KeySource for StoreDefinitions {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn remote(&self) -> bool {
        true
    }

    fn list(&self) -> BoxFuture<'_, Result<Found, SourceError>> {
        Box::pin(async move {
            let dir = self.dir.clone();
            let files = tokio::task::spawn_blocking(move || read_folder(&dir))
                .await
                .map_err(|e| SourceError(format!("--key-config-path: {e}")))??;
            let mut wanted = Vec::new();
            let mut found = Found::default();
            for (file, defs) in files {
                let unit = file.display().to_string();
                match defs {
                    Ok(defs) => {
                        for (i, def) in defs.into_iter().enumerate().filter(|(_, d)| is_store(&d.key)) {
                            wanted.push((unit.clone(), doc_label(&file, i), def));
                        }
                    }
                    // A file that does not parse may have held store definitions: keep what
                    // it gave (the local source reports the error).
                    Err(_) => found.keep.push(unit),
                }
            }
            // A store found unreachable is not tried again for every other definition it holds
            // in this load (a reload would otherwise take minutes while it is down).
            let dead: std::sync::Mutex<std::collections::HashSet<String>> = Default::default();
            let dead = &dead;
            let fetched: Vec<_> = stream::iter(wanted)
                .map(|(unit, label, def)| async move {
                    let what = format!("{label} ({})", def.key.describe());
                    let store = endpoint(&def.key);
                    let value = if dead.lock().expect("dead stores").contains(&store) {
                        Err(StoreError::Unreachable(format!(
                            "{store}: unreachable earlier in this load"
                        )))
                    } else {
                        let v = with_retries(|| fetch(&def.key)).await;
                        if matches!(v, Err(StoreError::Unreachable(_))) {
                            dead.lock().expect("dead stores").insert(store);
                        }
                        v
                    };
                    (unit, what, def.signing_types, value)
                })
                .buffer_unordered(FETCH_CONCURRENCY)
                .collect()
                .await;
            for (unit, label, types, value) in fetched {
                match value {
                    Ok(secret) => found.keys.push(Pending {
                        origin: Origin::new(&self.name, unit, label, OriginKind::Definition, types),
                        declared: None,
                        material: Material::Secret(secret),
                    }),
                    Err(e) => found.fail(label, Some(unit), e.to_string()),
                }
            }
            Ok(found)
        })
    }
}

/// The store a definition reads from (host and port), to tell unreachable stores apart.
fn endpoint(def: &KeyDefinition) -> String {
    match def {
        KeyDefinition::Aws(a) => a
            .endpoint_override
            .clone()
            .unwrap_or_else(|| format!("secretsmanager.{}.amazonaws.com", a.region)),
        KeyDefinition::Vault(v) => format!("{}:{}", v.server_host, v.server_port),
        KeyDefinition::Azure(a) => a.vault_url.clone(),
        _ => String::new(),
    }
}

/// One store definition's secret value.
async fn fetch(def: &KeyDefinition) -> Result<Zeroizing<String>, StoreError> {
    match def {
        KeyDefinition::Aws(a) => {
            let credentials = match &a.auth {
                AwsAuth::Specified {
                    access_key_id,
                    secret_access_key,
                } => CredentialSource::Specified(Credentials {
                    access_key_id: access_key_id.clone(),
                    secret_access_key: secret_access_key.clone(),
                    session_token: None,
                }),
                AwsAuth::Environment => CredentialSource::Environment,
            };
            let http = store_http::client(&ClientOptions::default())?;
            SecretsManager::new(http, &a.region, a.endpoint_override.as_deref(), credentials)?
                .get_secret_value(&a.secret_name)
                .await
        }
        KeyDefinition::Vault(v) => {
            let timeout = Duration::from_millis(v.timeout_ms.max(1));
            let http = match &v.tls_known_servers {
                Some(file) => store_http::pinned_client(file, &v.server_host, v.server_port, timeout)?,
                None => store_http::client(&ClientOptions {
                    timeout: Some(timeout),
                    ca_file: v.tls_ca_file.clone(),
                })?,
            };
            let scheme = if v.tls_enabled { "https" } else { "http" };
            vault::VaultSecret {
                http,
                base: format!("{scheme}://{}:{}", v.server_host, v.server_port),
                key_path: v.key_path.clone(),
                key_name: v.key_name.clone(),
                token: v.token.clone(),
            }
            .fetch()
            .await
        }
        KeyDefinition::Azure(a) => {
            let http = store_http::client(&ClientOptions {
                timeout: Some(Duration::from_secs(a.timeout_secs.max(1))),
                ca_file: None,
            })?;
            azure::AzureSecret {
                http,
                vault_url: a.vault_url.clone(),
                secret_name: a.secret_name.clone(),
                authority: std::env::var("AZURE_AUTHORITY_HOST")
                    .ok()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "https://login.microsoftonline.com".into())
                    .trim_end_matches('/')
                    .to_string(),
                tenant_id: a.tenant_id.clone(),
                client_id: a.client_id.clone(),
                client_secret: a.client_secret.clone(),
            }
            .fetch()
            .await
        }
        KeyDefinition::Keystore { .. } | KeyDefinition::Raw { .. } | KeyDefinition::Threshold(_) => {
            Err(StoreError::Config("not a secret-store definition".into()))
        }
    }
}
