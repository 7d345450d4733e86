//! Log lines for events a client can cause at will (failed logins, refused connections,
//! refused signings): at most one per second, saying how many were held back.

/// At most one event per second passes; it says how many were held back since the last one.
pub struct RateLimit {
    last_ms: std::sync::atomic::AtomicU64,
    held: std::sync::atomic::AtomicU64,
}

impl RateLimit {
    pub const fn new() -> RateLimit {
        RateLimit {
            last_ms: std::sync::atomic::AtomicU64::new(0),
            held: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(held back)` when this event may be logged.
    pub fn allow(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        // A monotonic clock: a stepped wall clock must neither mute nor flood the log. Its
        // origin is a second back, so that the first event passes.
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now = ORIGIN.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64 + 1000;
        let last = self.last_ms.load(Relaxed);
        if now.saturating_sub(last) >= 1000 && self.last_ms.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
            Some(self.held.swap(0, Relaxed))
        } else {
            self.held.fetch_add(1, Relaxed);
            None
        }
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}
