//! Embedded SQLite backend for one host: zero setup, one process at a time.
//!
//! A second Palisade process on the same file is refused at startup (an exclusive lock on
//! `<file>.lock`). Checks are serialised through one writer task that groups the checks
//! waiting at that moment into one transaction: `synchronous = FULL` makes every commit
//! durable, and the group shares one fsync. No reply is sent before the commit.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::{mpsc, oneshot};

use super::rules::{Verdict, Watermarks};
use super::sql::{WATERMARK_COLUMNS, chain_from_db, pubkey_from_db, root_to_db, timed, to_db, watermarks_from_row};
use super::{Accepted, DbOptions, HeldBefore, ProtectionError, Recorded};
use crate::types::SlashableMessage;
use crate::types::{PublicKey, Root};

mod operations;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// At most this many checks share one transaction.
const MAX_BATCH: usize = 512;

struct QueuedCheck {
    pubkey: PublicKey,
    message: SlashableMessage,
    client: String,
    reply: oneshot::Sender<Result<Accepted, ProtectionError>>,
}

pub struct SqliteStore {
    pool: SqlitePool,
    checks: mpsc::Sender<QueuedCheck>,
    timeout: Duration,
    /// Dropped last: closing these releases the locks.
    _lock: Vec<File>,
}

impl SqliteStore {
    pub async fn open(path: &str, opts: &DbOptions) -> Result<Self, ProtectionError> {
        let path = PathBuf::from(path);
        let lock = lock_exclusively(&path)?;
        let connect = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|e| ProtectionError::Internal(format!("{}: {e}", path.display())))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            // As for PostgreSQL: the driver's statement lines at debug and trace only.
            .log_statements(log::LevelFilter::Trace)
            .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1));
        // One connection: SQLite has one writer anyway, and it keeps every operation in order.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(opts.timeout.max(Duration::from_secs(30)))
            .connect_with(connect)
            .await
            .map_err(|e| ProtectionError::Unavailable(format!("opening {}: {e}", path.display())))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| ProtectionError::Internal(format!("applying migrations: {e}")))?;
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(writer(pool.clone(), rx));
        Ok(Self {
            pool,
            checks: tx,
            timeout: opts.timeout,
            _lock: lock,
        })
    }

    pub async fn check_and_record(
        &self,
        pubkey: &PublicKey,
        message: &SlashableMessage,
        client: &str,
    ) -> Result<Accepted, ProtectionError> {
        let (reply, answer) = oneshot::channel();
        let check = QueuedCheck {
            pubkey: *pubkey,
            message: *message,
            client: client.to_string(),
            reply,
        };
        timed(self.timeout, async {
            self.checks
                .send(check)
                .await
                .map_err(|_| ProtectionError::Unavailable("database writer stopped".into()))?;
            answer
                .await
                .map_err(|_| ProtectionError::Unavailable("database writer stopped".into()))?
        })
        .await
    }

    pub async fn register(&self, pubkeys: &[PublicKey]) -> Result<(), ProtectionError> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        // Many rows per statement: thousands of keys register in a few statements.
        for chunk in pubkeys.chunks(500) {
            let sql = format!(
                "INSERT INTO validators (pubkey) VALUES {} ON CONFLICT (pubkey) DO NOTHING",
                vec!["(?)"; chunk.len()].join(",")
            );
            let mut q = sqlx::query(&sql);
            for pk in chunk {
                q = q.bind(&pk.0[..]);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn pinned_chain(&self) -> Result<Option<Root>, ProtectionError> {
        let mut conn = self.pool.acquire().await?;
        pinned_chain(&mut conn).await
    }

    pub async fn pin_chain(&self, root: Root) -> Result<Root, ProtectionError> {
        let mut conn = self.pool.acquire().await?;
        pin_chain(&mut conn, root).await
    }

    pub async fn set_enabled(&self, pubkeys: &[PublicKey], enabled: bool) -> Result<(), ProtectionError> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        for pk in pubkeys {
            sqlx::query(
                "INSERT INTO validators (pubkey, enabled) VALUES (?, ?)
                 ON CONFLICT (pubkey) DO UPDATE SET enabled = excluded.enabled",
            )
            .bind(&pk.0[..])
            .bind(enabled)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn key_states(&self, pubkeys: &[PublicKey]) -> Result<Vec<(PublicKey, bool)>, ProtectionError> {
        let mut conn = self.pool.acquire().await?;
        let mut out = Vec::new();
        for pk in pubkeys {
            let row: Option<(bool,)> = sqlx::query_as("SELECT enabled FROM validators WHERE pubkey = ?")
                .bind(&pk.0[..])
                .fetch_optional(&mut *conn)
                .await?;
            if let Some((enabled,)) = row {
                out.push((*pk, enabled));
            }
        }
        Ok(out)
    }

    pub async fn disabled_keys(&self) -> Result<Vec<PublicKey>, ProtectionError> {
        let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT pubkey FROM validators WHERE NOT enabled")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(|(pk,)| pubkey_from_db(&pk)).collect()
    }

    pub async fn watermarks_of(&self, pubkeys: &[PublicKey]) -> Result<Vec<(PublicKey, Watermarks)>, ProtectionError> {
        let mut conn = self.pool.acquire().await?;
        let sql = format!("SELECT {WATERMARK_COLUMNS} FROM validators v WHERE pubkey = ?");
        let mut out = Vec::new();
        for pk in pubkeys {
            if let Some(row) = sqlx::query(&sql).bind(&pk.0[..]).fetch_optional(&mut *conn).await? {
                out.push((*pk, watermarks_from_row(&row)?));
            }
        }
        Ok(out)
    }

    pub async fn raise_repairs(&self, pairs: &[(PublicKey, u32)]) -> Result<(), ProtectionError> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        for (pk, r) in pairs {
            sqlx::query("UPDATE validators SET repairs = max(repairs, ?) WHERE pubkey = ?")
                .bind(i64::from(*r))
                .bind(&pk.0[..])
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn probe(&self, replica: &str, limit: Duration) -> Result<u32, ProtectionError> {
        timed(limit, async {
            sqlx::query(
                "INSERT INTO replicas (id, version) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET seen_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), version = ?2",
            )
            .bind(replica)
            .bind(env!("CARGO_PKG_VERSION"))
            .execute(&self.pool)
            .await?;
            Ok(1)
        })
        .await
    }

    pub async fn ping(&self) -> Result<Duration, ProtectionError> {
        let start = Instant::now();
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(start.elapsed())
    }
}

/// Refuses a second Palisade process on the same database file with a clear message.
fn lock_exclusively(db: &Path) -> Result<Vec<File>, ProtectionError> {
    // Resolved first: a second process reaching the same file through a symlink or another
    // relative path must meet the same lock.
    let db = canonical(db)?;
    let lock_path = PathBuf::from(format!("{}.lock", db.display()));
    let in_use = |held: &Path| {
        ProtectionError::Internal(format!(
            "{} is in use by another Palisade process (lock {} is held). SQLite protects one process \
             on one host; use PostgreSQL (--database-url postgres://...) to run several replicas, \
             or the admin HTTP API of the running process for imports and exports",
            db.display(),
            held.display()
        ))
    };
    let mut held = Vec::new();
    // The lock file, and the database file itself (flock: independent of SQLite's own fcntl
    // locks), so that a removed lock file does not let a second process in.
    for path in [lock_path.as_path(), db.as_path()] {
        // Never through a link someone planted (the database's path is resolved above; its
        // lock file must not be one either), and private from the first byte.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| ProtectionError::Internal(format!("cannot open {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => held.push(file),
            Err(std::fs::TryLockError::WouldBlock) => return Err(in_use(path)),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(ProtectionError::Internal(format!(
                    "cannot lock {}: {e}",
                    path.display()
                )));
            }
        }
    }
    Ok(held)
}

/// The file's real path, also when it does not exist yet (its folder must).
fn canonical(db: &Path) -> Result<PathBuf, ProtectionError> {
    if let Ok(p) = db.canonicalize() {
        return Ok(p);
    }
    let dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = db
        .file_name()
        .ok_or_else(|| ProtectionError::Internal(format!("{} is not a file name", db.display())))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| ProtectionError::Internal(format!("cannot open the folder of {}: {e}", db.display())))?;
    Ok(dir.join(name))
}

