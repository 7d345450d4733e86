//! What health, readiness and fail-fast decide on: the last database probe (a durable
//! heartbeat committed as a signing is), and whether this replica can sign safely now.
//! `Health` is the handle the health endpoints and the probe loop use; the signer reads
//! only the verdict.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::metrics::Metrics;
use crate::keys::KeyRegistry;
use crate::keys::registry::{KeyCounts, LoadFailure};
use crate::protection::Protection;
use crate::types::Root;

pub use crate::protection::verdict::{DbHealth, PROBE_INTERVAL};

/// Health, readiness and the database probe of one replica.
pub struct Health {
    protection: Arc<Protection>,
    keys: Arc<KeyRegistry>,
    metrics: Arc<Metrics>,
    /// This replica's name in the database's heartbeats.
    replica_id: String,
    /// Ready with at least this many usable keys; `None`: every configured key must load.
    ready_min_keys: Option<usize>,
    /// How long a probe may take: a commit that cannot complete in the time a signing is given
    /// (`--database-timeout-ms`; no synchronous standby, a saturated disk) means protected
    /// signing does not work now. A shorter bound would refuse signings that would succeed.
    probe_timeout: Duration,
}

impl Health {
    pub fn new(
        protection: Arc<Protection>,
        keys: Arc<KeyRegistry>,
        metrics: Arc<Metrics>,
        replica_id: String,
        ready_min_keys: Option<usize>,
        probe_timeout: Duration,
    ) -> Self {
        Health {
            protection,
            keys,
            metrics,
            replica_id,
            ready_min_keys,
            probe_timeout,
        }
    }

    /// The database verdict (the protection front's, which refuses at once on it).
    pub fn verdict(&self) -> &DbHealth {
        self.protection.verdict()
    }

    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }

    pub fn backend(&self) -> &'static str {
        self.protection.backend_name()
    }

    pub fn chain(&self) -> Option<Root> {
        self.protection.chain()
    }

    /// The keys' counts (also set in the metrics).
    pub fn key_counts(&self) -> KeyCounts {
        let counts = self.keys.counts();
        self.metrics.set_keys(counts);
        counts
    }

    pub fn key_failures(&self) -> Vec<LoadFailure> {
        self.keys.failures()
    }

    /// Files and secrets a reload could not read again, whose keys stay loaded.
    pub fn stale_key_sources(&self) -> Vec<LoadFailure> {
        self.keys.stale_units()
    }

    /// The metrics in Prometheus text format, key counts refreshed.
    pub fn metrics_text(&self) -> String {
        self.key_counts();
        self.metrics.ready.set(i64::from(self.readiness().ready()));
        self.metrics.encode()
    }

    /// Probes the database (a durable heartbeat within the probe timeout), records the verdict
    /// for readiness, health, metrics and fail-fast, and returns it.
    pub async fn probe(&self) -> bool {
        let started = Instant::now();
        let result = self
            .protection
            .database()
            .probe(&self.replica_id, self.probe_timeout)
            .await;
        let up = result.is_ok();
        match result {
            Ok(replicas) => {
                let latency = started.elapsed();
                self.metrics.database_latency_seconds.set(latency.as_secs_f64());
                self.metrics.replicas.set(replicas as i64);
                self.verdict().record(Ok((latency, replicas)));
            }
            Err(e) => self.verdict().record(Err(e.to_string())),
        }
        self.metrics.database_up.set(up as i64);
        up
    }

    /// Probes again when the verdict is older than `max_age`.
    pub async fn probe_if_older(&self, max_age: Duration) {
        if self.verdict().age().is_none_or(|a| a > max_age) {
            self.probe().await;
        }
    }

    /// Whether this replica can sign blocks and attestations safely now, and if not why.
    pub fn readiness(&self) -> Readiness {
        let mut reasons = Vec::new();
        if !self.verdict().up_and_fresh() {
            reasons.push(match self.verdict().error() {
                Some(e) => format!("slashing-protection database check failing: {e}"),
                None => "slashing-protection database not checked yet".into(),
            });
        }
        if self.protection.chain().is_none() {
            reasons.push(
                "no chain pinned: configure --network with a genesis validators root, or --genesis-validators-root"
                    .into(),
            );
        }
        let k = self.keys.counts();
        match self.ready_min_keys {
            Some(min) if k.loaded < min => {
                reasons.push(format!("{} keys usable, {min} needed (--ready-min-keys)", k.loaded));
            }
            Some(_) => {}
            None if k.loading > 0 => reasons.push(format!("{} keys still being decrypted", k.loading)),
            None if self.keys.any_source_pending() => reasons.push(format!(
                "{} key sources (secret stores) still being read",
                self.keys.sources_pending_count()
            )),
            None if k.failed > 0 => reasons.push(format!(
                "{} of {} keys failed to load (see /healthcheck; or accept fewer with --ready-min-keys)",
                k.failed,
                k.failed + k.loaded
            )),
            // A replica without keys signs nothing: a balancer must not send it clients.
            None if k.loaded == 0 => reasons.push(NO_KEYS.into()),
            None => {}
        }
        Readiness { reasons }
    }
}

/// Why a replica without keys is not ready, at startup (WARN) and in `/readyz`.
pub const NO_KEYS: &str = "no keys loaded: give keystores or key definitions (--keystores-path, \
    --key-config-path, --aws-secrets-enabled) or import through the Key Manager API; \
    --ready-min-keys 0 makes a replica without keys ready";

/// Whether a replica can sign blocks and attestations safely now; the reasons when not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    pub reasons: Vec<String>,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.reasons.is_empty()
    }
}
