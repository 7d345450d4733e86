//! PostgreSQL backend, shared by any number of Palisade replicas.
//!
//! Every transaction runs at SERIALIZABLE: the connections' default is set at connect time,
//! multi-statement transactions say so in their own `BEGIN`, and every signing statement
//! checks the level it actually ran at (a pooler that drops the setting makes it write nothing
//! and fail, never sign at a lower level).
//!
//! Blocks and attestations are checked and recorded by the group commit (`batch`): one
//! statement and one transaction for whatever arrived while the previous commit was in
//! flight, each validator's part a conditional UPDATE of its watermark row that matches only
//! when the message is safe, chained with the history INSERT. Why two replicas can never both
//! sign conflicting messages:
//! - The row lock serialises them: the second waits for the first to commit.
//! - Under SERIALIZABLE the second then fails with a serialization error (40001) rather than
//!   reading a row that changed after its snapshot; nothing of its statement is written. The
//!   retry takes a fresh snapshot, sees the first one's commit and is either a repeat of the
//!   same message (same root: the same signature again) or refused. A retry can never produce a
//!   second, different signature, because the only write that allows a signature is the
//!   matched UPDATE, and it is evaluated against the latest committed row.
//! - A connection that dies mid-statement may or may not have committed; running the same
//!   check again is safe for the same reason (a committed record turns into a repeat).
//!
//! Only when the UPDATE matches nothing is the row read again, to tell a repeat from a refusal
//! and to explain the refusal. Transactions that lock several rows (imports, repairs) lock them
//! in pubkey order, so they cannot deadlock each other; deadlocks (40P01) are retried all the
//! same.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};

mod batch;

use super::incarnation::{IDENTITY_QUERY, Incarnation};
use super::interchange::Interchange;
use super::repair::{RepairRequest, Repaired, plan};
use super::rules::Watermarks;
use super::sql::{
    AUDIT_COLUMNS, History, MAX_ATTEMPTS, Retries, StoredValidator, WATERMARK_COLUMNS, bind_audit, build_export,
    chain_from_db, discarded_attestation, discarded_block, from_db, pubkey_from_db, repair_lock_error, root_from_db,
    root_to_db, timed, to_db, watermarks_from_row,
};
use super::{Checked, DbOptions, Durability, ProtectionError, redact_url};
use crate::types::SlashableMessage;
use crate::types::{Epoch, PublicKey, Root, Slot};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

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

/// How every multi-statement transaction starts: the level is in the statement itself, so no
/// pooler or session setting can lower it.
pub(super) const BEGIN: &str = "BEGIN ISOLATION LEVEL SERIALIZABLE";

/// Inserts missing pubkeys in sorted order (so replicas registering the same keys at once
/// cannot deadlock). No `NOT EXISTS` read before the insert: under SERIALIZABLE that read
/// would conflict with every other registration landing on the same index page.
const REGISTER: &str = "
INSERT INTO validators (pubkey)
SELECT p FROM UNNEST($1::bytea[]) AS t(p)
 ORDER BY p
ON CONFLICT (pubkey) DO NOTHING";

pub(super) fn not_serializable(level: &str) -> String {
    format!(
        "the database ran a transaction at `{level}`, not SERIALIZABLE: something between Palisade and \
         PostgreSQL drops the connection's settings (PgBouncer in transaction mode with \
         `ignore_startup_parameters = options`?). Connect Palisade to PostgreSQL directly, or through \
         session pooling that passes the `options` startup parameter"
    )
}

/// A pool whose every new connection reports which database it reached.
fn pool_options(incarnation: &Arc<Incarnation>, size: u32, timeout: Duration) -> PgPoolOptions {
    let seen = incarnation.clone();
    PgPoolOptions::new()
        .after_connect(move |conn, _| {
            let seen = seen.clone();
            Box::pin(async move {
                let (identity,): (String,) = sqlx::query_as(IDENTITY_QUERY).fetch_one(&mut *conn).await?;
                seen.observe(identity);
                Ok(())
            })
        })
        .max_connections(size)
        .min_connections(1)
        .acquire_timeout(timeout)
        // A dead connection shows up as an error on use and is replaced, so no ping before
        // every acquire.
        .test_before_acquire(false)
        .idle_timeout(Duration::from_secs(300))
}

