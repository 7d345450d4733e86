//! Step 5: the background duties: keys unlocked and secret stores read (and read again until
//! they give every key), reloads on SIGHUP and on a timer, this replica's record saved and
//! compared with the database, the database probed, history pruned.

use std::sync::Arc;
use std::time::Duration;

use super::app::App;
use super::configuration::Config;
use super::keys::Keys;
use crate::app::disabled::DisabledKeys;
use crate::app::health::{Health, PROBE_INTERVAL};
use crate::app::metrics::Metrics;
use crate::app::reload::Reloads;
use crate::app::shared_keystores::SharedKeystores;
use crate::commands::cli::ServeArgs;
use crate::keys::loader::{Cores, KeyLoader};
use crate::keys::{KeyRegistry, KeySource};
use crate::protection::Protection;

/// How often the database is compared with this replica's record.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// The pieces the duties share.
struct Replica {
    loader: Arc<KeyLoader>,
    /// The database's shared keystores, when this replica reads them (PostgreSQL).
    shared: Option<Arc<SharedKeystores>>,
    health: Arc<Health>,
    protection: Arc<Protection>,
    keys: Arc<KeyRegistry>,
    disabled: Arc<DisabledKeys>,
    metrics: Arc<Metrics>,
}

pub fn spawn(args: &ServeArgs, config: &Config, keys: Keys, app: &App, hup: Option<tokio::signal::unix::Signal>) {
    let replica = Arc::new(Replica {
        loader: keys.loader,
        shared: keys.shared,
        health: app.health.clone(),
        protection: app.protection.clone(),
        keys: keys.registry,
        disabled: app.disabled.clone(),
        metrics: app.metrics.clone(),
    });
    spawn_key_loading(keys.local, replica.clone());
    spawn_reload_triggers(app.reloads.clone(), args.keys_refresh_secs, hup);
    spawn_record_keeping(replica.clone());
    spawn_database_monitor(replica.clone());
    if args.prune_enabled && args.prune_epochs_to_keep > 0 {
        spawn_pruning(
            replica,
            args.prune_slots_per_epoch
                .unwrap_or_else(|| config.network.slots_per_epoch())
                .max(1),
            args.prune_epochs_to_keep,
            Duration::from_secs(
                args.prune_interval_hours
                    .map_or(args.prune_interval_secs, |h| h.saturating_mul(3600))
                    .max(1),
            ),
            args.prune_at_boot,
        );
    }
}

/// Registers the keys in the database and unlocks them in the background (the server answers
/// at once), while the secret stores are read. A signing for a key not registered yet
/// registers it itself.
fn spawn_key_loading(local: crate::keys::loader::Prepared, r: Arc<Replica>) {
    tokio::spawn(async move {
        if let Err(e) = r.protection.database().register(&r.keys.known_pubkeys()).await {
            tracing::warn!(error = %e, "registering keys in the slashing-protection database (retried on first use)");
        }
        let remote = r.loader.remote_sources();
        let stores = futures::future::join_all(remote.iter().map(|s| {
            let r = r.clone();
            async move {
                r.loader.load(std::slice::from_ref(s), Cores::All).await;
                r.keys.source_listed();
            }
        }));
        let (_, _) = tokio::join!(r.loader.unlock(local, Cores::All), stores);
        if let Err(e) = r.protection.database().register(&r.keys.ready_pubkeys()).await {
            tracing::warn!(error = %e, "registering keys in the slashing-protection database (retried on first use)");
        }
        let counts = r.keys.counts();
        r.metrics.set_keys(counts);
        tracing::info!(loaded = counts.loaded, failed = counts.failed, "keys loaded");
        retry_missing_stores(&r, remote).await;
    });
}

/// A secret store that could not be read at startup is read again, with growing pauses (10 s
/// to 5 min), until it has given every key it holds: the replica becomes ready by itself when
/// the store is back.
async fn retry_missing_stores(r: &Arc<Replica>, remote: Vec<Arc<dyn KeySource>>) {
    let mut pause = Duration::from_secs(10);
    loop {
        let missing: Vec<Arc<dyn KeySource>> = remote
            .iter()
            .filter(|s| r.keys.has_failures(s.name()))
            .cloned()
            .collect();
        if missing.is_empty() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(300));
        for s in missing {
            tracing::info!(source = %s.name(), "reading a secret store again: it could not give every key");
            let report = r.loader.load(std::slice::from_ref(&s), Cores::Half).await;
            let added: Vec<_> = report.added.iter().map(|c| c.pubkey).collect();
            if !added.is_empty()
                && let Err(e) = r.protection.database().register(&added).await
            {
                tracing::warn!(error = %e, "registering keys in the slashing-protection database (retried on first use)");
            }
        }
    }
}

