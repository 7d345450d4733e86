//! Waiting for a condition instead of sleeping for a guessed time.
//!
//! Every wait has a name and a budget. The budgets are generous multiples of what the waits
//! take on a loaded 2-core machine: run the suite with `PALISADE_TEST_WAIT_LOG=FILE` and each
//! wait appends `name<TAB>milliseconds taken<TAB>budget in milliseconds` to FILE, so the
//! margins can be measured (see README, "Flaky tests") rather than guessed.

use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(50);

fn record(what: &str, took: Duration, budget: Duration) {
    let Some(path) = std::env::var_os("PALISADE_TEST_WAIT_LOG") else {
        return;
    };
    // One short line per write with O_APPEND: lines from parallel tests do not interleave.
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(format!("{what}\t{}\t{}\n", took.as_millis(), budget.as_millis()).as_bytes());
    }
}

/// Polls `check` until it gives `Some`, for at most `budget`; panics naming `what` otherwise.
pub async fn until<T, F, Fut>(what: &str, budget: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match within(what, budget, &mut check).await {
        Some(v) => v,
        None => panic!("{what}: not within {budget:?}"),
    }
}

/// Like `until`, but gives `None` when the budget runs out (for a caller with its own message).
pub async fn within<T, F, Fut>(what: &str, budget: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            record(what, start.elapsed(), budget);
            return Some(v);
        }
        if start.elapsed() >= budget {
            record(what, start.elapsed(), budget);
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `until` for blocking code.
pub fn until_blocking<T>(what: &str, budget: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            record(what, start.elapsed(), budget);
            return v;
        }
        if start.elapsed() >= budget {
            record(what, start.elapsed(), budget);
            panic!("{what}: not within {budget:?}");
        }
        std::thread::sleep(POLL);
    }
}
