//! What both storage backends share: the u64 <-> BIGINT map, row decoding, error
//! classification and export assembly.

use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Row, Type};

use super::ProtectionError;
use super::interchange::{FORMAT_VERSION, Interchange, Metadata, SignedAttestation, SignedBlock, ValidatorData};
use super::repair::{DiscardedAttestation, DiscardedBlock, RepairRequest, Repaired, plan};
use super::rules::Watermarks;
use crate::types::{Epoch, PublicKey, Root, SigningRoot, Slot};

/// The two history tables, for pruning: each row's position and the validator's watermark
/// it is measured against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum History {
    Blocks,
    Attestations,
}

impl History {
    /// (table, the row's slot or epoch column, the validator's watermark column)
    pub fn columns(self) -> (&'static str, &'static str, &'static str) {
        match self {
            History::Blocks => ("signed_blocks", "slot", "block_slot"),
            History::Attestations => ("signed_attestations", "target_epoch", "att_target"),
        }
    }
}

/// How often an operation is tried when the database is unreachable or the connection breaks.
pub const MAX_ATTEMPTS: usize = 4;

/// How often a transaction that lost a serialization race or a deadlock (40001, 40P01) is
/// tried. Under SERIALIZABLE these are routine, not failures: PostgreSQL's predicate locks
/// also abort some transactions that did not really conflict (small tables are scanned whole).
/// A retry re-runs the same check on the same message with a fresh snapshot, so it can never
/// yield a second, conflicting signature; the caller's timeout bounds the total.
pub const MAX_CONFLICTS: usize = 30;

/// Waits a little before retrying a serialization conflict: random, growing, at most 32 ms,
/// so that transactions that collided do not collide again in lockstep.
pub async fn conflict_pause(conflicts: usize) {
    use rand::Rng;
    let ceiling = 1u64 << conflicts.min(5);
    let ms = rand::rng().random_range(0..=ceiling);
    tokio::time::sleep(std::time::Duration::from_micros(ms * 1000 + 200)).await;
}

/// The retry policy of one database operation, in one place: serialization conflicts and
/// deadlocks are tried again up to `MAX_CONFLICTS` times after a short pause; an unreachable
/// database or a broken connection up to `failures` times in all; anything else is final.
pub struct Retries {
    conflicts: usize,
    failures: usize,
    max_failures: usize,
}

impl Retries {
    pub fn new(max_failures: usize) -> Self {
        Self {
            conflicts: 0,
            failures: 0,
            max_failures: max_failures.max(1),
        }
    }

    /// After a failed attempt: `Ok` to try again (a conflict has paused first), or the error
    /// to give up with.
    pub async fn again(&mut self, e: sqlx::Error) -> Result<(), ProtectionError> {
        match classify(e) {
            Failure::Retry(_) if self.conflicts < MAX_CONFLICTS => {
                self.conflicts += 1;
                conflict_pause(self.conflicts).await;
                Ok(())
            }
            Failure::Unavailable(m) => self.unavailable(m),
            Failure::Retry(m) => Err(self.give_up(m)),
            Failure::Internal(m) => Err(ProtectionError::Internal(m)),
        }
    }

    /// The database did not answer (or the operation could not go ahead for another
    /// passing reason): counts as a failed attempt.
    pub fn unavailable(&mut self, why: String) -> Result<(), ProtectionError> {
        self.failures += 1;
        if self.failures < self.max_failures {
            Ok(())
        } else {
            Err(self.give_up(why))
        }
    }

    /// Serialization conflicts and deadlocks met so far.
    pub fn conflicts(&self) -> usize {
        self.conflicts
    }

    fn give_up(&self, why: String) -> ProtectionError {
        let tries = self.conflicts + self.failures;
        if tries <= 1 {
            ProtectionError::Unavailable(why)
        } else {
            ProtectionError::Unavailable(format!("gave up after {tries} attempts: {why}"))
        }
    }
}

