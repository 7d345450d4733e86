//! The operator's operations on PostgreSQL, beside the signing path: EIP-3076 import and
//! export, watermark repairs, the high watermark and pruning. Multi-statement transactions say
//! `BEGIN ISOLATION LEVEL SERIALIZABLE` themselves and lock rows in pubkey order.

use sqlx::Row;

use sqlx::postgres::PgRow;

use super::{BEGIN, PgStore, REGISTER, TxError, retrying};
use crate::protection::interchange::Interchange;
use crate::protection::repair::{RepairRequest, Repaired};
use crate::protection::rules::Watermarks;
use crate::protection::sql::{
    AUDIT_COLUMNS, AttestationRow, BlockRow, History, Retries, StoredValidator, WATERMARK_COLUMNS, bind_audit,
    build_export, chain_from_db, from_db, plan_from_rows, pubkey_from_db, repair_lock_error, root_from_db, root_to_db,
    timed, to_db, watermarks_from_row,
};
use crate::protection::{HighWatermarkChange, ProtectionError};
use crate::types::{Epoch, PublicKey, Root, Slot};

/// New watermarks of a repair ($2 block slot, $3/$4 attestation source/target; NULL keeps the
/// current value). Roots are cleared: nothing below a repaired watermark is repeatable.
const REPAIR_VALIDATOR: &str = "
UPDATE validators
   SET block_slot = COALESCE($2, block_slot),
       block_root = CASE WHEN $2::bigint IS NULL THEN block_root END,
       att_source = COALESCE($3, att_source),
       att_target = COALESCE($4, att_target),
       att_root = CASE WHEN $4::bigint IS NULL THEN att_root END,
       att_root_source = CASE WHEN $4::bigint IS NULL THEN att_root_source END,
       repairs = repairs + 1, updated_at = now()
 WHERE id = $1";

impl PgStore {
    pub async fn import(&self, interchange: &Interchange) -> Result<usize, ProtectionError> {
        retrying(|| self.import_once(interchange)).await
    }

