//! What health, readiness and fail-fast decide on: the last database probe (a durable
//! heartbeat committed as a signing is), and whether this replica can sign safely now.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the database is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a probe may take: a commit that cannot complete in this time (no synchronous
/// standby, a saturated disk) means protected signing does not work now.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// A verdict older than this is not trusted, neither for readiness nor to refuse at once.
pub const STALE_AFTER: Duration = Duration::from_secs(3);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The last database probe's verdict.
#[derive(Default)]
pub struct DbHealth {
    up: AtomicBool,
    checked_at_ms: AtomicU64,
    latency_us: AtomicU64,
    replicas: AtomicU32,
    error: Mutex<Option<String>>,
}

impl DbHealth {
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
        self.checked_at_ms.store(now_ms(), Relaxed);
    }

    pub fn age(&self) -> Option<Duration> {
        let at = self.checked_at_ms.load(Relaxed);
        (at > 0).then(|| Duration::from_millis(now_ms().saturating_sub(at)))
    }

    fn fresh(&self) -> bool {
        self.age().is_some_and(|a| a <= STALE_AFTER)
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
        let h = DbHealth::default();
        assert!(h.known_down().is_none() && !h.up_and_fresh(), "unchecked");
        h.record(Err("connection refused".into()));
        assert_eq!(h.known_down().as_deref(), Some("connection refused"));
        h.checked_at_ms.store(now_ms() - 10_000, Relaxed);
        assert!(h.known_down().is_none(), "a stale verdict must not refuse");
        h.record(Ok((Duration::from_millis(2), 3)));
        assert!(h.up_and_fresh() && h.known_down().is_none());
        assert_eq!(h.replicas(), 3);
    }
}
