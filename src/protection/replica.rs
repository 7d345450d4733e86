//! What this replica committed itself: per validator, the highest block and the highest
//! attestation it signed, in memory and in a small state file of its own.
//!
//! The shared database is the record every replica decides on. If it goes back in time (a
//! restored backup, a promoted asynchronous standby), it no longer holds what was signed
//! since, and any replica could sign a conflicting message. This memory catches that for
//! everything this replica signed: it never signs at or below its own record, it notices when
//! the database holds less than it committed, and it writes its record back so that the other
//! replicas are protected too. It cannot protect a message that only another replica signed,
//! nor one whose replica lost its state file as well.
//!
//! A repair by the operator lowers watermarks on purpose and bumps the validator's repair
//! count; memory older than the repair is dropped, never written back over it.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

use super::rules::{Refusal, Verdict, Watermarks};
use super::{Mark, Seen};
use crate::types::SlashableMessage;
use crate::types::{Epoch, PublicKey, Root, SigningRoot, Slot};

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

pub struct ReplicaMemory {
    floors: Mutex<HashMap<PublicKey, Floor>>,
    /// The identity of the database this record was last saved against (see `incarnation`).
    database: Mutex<Option<String>>,
    dirty: AtomicBool,
    file: Option<StateFile>,
}

struct StateFile {
    path: PathBuf,
    _lock: File,
}

const MAGIC: &[u8] = b"palisade-replica-state v2\n";
const ENTRY: usize = 48 + 4 + 1 + 8 + 32 + 1 + 8 + 8 + 32;