/// Blocks and attestations wait while the database was just found to be another one.
fn refuse_while_held(incarnation: &Incarnation) -> Result<(), ProtectionError> {
    match incarnation.held() {
        Some(left) => Err(ProtectionError::Unavailable(format!(
            "the database changed (restored or failed over): blocks and attestations are held for up to {} ms \
             more while replicas check it against what they signed",
            left.as_millis()
        ))),
        None => Ok(()),
    }
}

/// Gives every pubkey its row (idempotent; replicas may register the same keys at once).
async fn register_keys(pool: &PgPool, timeout: Duration, pubkeys: &[PublicKey]) -> Result<(), ProtectionError> {
    let mut sorted: Vec<Vec<u8>> = pubkeys.iter().map(|p| p.0.to_vec()).collect();
    sorted.sort();
    sorted.dedup();
    // Known keys are left out first (in its own read-only statement), so that restarts do
    // not burn identity values on inserts that conflict.
    let known: Vec<(Vec<u8>,)> = timed(timeout * 4, async {
        Ok(sqlx::query_as("SELECT pubkey FROM validators WHERE pubkey = ANY($1)")
            .bind(&sorted)
            .fetch_all(pool)
            .await?)
    })
    .await?;
    let known: std::collections::HashSet<Vec<u8>> = known.into_iter().map(|(k,)| k).collect();
    sorted.retain(|k| !known.contains(k));
    for chunk in sorted.chunks(5000) {
        let mut retries = Retries::new(1);
        while let Err(e) = timed(timeout, async {
            Ok(sqlx::query(REGISTER).bind(chunk).execute(pool).await)
        })
        .await?
        {
            retries.again(e).await?;
        }
    }
    Ok(())
}

