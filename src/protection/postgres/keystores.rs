//! Keystores shared through the database (`shared_keystores`): stored, listed and deleted in
//! transactions that also bump the generation replicas poll. The rows are opaque here:
//! sealing and unsealing is the keys' business.

use super::{BEGIN, PgStore, TxError, retrying};
use crate::protection::sql::{pubkey_from_db, timed};
use crate::protection::{ProtectionError, StoredKeystore};
use crate::types::PublicKey;

impl PgStore {
    pub async fn keystore_generation(&self) -> Result<i64, ProtectionError> {
        timed(self.timeout, async {
            let (g,): (i64,) = sqlx::query_as("SELECT generation FROM shared_keystores_generation")
                .fetch_one(&self.pool)
                .await?;
            Ok(g)
        })
        .await
    }

    pub async fn fleet_secret_id(&self) -> Result<Option<String>, ProtectionError> {
        timed(self.timeout, async {
            let row: Option<(String,)> = sqlx::query_as("SELECT secret_id FROM fleet_secret")
                .fetch_optional(&self.pool)
                .await?;
            Ok(row.map(|(id,)| id))
        })
        .await
    }

    /// The generation and the rows, from one snapshot: what a replica read is exactly what that
    /// generation holds.
    pub async fn stored_keystores(&self) -> Result<(i64, Vec<StoredKeystore>), ProtectionError> {
        timed(self.timeout * 4, async {
            let mut tx = self
                .pool
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .await?;
            let (generation,): (i64,) = sqlx::query_as("SELECT generation FROM shared_keystores_generation")
                .fetch_one(&mut *tx)
                .await?;
            let rows: Vec<(Vec<u8>, String, Vec<u8>, String)> = sqlx::query_as(
                "SELECT pubkey, keystore, sealed_password, sealed_with FROM shared_keystores ORDER BY pubkey",
            )
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            let rows = rows
                .into_iter()
                .map(|(pk, keystore, sealed_password, sealed_with)| {
                    Ok(StoredKeystore {
                        pubkey: pubkey_from_db(&pk)?,
                        keystore,
                        sealed_password,
                        sealed_with,
                    })
                })
                .collect::<Result<Vec<_>, ProtectionError>>()?;
            Ok((generation, rows))
        })
        .await
    }

    /// Stores (or replaces) keystores sealed with `secret_id`, pinning the database to that
    /// fleet secret if it is not pinned yet; refused, storing nothing, if it is pinned to
    /// another.
    pub async fn store_keystores(
        &self,
        rows: &[StoredKeystore],
        secret_id: &str,
        replica: &str,
    ) -> Result<(), ProtectionError> {
        timed(self.timeout * 4, retrying(|| self.store_once(rows, secret_id, replica))).await
    }

    async fn store_once(&self, rows: &[StoredKeystore], secret_id: &str, replica: &str) -> Result<(), TxError> {
        let mut tx = self.pool.begin_with(BEGIN).await?;
        sqlx::query("INSERT INTO fleet_secret (secret_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(secret_id)
            .execute(&mut *tx)
            .await?;
        let (pinned,): (String,) = sqlx::query_as("SELECT secret_id FROM fleet_secret")
            .fetch_one(&mut *tx)
            .await?;
        if pinned != secret_id {
            return Err(TxError::Refused(ProtectionError::FleetSecretMismatch {
                pinned,
                ours: secret_id.to_string(),
            }));
        }
        for r in rows {
            sqlx::query(
                "INSERT INTO shared_keystores (pubkey, keystore, sealed_password, sealed_with, imported_by)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (pubkey) DO UPDATE SET keystore = EXCLUDED.keystore,
                     sealed_password = EXCLUDED.sealed_password, sealed_with = EXCLUDED.sealed_with,
                     imported_at = now(), imported_by = EXCLUDED.imported_by",
            )
            .bind(&r.pubkey.0[..])
            .bind(&r.keystore)
            .bind(&r.sealed_password)
            .bind(&r.sealed_with)
            .bind(replica)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE shared_keystores_generation SET generation = generation + 1")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the stored keystores of `pubkeys`; returns how many there were.
    pub async fn delete_stored_keystores(&self, pubkeys: &[PublicKey]) -> Result<u64, ProtectionError> {
        let keys: Vec<Vec<u8>> = pubkeys.iter().map(|p| p.0.to_vec()).collect();
        timed(
            self.timeout * 4,
            retrying(|| async {
                let mut tx = self.pool.begin_with(BEGIN).await?;
                let deleted = sqlx::query("DELETE FROM shared_keystores WHERE pubkey = ANY($1)")
                    .bind(&keys)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if deleted > 0 {
                    sqlx::query("UPDATE shared_keystores_generation SET generation = generation + 1")
                        .execute(&mut *tx)
                        .await?;
                    // With no keystore left, nothing is sealed with the fleet secret: another
                    // one may be used from now on (how a fleet rotates its secret).
                    sqlx::query("DELETE FROM fleet_secret WHERE NOT EXISTS (SELECT 1 FROM shared_keystores)")
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(deleted)
            }),
        )
        .await
    }
}
