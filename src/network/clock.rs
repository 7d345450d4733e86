//! The wall clock in slots, and the window of slots a signer accepts: nothing further ahead
//! of the clock than a small tolerance. A far-future block or attestation, once signed, would
//! raise the validator's watermark beyond every real duty and end its duties until then.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Network;
use crate::types::Slot;

#[derive(Clone, Copy, Debug)]
pub struct ClockWindow {
    genesis: u64,
    seconds_per_slot: u64,
    slots_per_epoch: u64,
    tolerance: Duration,
}

/// A message too far ahead of the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AheadOfClock {
    pub slot: Slot,
    /// The highest slot accepted now for this type.
    pub limit: Slot,
}

impl ClockWindow {
    /// The window on `network`, or `None` when its genesis time is unknown.
    pub fn new(network: &Network, tolerance: Duration) -> Option<Self> {
        Some(Self {
            genesis: network.genesis_time?,
            seconds_per_slot: network.seconds_per_slot,
            slots_per_epoch: network.slots_per_epoch(),
            tolerance,
        })
    }

    /// The highest slot whose start lies within the tolerance of `now`, plus
    /// `epochs_ahead` epochs.
    pub fn limit(&self, now: SystemTime, epochs_ahead: u64) -> Slot {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default() + self.tolerance;
        let since_genesis = now.as_secs().saturating_sub(self.genesis);
        Slot(since_genesis / self.seconds_per_slot + epochs_ahead * self.slots_per_epoch)
    }

    pub fn check(&self, slot: Slot, epochs_ahead: u64, now: SystemTime) -> Result<(), AheadOfClock> {
        let limit = self.limit(now, epochs_ahead);
        if slot <= limit {
            Ok(())
        } else {
            Err(AheadOfClock { slot, limit })
        }
    }

    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_edges() {
        let mut n = Network::load("mainnet").unwrap();
        n.genesis_time = Some(1_000);
        let w = ClockWindow::new(&n, Duration::from_secs(30)).unwrap();
        // 1000 + 12 * 100 = slot 100 starts now; 30 s of tolerance reach into slot 102.
        let now = UNIX_EPOCH + Duration::from_secs(1_000 + 1_200);
        assert_eq!(w.limit(now, 0), Slot(102));
        assert!(w.check(Slot(102), 0, now).is_ok());
        assert_eq!(
            w.check(Slot(103), 0, now),
            Err(AheadOfClock {
                slot: Slot(103),
                limit: Slot(102)
            })
        );
        // Selection proofs may be two epochs ahead.
        assert!(w.check(Slot(102 + 64), 2, now).is_ok());
        assert!(w.check(Slot(103 + 64), 2, now).is_err());
        // Before genesis only the first slots fit.
        let early = UNIX_EPOCH + Duration::from_secs(10);
        assert_eq!(w.limit(early, 0), Slot(0));
        assert!(w.check(Slot(u64::MAX), 0, now).is_err());
        n.genesis_time = None;
        assert!(ClockWindow::new(&n, Duration::from_secs(30)).is_none());
    }
}