    /// One all-or-nothing import transaction: pin check, register, lock the validators'
    /// rows in pubkey order, merge, write history.
    async fn import_once(&self, interchange: &Interchange) -> Result<usize, TxError> {
        let by_validator = interchange.by_validator();
        let mut tx = self.pool.begin_with(BEGIN).await?;
        let given = interchange.metadata.genesis_validators_root;
        // An import pins an unpinned database to its chain, in its own transaction; never
        // to the zero root.
        if given != Root::ZERO {
            sqlx::query("INSERT INTO chain (genesis_validators_root) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind(&given.0[..])
                .execute(&mut *tx)
                .await?;
        }
        let pinned: Option<(Vec<u8>,)> = sqlx::query_as("SELECT genesis_validators_root FROM chain")
            .fetch_optional(&mut *tx)
            .await?;
        let pinned = pinned.ok_or(TxError::Refused(ProtectionError::ZeroChain))?;
        let pinned = chain_from_db(&pinned.0).map_err(TxError::Refused)?;
        if pinned != given {
            return Err(TxError::Refused(ProtectionError::WrongChain { pinned, given }));
        }

        let keys: Vec<Vec<u8>> = by_validator.keys().map(|p| p.0.to_vec()).collect();
        for chunk in keys.chunks(5000) {
            sqlx::query(REGISTER).bind(chunk).execute(&mut *tx).await?;
        }
        let rows: Vec<PgRow> = sqlx::query(&format!(
            "SELECT id, pubkey, {WATERMARK_COLUMNS}
               FROM validators v WHERE pubkey = ANY($1) ORDER BY pubkey FOR UPDATE OF v"
        ))
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await?;

        let mut upd = WatermarkColumns::default();
        let mut blocks = (Vec::new(), Vec::new(), Vec::new());
        let mut atts = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            let id: i32 = row.try_get("id")?;
            let pk = pubkey_from_db(row.try_get::<&[u8], _>("pubkey")?).map_err(TxError::Refused)?;
            let imported = &by_validator[&pk];
            let mut w = watermarks_from_row(row)?;
            w.merge_import(imported.max_block, imported.max_source, imported.max_target);
            upd.push(id, &w);
            for (slot, root) in &imported.blocks {
                blocks.0.push(id);
                blocks.1.push(to_db(slot.0));
                blocks.2.push(root_to_db(*root));
            }
            for (s, t, root) in &imported.attestations {
                atts.0.push(id);
                atts.1.push(to_db(s.0));
                atts.2.push(to_db(t.0));
                atts.3.push(root_to_db(*root));
            }
        }
        sqlx::query(
            "UPDATE validators v SET block_slot = u.bs, block_root = u.br, att_source = u.sa,
                    att_target = u.ta, att_root = u.ar, att_root_source = u.ars, updated_at = now()
               FROM UNNEST($1::int[], $2::bigint[], $3::bytea[], $4::bigint[], $5::bigint[], $6::bytea[], $7::bigint[])
                    AS u(id, bs, br, sa, ta, ar, ars)
              WHERE v.id = u.id",
        )
        .bind(&upd.id)
        .bind(&upd.block_slot)
        .bind(&upd.block_root)
        .bind(&upd.att_source)
        .bind(&upd.att_target)
        .bind(&upd.att_root)
        .bind(&upd.att_root_source)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO signed_blocks (validator_id, slot, signing_root, imported)
             SELECT id, slot, root, TRUE FROM UNNEST($1::int[], $2::bigint[], $3::bytea[]) AS u(id, slot, root)
             ON CONFLICT DO NOTHING",
        )
        .bind(&blocks.0)
        .bind(&blocks.1)
        .bind(&blocks.2)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO signed_attestations (validator_id, source_epoch, target_epoch, signing_root, imported)
             SELECT id, s, t, root, TRUE FROM UNNEST($1::int[], $2::bigint[], $3::bigint[], $4::bytea[]) AS u(id, s, t, root)
             ON CONFLICT DO NOTHING",
        )
        .bind(&atts.0)
        .bind(&atts.1)
        .bind(&atts.2)
        .bind(&atts.3)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(by_validator.len())
    }

    pub async fn export(&self, pubkeys: Option<&[PublicKey]>) -> Result<Interchange, ProtectionError> {
        retrying(|| self.export_once(pubkeys)).await
    }

    async fn export_once(&self, pubkeys: Option<&[PublicKey]>) -> Result<Interchange, TxError> {
        // One consistent snapshot for the three reads.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY")
            .await?;
        let (chain,): (Vec<u8>,) = sqlx::query_as("SELECT genesis_validators_root FROM chain")
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| {
                ProtectionError::Internal("the database is not pinned to a chain yet: nothing to export".into())
            })?;
        let filter: Option<Vec<Vec<u8>>> = pubkeys.map(|p| p.iter().map(|k| k.0.to_vec()).collect());
        let rows = sqlx::query(&format!(
            "SELECT id, pubkey, {WATERMARK_COLUMNS}
               FROM validators v WHERE ($1::bytea[] IS NULL OR pubkey = ANY($1)) ORDER BY id"
        ))
        .bind(&filter)
        .fetch_all(&mut *tx)
        .await?;
        let ids: Vec<i32> = rows.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?;
        let blocks: Vec<(i32, i64, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT validator_id, slot, signing_root FROM signed_blocks
              WHERE validator_id = ANY($1) ORDER BY validator_id, slot",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let atts: Vec<(i32, i64, i64, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT validator_id, source_epoch, target_epoch, signing_root FROM signed_attestations
              WHERE validator_id = ANY($1) ORDER BY validator_id, target_epoch",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;

        // A merge join: validators and their history are all in validator id order.
        let mut out = Vec::with_capacity(rows.len());
        let (mut bi, mut ai) = (0, 0);
        for (row, id) in rows.iter().zip(&ids) {
            let mut v = StoredValidator {
                pubkey: pubkey_from_db(row.try_get::<&[u8], _>("pubkey")?)?,
                watermarks: watermarks_from_row(row)?,
                blocks: Vec::new(),
                attestations: Vec::new(),
            };
            while bi < blocks.len() && blocks[bi].0 == *id {
                v.blocks
                    .push((Slot(from_db(blocks[bi].1)), root_from_db(blocks[bi].2.clone())));
                bi += 1;
            }
            while ai < atts.len() && atts[ai].0 == *id {
                let a = &atts[ai];
                v.attestations
                    .push((Epoch(from_db(a.1)), Epoch(from_db(a.2)), root_from_db(a.3.clone())));
                ai += 1;
            }
            out.push(v);
        }
        out.sort_by_key(|v| v.pubkey);
        Ok(build_export(chain_from_db(&chain)?, out))
    }

    pub async fn high_watermark(&self) -> Result<Option<(Slot, Epoch)>, ProtectionError> {
        timed(self.timeout, async {
            let row: Option<(i64, i64)> = sqlx::query_as("SELECT slot, epoch FROM high_watermark")
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.map(|(s, e)| (Slot(from_db(s)), Epoch(from_db(e)))))
        })
        .await
    }

    pub async fn set_high_watermark(&self, change: HighWatermarkChange<'_>) -> Result<(), ProtectionError> {
        let (value, pubkeys, actor) = (change.value, change.keys, change.actor);
        let (slot, epoch) = (value.map(|v| to_db(v.0.0)), value.map(|v| to_db(v.1.0)));
        timed(self.timeout, async {
            match (pubkeys, value) {
                (Some(keys), _) => {
                    let keys: Vec<Vec<u8>> = keys.iter().map(|p| p.0.to_vec()).collect();
                    sqlx::query("UPDATE validators SET high_slot = $2, high_epoch = $3 WHERE pubkey = ANY($1)")
                        .bind(&keys)
                        .bind(slot)
                        .bind(epoch)
                        .execute(&self.pool)
                        .await?;
                }
                (None, Some(_)) => {
                    sqlx::query(
                        "INSERT INTO high_watermark (slot, epoch, actor) VALUES ($1, $2, $3)
                         ON CONFLICT (singleton) DO UPDATE SET slot = $1, epoch = $2, actor = $3, set_at = now()",
                    )
                    .bind(slot)
                    .bind(epoch)
                    .bind(actor)
                    .execute(&self.pool)
                    .await?;
                }
                (None, None) => {
                    sqlx::query("DELETE FROM high_watermark").execute(&self.pool).await?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Applies a repair in one transaction; see `repair.rs`.
    pub async fn repair(&self, req: &RepairRequest) -> Result<Vec<Repaired>, ProtectionError> {
        retrying(|| self.repair_once(req)).await
    }

    async fn repair_once(&self, req: &RepairRequest) -> Result<Vec<Repaired>, TxError> {
        let mut keys: Vec<Vec<u8>> = req.pubkeys.iter().map(|p| p.0.to_vec()).collect();
        keys.sort();
        keys.dedup();
        let mut tx = self.pool.begin_with(BEGIN).await?;
        // A signing holds a validator's row for one statement (a group-commit batch locks
        // every member's row, refused ones too): wait that long, not for a stuck holder.
        sqlx::query("SET LOCAL lock_timeout = '500ms'")
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(&format!(
            "SELECT id, pubkey, {WATERMARK_COLUMNS} FROM validators v
              WHERE pubkey = ANY($1) ORDER BY pubkey FOR UPDATE OF v"
        ))
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| match e {
            // A serialization failure is retried like any other.
            sqlx::Error::Database(ref db) if db.code().as_deref() != Some("55P03") => TxError::Db(e),
            e => TxError::Refused(repair_lock_error(e)),
        })?;
        if rows.len() < keys.len() {
            return Err(ProtectionError::InvalidRepair(
                "a validator named is not in the slashing-protection database".into(),
            )
            .into());
        }
        let new_block = req.block_slot.map(|s| to_db(s.0));
        let (new_source, new_target) = (
            req.attestation.map(|a| to_db(a.0.0)),
            req.attestation.map(|a| to_db(a.1.0)),
        );
        let mut done = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i32 = row.try_get("id")?;
            let pubkey = pubkey_from_db(row.try_get::<&[u8], _>("pubkey")?)?;
            let blocks: Vec<BlockRow> = sqlx::query_as(
                "SELECT slot, signing_root FROM signed_blocks
                  WHERE validator_id = $1 AND $2::bigint IS NOT NULL AND slot > $2 ORDER BY slot",
            )
            .bind(id)
            .bind(new_block)
            .fetch_all(&mut *tx)
            .await?;
            let atts: Vec<AttestationRow> = sqlx::query_as(
                "SELECT source_epoch, target_epoch, signing_root FROM signed_attestations
                  WHERE validator_id = $1 AND $3::bigint IS NOT NULL AND (target_epoch > $3 OR source_epoch > $2)
                  ORDER BY target_epoch",
            )
            .bind(id)
            .bind(new_source)
            .bind(new_target)
            .fetch_all(&mut *tx)
            .await?;
            let repaired = plan_from_rows(req, pubkey, &watermarks_from_row(row)?, blocks, atts)?;
            sqlx::query("DELETE FROM signed_blocks WHERE validator_id = $1 AND $2::bigint IS NOT NULL AND slot > $2")
                .bind(id)
                .bind(new_block)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "DELETE FROM signed_attestations
                  WHERE validator_id = $1 AND $3::bigint IS NOT NULL AND (target_epoch > $3 OR source_epoch > $2)",
            )
            .bind(id)
            .bind(new_source)
            .bind(new_target)
            .execute(&mut *tx)
            .await?;
            sqlx::query(REPAIR_VALIDATOR)
                .bind(id)
                .bind(new_block)
                .bind(new_source)
                .bind(new_target)
                .execute(&mut *tx)
                .await?;
            let insert = format!(
                "INSERT INTO watermark_repairs ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            );
            bind_audit(sqlx::query(&insert), id, req, &repaired)
                .execute(&mut *tx)
                .await?;
            done.push(repaired);
        }
        tx.commit().await?;
        Ok(done)
    }

    /// Deletes the `history` rows more than `keep` below their validator's watermark, in
    /// small batches so that no DELETE blocks signing for long.
    pub async fn prune_history(&self, history: History, keep: u64) -> Result<u64, ProtectionError> {
        let (table, column, watermark) = history.columns();
        // `watermark - keep` cannot underflow: below `to_db(keep)` nothing is old enough.
        let sql = format!(
            "DELETE FROM {table} WHERE ctid = ANY(ARRAY(
               SELECT h.ctid FROM {table} h JOIN validators v ON v.id = h.validator_id
                WHERE v.{watermark} >= $2 AND h.{column} < v.{watermark} - $1
                LIMIT 5000))"
        );
        let mut deleted = 0;
        // Pruning yields to signing: a serialization conflict is tried again later.
        let mut retries = Retries::new(1);
        loop {
            let n = match sqlx::query(&sql)
                .bind(keep.min(i64::MAX as u64) as i64)
                .bind(to_db(keep))
                .execute(&self.pool)
                .await
            {
                Ok(r) => r.rows_affected(),
                Err(e) => {
                    retries.again(e).await?;
                    continue;
                }
            };
            deleted += n;
            if n == 0 {
                return Ok(deleted);
            }
        }
    }
}

/// Column arrays for one bulk watermark UPDATE.
#[derive(Default)]
struct WatermarkColumns {
    id: Vec<i32>,
    block_slot: Vec<Option<i64>>,
    block_root: Vec<Option<Vec<u8>>>,
    att_source: Vec<Option<i64>>,
    att_target: Vec<Option<i64>>,
    att_root: Vec<Option<Vec<u8>>>,
    att_root_source: Vec<Option<i64>>,
}

impl WatermarkColumns {
    fn push(&mut self, id: i32, w: &Watermarks) {
        self.id.push(id);
        self.block_slot.push(w.block_slot.map(|s| to_db(s.0)));
        self.block_root.push(root_to_db(w.block_root));
        self.att_source.push(w.att_source.map(|e| to_db(e.0)));
        self.att_target.push(w.att_target.map(|e| to_db(e.0)));
        self.att_root.push(root_to_db(w.att_root));
        self.att_root_source.push(w.att_root_source.map(|e| to_db(e.0)));
    }
}