/// The innermost cause of a connection error ("Connection refused", a TLS or auth failure).
fn cause(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

pub struct PgStore {
    pool: PgPool,
    timeout: Duration,
    pub incarnation: Arc<Incarnation>,
    /// Blocks and attestations go through the group commit.
    batcher: batch::Batcher,
}

impl PgStore {
    pub async fn open(url: &str, opts: &DbOptions) -> Result<Self, ProtectionError> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| ProtectionError::Internal(format!("invalid database URL {}: {e}", redact_url(url))))?
            .application_name("palisade")
            // A transaction left open by a paused or partitioned replica must not hold
            // validator rows forever.
            .options([
                ("idle_in_transaction_session_timeout", "30s"),
                ("lock_timeout", "10s"),
                // A commit waiting for a synchronous standby that is gone notices that we
                // gave up on it, instead of holding its connection forever.
                ("client_connection_check_interval", "1s"),
                // Every statement sent outside an explicit BEGIN is its own SERIALIZABLE
                // transaction; the signing statements verify it (see ISOLATION below).
                ("default_transaction_isolation", "serializable"),
            ]);
        let incarnation = Arc::new(Incarnation::new(opts.change_hold));
        let pool = pool_options(&incarnation, opts.pool_size, opts.timeout).connect_lazy_with(connect.clone());
        // The group commit's own connections. Their statements look rows up by key only, so
        // they are planned once and for index scans whatever the table's size: a sequential
        // scan would also take a predicate lock on the whole table, and every concurrent
        // signing would then conflict with it. No JIT: it costs more than these statements.
        let sign_pool = pool_options(&incarnation, batch::WORKERS as u32 + 1, opts.timeout).connect_lazy_with(
            connect.clone().options([
                ("enable_seqscan", "off"),
                ("jit", "off"),
                ("plan_cache_mode", "force_generic_plan"),
            ]),
        );
        let batcher = batch::Batcher::start(batch::Signer {
            pool: sign_pool,
            timeout: opts.timeout,
            incarnation: incarnation.clone(),
            stats: opts.stats.clone(),
        });
        let store = Self {
            pool,
            timeout: opts.timeout,
            incarnation,
            batcher,
        };
        store.wait_until_reachable(url, &connect, opts.connect_timeout).await?;
        // Before anything is written: refuse a path to the database that loses the setting.
        let (level,): (String,) = timed(opts.timeout, async {
            Ok(sqlx::query_as("SELECT current_setting('transaction_isolation')")
                .fetch_one(&store.pool)
                .await?)
        })
        .await?;
        if level != "serializable" {
            return Err(ProtectionError::Internal(not_serializable(&level)));
        }
        // sqlx takes an advisory lock for the migration, so replicas starting together
        // apply it once, in turn.
        MIGRATOR
            .run(&store.pool)
            .await
            .map_err(|e| ProtectionError::Internal(format!("applying migrations: {e}")))?;
        Ok(store)
    }

    /// Connects directly (not through the pool, which would hide the cause behind "pool timed
    /// out"), saying why at every failed attempt, until `patience` runs out.
    async fn wait_until_reachable(
        &self,
        url: &str,
        connect: &PgConnectOptions,
        patience: Duration,
    ) -> Result<(), ProtectionError> {
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let left = patience.saturating_sub(start.elapsed()).max(Duration::from_millis(100));
            let error = match tokio::time::timeout(left, sqlx::PgConnection::connect_with(connect)).await {
                Ok(Ok(c)) => {
                    let _ = c.close().await;
                    return Ok(());
                }
                Ok(Err(e)) => cause(&e),
                Err(_) => format!("no answer within {} ms", left.as_millis()),
            };
            if start.elapsed() >= patience {
                return Err(ProtectionError::Unavailable(format!(
                    "cannot reach {} within {}s ({attempt} attempts): {error}",
                    redact_url(url),
                    patience.as_secs()
                )));
            }
            tracing::warn!(url = %redact_url(url), attempt, error = %error, "cannot reach PostgreSQL yet; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub async fn check_and_record(
        &self,
        pubkey: &PublicKey,
        message: &SlashableMessage,
        client: &str,
    ) -> Result<Checked, ProtectionError> {
        refuse_while_held(&self.incarnation)?;
        timed(self.timeout, self.batcher.check(*pubkey, *message, client)).await
    }

    /// Decides `messages` as one group-commit batch (see `batch`).
    pub async fn check_together(
        &self,
        messages: &[(PublicKey, SlashableMessage)],
        client: &str,
    ) -> Vec<Result<Checked, ProtectionError>> {
        if let Err(e) = refuse_while_held(&self.incarnation) {
            return messages.iter().map(|_| Err(e.clone())).collect();
        }
        self.batcher.check_together(messages, client).await
    }

    pub async fn register(&self, pubkeys: &[PublicKey]) -> Result<(), ProtectionError> {
        register_keys(&self.pool, self.timeout, pubkeys).await
    }

    pub async fn pinned_chain(&self) -> Result<Option<Root>, ProtectionError> {
        timed(self.timeout, async {
            let row: Option<(Vec<u8>,)> = sqlx::query_as("SELECT genesis_validators_root FROM chain")
                .fetch_optional(&self.pool)
                .await?;
            row.map(|(b,)| chain_from_db(&b)).transpose()
        })
        .await
    }

    pub async fn pin_chain(&self, root: Root) -> Result<Root, ProtectionError> {
        timed(self.timeout, async {
            sqlx::query("INSERT INTO chain (genesis_validators_root) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind(&root.0[..])
                .execute(&self.pool)
                .await?;
            let (b,): (Vec<u8>,) = sqlx::query_as("SELECT genesis_validators_root FROM chain")
                .fetch_one(&self.pool)
                .await?;
            chain_from_db(&b)
        })
        .await
    }

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

    pub async fn set_enabled(&self, pubkeys: &[PublicKey], enabled: bool) -> Result<(), ProtectionError> {
        self.register(pubkeys).await?;
        let keys: Vec<Vec<u8>> = pubkeys.iter().map(|p| p.0.to_vec()).collect();
        // Rows locked in pubkey order, as the signing statement locks them: no deadlock.
        let sql = "WITH locked AS MATERIALIZED (
                       SELECT id FROM validators WHERE pubkey = ANY($1) ORDER BY pubkey FOR UPDATE)
                   UPDATE validators v SET enabled = $2, updated_at = now() FROM locked l WHERE v.id = l.id";
        timed(self.timeout, async {
            let mut retries = Retries::new(1);
            while let Err(e) = sqlx::query(sql).bind(&keys).bind(enabled).execute(&self.pool).await {
                retries.again(e).await?;
            }
            Ok(())
        })
        .await
    }

    pub async fn key_states(&self, pubkeys: &[PublicKey]) -> Result<Vec<(PublicKey, bool)>, ProtectionError> {
        let keys: Vec<Vec<u8>> = pubkeys.iter().map(|p| p.0.to_vec()).collect();
        timed(self.timeout, async {
            let rows: Vec<(Vec<u8>, bool)> =
                sqlx::query_as("SELECT pubkey, enabled FROM validators WHERE pubkey = ANY($1)")
                    .bind(&keys)
                    .fetch_all(&self.pool)
                    .await?;
            rows.into_iter()
                .map(|(pk, enabled)| Ok((pubkey_from_db(&pk)?, enabled)))
                .collect()
        })
        .await
    }

    pub async fn disabled_keys(&self) -> Result<Vec<PublicKey>, ProtectionError> {
        timed(self.timeout, async {
            let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT pubkey FROM validators WHERE NOT enabled")
                .fetch_all(&self.pool)
                .await?;
            rows.into_iter().map(|(pk,)| pubkey_from_db(&pk)).collect()
        })
        .await
    }

    pub async fn watermarks_of(&self, pubkeys: &[PublicKey]) -> Result<Vec<(PublicKey, Watermarks)>, ProtectionError> {
        let keys: Vec<Vec<u8>> = pubkeys.iter().map(|p| p.0.to_vec()).collect();
        timed(self.timeout * 4, async {
            let rows = sqlx::query(&format!(
                "SELECT pubkey, {WATERMARK_COLUMNS} FROM validators v WHERE pubkey = ANY($1)"
            ))
            .bind(&keys)
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok((
                        pubkey_from_db(r.try_get::<&[u8], _>("pubkey")?)?,
                        watermarks_from_row(r)?,
                    ))
                })
                .collect()
        })
        .await
    }

    pub async fn raise_repairs(&self, pairs: &[(PublicKey, u32)]) -> Result<(), ProtectionError> {
        let keys: Vec<Vec<u8>> = pairs.iter().map(|(p, _)| p.0.to_vec()).collect();
        let counts: Vec<i32> = pairs.iter().map(|(_, r)| (*r).min(i32::MAX as u32) as i32).collect();
        let sql = "WITH locked AS MATERIALIZED (
                       SELECT id, pubkey FROM validators WHERE pubkey = ANY($1) ORDER BY pubkey FOR UPDATE)
                   UPDATE validators v SET repairs = GREATEST(v.repairs, u.r)
                     FROM locked l, UNNEST($1::bytea[], $2::int[]) AS u(p, r)
                    WHERE v.id = l.id AND l.pubkey = u.p";
        timed(self.timeout, async {
            let mut retries = Retries::new(1);
            while let Err(e) = sqlx::query(sql).bind(&keys).bind(&counts).execute(&self.pool).await {
                retries.again(e).await?;
            }
            Ok(())
        })
        .await
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

    pub async fn set_high_watermark(
        &self,
        value: Option<(Slot, Epoch)>,
        pubkeys: Option<&[PublicKey]>,
        actor: &str,
    ) -> Result<(), ProtectionError> {
        if let Some(keys) = pubkeys {
            self.register(keys).await?;
        }
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
            let blocks: Vec<(i64, Option<Vec<u8>>)> = sqlx::query_as(
                "SELECT slot, signing_root FROM signed_blocks
                  WHERE validator_id = $1 AND $2::bigint IS NOT NULL AND slot > $2 ORDER BY slot",
            )
            .bind(id)
            .bind(new_block)
            .fetch_all(&mut *tx)
            .await?;
            let atts: Vec<(i64, i64, Option<Vec<u8>>)> = sqlx::query_as(
                "SELECT source_epoch, target_epoch, signing_root FROM signed_attestations
                  WHERE validator_id = $1 AND $3::bigint IS NOT NULL AND (target_epoch > $3 OR source_epoch > $2)
                  ORDER BY target_epoch",
            )
            .bind(id)
            .bind(new_source)
            .bind(new_target)
            .fetch_all(&mut *tx)
            .await?;
            let repaired = plan(
                req,
                pubkey,
                &watermarks_from_row(row)?,
                blocks.into_iter().map(discarded_block).collect(),
                atts.into_iter().map(discarded_attestation).collect(),
            )?;
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

    /// Server settings under which a committed record could be lost, and settings that an
    /// HA deployment should know about.
    pub async fn durability(&self) -> Result<Durability, ProtectionError> {
        let (fsync, sync_commit, fpw, standbys): (String, String, String, String) = timed(self.timeout, async {
            Ok(sqlx::query_as(
                "SELECT current_setting('fsync'), current_setting('synchronous_commit'),
                        current_setting('full_page_writes'), current_setting('synchronous_standby_names')",
            )
            .fetch_one(&self.pool)
            .await?)
        })
        .await?;
        let mut d = Durability::default();
        if fsync != "on" {
            d.unsafe_settings.push(format!(
                "fsync = {fsync}: a crash of the database host can lose committed records"
            ));
        }
        if sync_commit == "off" {
            d.unsafe_settings.push(
                "synchronous_commit = off: commits are acknowledged before they are on disk, so a \
                 database crash can lose records of signatures already released"
                    .into(),
            );
        }
        if fpw != "on" {
            d.unsafe_settings.push(format!(
                "full_page_writes = {fpw}: a crash can leave torn pages and lose records"
            ));
        }
        if standbys.trim().is_empty() {
            d.notes.push(
                "no synchronous standby (synchronous_standby_names is empty): failing over to an \
                 asynchronous standby can lose the last records; see docs/high-availability.md"
                    .into(),
            );
        } else if sync_commit == "local" {
            d.unsafe_settings.push(
                "synchronous_commit = local with synchronous standbys: a failover can lose records \
                 the primary acknowledged"
                    .into(),
            );
        }
        Ok(d)
    }

    /// A durable write as a signing commits it: this replica's heartbeat. Returns the live
    /// replicas (heartbeats in the last 10 s, this one included).
    pub async fn probe(&self, replica: &str, limit: Duration) -> Result<u32, ProtectionError> {
        timed(limit, async {
            // The heartbeat writes only this replica's row, and the count is read on its own:
            // a transaction that read the others' rows and wrote its own would be a write skew
            // under SERIALIZABLE, and replicas probing together would abort each other.
            let mut retries = Retries::new(1);
            loop {
                let beat = sqlx::query(
                    "INSERT INTO replicas (id, version) VALUES ($1, $2)
                     ON CONFLICT (id) DO UPDATE SET seen_at = now(), version = $2",
                )
                .bind(replica)
                .bind(env!("CARGO_PKG_VERSION"))
                .execute(&self.pool)
                .await;
                match beat {
                    Ok(_) => break,
                    Err(e) => retries.again(e).await?,
                }
            }
            let (n,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM replicas WHERE seen_at > now() - interval '10 seconds' AND id <> $1",
            )
            .bind(replica)
            .fetch_one(&self.pool)
            .await?;
            Ok(n as u32 + 1)
        })
        .await
    }

    pub async fn ping(&self) -> Result<Duration, ProtectionError> {
        timed(self.timeout, async {
            let start = Instant::now();
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(start.elapsed())
        })
        .await
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The group commit's connections.
    pub fn signing_pool(&self) -> &PgPool {
        self.batcher.pool()
    }
}

/// Why a transaction failed: the database (maybe worth a retry) or Palisade's own refusal.
enum TxError {
    Db(sqlx::Error),
    Refused(ProtectionError),
}

impl From<ProtectionError> for TxError {
    fn from(e: ProtectionError) -> Self {
        TxError::Refused(e)
    }
}

/// Runs a transaction until it commits, retrying serialization failures and deadlocks a
/// bounded number of times; each attempt starts from scratch with a fresh snapshot.
async fn retrying<T, Fut>(mut attempt: impl FnMut() -> Fut) -> Result<T, ProtectionError>
where
    Fut: std::future::Future<Output = Result<T, TxError>>,
{
    let mut retries = Retries::new(MAX_ATTEMPTS);
    loop {
        match attempt().await {
            Ok(t) => return Ok(t),
            Err(TxError::Refused(e)) => return Err(e),
            Err(TxError::Db(e)) => retries.again(e).await?,
        }
    }
}

impl From<sqlx::Error> for TxError {
    fn from(e: sqlx::Error) -> Self {
        TxError::Db(e)
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
