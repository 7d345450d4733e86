//! The last database probe's verdict: what readiness and health report, and what lets a
//! signing be refused at once (fail fast) while the database is known to be down.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

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
