//! This replica's record (`ReplicaRecord`): per validator, the highest block and the highest
//! attestation it committed itself (a `Floor`: it never signs at or below it), in memory and
//! in its state file (`replica-state.bin` under `--data-path`, see `state_file`).
//!
//! The shared database is the record every replica decides on. If it goes back in time (a
//! restored backup, a promoted asynchronous standby), it no longer holds what was signed
//! since, and any replica could sign a conflicting message. This record catches that for
//! everything this replica signed: it never signs at or below its own record, it notices when
//! the database holds less than it committed, and it writes its record back so that the other
//! replicas are protected too. It cannot protect a message that only another replica signed,
//! nor one whose replica lost its state file as well.
//!
//! A repair by the operator lowers watermarks on purpose and bumps the validator's repair
//! count; a record older than the repair is dropped, never written back over it.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::rules::{Refusal, Verdict, Watermarks};
use super::{HeldBefore, HeldMark};
use crate::types::SlashableMessage;
use crate::types::{Epoch, PublicKey, Root, SigningRoot, Slot};

mod state_file;
use state_file::{decode, encode};

/// What this replica committed for one validator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Floor {
    /// The validator's repair count in the database when this was committed.
    pub repairs: u32,
    pub block: Option<(Slot, Option<SigningRoot>)>,
    /// (source, target, root) of the highest attestation.
    pub attestation: Option<(Epoch, Epoch, Option<SigningRoot>)>,
}

impl Floor {
    fn watermarks(&self) -> Watermarks {
        Watermarks {
            enabled: true,
            block_slot: self.block.map(|b| b.0),
            block_root: self.block.and_then(|b| b.1),
            att_source: self.attestation.map(|a| a.0),
            att_target: self.attestation.map(|a| a.1),
            att_root: self.attestation.and_then(|a| a.2),
            att_root_source: self.attestation.map(|a| a.0),
            ..Default::default()
        }
    }

    fn record(&mut self, p: &SlashableMessage) {
        match *p {
            SlashableMessage::Block { slot, root } => {
                if self.block.is_none_or(|(s, _)| slot >= s) {
                    self.block = Some((slot, Some(root)));
                }
            }
            SlashableMessage::Attestation { source, target, root } => {
                if self.attestation.is_none_or(|(_, t, _)| target >= t) {
                    let source = self.attestation.map_or(source, |(s, _, _)| s.max(source));
                    self.attestation = Some((source, target, Some(root)));
                }
            }
        }
    }
}

/// The database held less for a validator than this replica committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollback {
    pub pubkey: PublicKey,
    pub database: String,
    pub replica: String,
}

pub struct ReplicaRecord {
    floors: Mutex<HashMap<PublicKey, Floor>>,
    /// The identity of the database this record was last saved against (see `incarnation`).
    database: Mutex<Option<String>>,
    /// The chain the file was for: kept when the record is saved before a chain is pinned, so
    /// that a restart on that chain does not set the record aside as another chain's.
    file_chain: Option<Root>,
    dirty: AtomicBool,
    file: Option<StateFile>,
}

struct StateFile {
    path: PathBuf,
    _lock: File,
}

impl ReplicaRecord {
    /// Memory without a file (tests, tools).
    pub fn in_memory() -> Self {
        Self {
            floors: Mutex::default(),
            database: Mutex::default(),
            file_chain: None,
            dirty: AtomicBool::new(false),
            file: None,
        }
    }