async fn pinned_chain(conn: &mut SqliteConnection) -> Result<Option<Root>, ProtectionError> {
    let row: Option<(Vec<u8>,)> = sqlx::query_as("SELECT genesis_validators_root FROM chain")
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|(b,)| chain_from_db(&b)).transpose()
}

async fn pin_chain(conn: &mut SqliteConnection, root: Root) -> Result<Root, ProtectionError> {
    sqlx::query("INSERT INTO chain (singleton, genesis_validators_root) VALUES (1, ?) ON CONFLICT DO NOTHING")
        .bind(&root.0[..])
        .execute(&mut *conn)
        .await?;
    let (b,): (Vec<u8>,) = sqlx::query_as("SELECT genesis_validators_root FROM chain")
        .fetch_one(&mut *conn)
        .await?;
    chain_from_db(&b)
}

/// The validator's row id and watermarks, creating the row if needed.
async fn row_for(conn: &mut SqliteConnection, pk: &PublicKey) -> Result<(i64, Watermarks), ProtectionError> {
    sqlx::query("INSERT INTO validators (pubkey) VALUES (?) ON CONFLICT (pubkey) DO NOTHING")
        .bind(&pk.0[..])
        .execute(&mut *conn)
        .await?;
    let row = sqlx::query(&format!(
        "SELECT id, {WATERMARK_COLUMNS} FROM validators v WHERE pubkey = ?"
    ))
    .bind(&pk.0[..])
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.try_get("id")?, watermarks_from_row(&row)?))
}

