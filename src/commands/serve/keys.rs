//! Step 3: the keys: every configured source (and, on PostgreSQL, the fleet's shared
//! keystores) behind one loader; the local sources listed before the server listens, so that
//! their keys are announced at once. Secret stores are read in the background (`duties`).

use std::sync::Arc;

use super::configuration::Config;
use crate::app::shared_keystores::SharedKeystores;
use crate::commands::cli::ServeArgs;
use crate::keys::KeyRegistry;
use crate::keys::loader::{KeyLoader, Prepared};
use crate::protection::Protection;

pub struct Keys {
    pub registry: Arc<KeyRegistry>,
    pub loader: Arc<KeyLoader>,
    /// The database's shared keystores, when this replica reads them (PostgreSQL).
    pub shared: Option<Arc<SharedKeystores>>,
    /// The local sources' keys, listed, to unlock in the background.
    pub local: Prepared,
}

pub async fn list(args: &ServeArgs, config: &Config, protection: &Arc<Protection>) -> anyhow::Result<Keys> {
    let registry = Arc::new(KeyRegistry::new());
    let mut sources = config.key_sources.sources.clone();
    let db = protection.database();
    let shared = if db.shares_keystores() {
        let s = Arc::new(SharedKeystores::new(db.clone(), config.fleet_secret.clone()));
        sources.push(s.clone());
        Some(s)
    } else {
        if config.fleet_secret.is_some() {
            tracing::warn!(
                "--shared-keystore-secret-file is ignored with SQLite: Key Manager imports stay in this host's folder"
            );
        }
        None
    };
    let loader = Arc::new(KeyLoader::new(registry.clone(), sources));
    // Until the secret stores are read, a request for a key not known yet waits for them.
    let local = loader.list_and_prepare(&loader.local_sources()).await;
    registry.sources_pending(loader.remote_sources().len());
    let declared = registry.counts();
    if args.ready_min_keys.is_none()
        && loader.remote_sources().is_empty()
        && declared.loaded + declared.loading + declared.failed == 0
    {
        tracing::warn!("{}", crate::app::health::NO_KEYS);
    }
    Ok(Keys {
        registry,
        loader,
        shared,
        local,
    })
}
