//! `palisade serve`: wires network, keys, slashing protection and HTTP together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::net::TcpListener;

use crate::app::disabled::DisabledKeys;
use crate::app::health::{Health, PROBE_INTERVAL};
use crate::app::keymanager::{ImportStore, KeyManager};
use crate::app::metrics::Metrics;
use crate::app::reload::Reloads;
use crate::app::shared_keystores::SharedKeystores;
use crate::app::signer::{Signer, SignerParts};
use crate::commands::cli::ServeArgs;
use crate::http::client::TrustedProxies;
use crate::http::server::ServerOptions;
use crate::http::{self, AppState, auth::ApiToken};
use crate::keys::fleet::FleetSecret;
use crate::keys::loader::{Cores, KeyLoader};
use crate::keys::sources::aws_bulk::AwsBulk;
use crate::keys::sources::{KeyOptions, configure};
use crate::keys::stores::aws::{CredentialSource, Credentials};
use crate::keys::{KeyRegistry, KeySource};
use crate::network::Network;
use crate::network::clock::ClockWindow;
use crate::protection::replica::ReplicaMemory;
use crate::protection::{ChainPin, DbOptions, SlashingDatabase, default_pool_size, redact_url};

/// This replica's record of what it committed, under `--data-path`.
pub const REPLICA_STATE_FILE: &str = "replica-state.bin";

/// How often the database is compared with this replica's record.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Where Key Manager imports are kept, under `--data-path`.
pub const KEYMANAGER_DIR: &str = "keymanager-keystores";

/// The pieces the signer, the handles and the background duties below share.
struct Replica {
    signer: Arc<Signer>,
    loader: Arc<KeyLoader>,
    /// The database's shared keystores, when this replica reads them (PostgreSQL).
    shared: Option<Arc<SharedKeystores>>,
    health: Arc<Health>,
    db: Arc<SlashingDatabase>,
    keys: Arc<KeyRegistry>,
    chain: Arc<ChainPin>,
    disabled: Arc<DisabledKeys>,
    metrics: Arc<Metrics>,
}