async fn write_watermarks(conn: &mut SqliteConnection, id: i64, w: &Watermarks) -> Result<(), ProtectionError> {
    sqlx::query(
        "UPDATE validators SET block_slot = ?, block_root = ?, att_source = ?, att_target = ?,
                att_root = ?, att_root_source = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
          WHERE id = ?",
    )
    .bind(w.block_slot.map(|s| to_db(s.0)))
    .bind(root_to_db(w.block_root))
    .bind(w.att_source.map(|e| to_db(e.0)))
    .bind(w.att_target.map(|e| to_db(e.0)))
    .bind(root_to_db(w.att_root))
    .bind(w.att_root_source.map(|e| to_db(e.0)))
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Commits an open `BEGIN IMMEDIATE` transaction on success, rolls it back otherwise.
async fn finish<T>(conn: &mut SqliteConnection, result: Result<T, ProtectionError>) -> Result<T, ProtectionError> {
    match result {
        Ok(v) => {
            sqlx::query("COMMIT").execute(&mut *conn).await?;
            Ok(v)
        }
        Err(e) => {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            Err(e)
        }
    }
}

/// Decides one check inside the writer's open transaction.
async fn decide(conn: &mut SqliteConnection, c: &QueuedCheck) -> Result<Accepted, ProtectionError> {
    let (id, mut w) = row_for(conn, &c.pubkey).await?;
    let held = HeldBefore::of(&w, &c.message);
    match w.check(&c.message) {
        Verdict::Refused(r) => Err(ProtectionError::Refused(r)),
        Verdict::Repeat => Ok(Accepted {
            recorded: Recorded::Repeat,
            held,
        }),
        Verdict::New => {
            w.record(&c.message);
            write_watermarks(conn, id, &w).await?;
            match c.message {
                SlashableMessage::Block { slot, root } => {
                    sqlx::query(
                        "INSERT INTO signed_blocks (validator_id, slot, signing_root, client) VALUES (?, ?, ?, ?)",
                    )
                    .bind(id)
                    .bind(to_db(slot.0))
                    .bind(root_to_db(Some(root)))
                    .bind(&c.client)
                    .execute(&mut *conn)
                    .await?;
                }
                SlashableMessage::Attestation { source, target, root } => {
                    sqlx::query(
                        "INSERT INTO signed_attestations (validator_id, source_epoch, target_epoch, signing_root, client)
                         VALUES (?, ?, ?, ?, ?)",
                    )
                    .bind(id)
                    .bind(to_db(source.0))
                    .bind(to_db(target.0))
                    .bind(root_to_db(Some(root)))
                    .bind(&c.client)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            Ok(Accepted {
                recorded: Recorded::New,
                held,
            })
        }
    }
}

/// The single writer: takes every check waiting now, decides them in one transaction,
/// commits, and only then answers.
async fn writer(pool: SqlitePool, mut rx: mpsc::Receiver<QueuedCheck>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let mut conn = match pool.acquire().await {
            Ok(c) => c,
            Err(e) => {
                let e = ProtectionError::from(e);
                for c in batch {
                    let _ = c.reply.send(Err(e.clone()));
                }
                continue;
            }
        };
        let mut results = Vec::with_capacity(batch.len());
        let outcome: Result<(), ProtectionError> = async {
            sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
            for c in &batch {
                match decide(&mut conn, c).await {
                    Ok(r) => results.push(Ok(r)),
                    Err(e @ ProtectionError::Refused(_)) => results.push(Err(e)),
                    // Any other failure aborts the whole batch: nothing of it is committed.
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
        .await;
        match finish(&mut conn, outcome).await {
            Ok(()) => {
                for (c, r) in batch.into_iter().zip(results) {
                    let _ = c.reply.send(r);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "slashing-protection batch failed; nothing of it was recorded");
                for c in batch {
                    let _ = c.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
