//! Step 2: slashing protection, before any key: the database opened and its durability
//! checked, the chain pinned, this replica's own record read and compared with the database.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use super::REPLICA_STATE_FILE;
use super::configuration::Config;
use crate::app::metrics::Metrics;
use crate::commands::cli::ServeArgs;
use crate::protection::replica::ReplicaRecord;
use crate::protection::{DbOptions, Protection, ProtectionMetrics, SlashingDatabase, default_pool_size, redact_url};
use crate::types::Root;

pub async fn open(args: &ServeArgs, config: &Config, metrics: &Metrics) -> anyhow::Result<Arc<Protection>> {
    let db = database(args, metrics).await?;
    let chain = pin_chain(&db, config).await?;
    let record = ReplicaRecord::open(&args.data_path.join(REPLICA_STATE_FILE), chain)?;
    if let (Some(i), Some(saved)) = (db.incarnation(), record.database()) {
        i.compare_saved(&saved);
    }
    let protection = Arc::new(Protection::new(
        Arc::new(db),
        chain,
        record,
        Duration::from_millis(args.database_timeout_ms),
        ProtectionMetrics {
            seconds: metrics.protection_seconds.clone(),
            rollbacks: metrics.database_rollbacks.clone(),
        },
    ));
    // Before anything can be signed: whether the database still holds what this replica
    // committed itself.
    if !protection.record().is_empty() {
        match protection.sweep().await {
            Ok(0) => tracing::info!(
                validators = protection.record().len(),
                "the slashing-protection database holds everything this replica remembers committing"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "comparing the database with this replica's record (retried)"),
        }
    }
    Ok(protection)
}

/// Opens the database and refuses one that could lose a committed record in a crash.
async fn database(args: &ServeArgs, metrics: &Metrics) -> anyhow::Result<SlashingDatabase> {
    let options = DbOptions {
        pool_size: args.database_pool_size.unwrap_or_else(default_pool_size),
        timeout: Duration::from_millis(args.database_timeout_ms),
        connect_timeout: Duration::from_secs(args.database_connect_timeout_secs),
        change_hold: Duration::from_secs(args.database_change_hold_secs),
        stats: metrics.commits.clone(),
        password: crate::commands::database::password(
            &args.database_url,
            args.database_password_file.as_deref(),
            args.database_password.as_ref(),
        )?,
        username: args.database_username.clone(),
    };
    let db = SlashingDatabase::open(&args.database_url, &options)
        .await
        .with_context(|| {
            format!(
                "opening slashing-protection database {}",
                redact_url(&args.database_url)
            )
        })?;
    let durability = db.durability().await?;
    for note in &durability.notes {
        tracing::warn!("slashing-protection database: {note}");
    }
    if !durability.unsafe_settings.is_empty() {
        let why = durability.unsafe_settings.join("; ");
        if args.allow_unsafe_database_durability {
            tracing::error!("UNSAFE: {why}. Starting anyway (--allow-unsafe-database-durability)");
        } else {
            bail!(
                "refusing to start: {why}. A record lost in a crash lets a validator sign the same \
                 duty twice. Fix the database settings, or pass --allow-unsafe-database-durability \
                 (never in production)"
            );
        }
    }
    Ok(db)
}

/// The configured chain, pinned in the database (refused if it is pinned to another), or the
/// one the database is pinned to.
async fn pin_chain(db: &SlashingDatabase, config: &Config) -> anyhow::Result<Option<Root>> {
    Ok(match config.chain {
        Some(root) => {
            let pinned = db.pin_chain(root).await?;
            if pinned != root {
                bail!(
                    "the slashing-protection database is pinned to genesis validators root {pinned}, \
                     but Palisade is configured for {root} (network {}): refusing to start",
                    config.network.name
                );
            }
            Some(root)
        }
        None => db.pinned_chain().await?,
    })
}