/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Before anything slow: SIGHUP (logrotate, `systemctl reload`) reloads keys, never ends us.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut network = Network::load(&args.network)?;
    if let Some(t) = args.genesis_time {
        network.genesis_time = Some(t);
    }
    let clock = args
        .future_tolerance_secs
        .0
        .and_then(|secs| ClockWindow::new(&network, Duration::from_secs(secs)));
    match (&clock, args.future_tolerance_secs.0) {
        (Some(c), _) => tracing::info!(
            tolerance_secs = c.tolerance().as_secs(),
            "clock window on: messages further ahead of this host's clock are refused"
        ),
        (None, None) => tracing::warn!("clock window off (--future-tolerance-secs off)"),
        (None, Some(_)) => tracing::warn!(
            network = %network.name,
            "clock window off: the network's genesis time is unknown (set --genesis-time to turn it on)"
        ),
    }
    let configured_chain = args.genesis_validators_root.or(network.genesis_validators_root);

    let key_options = KeyOptions {
        keystores_path: args.keystores_path.clone(),
        keystores_passwords_path: args.keystores_passwords_path.clone(),
        keystores_password_file: args.keystores_password_file.clone(),
        key_config_path: args.key_config_path.clone(),
        keymanager_path: Some(args.data_path.join(KEYMANAGER_DIR)),
        aws_bulk: aws_bulk(&args)?,
    };
    crate::keys::keystore::KDF_MEMORY.set_budget(args.kdf_memory_mb.saturating_mul(1 << 20));
    let configured = configure(&key_options)?;
    let fleet_secret = match &args.shared_keystore_secret_file {
        Some(file) => Some(Arc::new(FleetSecret::load(file)?)),
        None => None,
    };
    let (token, created) = ApiToken::load_or_create(&args.api_token_file)?;
    if created {
        tracing::info!(file = %args.api_token_file.display(), "created an API token for the admin and Key Manager endpoints");
    }
    for warning in token.weaknesses(&args.api_token_file) {
        tracing::warn!("{warning}");
    }
    let signing_token = match &args.signing_token_file {
        None => None,
        Some(file) => {
            let t = ApiToken::load_as(file, "--signing-token-file")?;
            for warning in t.weaknesses(file) {
                tracing::warn!("{warning}");
            }
            tracing::info!(file = %file.display(), "the signing routes require a bearer token");
            Some(Arc::new(t))
        }
    };
    let signing_types =
        crate::signing::policy::TypeSet::from_lists(&args.allow_signing_types, &args.deny_signing_types)
            .map_err(|e| anyhow!("--allow-signing-types / --deny-signing-types: {e}"))?;
    if signing_types != crate::signing::policy::TypeSet::ALL {
        tracing::info!(allowed = ?signing_types, "signing policy: only these types are signed");
    }

    let metrics = Arc::new(Metrics::new());
    let db_options = DbOptions {
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
    let db = SlashingDatabase::open(&args.database_url, &db_options)
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

    let chain = match configured_chain {
        Some(root) => {
            let pinned = db.pin_chain(root).await?;
            if pinned != root {
                bail!(
                    "the slashing-protection database is pinned to genesis validators root {pinned}, \
                     but Palisade is configured for {root} (network {}): refusing to start",
                    network.name
                );
            }
            Some(root)
        }
        None => db.pinned_chain().await?,
    };

    // Before anything can be signed: what this replica committed itself, and whether the
    // database still holds it.
    let memory = ReplicaMemory::open(&args.data_path.join(REPLICA_STATE_FILE), chain)?;
    let registry = Arc::new(KeyRegistry::new());
    let db = Arc::new(db);
    let mut sources = configured.sources;
    let shared: Option<Arc<SharedKeystores>> = if db.shares_keystores() {
        let s = Arc::new(SharedKeystores::new(db.clone(), fleet_secret.clone()));
        sources.push(s.clone());
        Some(s)
    } else {
        if fleet_secret.is_some() {
            tracing::warn!(
                "--shared-keystore-secret-file is ignored with SQLite: Key Manager imports stay in this host's folder"
            );
        }
        None
    };
    let loader = Arc::new(KeyLoader::new(registry.clone(), sources));
    // The local sources are listed (and their declared keys announced) before the server
    // listens; secret stores are read in the background, and until they are, a request for
    // a key not known yet waits for them.
    let local = loader.list_and_prepare(&loader.local_sources()).await;
    registry.sources_pending(loader.remote_sources().len());
    let declared = registry.counts();
    if args.ready_min_keys.is_none()
        && loader.remote_sources().is_empty()
        && declared.loaded + declared.loading + declared.failed == 0
    {
        tracing::warn!("{}", crate::app::health::NO_KEYS);
    }

    let chain = Arc::new(ChainPin::new(chain));
    let disabled = Arc::new(DisabledKeys::default());
    let health = Arc::new(Health::new(
        db.clone(),
        registry.clone(),
        chain.clone(),
        metrics.clone(),
        replica_id(&args.data_path, args.http_port)?,
        args.ready_min_keys,
        Duration::from_millis(args.database_timeout_ms),
    ));
    let signer = Arc::new(Signer::new(SignerParts {
        network: network.clone(),
        keys: registry.clone(),
        db: db.clone(),
        chain: chain.clone(),
        metrics: metrics.clone(),
        db_health: health.verdict().clone(),
        disabled: disabled.clone(),
        key_patience: Duration::from_millis(args.key_wait_ms),
        clock,
        memory,
        signing_types,
    }));
    let replica = Replica {
        signer: signer.clone(),
        loader: loader.clone(),
        shared: shared.clone(),
        health: health.clone(),
        db: db.clone(),
        keys: registry.clone(),
        chain: chain.clone(),
        disabled: disabled.clone(),
        metrics: metrics.clone(),
    };
    if let (Some(i), Some(saved)) = (db.incarnation(), signer.record().database()) {
        i.compare_saved(&saved);
    }
    if !signer.record().is_empty() {
        match signer.sweep().await {
            Ok(0) => tracing::info!(
                validators = signer.record().len(),
                "the slashing-protection database holds everything this replica remembers committing"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "comparing the database with this replica's record (retried)"),
        }
    }
    if let Err(e) = disabled.refresh(&db).await {
        tracing::warn!(error = %e, "reading disabled keys from the slashing-protection database (retried)");
    }
    let import_store = match (&shared, &configured.keymanager_source) {
        (Some(s), _) => ImportStore::Shared {
            secret: fleet_secret.clone(),
            source: s.name().clone(),
            replica: health.replica_id().to_string(),
        },
        (None, Some(source)) => ImportStore::Folder {
            dir: args.data_path.join(KEYMANAGER_DIR),
            source: source.clone(),
        },
        (None, None) => unreachable!("configure always adds the Key Manager folder"),
    };
    let keymanager = Arc::new(KeyManager::new(
        registry.clone(),
        db.clone(),
        chain.clone(),
        disabled.clone(),
        import_store,
        loader.changes.clone(),
    ));
    let reloads = Reloads::new(loader.clone());
    let commit_boost = commit_boost(&args, &db, &signer, &metrics, health.replica_id())
        .await?
        .map(Arc::new);
    let state = AppState {
        signer: signer.clone(),
        keymanager,
        reloads: reloads.clone(),
        health: health.clone(),
        db: db.clone(),
        chain: chain.clone(),
        token: Arc::new(token),
        signing_token,
        commit_boost,
    };

    let tls = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => Some(
            crate::http::tls::server_config(&crate::http::tls::TlsOptions {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: args.tls_client_ca_file.clone(),
            })
            .map_err(|e| anyhow!(e))?,
        ),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };

    let listener = TcpListener::bind((args.http_host.as_str(), args.http_port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.http_host, args.http_port))?;
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(
        network = %network.name,
        chain = %chain.get().map_or("pinned on first request".to_string(), |r| r.to_string()),
        database = %db.backend_name(),
        replica = %health.replica_id(),
        keys = registry.known_pubkeys().len(),
        "Palisade {} started",
        env!("CARGO_PKG_VERSION")
    );
    tracing::info!(
        client_certificates = args.tls_client_ca_file.is_some(),
        "listening on {scheme}://{addr}"
    );
    if tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            "listening on {addr} without TLS: requests, signatures and Key Manager passwords cross the network \
             in clear text; set --tls-cert-file and --tls-key-file, or listen on loopback behind a TLS proxy"
        );
    }
    let guard = Arc::new(crate::http::guard::HttpGuard::new(
        &args.http_host_allowlist,
        &args.http_host,
        &args.http_cors_origins,
    ));
    match guard.hosts() {
        Some(hosts) => {
            tracing::info!(hosts = %hosts.join(","), "answering requests for these host names only (--http-host-allowlist)")
        }
        None => tracing::info!("answering requests for any host name (--http-host-allowlist *)"),
    }

    let replica = Arc::new(replica);
    spawn_key_loading(local, replica.clone());
    spawn_reload_triggers(reloads, args.keys_refresh_secs, hup);
    spawn_replica_memory(replica.clone());
    spawn_database_monitor(replica.clone());
    if args.prune_enabled && args.prune_epochs_to_keep > 0 {
        spawn_pruning(
            replica.clone(),
            args.prune_slots_per_epoch
                .unwrap_or_else(|| network.slots_per_epoch())
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

    let trusted_proxies = TrustedProxies::parse(&args.trusted_proxies)
        .map_err(|e| anyhow!(e))?
        .with_header(args.trusted_proxy_header);
    let max_connections = args
        .http_max_connections
        .unwrap_or_else(crate::http::server::default_max_connections);
    if let (true, Some(port)) = (args.metrics, args.metrics_port) {
        let listener = TcpListener::bind((args.metrics_host.as_str(), port))
            .await
            .with_context(|| format!("--metrics-port: cannot listen on {}:{port}", args.metrics_host))?;
        let guard = Arc::new(crate::http::guard::HttpGuard::new(
            &args.metrics_host_allowlist,
            &args.metrics_host,
            &[],
        ));
        tracing::info!("metrics listening on http://{}/metrics", listener.local_addr()?);
        tokio::spawn(crate::http::server::serve(
            listener,
            http::metrics_router(state.clone(), guard),
            ServerOptions {
                tls: None,
                trusted_proxies: TrustedProxies::default(),
                limits: crate::http::server::ConnectionLimits::default(),
                metrics: None,
            },
            std::future::pending::<()>(),
            SHUTDOWN_GRACE,
        ));
    }
    crate::http::server::serve(
        listener,
        http::router(
            state,
            http::HttpOptions {
                // With its own listener, not on the signing port.
                metrics: args.metrics && args.metrics_port.is_none(),
                guard,
                body_timeout: Duration::from_secs(args.http_body_timeout_secs.max(1)),
                body_budget: crate::http::body::BodyBudget::new(
                    (args.http_body_budget_mb.max(2) as usize) << 20,
                    metrics.bodies_refused.clone(),
                ),
            },
        ),
        ServerOptions {
            tls,
            trusted_proxies,
            limits: crate::http::server::ConnectionLimits {
                header_timeout: Duration::from_secs(args.http_header_timeout_secs.max(1)),
                idle_timeout: Duration::from_secs(args.http_idle_timeout_secs.max(1)),
                max_connections,
                max_connections_per_client: args
                    .http_max_connections_per_client
                    .unwrap_or_else(|| crate::http::server::default_per_client(max_connections)),
                http2_max_streams: args.http2_max_streams.max(1),
            },
            metrics: Some(metrics.clone()),
        },
        shutdown_signal(),
        SHUTDOWN_GRACE,
    )
    .await;
    if let Err(e) = signer.record().flush(chain.get()) {
        tracing::error!(error = %e, "saving this replica's record");
    }
    Ok(())
}

/// Registers the keys in the database and unlocks them in the background (the server answers
/// at once), while the secret stores are read. A signing for a key not registered yet
/// registers it itself.
fn spawn_key_loading(local: crate::keys::loader::Prepared, r: Arc<Replica>) {
    tokio::spawn(async move {
        if let Err(e) = r.db.register(&r.keys.known_pubkeys()).await {
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
        if let Err(e) = r.db.register(&r.keys.ready_pubkeys()).await {
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
                && let Err(e) = r.db.register(&added).await
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
fn spawn_replica_memory(r: Arc<Replica>) {
    let s = r.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            // Saved with the database it goes with only once checked against it.
            if let Some(i) = s.db.incarnation()
                && i.held().is_none()
            {
                s.signer.record().set_database(i.identity());
            }
            // File writes and fsync off the async workers: signings never wait on them.
            let saver = s.clone();
            match tokio::task::spawn_blocking(move || saver.signer.record().flush(saver.chain.get())).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "saving this replica's record"),
                Err(e) => tracing::error!(error = %e, "saving this replica's record"),
            }
        }
    });
    let signer = r.signer.clone();
    tokio::spawn(async move {
        loop {
            signer.write_back_wanted().await;
            if let Err(e) = signer.write_back().await {
                tracing::error!(error = %e, "writing this replica's record back into the database (retried)");
                tokio::time::sleep(Duration::from_secs(1)).await;
                signer.want_write_back();
            }
        }
    });
    tokio::spawn(async move {
        loop {
            // Every SWEEP_INTERVAL, and at once when the database turns out to be another one:
            // then again and again until it succeeds (a restore may still be filling it).
            let changed = match r.db.incarnation() {
                Some(i) => tokio::time::timeout(SWEEP_INTERVAL, i.changed.notified()).await.is_ok(),
                None => {
                    tokio::time::sleep(SWEEP_INTERVAL).await;
                    false
                }
            };
            loop {
                match r.signer.sweep().await {
                    Ok(_) => {
                        if let Some(i) = r.db.incarnation() {
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
                if let Err(e) = r.signer.sweep().await {
                    tracing::warn!(error = %e, "comparing the database with this replica's record");
                }
            }
            if up && let Err(e) = r.disabled.refresh(&r.db).await {
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
            if let Some((open, idle)) = r.db.pool_state() {
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
            match r.db.prune(keep_epochs, slots_per_epoch).await {
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

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// `--aws-secrets-*`: the bulk loading's settings, or `None` when it is off.
fn aws_bulk(args: &ServeArgs) -> anyhow::Result<Option<AwsBulk>> {
    if !args.aws_secrets_enabled {
        return Ok(None);
    }
    let credentials = if args.aws_secrets_auth_mode.eq_ignore_ascii_case("ENVIRONMENT") {
        CredentialSource::Environment
    } else {
        match (&args.aws_secrets_access_key_id, &args.aws_secrets_secret_access_key) {
            (Some(id), Some(key)) => CredentialSource::Specified(Credentials {
                access_key_id: id.clone(),
                secret_access_key: key.0.clone(),
                session_token: None,
            }),
            _ => bail!(
                "--aws-secrets-auth-mode=SPECIFIED needs --aws-secrets-access-key-id and \
                 --aws-secrets-secret-access-key (or use ENVIRONMENT for the AWS default credential chain)"
            ),
        }
    };
    let region = match &args.aws_secrets_region {
        Some(r) => r.clone(),
        None => crate::keys::stores::aws::credentials::default_region()
            .ok_or_else(|| anyhow!("--aws-secrets-enabled needs --aws-secrets-region (or AWS_REGION)"))?,
    };
    let mut tag_keys = Vec::new();
    let mut tag_values = Vec::new();
    for t in args.aws_secrets_tags.iter().filter(|t| !t.is_empty()) {
        match t.split_once('=') {
            Some((k, v)) => {
                tag_keys.push(k.to_string());
                if !v.is_empty() {
                    tag_values.push(v.to_string());
                }
            }
            None => tag_keys.push(t.clone()),
        }
    }
    tag_keys.extend(
        args.aws_secrets_tag_names_filter
            .iter()
            .filter(|t| !t.is_empty())
            .cloned(),
    );
    tag_values.extend(
        args.aws_secrets_tag_values_filter
            .iter()
            .filter(|t| !t.is_empty())
            .cloned(),
    );
    Ok(Some(AwsBulk {
        credentials,
        region,
        endpoint_override: args.aws_endpoint_override.clone(),
        prefixes: args
            .aws_secrets_prefixes_filter
            .iter()
            .filter(|p| !p.is_empty())
            .cloned()
            .collect(),
        tag_keys,
        tag_values,
    }))
}

/// This replica's name in the database's heartbeats: kept in `--data-path` so that a restart
/// is the same replica.
fn replica_id(data_path: &std::path::Path, port: u16) -> anyhow::Result<String> {
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
    db: &Arc<crate::protection::SlashingDatabase>,
    signer: &Arc<Signer>,
    metrics: &Arc<Metrics>,
    replica: &str,
) -> anyhow::Result<Option<crate::app::commit_boost::CommitBoost>> {
    use crate::app::commit_boost::{CommitBoost, Modules, store::ProxyStore};
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
    let store = ProxyStore::open(&dir, password, db.clone(), replica.to_string()).map_err(anyhow::Error::msg)?;
    let cb = CommitBoost::start(modules, store, signer.clone(), metrics.clone())
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(Some(cb))
}