impl ReplicaMemory {
    /// Memory without a file (tests, tools).
    pub fn in_memory() -> Self {
        Self {
            floors: Mutex::default(),
            database: Mutex::default(),
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
        let (floors, database) = match std::fs::read(path) {
            Ok(bytes) => match decode(&bytes) {
                Ok((file_chain, database, floors)) if chain.is_none_or(|c| c == file_chain) => (floors, database),
                Ok((file_chain, _, _)) => {
                    tracing::warn!(file = %path.display(), %file_chain, "replica state is for another chain: starting without it");
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
        Ok(Self {
            floors: Mutex::new(floors),
            database: Mutex::new(database),
            dirty: AtomicBool::new(false),
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
    pub fn committed(&self, pk: &PublicKey, p: &SlashableMessage, seen: &Seen) -> Option<Rollback> {
        let mut floors = self.floors.lock().expect("replica memory");
        let rollback = Self::observe_locked(&mut floors, pk, seen);
        let floor = floors.entry(*pk).or_default();
        floor.repairs = floor.repairs.max(seen.repairs);
        floor.record(p);
        self.dirty.store(true, Ordering::Relaxed);
        rollback
    }

    /// Compares what the database held before a passed check with this replica's record.
    /// A newer repair count means an operator repaired the key since: the record is dropped.
    pub fn observe(&self, pk: &PublicKey, seen: &Seen) -> Option<Rollback> {
        let mut floors = self.floors.lock().expect("replica memory");
        let rollback = Self::observe_locked(&mut floors, pk, seen);
        self.dirty.store(true, Ordering::Relaxed);
        rollback
    }

    fn observe_locked(floors: &mut HashMap<PublicKey, Floor>, pk: &PublicKey, seen: &Seen) -> Option<Rollback> {
        let floor = *floors.get(pk)?;
        if seen.repairs > floor.repairs {
            floors.remove(pk);
            return None;
        }
        let behind = seen.repairs < floor.repairs
            || match seen.mark {
                Mark::Block(db) => floor.block.is_some_and(|(s, _)| db.is_none_or(|d| d < s)),
                Mark::Attestation { source, target } => floor
                    .attestation
                    .is_some_and(|(s, t, _)| target.is_none_or(|d| d < t) || source.is_none_or(|d| d < s)),
                Mark::AttestationTarget(target) => {
                    floor.attestation.is_some_and(|(_, t, _)| target.is_none_or(|d| d < t))
                }
            };
        behind.then(|| Rollback {
            pubkey: *pk,
            database: describe_seen(seen),
            replica: describe_floor(&floor),
        })
    }

    /// Compares the database's full watermarks of a validator with this replica's record
    /// (the startup and periodic sweep).
    pub fn compare(&self, pk: &PublicKey, db: &Watermarks) -> Option<Rollback> {
        let block = Seen {
            repairs: db.repairs,
            mark: Mark::Block(db.block_slot),
        };
        let attestation = Seen {
            repairs: db.repairs,
            mark: Mark::Attestation {
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
            chain.unwrap_or(Root::ZERO),
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

fn describe_seen(seen: &Seen) -> String {
    let mark = match seen.mark {
        Mark::Block(s) => format!("block slot {}", s.map_or("none".into(), |s| s.to_string())),
        Mark::Attestation { source, target } => format!(
            "attestation source {} target {}",
            source.map_or("none".into(), |s| s.to_string()),
            target.map_or("none".into(), |s| s.to_string())
        ),
        Mark::AttestationTarget(target) => {
            format!("attestation target {}", target.map_or("none".into(), |s| s.to_string()))
        }
    };
    format!("{mark} (repairs {})", seen.repairs)
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

// File format: MAGIC, the chain root, the database identity (u16 length, UTF-8), then
// fixed-size entries, then a SHA-256 of all before.

fn encode(chain: Root, database: Option<&str>, floors: &[(PublicKey, Floor)]) -> Vec<u8> {
    let database = database.unwrap_or("").as_bytes();
    let database = &database[..database.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(MAGIC.len() + 34 + database.len() + floors.len() * ENTRY + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&chain.0);
    out.extend_from_slice(&(database.len() as u16).to_le_bytes());
    out.extend_from_slice(database);
    for (pk, f) in floors {
        out.extend_from_slice(&pk.0);
        out.extend_from_slice(&f.repairs.to_le_bytes());
        let (slot, broot) = f.block.map_or((None, None), |(s, r)| (Some(s), r));
        out.push(slot.is_some() as u8 | (broot.is_some() as u8) << 1);
        out.extend_from_slice(&slot.map_or(0, |s| s.0).to_le_bytes());
        out.extend_from_slice(&broot.map_or([0; 32], |r| r.0));
        let (att, aroot) = f.attestation.map_or((None, None), |(s, t, r)| (Some((s, t)), r));
        out.push(att.is_some() as u8 | (aroot.is_some() as u8) << 1);
        out.extend_from_slice(&att.map_or(0, |a| a.0.0).to_le_bytes());
        out.extend_from_slice(&att.map_or(0, |a| a.1.0).to_le_bytes());
        out.extend_from_slice(&aroot.map_or([0; 32], |r| r.0));
    }
    let sum: [u8; 32] = Sha256::digest(&out).into();
    out.extend_from_slice(&sum);
    out
}

type Decoded = (Root, Option<String>, HashMap<PublicKey, Floor>);

fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    let body_len = bytes.len().checked_sub(32).ok_or("too short")?;
    let (body, sum) = bytes.split_at(body_len);
    if Sha256::digest(body).as_slice() != sum {
        return Err("checksum mismatch".into());
    }
    let rest = body.strip_prefix(MAGIC).ok_or("not a replica state file")?;
    if rest.len() < 34 {
        return Err("truncated".into());
    }
    let chain = Root::from_slice(&rest[..32]);
    let n = u16::from_le_bytes([rest[32], rest[33]]) as usize;
    let database = rest.get(34..34 + n).ok_or("truncated")?;
    let database = String::from_utf8(database.to_vec()).map_err(|_| "bad database identity")?;
    let rest = &rest[34 + n..];
    if !rest.len().is_multiple_of(ENTRY) {
        return Err("truncated".into());
    }
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let root_at = |b: &[u8], i: usize| SigningRoot(b[i..i + 32].try_into().expect("32 bytes"));
    let mut floors = HashMap::new();
    for e in rest.chunks(ENTRY) {
        let pk = PublicKey::from_slice(&e[..48]).expect("48 bytes");
        let repairs = u32::from_le_bytes(e[48..52].try_into().expect("4 bytes"));
        let bflags = e[52];
        let block = (bflags & 1 == 1).then(|| (Slot(u64_at(e, 53)), (bflags & 2 == 2).then(|| root_at(e, 61))));
        let aflags = e[93];
        let attestation = (aflags & 1 == 1).then(|| {
            (
                Epoch(u64_at(e, 94)),
                Epoch(u64_at(e, 102)),
                (aflags & 2 == 2).then(|| root_at(e, 110)),
            )
        });
        floors.insert(
            pk,
            Floor {
                repairs,
                block,
                attestation,
            },
        );
    }
    Ok((chain, (!database.is_empty()).then_some(database), floors))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pk(b: u8) -> PublicKey {
        PublicKey([b; 48])
    }
    fn att(s: u64, t: u64, r: u8) -> SlashableMessage {
        SlashableMessage::Attestation {
            source: Epoch(s),
            target: Epoch(t),
            root: SigningRoot([r; 32]),
        }
    }
    fn seen_att(s: u64, t: u64, repairs: u32) -> Seen {
        Seen {
            repairs,
            mark: Mark::Attestation {
                source: Some(Epoch(s)),
                target: Some(Epoch(t)),
            },
        }
    }

    #[test]
    fn refuses_below_its_own_record_and_spots_a_database_behind_it() {
        let m = ReplicaMemory::in_memory();
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
            let m = ReplicaMemory::open(&path, Some(chain)).unwrap();
            let second = ReplicaMemory::open(&path, Some(chain)).err().unwrap();
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
        let m = ReplicaMemory::open(&path, Some(chain)).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.database().as_deref(), Some("16384/7/00000001"));
        assert!(m.check(&pk(1), &att(3, 4, 1)).is_some());
        let other = ReplicaMemory::open(&dir.path().join("x"), None).unwrap();
        drop(other);
        // Damaged or for another chain: started without it.
        drop(m);
        assert_eq!(
            ReplicaMemory::open(&path, Some(Root::from([8u8; 32]))).unwrap().len(),
            0
        );
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(ReplicaMemory::open(&path, Some(chain)).unwrap().len(), 0);
    }
}