    /// Loads `path` (if it exists) for `chain`, holding `path.lock` so that no second process
    /// shares the file. A file for another chain is set aside with a warning.
    pub fn open(path: &Path, chain: Option<Root>) -> Result<Self, StateFileError> {
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::fsutil::private_dir(dir).map_err(|e| StateFileError::io("create", dir, e))?;
        }
        // Never through a link someone planted, and private from the first byte.
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|e| StateFileError::io("create", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StateFileError::InUse(path.into())),
            Err(std::fs::TryLockError::Error(e)) => return Err(StateFileError::io("lock", &lock_path, e)),
        }
        let (floors, database, old_format, file_chain) = match std::fs::read(path) {
            Ok(bytes) => match decode(&bytes) {
                Ok(d) if chain.is_none_or(|c| c == d.chain) => (
                    d.floors,
                    d.database,
                    d.old_format,
                    (d.chain != Root::ZERO).then_some(d.chain),
                ),
                Ok(d) => {
                    tracing::warn!(file = %path.display(), file_chain = %d.chain, "replica state is for another chain: starting without it");
                    Default::default()
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "replica state file is damaged: starting without it");
                    Default::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(e) => return Err(StateFileError::io("read", path, e)),
        };
        if old_format {
            tracing::info!(file = %path.display(), "replica state file in the old format: rewritten in the current one");
        }
        Ok(Self {
            floors: Mutex::new(floors),
            database: Mutex::new(database),
            file_chain,
            // A file in the old format is read this once and written again in the current one.
            dirty: AtomicBool::new(old_format),
            file: Some(StateFile {
                path: path.to_path_buf(),
                _lock: lock,
            }),
        })
    }

    /// How many validators this replica remembers.
    pub fn len(&self) -> usize {
        self.floors.lock().expect("replica memory").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses what this replica's own record refuses (never signing at or below what it
    /// committed, whatever the database says now). Exact repeats pass, for the database to
    /// answer.
    pub fn check(&self, pk: &PublicKey, p: &SlashableMessage) -> Option<Refusal> {
        let floor = *self.floors.lock().expect("replica memory").get(pk)?;
        match floor.watermarks().check(p) {
            Verdict::Refused(r) => Some(r),
            Verdict::New | Verdict::Repeat => None,
        }
    }

    /// After a passed check: compares what the database held before it with this replica's
    /// record, then remembers the message (one lock for both, on the hot path).
    pub fn committed(&self, pk: &PublicKey, p: &SlashableMessage, held: &HeldBefore) -> Option<Rollback> {
        let mut floors = self.floors.lock().expect("replica memory");
        let rollback = Self::observe_locked(&mut floors, pk, held);
        let floor = floors.entry(*pk).or_default();
        floor.repairs = floor.repairs.max(held.repairs);
        floor.record(p);
        self.dirty.store(true, Ordering::Relaxed);
        rollback
    }

    /// Compares what the database held before a passed check with this replica's record.
    /// A newer repair count means an operator repaired the key since: the record is dropped.
    pub fn observe(&self, pk: &PublicKey, held: &HeldBefore) -> Option<Rollback> {
        let mut floors = self.floors.lock().expect("replica memory");
        let rollback = Self::observe_locked(&mut floors, pk, held);
        self.dirty.store(true, Ordering::Relaxed);
        rollback
    }

    fn observe_locked(floors: &mut HashMap<PublicKey, Floor>, pk: &PublicKey, held: &HeldBefore) -> Option<Rollback> {
        let floor = *floors.get(pk)?;
        if held.repairs > floor.repairs {
            floors.remove(pk);
            return None;
        }
        let behind = held.repairs < floor.repairs
            || match held.mark {
                HeldMark::Block(db) => floor.block.is_some_and(|(s, _)| db.is_none_or(|d| d < s)),
                HeldMark::Attestation { source, target } => floor
                    .attestation
                    .is_some_and(|(s, t, _)| target.is_none_or(|d| d < t) || source.is_none_or(|d| d < s)),
                HeldMark::AttestationTarget(target) => {
                    floor.attestation.is_some_and(|(_, t, _)| target.is_none_or(|d| d < t))
                }
            };
        behind.then(|| Rollback {
            pubkey: *pk,
            database: describe_held(held),
            replica: describe_floor(&floor),
        })
    }

    /// Compares the database's full watermarks of a validator with this replica's record
    /// (the startup and periodic sweep).
    pub fn compare(&self, pk: &PublicKey, db: &Watermarks) -> Option<Rollback> {
        let block = HeldBefore {
            repairs: db.repairs,
            mark: HeldMark::Block(db.block_slot),
        };
        let attestation = HeldBefore {
            repairs: db.repairs,
            mark: HeldMark::Attestation {
                source: db.att_source,
                target: db.att_target,
            },
        };
        self.observe(pk, &block).or_else(|| self.observe(pk, &attestation))
    }

    /// Remembers a message this replica has committed (or found committed).
    pub fn record(&self, pk: &PublicKey, p: &SlashableMessage, repairs: u32) {
        let mut floors = self.floors.lock().expect("replica memory");
        let floor = floors.entry(*pk).or_default();
        floor.repairs = floor.repairs.max(repairs);
        floor.record(p);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Drops the record of keys an operator just repaired on this replica.
    pub fn forget(&self, pks: &[PublicKey]) {
        let mut floors = self.floors.lock().expect("replica memory");
        for pk in pks {
            floors.remove(pk);
        }
        self.dirty.store(true, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Vec<(PublicKey, Floor)> {
        let mut v: Vec<_> = self
            .floors
            .lock()
            .expect("replica memory")
            .iter()
            .map(|(k, f)| (*k, *f))
            .collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// The identity of the database the record was last saved against.
    pub fn database(&self) -> Option<String> {
        self.database.lock().expect("replica memory").clone()
    }

    /// Notes the identity of the database the record now goes with.
    pub fn set_database(&self, identity: Option<String>) {
        let mut d = self.database.lock().expect("replica memory");
        if *d != identity {
            *d = identity;
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Writes the state file if anything changed (atomically, mode 0600).
    pub fn flush(&self, chain: Option<Root>) -> Result<(), StateFileError> {
        let Some(file) = &self.file else { return Ok(()) };
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let bytes = encode(
            chain.or(self.file_chain).unwrap_or(Root::ZERO),
            self.database().as_deref(),
            &self.snapshot(),
        );
        crate::fsutil::write_private(&file.path, &bytes, crate::fsutil::Existing::Replace).map_err(|e| {
            self.dirty.store(true, Ordering::Relaxed);
            StateFileError::io("write", &file.path, e)
        })
    }
}

/// Why this replica's state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("{} is in use by another Palisade process: give every replica its own --data-path", .0.display())]
    InUse(PathBuf),
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StateFileError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        StateFileError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

fn describe_held(held: &HeldBefore) -> String {
    let mark = match held.mark {
        HeldMark::Block(s) => format!("block slot {}", s.map_or("none".into(), |s| s.to_string())),
        HeldMark::Attestation { source, target } => format!(
            "attestation source {} target {}",
            source.map_or("none".into(), |s| s.to_string()),
            target.map_or("none".into(), |s| s.to_string())
        ),
        HeldMark::AttestationTarget(target) => {
            format!("attestation target {}", target.map_or("none".into(), |s| s.to_string()))
        }
    };
    format!("{mark} (repairs {})", held.repairs)
}

fn describe_floor(f: &Floor) -> String {
    format!(
        "block slot {}, attestation source {} target {} (repairs {})",
        f.block.map_or("none".into(), |b| b.0.to_string()),
        f.attestation.map_or("none".into(), |a| a.0.to_string()),
        f.attestation.map_or("none".into(), |a| a.1.to_string()),
        f.repairs
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protection::rules::tests::att;

    fn pk(b: u8) -> PublicKey {
        PublicKey([b; 48])
    }
    fn seen_att(s: u64, t: u64, repairs: u32) -> HeldBefore {
        HeldBefore {
            repairs,
            mark: HeldMark::Attestation {
                source: Some(Epoch(s)),
                target: Some(Epoch(t)),
            },
        }
    }

    #[test]
    fn refuses_below_its_own_record_and_spots_a_database_behind_it() {
        let m = ReplicaRecord::in_memory();
        m.record(&pk(1), &att(4, 5, 1), 0);
        // The same message again is for the database to answer; a lower one is refused.
        assert_eq!(m.check(&pk(1), &att(4, 5, 1)), None);
        assert!(m.check(&pk(1), &att(4, 5, 2)).is_some());
        assert!(m.check(&pk(1), &att(3, 4, 1)).is_some());
        assert_eq!(m.check(&pk(1), &att(5, 6, 1)), None);
        assert_eq!(m.check(&pk(2), &att(0, 1, 1)), None);
        // The database held target 5 before our next signing: fine. Target 3: went back.
        assert_eq!(m.observe(&pk(1), &seen_att(4, 5, 0)), None);
        assert!(m.observe(&pk(1), &seen_att(2, 3, 0)).is_some());
        // A repair since: the record is dropped, and nothing is reported.
        assert_eq!(m.observe(&pk(1), &seen_att(0, 1, 1)), None);
        assert_eq!(m.check(&pk(1), &att(1, 2, 1)), None);
    }

    #[test]
    fn the_state_file_round_trips_and_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/replica-state.bin");
        let chain = Root::from([7u8; 32]);
        {
            let m = ReplicaRecord::open(&path, Some(chain)).unwrap();
            let second = ReplicaRecord::open(&path, Some(chain)).err().unwrap();
            assert!(matches!(second, StateFileError::InUse(_)), "{second}");
            assert!(second.to_string().contains("another Palisade process"), "{second}");
            m.record(&pk(1), &att(4, 5, 1), 2);
            m.record(
                &pk(2),
                &SlashableMessage::Block {
                    slot: Slot(9),
                    root: SigningRoot([3; 32]),
                },
                0,
            );
            m.set_database(Some("16384/7/00000001".into()));
            m.flush(Some(chain)).unwrap();
        }
        let m = ReplicaRecord::open(&path, Some(chain)).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.database().as_deref(), Some("16384/7/00000001"));
        assert!(m.check(&pk(1), &att(3, 4, 1)).is_some());
        let other = ReplicaRecord::open(&dir.path().join("x"), None).unwrap();
        drop(other);
        // Damaged or for another chain: started without it.
        drop(m);
        assert_eq!(
            ReplicaRecord::open(&path, Some(Root::from([8u8; 32]))).unwrap().len(),
            0
        );
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(ReplicaRecord::open(&path, Some(chain)).unwrap().len(), 0);
    }

    #[test]
    fn a_version_2_file_is_read_once_and_written_again_as_version_3() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replica-state.bin");
        let chain = Root::from([7u8; 32]);
        let floor = Floor {
            repairs: 1,
            block: Some((Slot(9), Some(SigningRoot([3; 32])))),
            attestation: Some((Epoch(4), Epoch(5), None)),
        };
        std::fs::write(&path, state_file::encode_v2(chain, Some("db-1"), &[(pk(1), floor)])).unwrap();
        let m = ReplicaRecord::open(&path, Some(chain)).unwrap();
        assert_eq!(m.snapshot(), vec![(pk(1), floor)]);
        assert_eq!(m.database().as_deref(), Some("db-1"));
        m.flush(Some(chain)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(r#""version":3"#) && text.contains(r#""sha256":"#),
            "{text}"
        );
        drop(m);
        let again = ReplicaRecord::open(&path, Some(chain)).unwrap();
        assert_eq!(again.snapshot(), vec![(pk(1), floor)]);
        drop(again);
        // Saved before any chain is pinned (an empty database): the file keeps its chain, and a
        // restart on that chain still has the record.
        let unpinned = ReplicaRecord::open(&path, None).unwrap();
        unpinned.record(&pk(2), &att(6, 7, 1), 0);
        unpinned.flush(None).unwrap();
        drop(unpinned);
        assert_eq!(ReplicaRecord::open(&path, Some(chain)).unwrap().len(), 2);
        // A version this build does not know (a newer Palisade's) is not guessed at.
        let newer = text.replace(r#""version":3"#, r#""version":4"#);
        let state = &newer[newer.find(r#""state":"#).unwrap() + 8..newer.rfind(r#","sha256""#).unwrap()];
        let sum = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(state.as_bytes()));
        std::fs::write(&path, format!(r#"{{"state":{state},"sha256":"{sum}"}}"#)).unwrap();
        assert_eq!(ReplicaRecord::open(&path, Some(chain)).unwrap().len(), 0);
    }
}
