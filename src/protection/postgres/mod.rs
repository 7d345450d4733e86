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

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Row};

mod batch;
mod keystores;
mod operations;
mod proxies;

use super::incarnation::{IDENTITY_QUERY, Incarnation};
use super::rules::Watermarks;
use super::sql::{MAX_ATTEMPTS, Retries, WATERMARK_COLUMNS, chain_from_db, pubkey_from_db, timed, watermarks_from_row};
use super::{Accepted, DbOptions, Durability, ProtectionError, redact_url};
use crate::types::SlashableMessage;
use crate::types::{PublicKey, Root};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

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

/// The URL parameters the driver understands. Any other is refused here, naming it but not
/// its value: the driver would log an unknown one with its value (a misspelt `?pass=` would
/// print a password).
const KNOWN_PARAMETERS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

fn check_parameters(url: &str) -> Result<(), ProtectionError> {
    let rest = url.find("://").map_or(url, |s| &url[s + 3..]);
    let after_userinfo = rest.rfind('@').map_or(rest, |at| &rest[at + 1..]);
    let Some((_, query)) = after_userinfo.split_once('?') else {
        return Ok(());
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let key = pair.split('=').next().unwrap_or("");
        if !KNOWN_PARAMETERS.contains(&key) {
            return Err(ProtectionError::Internal(format!(
                "--database-url: unknown parameter `{key}` (its value is not shown); known: {}",
                KNOWN_PARAMETERS.join(", ")
            )));
        }
    }
    Ok(())
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
/// The server's own message when it refused the connection for a reason retrying cannot fix:
/// authentication (SQLSTATE class 28: a wrong password, an unknown role, no `pg_hba.conf`
/// entry) or a database that does not exist (3D000).
fn refused_for_good(e: &sqlx::Error) -> Option<String> {
    let sqlx::Error::Database(db) = e else { return None };
    let code = db.code()?;
    (code.starts_with("28") || code == "3D000").then(|| format!("{} (SQLSTATE {code})", db.message()))
}

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
        check_parameters(url)?;
        let mut connect = PgConnectOptions::from_str(url)
            .map_err(|e| ProtectionError::Internal(format!("invalid database URL {}: {e}", redact_url(url))))?;
        if let Some(username) = &opts.username {
            connect = connect.username(username);
        }
        if let Some(password) = &opts.password {
            connect = connect.password(password);
        }
        let connect = connect
            .application_name("palisade")
            // The driver's own lines about slow or failed statements would read as alarms in
            // a failover, where they are expected: Palisade reports those itself (refusals,
            // 503s, `palisade_database_*` metrics), so the driver's go to debug and trace.
            .log_statements(log::LevelFilter::Trace)
            .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(1))
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
        let batcher = batch::Batcher::start(batch::Committer {
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
                Ok(Err(e)) => {
                    // Waiting does not fix a wrong password, a missing role or database.
                    if let Some(refusal) = refused_for_good(&e) {
                        return Err(ProtectionError::Unavailable(format!(
                            "{} refused the connection: {refusal}",
                            redact_url(url)
                        )));
                    }
                    cause(&e)
                }
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
    ) -> Result<Accepted, ProtectionError> {
        refuse_while_held(&self.incarnation)?;
        timed(self.timeout, self.batcher.check(*pubkey, *message, client)).await
    }

    /// Decides `messages` as one group-commit batch (see `batch`).
    pub async fn check_together(
        &self,
        messages: &[(PublicKey, SlashableMessage)],
        client: &str,
    ) -> Vec<Result<Accepted, ProtectionError>> {
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

    /// Replicas starting together on an empty database race to pin it: one insert wins, and a
    /// loser's serialization failure is retried (it then reads the winner's root).
    pub async fn pin_chain(&self, root: Root) -> Result<Root, ProtectionError> {
        let pinned = timed(
            self.timeout,
            retrying(|| async {
                sqlx::query("INSERT INTO chain (genesis_validators_root) VALUES ($1) ON CONFLICT DO NOTHING")
                    .bind(&root.0[..])
                    .execute(&self.pool)
                    .await?;
                let (b,): (Vec<u8>,) = sqlx::query_as("SELECT genesis_validators_root FROM chain")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(b)
            }),
        )
        .await?;
        chain_from_db(&pinned)
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