/// u64 -> i64 preserving order: u64 0 is i64::MIN, u64::MAX is i64::MAX. Every slot and epoch
/// fits, comparisons in SQL keep their meaning, nothing wraps.
pub const fn to_db(v: u64) -> i64 {
    (v ^ (1 << 63)) as i64
}

pub const fn from_db(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

/// Absent and all-zero roots are stored as NULL: they never equal anything.
pub fn root_to_db(root: Option<SigningRoot>) -> Option<Vec<u8>> {
    root.filter(|r| !r.is_zero()).map(|r| r.0.to_vec())
}

pub fn root_from_db(bytes: Option<Vec<u8>>) -> Option<SigningRoot> {
    bytes.and_then(|b| SigningRoot::from_slice(&b)).filter(|r| !r.is_zero())
}

pub fn pubkey_from_db(bytes: &[u8]) -> Result<PublicKey, ProtectionError> {
    PublicKey::from_slice(bytes).ok_or_else(|| ProtectionError::Internal("stored pubkey is not 48 bytes".into()))
}

pub fn chain_from_db(bytes: &[u8]) -> Result<Root, ProtectionError> {
    <[u8; 32]>::try_from(bytes)
        .map(Root::from)
        .map_err(|_| ProtectionError::Internal("stored genesis validators root is not 32 bytes".into()))
}

/// The columns `watermarks_from_row` reads, from `validators v`, with the high watermark in
/// force (the key's own, else the global one).
pub const WATERMARK_COLUMNS: &str = "v.enabled, v.block_slot, v.block_root, v.att_source, v.att_target, v.att_root, \
     v.att_root_source, CAST(v.repairs AS BIGINT) AS repairs, \
     COALESCE(v.high_slot, (SELECT slot FROM high_watermark)) AS high_slot, \
     COALESCE(v.high_epoch, (SELECT epoch FROM high_watermark)) AS high_epoch";

/// Reads the watermark columns of a `validators` row (either backend).
pub fn watermarks_from_row<R: Row>(row: &R) -> Result<Watermarks, sqlx::Error>
where
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<Vec<u8>>: Decode<'r, R::Database> + Type<R::Database>,
{
    let slot = |c: &str| -> Result<Option<u64>, sqlx::Error> { Ok(row.try_get::<Option<i64>, _>(c)?.map(from_db)) };
    Ok(Watermarks {
        enabled: row.try_get("enabled")?,
        block_slot: slot("block_slot")?.map(Slot),
        block_root: root_from_db(row.try_get("block_root")?),
        att_source: slot("att_source")?.map(Epoch),
        att_target: slot("att_target")?.map(Epoch),
        att_root: root_from_db(row.try_get("att_root")?),
        att_root_source: slot("att_root_source")?.map(Epoch),
        high_slot: slot("high_slot")?.map(Slot),
        high_epoch: slot("high_epoch")?.map(Epoch),
        repairs: row.try_get::<i64, _>("repairs")?.try_into().unwrap_or(u32::MAX),
    })
}

/// Bounds a database operation: a hung connection becomes a 503, never a hang.
pub async fn timed<T>(
    limit: std::time::Duration,
    f: impl Future<Output = Result<T, ProtectionError>>,
) -> Result<T, ProtectionError> {
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| {
        Err(ProtectionError::Unavailable(format!(
            "no answer within {} ms",
            limit.as_millis()
        )))
    })
}

/// How a database error should be handled.
pub enum Failure {
    /// Serialization failure or deadlock: run the transaction again.
    Retry(String),
    /// Connection or availability problem: refuse with 503 (and maybe retry once).
    Unavailable(String),
    /// Anything else, such as a constraint violation: refuse with 500.
    Internal(String),
}

