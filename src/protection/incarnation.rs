//! Noticing that the database behind the connections is another one than before: restored
//! from a backup (a new database), or a standby promoted (another server).
//!
//! Either may have gone back in time. Every replica then holds blocks and attestations, compares
//! the database with its own record at once (writing it back if the database is behind), and
//! keeps holding for a while after that succeeded: so that every replica's record is in the
//! database before any replica signs on it again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Identifies the database behind a connection: its OID (new after a restore into a dropped
/// and recreated database), the cluster's system identifier (new after a restore into a new
/// cluster) and the timeline of its WAL (new after a standby is promoted or a backup is
/// restored to a point in time). A plain restart changes none of them.
pub const IDENTITY_QUERY: &str = "SELECT d.oid::text || '/' || s.system_identifier::text || '/' ||
        substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)
   FROM pg_database d, pg_control_system() s WHERE d.datname = current_database()";

pub struct Incarnation {
    known: Mutex<Option<String>>,
    state: Mutex<Hold>,
    hold: Duration,
    /// Woken at each change: the replica compares the database with its record.
    pub changed: Notify,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hold {
    None,
    /// Changed; this replica has not yet checked the database against its record.
    Unchecked,
    /// Checked at this time; held on for the others to check too.
    CheckedAt(Instant),
}

impl Incarnation {
    pub fn new(hold: Duration) -> Self {
        Self {
            known: Mutex::new(None),
            state: Mutex::new(Hold::None),
            hold,
            changed: Notify::new(),
        }
    }

    /// Called with the identity seen by each new connection.
    pub fn observe(&self, identity: String) {
        let mut known = self.known.lock().expect("incarnation");
        match known.as_deref() {
            Some(k) if k == identity => {}
            Some(k) => {
                tracing::warn!(
                    before = %k,
                    now = %identity,
                    hold_secs = self.hold.as_secs_f64(),
                    "the slashing-protection database is another one than before (restored from a backup? a standby promoted?): \
                     holding blocks and attestations while this replica checks it against its own record"
                );
                *known = Some(identity);
                if !self.hold.is_zero() {
                    *self.state.lock().expect("incarnation") = Hold::Unchecked;
                }
                self.changed.notify_one();
            }
            None => *known = Some(identity),
        }
    }

    /// The identity of the database now behind the connections.
    pub fn identity(&self) -> Option<String> {
        self.known.lock().expect("incarnation").clone()
    }

    /// The identity this replica's saved record goes with (from before a restart): if the
    /// database is another one now, it is a change like one seen live.
    pub fn compare_saved(&self, saved: &str) {
        let current = self.identity();
        if current.as_deref().is_some_and(|c| c != saved) {
            *self.known.lock().expect("incarnation") = Some(saved.to_string());
            self.observe(current.expect("checked above"));
        }
    }

    /// This replica has checked the changed database against its record (and written back
    /// what it lacked): the hold now runs out after the grace period.
    pub fn checked(&self) {
        let mut state = self.state.lock().expect("incarnation");
        if *state == Hold::Unchecked {
            *state = Hold::CheckedAt(Instant::now());
        }
    }

    /// Whether blocks and attestations are held, and for at most how long more.
    pub fn held(&self) -> Option<Duration> {
        match *self.state.lock().expect("incarnation") {
            Hold::None => None,
            Hold::Unchecked => Some(self.hold),
            Hold::CheckedAt(at) => self.hold.checked_sub(at.elapsed()).filter(|d| !d.is_zero()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_holds_for_a_while() {
        let i = Incarnation::new(Duration::from_millis(50));
        i.observe("1@a".into());
        i.observe("1@a".into());
        assert!(i.held().is_none(), "the first sight is not a change");
        i.observe("2@b".into());
        assert!(i.held().is_some());
        // Held until this replica has checked, and the grace after that.
        std::thread::sleep(Duration::from_millis(60));
        assert!(i.held().is_some());
        i.checked();
        assert!(i.held().is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(i.held().is_none());
    }
}
