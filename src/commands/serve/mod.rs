//! `palisade serve`, built in named steps, each handing the next what it made, so that data
//! flows one way: configuration -> slashing protection -> keys -> app -> the port bound ->
//! background duties -> HTTP.

mod app;
mod aws;
mod configuration;
mod duties;
mod keys;
mod listen;
mod protection;

use std::sync::Arc;

use crate::app::metrics::Metrics;
use crate::commands::cli::ServeArgs;

/// This replica's record of what it committed, under `--data-path`.
pub const REPLICA_STATE_FILE: &str = "replica-state.bin";

/// Where Key Manager imports are kept, under `--data-path`.
pub const KEYMANAGER_DIR: &str = "keymanager-keystores";

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Before anything slow: SIGHUP (logrotate, `systemctl reload`) reloads keys, never ends us.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let config = configuration::load(&args)?;
    let metrics = Arc::new(Metrics::new());
    let protection = protection::open(&args, &config, &metrics).await?;
    let keys = keys::list(&args, &config, &protection).await?;
    let app = app::build(&args, &config, &keys, &protection, &metrics).await?;
    let bound = listen::bind(&args).await?;
    duties::spawn(&args, &config, keys, &app, hup);
    listen::serve(&args, &config, &app, bound).await?;
    if let Err(e) = protection.record().flush(protection.chain()) {
        tracing::error!(error = %e, "saving this replica's record");
    }
    Ok(())
}