pub fn classify(e: sqlx::Error) -> Failure {
    match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            match code.as_str() {
                // serialization_failure, deadlock_detected
                "40001" | "40P01" => Failure::Retry(db.message().to_string()),
                // connection exceptions, shutdown, recovery, read-only standby, lock timeouts,
                // insufficient resources; the replica's role refused or its database gone
                // (a password rotated, a role disabled: another replica may still sign);
                // SQLITE_BUSY / SQLITE_LOCKED.
                c if c.starts_with("08")
                    || c.starts_with("57")
                    || c.starts_with("53")
                    || c.starts_with("28")
                    || c == "3D000"
                    || c == "42501"
                    || c == "25006"
                    || c == "55P03"
                    || c == "5"
                    || c == "6" =>
                {
                    Failure::Unavailable(db.message().to_string())
                }
                _ => Failure::Internal(db.message().to_string()),
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Failure::Unavailable(e.to_string()),
        _ => Failure::Internal(e.to_string()),
    }
}

impl From<sqlx::Error> for ProtectionError {
    fn from(e: sqlx::Error) -> Self {
        match classify(e) {
            Failure::Retry(m) | Failure::Unavailable(m) => ProtectionError::Unavailable(m),
            Failure::Internal(m) => ProtectionError::Internal(m),
        }
    }
}

/// A row lock a repair could not take in time: signings keep holding it.
pub fn repair_lock_error(e: sqlx::Error) -> ProtectionError {
    if let sqlx::Error::Database(db) = &e
        && db.code().as_deref() == Some("55P03")
    {
        return ProtectionError::RepairRefused(
            "a validator named is being signed for right now: nothing was changed; try again".into(),
        );
    }
    e.into()
}

/// A block row (slot, root) as read for a repair.
pub type BlockRow = (i64, Option<Vec<u8>>);
/// An attestation row (source, target, root) as read for a repair.
pub type AttestationRow = (i64, i64, Option<Vec<u8>>);

/// The repair of one validator (`repair::plan`) from its watermarks and the history rows
/// above the new watermarks, as both backends read them.
pub fn plan_from_rows(
    req: &RepairRequest,
    pubkey: PublicKey,
    w: &Watermarks,
    blocks: Vec<BlockRow>,
    attestations: Vec<AttestationRow>,
) -> Result<Repaired, ProtectionError> {
    let blocks = blocks
        .into_iter()
        .map(|(slot, root)| DiscardedBlock {
            slot: Slot(from_db(slot)),
            signing_root: root_from_db(root),
        })
        .collect();
    let attestations = attestations
        .into_iter()
        .map(|(s, t, root)| DiscardedAttestation {
            source_epoch: Epoch(from_db(s)),
            target_epoch: Epoch(from_db(t)),
            signing_root: root_from_db(root),
        })
        .collect();
    plan(req, pubkey, w, blocks, attestations)
}

/// One validator's stored state, as read for an export.
pub struct StoredValidator {
    pub pubkey: PublicKey,
    pub watermarks: Watermarks,
    pub blocks: Vec<(Slot, Option<SigningRoot>)>,
    pub attestations: Vec<(Epoch, Epoch, Option<SigningRoot>)>,
}

/// Builds the EIP-3076 export: the retained history plus the watermarks, so that a
/// re-import protects at least as much as this database does even after pruning.
pub fn build_export(chain: Root, validators: Vec<StoredValidator>) -> Interchange {
    let data = validators
        .into_iter()
        .map(|v| {
            let w = &v.watermarks;
            let mut blocks: Vec<SignedBlock> = v
                .blocks
                .iter()
                .map(|(slot, root)| SignedBlock {
                    slot: *slot,
                    signing_root: *root,
                })
                .collect();
            if let Some(slot) = w.block_slot
                && !v.blocks.iter().any(|b| b.0 == slot)
            {
                blocks.push(SignedBlock {
                    slot,
                    signing_root: w.block_root,
                });
            }
            let mut attestations: Vec<SignedAttestation> = v
                .attestations
                .iter()
                .map(|(s, t, root)| SignedAttestation {
                    source_epoch: *s,
                    target_epoch: *t,
                    signing_root: *root,
                })
                .collect();
            if let (Some(source), Some(target)) = (w.att_source, w.att_target)
                && !v.attestations.iter().any(|a| a.0 == source && a.1 == target)
            {
                attestations.push(SignedAttestation {
                    source_epoch: source,
                    target_epoch: target,
                    signing_root: None,
                });
            }
            ValidatorData {
                pubkey: v.pubkey,
                signed_blocks: blocks,
                signed_attestations: attestations,
            }
        })
        .collect();
    Interchange {
        metadata: Metadata {
            interchange_format_version: FORMAT_VERSION.into(),
            genesis_validators_root: chain,
        },
        data,
    }
}