/// SIGHUP and `--keys-refresh-secs` reload every key source (as `POST /reload` does). The
/// SIGHUP handler is installed first thing at startup (`hup`): a SIGHUP before it would end the
/// process.
fn spawn_reload_triggers(reloads: Arc<Reloads>, refresh_secs: Option<u64>, hup: Option<tokio::signal::unix::Signal>) {
    let on_hup = reloads.clone();
    tokio::spawn(async move {
        let Some(mut hup) = hup else {
            tracing::warn!("cannot listen for SIGHUP: reload keys with POST /reload");
            return;
        };
        while hup.recv().await.is_some() {
            if let Err(e) = on_hup.start("SIGHUP") {
                tracing::warn!("SIGHUP: {e}");
            }
        }
    });
    if let Some(secs) = refresh_secs.filter(|s| *s > 0) {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(secs));
            every.tick().await;
            loop {
                every.tick().await;
                if let Err(e) = reloads.start("refresh") {
                    tracing::debug!("--keys-refresh-secs: {e}");
                }
            }
        });
    }
}

/// Saves the replica's record every second when it changed, writes it back into the database
/// when the database is found behind it, and compares the two every `SWEEP_INTERVAL`.
fn spawn_record_keeping(r: Arc<Replica>) {
    let s = r.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            // Saved with the database it goes with only once checked against it.
            if let Some(i) = s.protection.database().incarnation()
                && i.held().is_none()
            {
                s.protection.record().set_database(i.identity());
            }
            // File writes and fsync off the async workers: signings never wait on them.
            let saver = s.clone();
            match tokio::task::spawn_blocking(move || saver.protection.record().flush(saver.protection.chain())).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "saving this replica's record"),
                Err(e) => tracing::error!(error = %e, "saving this replica's record"),
            }
        }
    });
    let protection = r.protection.clone();
    tokio::spawn(async move {
        loop {
            protection.write_back_wanted().await;
            if let Err(e) = protection.write_back().await {
                tracing::error!(error = %e, "writing this replica's record back into the database (retried)");
                tokio::time::sleep(Duration::from_secs(1)).await;
                protection.want_write_back();
            }
        }
    });
    tokio::spawn(async move {
        loop {
            // Every SWEEP_INTERVAL, and at once when the database turns out to be another one:
            // then again and again until it succeeds (a restore may still be filling it).
            let changed = match r.protection.database().incarnation() {
                Some(i) => tokio::time::timeout(SWEEP_INTERVAL, i.changed.notified()).await.is_ok(),
                None => {
                    tokio::time::sleep(SWEEP_INTERVAL).await;
                    false
                }
            };
            loop {
                match r.protection.sweep().await {
                    Ok(_) => {
                        if let Some(i) = r.protection.database().incarnation() {
                            i.checked();
                        }
                        break;
                    }
                    Err(e) if changed => {
                        tracing::warn!(error = %e, "comparing the changed database with this replica's record (retrying)");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "comparing the database with this replica's record");
                        break;
                    }
                }
            }
        }
    });
}

/// Probes the database every `PROBE_INTERVAL` and logs readiness changes (once each, not per
/// balancer probe).
fn spawn_database_monitor(r: Arc<Replica>) {
    tokio::spawn(async move {
        let mut was_up = true;
        let mut was_ready: Option<bool> = None;
        loop {
            let up = r.health.probe().await;
            if !up && was_up {
                tracing::error!(
                    error = %r.health.verdict().error().unwrap_or_default(),
                    "slashing-protection database check failed: refusing blocks and attestations at once until it passes"
                );
            }
            if up && !was_up {
                tracing::info!("slashing-protection database check passes again: signing resumes");
                // It may have come back from a backup: compare it with this replica's record now.
                if let Err(e) = r.protection.sweep().await {
                    tracing::warn!(error = %e, "comparing the database with this replica's record");
                }
            }
            if up && let Err(e) = r.disabled.refresh(r.protection.database()).await {
                tracing::warn!(error = %e, "reading disabled keys from the slashing-protection database");
            }
            if up && let Some(shared) = &r.shared {
                shared.follow(&r.loader).await;
            }
            was_up = up;
            let readiness = r.health.readiness();
            if was_ready != Some(readiness.ready()) {
                if readiness.ready() {
                    tracing::info!(
                        keys = r.keys.counts().loaded,
                        replicas = r.health.verdict().replicas(),
                        "ready: blocks and attestations can be signed"
                    );
                } else {
                    tracing::warn!(reasons = %readiness.reasons.join("; "), "not ready");
                }
                was_ready = Some(readiness.ready());
            }
            if let Some((open, idle)) = r.protection.database().pool_state() {
                r.metrics
                    .database_pool_connections
                    .get_or_create(&crate::app::metrics::StateLabels { state: "open" })
                    .set(open as i64);
                r.metrics
                    .database_pool_connections
                    .get_or_create(&crate::app::metrics::StateLabels { state: "idle" })
                    .set(idle as i64);
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    });
}

fn spawn_pruning(r: Arc<Replica>, slots_per_epoch: u64, keep_epochs: u64, every: Duration, at_boot: bool) {
    tokio::spawn(async move {
        let mut first = true;
        loop {
            if !(first && at_boot) {
                tokio::time::sleep(every).await;
            }
            first = false;
            match r.protection.database().prune(keep_epochs, slots_per_epoch).await {
                Ok(r) if r.blocks + r.attestations > 0 => tracing::info!(
                    blocks = r.blocks,
                    attestations = r.attestations,
                    keep_epochs,
                    "pruned slashing-protection history"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning slashing-protection history failed; will retry"),
            }
        }
    });
}
