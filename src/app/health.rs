//! What health, readiness and fail-fast decide on: the last database probe (a durable
//! heartbeat committed as a signing is), and whether this replica can sign safely now.
//! `Health` is the handle the health endpoints and the probe loop use; the signer reads
//! only the verdict.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::app::metrics::Metrics;
use crate::keys::KeyRegistry;
use crate::keys::registry::{KeyCounts, LoadFailure};
use crate::protection::{ChainPin, SlashingDatabase};
use crate::types::Root;

/// How often the database is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The last database probe's verdict.
pub struct DbHealth {
    /// A verdict older than this is not trusted, neither for readiness nor to refuse at once:
    /// a probe interval plus a probe's longest time, plus a margin.
    stale_after: Duration,
    up: AtomicBool,
    /// When the last probe ended, on the monotonic clock: an age must not jump when the wall
    /// clock is stepped.
    checked_at: Mutex<Option<Instant>>,
    latency_us: AtomicU64,
    replicas: AtomicU32,
    error: Mutex<Option<String>>,
}

impl DbHealth {
    /// For probes that each take at most `probe_timeout`.
    pub fn new(probe_timeout: Duration) -> Self {
        DbHealth {
            stale_after: PROBE_INTERVAL + probe_timeout + Duration::from_millis(500),
            up: AtomicBool::new(false),
            checked_at: Mutex::new(None),
            latency_us: AtomicU64::new(0),
            replicas: AtomicU32::new(0),
            error: Mutex::new(None),
        }
    }

    pub fn record(&self, result: Result<(Duration, u32), String>) {
        match result {
            Ok((latency, replicas)) => {
                self.latency_us.store(latency.as_micros() as u64, Relaxed);
                self.replicas.store(replicas, Relaxed);
                *self.error.lock().expect("health") = None;
                self.up.store(true, Relaxed);
            }
            Err(e) => {
                *self.error.lock().expect("health") = Some(e);
                self.up.store(false, Relaxed);
            }
        }
        *self.checked_at.lock().expect("health") = Some(Instant::now());
    }

    pub fn age(&self) -> Option<Duration> {
        self.checked_at.lock().expect("health").map(|at| at.elapsed())
    }

    fn fresh(&self) -> bool {
        self.age().is_some_and(|a| a <= self.stale_after)
    }

    pub fn up_and_fresh(&self) -> bool {
        self.up.load(Relaxed) && self.fresh()
    }

    /// The reason, when the last probe failed and is recent.
    pub fn known_down(&self) -> Option<String> {
        if self.up.load(Relaxed) || !self.fresh() {
            return None;
        }
        self.error()
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().expect("health").clone()
    }

    pub fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_us.load(Relaxed))
    }

    pub fn replicas(&self) -> u32 {
        self.replicas.load(Relaxed)
    }
}

/// Health, readiness and the database probe of one replica.
pub struct Health {
    db: Arc<SlashingDatabase>,
    keys: Arc<KeyRegistry>,
    chain: Arc<ChainPin>,
    metrics: Arc<Metrics>,
    /// This replica's name in the database's heartbeats.
    replica_id: String,
    /// Ready with at least this many usable keys; `None`: every configured key must load.
    ready_min_keys: Option<usize>,
    /// How long a probe may take: a commit that cannot complete in the time a signing is given
    /// (`--database-timeout-ms`; no synchronous standby, a saturated disk) means protected
    /// signing does not work now. A shorter bound would refuse signings that would succeed.
    probe_timeout: Duration,
    verdict: Arc<DbHealth>,
}

impl Health {
    pub fn new(
        db: Arc<SlashingDatabase>,
        keys: Arc<KeyRegistry>,
        chain: Arc<ChainPin>,
        metrics: Arc<Metrics>,
        replica_id: String,
        ready_min_keys: Option<usize>,
        probe_timeout: Duration,
    ) -> Self {
        Health {
            db,
            keys,
            chain,
            metrics,
            replica_id,
            ready_min_keys,
            probe_timeout,
            verdict: Arc::new(DbHealth::new(probe_timeout)),
        }
    }

    /// The database verdict, shared with the signer for fail-fast.
    pub fn verdict(&self) -> &Arc<DbHealth> {
        &self.verdict
    }

    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }

    pub fn backend(&self) -> &'static str {
        self.db.backend_name()
    }

    pub fn chain(&self) -> Option<Root> {
        self.chain.get()
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
        let result = self.db.probe(&self.replica_id, self.probe_timeout).await;
        let up = result.is_ok();
        match result {
            Ok(replicas) => {
                let latency = started.elapsed();
                self.metrics.database_latency_seconds.set(latency.as_secs_f64());
                self.metrics.replicas.set(replicas as i64);
                self.verdict.record(Ok((latency, replicas)));
            }
            Err(e) => self.verdict.record(Err(e.to_string())),
        }
        self.metrics.database_up.set(up as i64);
        up
    }

    /// Probes again when the verdict is older than `max_age`.
    pub async fn probe_if_older(&self, max_age: Duration) {
        if self.verdict.age().is_none_or(|a| a > max_age) {
            self.probe().await;
        }
    }

    /// Whether this replica can sign blocks and attestations safely now, and if not why.
    pub fn readiness(&self) -> Readiness {
        let mut reasons = Vec::new();
        if !self.verdict.up_and_fresh() {
            reasons.push(match self.verdict.error() {
                Some(e) => format!("slashing-protection database check failing: {e}"),
                None => "slashing-protection database not checked yet".into(),
            });
        }
        if self.chain.get().is_none() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_failure_refuses_at_once_a_stale_one_does_not() {
        let h = DbHealth::new(Duration::from_millis(1500));
        assert!(h.known_down().is_none() && !h.up_and_fresh(), "unchecked");
        h.record(Err("connection refused".into()));
        assert_eq!(h.known_down().as_deref(), Some("connection refused"));
        *h.checked_at.lock().unwrap() = Instant::now().checked_sub(Duration::from_secs(10));
        assert!(h.known_down().is_none(), "a stale verdict must not refuse");
        h.record(Ok((Duration::from_millis(2), 3)));
        assert!(h.up_and_fresh() && h.known_down().is_none());
        assert_eq!(h.replicas(), 3);
    }
}