/// The columns of a repair's audit row, in the order `bind_audit` binds them.
pub const AUDIT_COLUMNS: &str = "validator_id, actor, reason, old_block_slot, old_att_source, old_att_target, \
     new_block_slot, new_att_source, new_att_target, discarded";

/// Binds a repair's audit row to `insert` (the backend's INSERT of `AUDIT_COLUMNS`).
pub fn bind_audit<'q, DB, Id>(
    insert: Query<'q, DB, <DB as Database>::Arguments<'q>>,
    id: Id,
    req: &'q RepairRequest,
    repaired: &Repaired,
) -> Query<'q, DB, <DB as Database>::Arguments<'q>>
where
    DB: Database,
    Id: Encode<'q, DB> + Type<DB> + 'q,
    &'q str: Encode<'q, DB> + Type<DB>,
    String: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
{
    let (b, a) = (repaired.before, repaired.after);
    insert
        .bind(id)
        .bind(req.actor.as_str())
        .bind(req.reason.as_str())
        .bind(b.block_slot.map(|s| to_db(s.0)))
        .bind(b.attestation_source.map(|e| to_db(e.0)))
        .bind(b.attestation_target.map(|e| to_db(e.0)))
        .bind(a.block_slot.map(|s| to_db(s.0)))
        .bind(a.attestation_source.map(|e| to_db(e.0)))
        .bind(a.attestation_target.map(|e| to_db(e.0)))
        .bind(repaired.discarded_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u64_map_preserves_order_and_range() {
        let samples = [
            0,
            1,
            2,
            1000,
            (1 << 32) - 1,
            1 << 32,
            (1 << 63) - 1,
            1 << 63,
            (1 << 63) + 1,
            u64::MAX - 1,
            u64::MAX,
        ];
        assert_eq!(to_db(0), i64::MIN);
        assert_eq!(to_db(u64::MAX), i64::MAX);
        for a in samples {
            assert_eq!(from_db(to_db(a)), a);
            for b in samples {
                assert_eq!(a.cmp(&b), to_db(a).cmp(&to_db(b)), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn export_adds_watermarks_missing_from_history() {
        let w = Watermarks {
            enabled: true,
            block_slot: Some(Slot(100)),
            att_source: Some(Epoch(7)),
            att_target: Some(Epoch(9)),
            ..Default::default()
        };
        let pk: PublicKey =
            "0xa99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c"
                .parse()
                .unwrap();
        let i = build_export(
            Root::ZERO,
            vec![StoredValidator {
                pubkey: pk,
                watermarks: w,
                blocks: vec![],
                attestations: vec![(Epoch(6), Epoch(9), None)],
            }],
        );
        let v = &i.data[0];
        assert_eq!(
            v.signed_blocks,
            vec![SignedBlock {
                slot: Slot(100),
                signing_root: None
            }]
        );
        assert_eq!(v.signed_attestations.len(), 2);
        assert!(
            v.signed_attestations
                .iter()
                .any(|a| a.source_epoch == Epoch(7) && a.target_epoch == Epoch(9))
        );
    }
}
