//! Prometheus metrics (`/metrics`). Names are stable: the alert rules in `deploy/` use them.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::keys::registry::KeyCounts;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignLabels {
    pub r#type: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub r#type: &'static str,
    pub reason: &'static str,
    /// `Refusal::risk` of the reason: alerts tell a prevented slashing from a policy refusal.
    pub risk: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommitBoostLabels {
    /// The module's id from the modules file; `unauthenticated` when no module was proven.
    pub module: String,
    pub route: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 us .. ~6.5 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// Every `outcome` label value of `palisade_signing_requests_total`.
pub const OUTCOMES: [&str; 9] = [
    "signed",
    "repeat",
    "refused",
    "not_permitted",
    "bad_request",
    "unknown_key",
    "key_loading",
    "unavailable",
    "error",
];

pub struct Metrics {
    registry: Registry,
    /// 1 while this replica can sign blocks and attestations (what `/readyz` says), else 0.
    pub ready: Gauge,
    /// The standard `process_*` metrics, without Palisade's prefix.
    process: ProcessMetrics,
    /// Every signing request by type and outcome: signed, repeat (the same block or
    /// attestation signed again), refused, bad_request, unknown_key, key_loading,
    /// unavailable, error.
    pub requests: Family<SignLabels, Counter>,
    /// Slashing-protection refusals by type, reason and risk (`Refusal::risk`). A `slashable`
    /// one in production means two clients disagree about the chain: an operator must look.
    pub refusals: Family<RefusalLabels, Counter>,
    /// Request to signature, for signed requests.
    pub signing_seconds: Family<TypeLabels, Histogram>,
    /// The slashing-protection check alone (one database transaction).
    pub protection_seconds: Histogram,
    pub keys: Family<StateLabels, Gauge>,
    /// 1 when the last database check succeeded, 0 when it failed.
    pub database_up: Gauge,
    pub database_latency_seconds: Gauge<f64, AtomicU64>,
    pub database_pool_connections: Family<StateLabels, Gauge>,
    /// Replicas whose heartbeat the database holds from the last 10 s (this one included).
    pub replicas: Gauge,
    /// Times the database was found holding less than this replica had committed.
    pub database_rollbacks: Counter,
    /// Connections closed at once: the table was full and none could give way.
    pub connections_refused: Counter,
    /// Connections closed to make room for a new one, by what they were doing (silent, idle).
    pub connections_evicted: Family<StateLabels, Counter>,
    /// Connections closed for a timeout, by which (first_request, header, idle, handshake).
    pub connections_timed_out: Family<StateLabels, Counter>,
    /// Requests answered 503 because --http-body-budget-mb of bodies were in flight.
    pub bodies_refused: Counter,
    pub connections_open: Gauge,
    /// The group commit's statements, what they decided, and their conflicts (PostgreSQL).
    pub commits: crate::protection::CommitStats,
    /// Commit-Boost requests by module, route and outcome.
    pub commit_boost: Family<CommitBoostLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Every metric's name (after the `palisade_` prefix) and help text.
const HELP: &[(&str, &str)] = &[
    ("build_info", "The running build (1)"),
    (
        "ready",
        "1 while this replica can sign blocks and attestations (as /readyz), else 0",
    ),
    ("signing_requests", "Signing requests by type and outcome"),
    (
        "slashing_refusals",
        "Signings refused by slashing protection, by type, reason and risk (slashable, invalid, policy, clock)",
    ),
    (
        "signing_duration_seconds",
        "Time from request to signature for signed requests",
    ),
    (
        "protection_duration_seconds",
        "Time of the slashing-protection check and record (one database transaction)",
    ),
    ("keys", "Validator keys by state (loaded, loading, failed)"),
    (
        "database_up",
        "1 if the slashing-protection database answered the last check",
    ),
    (
        "database_latency_seconds",
        "Round trip of the last database health check",
    ),
    (
        "database_pool_connections",
        "Database connections of this replica by state (open, idle)",
    ),
    (
        "replicas",
        "Palisade replicas with a heartbeat in the database in the last 10 s (PostgreSQL)",
    ),
    (
        "database_rollbacks",
        "Times the slashing-protection database held less than this replica had committed (restored backup, lost commits)",
    ),
    (
        "http_connections_refused",
        "Connections closed on arrival: --http-max-connections (or the client's share) were open and none could give way",
    ),
    (
        "http_connections_evicted",
        "Connections closed to make room for a new one (state: silent = never completed a request, idle)",
    ),
    (
        "http_connections_timed_out",
        "Connections closed by a timeout (state: first_request, header, idle, handshake)",
    ),
    (
        "http_bodies_refused",
        "Requests answered 503 because --http-body-budget-mb of request bodies were in flight",
    ),
    ("http_connections_open", "Open client connections"),
    (
        "database_statements",
        "Check-and-record statements run on PostgreSQL (each one transaction of the group commit)",
    ),
    (
        "database_decided",
        "Blocks and attestations decided by those statements (decided / statements = mean batch size)",
    ),
    (
        "database_conflicts",
        "Check-and-record statements rolled back by a serialization conflict or deadlock and run again",
    ),
    (
        "commit_boost_requests",
        "Commit-Boost signer API requests by module, route and outcome (signed, generated, listed, unauthorized, forbidden, unknown_key, bad_request, unavailable, error)",
    ),
    (
        "threshold_node_errors",
        "Share nodes' answers a threshold coordinator could not use, by node and reason (invalid_partial: a partial that does not verify for the node's share; refused: its slashing protection refused; unavailable: no answer in time, or an error)",
    ),
];

fn help(name: &str) -> &'static str {
    HELP.iter().find(|(n, _)| *n == name).map_or("", |(_, h)| h)
}

/// Registers `metric` under `name` (with its help text) and hands it back.
fn reg<M: prometheus_client::registry::Metric + Clone>(r: &mut Registry, name: &str, metric: M) -> M {
    r.register(name, help(name), metric.clone());
    metric
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("palisade");
        let r = &mut registry;
        r.register(
            "threshold_node_errors",
            help("threshold_node_errors"),
            crate::keys::stores::threshold::NODE_ERRORS.clone(),
        );
        let build_info = reg(r, "build_info", Family::<BuildLabels, Gauge>::default());
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        let metrics = Self {
            ready: reg(r, "ready", Gauge::default()),
            process: ProcessMetrics::new(),
            requests: reg(r, "signing_requests", Family::default()),
            refusals: reg(r, "slashing_refusals", Family::default()),
            signing_seconds: reg(
                r,
                "signing_duration_seconds",
                Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            ),
            protection_seconds: reg(r, "protection_duration_seconds", latency_histogram()),
            keys: reg(r, "keys", Family::default()),
            database_up: reg(r, "database_up", Gauge::default()),
            database_latency_seconds: reg(r, "database_latency_seconds", Gauge::default()),
            database_pool_connections: reg(r, "database_pool_connections", Family::default()),
            replicas: reg(r, "replicas", Gauge::default()),
            database_rollbacks: reg(r, "database_rollbacks", Counter::default()),
            connections_refused: reg(r, "http_connections_refused", Counter::default()),
            connections_evicted: reg(r, "http_connections_evicted", Family::default()),
            connections_timed_out: reg(r, "http_connections_timed_out", Family::default()),
            bodies_refused: reg(r, "http_bodies_refused", Counter::default()),
            connections_open: reg(r, "http_connections_open", Gauge::default()),
            commits: crate::protection::CommitStats {
                statements: reg(r, "database_statements", Counter::default()),
                decided: reg(r, "database_decided", Counter::default()),
                conflicts: reg(r, "database_conflicts", Counter::default()),
            },
            commit_boost: reg(r, "commit_boost_requests", Family::default()),
            registry,
        };
        metrics.zero_series();
        metrics
    }

    /// Series that alerts and dashboards use exist from the start at zero: Prometheus's
    /// increase() does not count the first event of a series that appears with it.
    fn zero_series(&self) {
        for state in ["first_request", "header", "idle", "handshake"] {
            let _ = self.connections_timed_out.get_or_create(&StateLabels { state });
        }
        for state in ["silent", "idle"] {
            let _ = self.connections_evicted.get_or_create(&StateLabels { state });
        }
        for state in ["open", "idle"] {
            let _ = self.database_pool_connections.get_or_create(&StateLabels { state });
        }
        for state in ["loaded", "loading", "failed"] {
            let _ = self.keys.get_or_create(&StateLabels { state });
        }
        for t in crate::signing::SignType::ALL {
            let _ = self.signing_seconds.get_or_create(&TypeLabels { r#type: t.as_str() });
            for outcome in OUTCOMES {
                let _ = self.requests.get_or_create(&SignLabels {
                    r#type: t.as_str(),
                    outcome,
                });
            }
            for reason in crate::protection::Refusal::CODES {
                let _ = self.refusals.get_or_create(&RefusalLabels {
                    r#type: t.as_str(),
                    reason,
                    risk: crate::protection::Refusal::risk(reason),
                });
            }
        }
    }

    pub fn request(&self, sign_type: &'static str, outcome: &'static str) {
        self.requests
            .get_or_create(&SignLabels {
                r#type: sign_type,
                outcome,
            })
            .inc();
    }

    pub fn set_keys(&self, c: KeyCounts) {
        for (state, n) in [("loaded", c.loaded), ("loading", c.loading), ("failed", c.failed)] {
            self.keys.get_or_create(&StateLabels { state }).set(n as i64);
        }
    }

    /// The OpenMetrics text exposition, the process's own metrics included.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        self.process.update();
        let mut out = String::new();
        encode_registry(&mut out, &self.registry).expect("writing to a String cannot fail");
        encode_registry(&mut out, &self.process.registry).expect("writing to a String cannot fail");
        encode_eof(&mut out).expect("writing to a String cannot fail");
        out
    }
}

/// `process_*`, as every Prometheus client library exports them.
struct ProcessMetrics {
    registry: Registry,
    cpu_seconds: Counter<f64, AtomicU64>,
    resident_bytes: Gauge,
    virtual_bytes: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time_seconds: Gauge<f64, AtomicU64>,
}

impl ProcessMetrics {
    fn new() -> Self {
        let (cpu_seconds, start_time_seconds) =
            (Counter::<f64, AtomicU64>::default(), Gauge::<f64, AtomicU64>::default());
        let [resident_bytes, virtual_bytes, open_fds, max_fds] = [(); 4].map(|_| Gauge::default());
        let mut registry = Registry::default();
        registry.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            cpu_seconds.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            resident_bytes.clone(),
        );
        registry.register(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            virtual_bytes.clone(),
        );
        registry.register("process_open_fds", "Number of open file descriptors", open_fds.clone());
        registry.register(
            "process_max_fds",
            "Maximum number of open file descriptors",
            max_fds.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            start_time_seconds.clone(),
        );
        ProcessMetrics {
            registry,
            cpu_seconds,
            resident_bytes,
            virtual_bytes,
            open_fds,
            max_fds,
            start_time_seconds,
        }
    }

    /// Read at each scrape.
    fn update(&self) {
        let Some(s) = crate::process::stats() else { return };
        let seen = self.cpu_seconds.get();
        if s.cpu_seconds > seen {
            self.cpu_seconds.inc_by(s.cpu_seconds - seen);
        }
        self.resident_bytes
            .set(i64::try_from(s.resident_bytes).unwrap_or(i64::MAX));
        self.virtual_bytes
            .set(i64::try_from(s.virtual_bytes).unwrap_or(i64::MAX));
        self.open_fds.set(i64::try_from(s.open_fds).unwrap_or(i64::MAX));
        self.max_fds.set(i64::try_from(s.max_fds).unwrap_or(i64::MAX));
        self.start_time_seconds.set(s.start_time_seconds);
    }
}
