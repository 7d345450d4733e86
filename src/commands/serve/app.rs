//! Step 4: the app: the signer, health, the Key Manager, the slashing-protection admin calls,
//! reloads and Commit-Boost, made from the pieces of the steps before; and the state the HTTP
//! handlers get, which reaches only these.

use std::sync::Arc;
use std::time::Duration;

use super::KEYMANAGER_DIR;
use super::configuration::Config;
use super::keys::Keys;
use crate::app::commit_boost::CommitBoost;
use crate::app::disabled::DisabledKeys;
use crate::app::health::Health;
use crate::app::keymanager::{ImportStore, KeyManager};
use crate::app::metrics::Metrics;
use crate::app::reload::Reloads;
use crate::app::signer::{Signer, SignerParts};
use crate::app::slashing::SlashingAdmin;
use crate::commands::cli::ServeArgs;
use crate::http::AppState;
use crate::keys::KeySource;
use crate::protection::Protection;

pub struct App {
    pub state: AppState,
    pub health: Arc<Health>,
    pub disabled: Arc<DisabledKeys>,
    pub reloads: Arc<Reloads>,
    pub protection: Arc<Protection>,
    pub metrics: Arc<Metrics>,
}

pub async fn build(
    args: &ServeArgs,
    config: &Config,
    keys: &Keys,
    protection: &Arc<Protection>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<App> {
    let disabled = Arc::new(DisabledKeys::default());
    if let Err(e) = disabled.refresh(protection.database()).await {
        tracing::warn!(error = %e, "reading disabled keys from the slashing-protection database (retried)");
    }
    let health = Arc::new(Health::new(
        protection.clone(),
        keys.registry.clone(),
        metrics.clone(),
        replica_id(&args.data_path, args.http_port)?,
        args.ready_min_keys,
        Duration::from_millis(args.database_timeout_ms),
    ));
    let signer = Arc::new(Signer::new(SignerParts {
        network: config.network.clone(),
        keys: keys.registry.clone(),
        protection: protection.clone(),
        metrics: metrics.clone(),
        disabled: disabled.clone(),
        key_patience: Duration::from_millis(args.key_wait_ms),
        clock: config.clock,
        signing_types: config.signing_types,
    }));
    let keymanager = Arc::new(KeyManager::new(
        keys.registry.clone(),
        protection.clone(),
        disabled.clone(),
        import_store(args, config, keys, &health),
        keys.loader.changes.clone(),
    ));
    let reloads = Reloads::new(keys.loader.clone());
    let commit_boost = commit_boost(args, protection, &signer, metrics, health.replica_id())
        .await?
        .map(Arc::new);
    let slashing = SlashingAdmin::new(
        protection.clone(),
        config.clock.map(|c| (c, config.network.slots_per_epoch())),
    );
    let state = AppState {
        signer,
        keymanager,
        reloads: reloads.clone(),
        health: health.clone(),
        slashing: Arc::new(slashing),
        token: config.token.clone(),
        signing_token: config.signing_token.clone(),
        commit_boost,
    };
    Ok(App {
        state,
        health,
        disabled,
        reloads,
        protection: protection.clone(),
        metrics: metrics.clone(),
    })
}

/// Where Key Manager imports go: the database, shared with the fleet (PostgreSQL), or this
/// host's folder.
fn import_store(args: &ServeArgs, config: &Config, keys: &Keys, health: &Health) -> ImportStore {
    match (&keys.shared, &config.key_sources.keymanager_source) {
        (Some(s), _) => ImportStore::Shared {
            secret: config.fleet_secret.clone(),
            source: s.name().clone(),
            replica: health.replica_id().to_string(),
        },
        (None, Some(source)) => ImportStore::Folder {
            dir: args.data_path.join(KEYMANAGER_DIR),
            source: source.clone(),
        },
        (None, None) => unreachable!("configure always adds the Key Manager folder"),
    }
}

/// This replica's name in the database's heartbeats: kept in `--data-path` so that a restart
/// is the same replica.
fn replica_id(data_path: &std::path::Path, port: u16) -> anyhow::Result<String> {
    use anyhow::{Context, anyhow};
    let file = data_path.join("replica-id");
    if let Ok(id) = std::fs::read_to_string(&file) {
        return Ok(id.trim().to_string());
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "host".into());
    let mut random = [0u8; 4];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut random);
    let id = format!("{}:{port}:{}", host.trim(), hex::encode(random));
    crate::fsutil::private_dir(data_path).with_context(|| format!("cannot create {}", data_path.display()))?;
    match crate::fsutil::write_private(&file, id.as_bytes(), crate::fsutil::Existing::Keep) {
        Ok(()) => Ok(id),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(&file)?.trim().to_string())
        }
        Err(e) => Err(anyhow!("cannot write {}: {e}", file.display())),
    }
}

/// The Commit-Boost service, when enabled: its modules, its proxy keys loaded.
async fn commit_boost(
    args: &ServeArgs,
    protection: &Protection,
    signer: &Arc<Signer>,
    metrics: &Arc<Metrics>,
    replica: &str,
) -> anyhow::Result<Option<CommitBoost>> {
    use crate::app::commit_boost::{Modules, store::ProxyStore};
    if !args.commit_boost_api_enabled {
        return Ok(None);
    }
    let (Some(modules), Some(password)) = (&args.commit_boost_modules_file, &args.proxy_keystores_password_file) else {
        anyhow::bail!(
            "--commit-boost-api-enabled needs --commit-boost-modules-file and --proxy-keystores-password-file"
        );
    };
    let modules = Modules::load(modules).map_err(anyhow::Error::msg)?;
    let dir = args
        .proxy_keystores_path
        .clone()
        .unwrap_or_else(|| args.data_path.join("proxy-keystores"));
    let store = ProxyStore::open(&dir, password, protection.database().clone(), replica.to_string())
        .map_err(anyhow::Error::msg)?;
    let cb = CommitBoost::start(modules, store, signer.clone(), metrics.clone())
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(Some(cb))
}
