//! The operator's operations on SQLite, beside the signing path: EIP-3076 import and export,
//! watermark repairs, the high watermark and pruning, each in one immediate transaction.

use sqlx::{Connection, Row};

use super::{SqliteStore, finish, pin_chain, pinned_chain, row_for, write_watermarks};
use crate::protection::interchange::Interchange;
use crate::protection::repair::{RepairRequest, Repaired};
use crate::protection::sql::{
    AUDIT_COLUMNS, AttestationRow, BlockRow, History, StoredValidator, WATERMARK_COLUMNS, bind_audit, build_export,
    chain_from_db, from_db, plan_from_rows, pubkey_from_db, root_from_db, root_to_db, to_db, watermarks_from_row,
};
use crate::protection::{HighWatermarkChange, ProtectionError};
use crate::types::{Epoch, PublicKey, Root, Slot};

/// Rows (a validator's watermarks, one block, one attestation) per import transaction:
/// small enough that a signing waits for the writer a few milliseconds at most, large enough
/// that a big file imports at disk speed.
const IMPORT_ROWS: usize = 2_000;

impl SqliteStore {
    /// Imports in transactions of `IMPORT_ROWS` rows, so that signing for other keys goes on
    /// between them (SQLite has one writer). The file is validated and deduplicated whole
    /// before the first; a validator's watermarks are raised before its history is added, and
    /// an import only raises watermarks and adds history, so one cut short (an error, a crash)
    /// is safe to run again.
    pub async fn import(&self, interchange: &Interchange) -> Result<usize, ProtectionError> {
        let by_validator: Vec<_> = interchange.by_validator().into_iter().collect();
        let given = interchange.metadata.genesis_validators_root;
        let mut done = 0;
        let mut batch = ImportBatch::default();
        let result: Result<(), ProtectionError> = async {
            // The chain is checked even for a file without validators.
            batch.open(self, given).await?;
            for (pk, imported) in &by_validator {
                let conn = batch.open(self, given).await?;
                let (id, mut w) = row_for(conn, pk).await?;
                w.merge_import(imported.max_block, imported.max_source, imported.max_target);
                write_watermarks(conn, id, &w).await?;
                batch.rows += 1;
                for (slot, root) in &imported.blocks {
                    let conn = batch.open(self, given).await?;
                    sqlx::query(
                        "INSERT INTO signed_blocks (validator_id, slot, signing_root, imported)
                         VALUES (?, ?, ?, 1) ON CONFLICT DO NOTHING",
                    )
                    .bind(id)
                    .bind(to_db(slot.0))
                    .bind(root_to_db(*root))
                    .execute(&mut **conn)
                    .await?;
                    batch.rows += 1;
                }
                for (s, t, root) in &imported.attestations {
                    let conn = batch.open(self, given).await?;
                    sqlx::query(
                        "INSERT INTO signed_attestations (validator_id, source_epoch, target_epoch, signing_root, imported)
                         VALUES (?, ?, ?, ?, 1) ON CONFLICT DO NOTHING",
                    )
                    .bind(id)
                    .bind(to_db(s.0))
                    .bind(to_db(t.0))
                    .bind(root_to_db(*root))
                    .execute(&mut **conn)
                    .await?;
                    batch.rows += 1;
                }
                batch.validators += 1;
            }
            Ok(())
        }
        .await;
        let result = match result {
            Ok(()) => batch.commit().await,
            Err(e) => {
                batch.rollback().await;
                Err(e)
            }
        };
        done += batch.committed;
        match result {
            Ok(()) => Ok(by_validator.len()),
            Err(e) if done == 0 => Err(e),
            Err(e) => Err(ProtectionError::Internal(format!(
                "imported {done} of {} validators, then: {e}. Importing the file again is safe",
                by_validator.len()
            ))),
        }
    }
    pub async fn export(&self, pubkeys: Option<&[PublicKey]>) -> Result<Interchange, ProtectionError> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let (chain,): (Vec<u8>,) = sqlx::query_as("SELECT genesis_validators_root FROM chain")
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| {
                ProtectionError::Internal("the database is not pinned to a chain yet: nothing to export".into())
            })?;
        let rows = sqlx::query(&format!(
            "SELECT id, pubkey, {WATERMARK_COLUMNS} FROM validators v ORDER BY pubkey"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let wanted: Option<std::collections::HashSet<&PublicKey>> = pubkeys.map(|p| p.iter().collect());
        let mut out = Vec::new();
        for row in rows {
            let pubkey = pubkey_from_db(row.try_get::<&[u8], _>("pubkey")?)?;
            if wanted.as_ref().is_some_and(|w| !w.contains(&pubkey)) {
                continue;
            }
            let id: i64 = row.try_get("id")?;
            let blocks: Vec<BlockRow> =
                sqlx::query_as("SELECT slot, signing_root FROM signed_blocks WHERE validator_id = ? ORDER BY slot")
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
            let atts: Vec<AttestationRow> = sqlx::query_as(
                "SELECT source_epoch, target_epoch, signing_root FROM signed_attestations
                  WHERE validator_id = ? ORDER BY target_epoch",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            out.push(StoredValidator {
                pubkey,
                watermarks: watermarks_from_row(&row)?,
                blocks: blocks
                    .into_iter()
                    .map(|(s, r)| (Slot(from_db(s)), root_from_db(r)))
                    .collect(),
                attestations: atts
                    .into_iter()
                    .map(|(s, t, r)| (Epoch(from_db(s)), Epoch(from_db(t)), root_from_db(r)))
                    .collect(),
            });
        }
        tx.commit().await?;
        Ok(build_export(chain_from_db(&chain)?, out))
    }

    pub async fn high_watermark(&self) -> Result<Option<(Slot, Epoch)>, ProtectionError> {
        let row: Option<(i64, i64)> = sqlx::query_as("SELECT slot, epoch FROM high_watermark")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(s, e)| (Slot(from_db(s)), Epoch(from_db(e)))))
    }

    pub async fn set_high_watermark(&self, change: HighWatermarkChange<'_>) -> Result<(), ProtectionError> {
        let (value, pubkeys, actor) = (change.value, change.keys, change.actor);
        let (slot, epoch) = (value.map(|v| to_db(v.0.0)), value.map(|v| to_db(v.1.0)));
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        match (pubkeys, value) {
            (Some(keys), _) => {
                for pk in keys {
                    sqlx::query("UPDATE validators SET high_slot = ?, high_epoch = ? WHERE pubkey = ?")
                        .bind(slot)
                        .bind(epoch)
                        .bind(&pk.0[..])
                        .execute(&mut *tx)
                        .await?;
                }
            }
            (None, Some(_)) => {
                sqlx::query(
                    "INSERT INTO high_watermark (singleton, slot, epoch, actor) VALUES (1, ?1, ?2, ?3)
                     ON CONFLICT (singleton) DO UPDATE SET slot = ?1, epoch = ?2, actor = ?3,
                        set_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
                )
                .bind(slot)
                .bind(epoch)
                .bind(actor)
                .execute(&mut *tx)
                .await?;
            }
            (None, None) => {
                sqlx::query("DELETE FROM high_watermark").execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Applies a repair in one transaction. The one connection is also the signing writer's,
    /// so no signing runs while it does.
    pub async fn repair(&self, req: &RepairRequest) -> Result<Vec<Repaired>, ProtectionError> {
        let mut keys = req.pubkeys.clone();
        keys.sort();
        keys.dedup();
        let mut conn = self.pool.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let result = async {
            let new_block = req.block_slot.map(|s| to_db(s.0));
            let (new_source, new_target) = (
                req.attestation.map(|a| to_db(a.0.0)),
                req.attestation.map(|a| to_db(a.1.0)),
            );
            let sql = format!("SELECT id, {WATERMARK_COLUMNS} FROM validators v WHERE pubkey = ?");
            let mut done = Vec::with_capacity(keys.len());
            for pk in &keys {
                let row = sqlx::query(&sql)
                    .bind(&pk.0[..])
                    .fetch_optional(&mut *conn)
                    .await?
                    .ok_or_else(|| {
                        ProtectionError::InvalidRepair(format!("{pk} is not in the slashing-protection database"))
                    })?;
                let id: i64 = row.try_get("id")?;
                let blocks: Vec<BlockRow> = sqlx::query_as(
                    "SELECT slot, signing_root FROM signed_blocks
                      WHERE validator_id = ?1 AND ?2 IS NOT NULL AND slot > ?2 ORDER BY slot",
                )
                .bind(id)
                .bind(new_block)
                .fetch_all(&mut *conn)
                .await?;
                let atts: Vec<AttestationRow> = sqlx::query_as(
                    "SELECT source_epoch, target_epoch, signing_root FROM signed_attestations
                      WHERE validator_id = ?1 AND ?3 IS NOT NULL AND (target_epoch > ?3 OR source_epoch > ?2)
                      ORDER BY target_epoch",
                )
                .bind(id)
                .bind(new_source)
                .bind(new_target)
                .fetch_all(&mut *conn)
                .await?;
                let repaired = plan_from_rows(req, *pk, &watermarks_from_row(&row)?, blocks, atts)?;
                sqlx::query("DELETE FROM signed_blocks WHERE validator_id = ?1 AND ?2 IS NOT NULL AND slot > ?2")
                    .bind(id)
                    .bind(new_block)
                    .execute(&mut *conn)
                    .await?;
                sqlx::query(
                    "DELETE FROM signed_attestations
                      WHERE validator_id = ?1 AND ?3 IS NOT NULL AND (target_epoch > ?3 OR source_epoch > ?2)",
                )
                .bind(id)
                .bind(new_source)
                .bind(new_target)
                .execute(&mut *conn)
                .await?;
                sqlx::query(
                    "UPDATE validators
                        SET block_slot = COALESCE(?2, block_slot),
                            block_root = CASE WHEN ?2 IS NULL THEN block_root END,
                            att_source = COALESCE(?3, att_source),
                            att_target = COALESCE(?4, att_target),
                            att_root = CASE WHEN ?4 IS NULL THEN att_root END,
                            att_root_source = CASE WHEN ?4 IS NULL THEN att_root_source END,
                            repairs = repairs + 1,
                            updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                      WHERE id = ?1",
                )
                .bind(id)
                .bind(new_block)
                .bind(new_source)
                .bind(new_target)
                .execute(&mut *conn)
                .await?;
                let insert =
                    format!("INSERT INTO watermark_repairs ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
                bind_audit(sqlx::query(&insert), id, req, &repaired)
                    .execute(&mut *conn)
                    .await?;
                done.push(repaired);
            }
            Ok(done)
        }
        .await;
        finish(&mut conn, result).await
    }

    /// Deletes the `history` rows more than `keep` below their validator's watermark (which
    /// cannot underflow: below `to_db(keep)` nothing is old enough).
    pub async fn prune_history(&self, history: History, keep: u64) -> Result<u64, ProtectionError> {
        let (table, column, watermark) = history.columns();
        let sql = format!(
            "DELETE FROM {table} WHERE EXISTS (
               SELECT 1 FROM validators v WHERE v.id = {table}.validator_id
                  AND v.{watermark} >= ?2 AND {table}.{column} < v.{watermark} - ?1)"
        );
        Ok(sqlx::query(&sql)
            .bind(keep.min(i64::MAX as u64) as i64)
            .bind(to_db(keep))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}

/// The open transaction of an import, committed every `IMPORT_ROWS` rows.
#[derive(Default)]
struct ImportBatch {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Sqlite>>,
    rows: usize,
    /// Validators written whole in this transaction, and in committed ones.
    validators: usize,
    committed: usize,
}

impl ImportBatch {
    /// The open transaction, after committing a full one: a new one starts with the chain
    /// check (pinning an unpinned database to the file's chain, never to the zero root).
    async fn open(
        &mut self,
        store: &SqliteStore,
        given: Root,
    ) -> Result<&mut sqlx::pool::PoolConnection<sqlx::Sqlite>, ProtectionError> {
        if self.rows >= IMPORT_ROWS {
            self.commit().await?;
            // Let a signing waiting for the writer go first.
            tokio::task::yield_now().await;
        }
        if self.conn.is_none() {
            let mut conn = store.pool.acquire().await?;
            sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
            let pinned = match given {
                Root::ZERO => pinned_chain(&mut conn).await?.ok_or(ProtectionError::ZeroChain),
                _ => pin_chain(&mut conn, given).await,
            };
            let pinned = match pinned {
                Ok(p) => p,
                Err(e) => {
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    return Err(e);
                }
            };
            if pinned != given {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                return Err(ProtectionError::WrongChain { pinned, given });
            }
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("opened above"))
    }

    async fn commit(&mut self) -> Result<(), ProtectionError> {
        if let Some(mut conn) = self.conn.take() {
            finish(&mut conn, Ok(())).await?;
        }
        self.committed += self.validators;
        self.validators = 0;
        self.rows = 0;
        Ok(())
    }

    async fn rollback(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        }
        self.validators = 0;
        self.rows = 0;
    }
}
