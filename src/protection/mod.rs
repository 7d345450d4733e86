//! Slashing protection: an EIP-3076 database checked and written in one transaction before
//! any block or attestation is signed.
//!
//! The signing path and the admin calls reach it through one front (`front::Protection`: the
//! database, this replica's own record, the chain pin and the health verdict). The database is
//! one storage contract (`SlashingDatabase`, its calls listed once in `storage_contract!`)
//! with two backends: PostgreSQL, shared by any number of replicas, which decides in SQL
//! (`sql.rs`, one statement per batch), and embedded SQLite for one host, which decides with
//! `rules::Watermarks::check` in a transaction. The SQL decides exactly as
//! `rules::Watermarks::check`: `tests/protection/exhaustive.rs` holds both backends to its
//! answer (and to a model of slashability) for every sequence of a bounded space.

mod chain;
pub mod front;
pub mod incarnation;
pub mod interchange;
pub mod postgres;
pub mod repair;
pub mod replica;
pub mod rules;
mod sql;
mod sqlite;
pub mod verdict;

use std::time::Duration;

pub use crate::types::SlashableMessage;
pub use front::{Protection, ProtectionMetrics};
pub use interchange::Interchange;
pub use rules::{Refusal, Verdict, Watermarks};

use crate::types::{Epoch, PublicKey, Root, Slot};

/// Why slashing protection did not approve a signing, or an admin operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtectionError {
    /// The rule refused the message: signing it could be slashable.
    #[error("{0}")]
    Refused(Refusal),
    /// The database could not be reached or did not answer in time: fail closed.
    #[error("slashing-protection database unavailable: {0}")]
    Unavailable(String),
    #[error("genesis validators root {given} is not the one this slashing-protection database is pinned to ({pinned})")]
    WrongChain { pinned: Root, given: Root },
    /// Nothing is pinned and the request or import names the zero root, which is no chain's.
    #[error(
        "the genesis validators root is zero and no chain is pinned yet: Palisade never pins the zero root \
         (configure --network or --genesis-validators-root)"
    )]
    ZeroChain,
    #[error("invalid interchange: {0}")]
    InvalidInterchange(String),
    #[error("slashing-protection database error: {0}")]
    Internal(String),
    #[error("invalid repair: {0}")]
    InvalidRepair(String),
    /// The repair would be unsafe or could not take its lock: nothing changed.
    #[error("repair refused: {0}")]
    RepairRefused(String),
    /// The database's shared keystores are sealed with another fleet secret than this
    /// replica's: storing more would split the fleet's key set.
    #[error(
        "this replica's --shared-keystore-secret-file (id {ours}) is not the fleet secret this database's shared \
         keystores are sealed with (id {pinned}): give every replica the same secret"
    )]
    FleetSecretMismatch { pinned: String, ours: String },
    /// The backend keeps no shared keystores (SQLite: one host).
    #[error("{0}")]
    NotShared(String),
}

/// A keystore shared through the database: the EIP-2335 JSON as imported, and its password
/// sealed with the fleet secret (named by `sealed_with`). Opaque to the database.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKeystore {
    pub pubkey: PublicKey,
    pub keystore: String,
    pub sealed_password: Vec<u8>,
    pub sealed_with: String,
}

/// A Commit-Boost proxy key shared through the database: its keystore as written (encrypted
/// with the proxy keystores' password). Opaque to the database.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredProxy {
    /// The proxy's public key: 48 bytes (BLS) or 33 (compressed secp256k1).
    pub proxy: Vec<u8>,
    pub delegator: PublicKey,
    /// `bls` or `ecdsa`.
    pub scheme: String,
    pub module: Option<String>,
    pub keystore: String,
}

impl std::fmt::Debug for StoredProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "StoredProxy(0x{}, {} of {})",
            hex::encode(&self.proxy),
            self.scheme,
            self.delegator
        )
    }
}

impl std::fmt::Debug for StoredKeystore {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "StoredKeystore({}, sealed with {})", self.pubkey, self.sealed_with)
    }
}

/// A change of the high watermark: set to (slot, epoch), or cleared (`None`), for every key
/// or only `keys`; `actor` is who asked (audited).
#[derive(Clone, Copy, Debug)]
pub struct HighWatermarkChange<'a> {
    pub value: Option<(Slot, Epoch)>,
    pub keys: Option<&'a [PublicKey]>,
    pub actor: &'a str,
}

/// A check that passed: the message is recorded (or was, by this signer, before).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    New,
    Repeat,
}

/// What the database held for a validator just before a check that passed, as far as the
/// check read it: the replica compares it with what it committed itself (a database that
/// went back in time holds less).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldBefore {
    pub repairs: u32,
    pub mark: HeldMark,
}

/// The watermarks of the message's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeldMark {
    Block(Option<Slot>),
    Attestation {
        source: Option<Epoch>,
        target: Option<Epoch>,
    },
    /// The attestation target alone (what the PostgreSQL signing statement returns; the
    /// periodic sweep compares sources too).
    AttestationTarget(Option<Epoch>),
}

impl HeldBefore {
    pub fn of(w: &Watermarks, p: &SlashableMessage) -> HeldBefore {
        HeldBefore {
            repairs: w.repairs,
            mark: match p {
                SlashableMessage::Block { .. } => HeldMark::Block(w.block_slot),
                SlashableMessage::Attestation { .. } => HeldMark::Attestation {
                    source: w.att_source,
                    target: w.att_target,
                },
            },
        }
    }
}

/// A check that passed, and what the database held before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub recorded: Recorded,
    pub held: HeldBefore,
}

/// What the PostgreSQL group commit did, shared with the metrics.
#[derive(Clone, Debug, Default)]
pub struct CommitStats {
    /// Check-and-record statements run (each one transaction).
    pub statements: prometheus_client::metrics::counter::Counter,
    /// Blocks and attestations those statements decided (signed, repeats, refusals).
    pub decided: prometheus_client::metrics::counter::Counter,
    /// Statements rolled back by a serialization conflict or a deadlock and run again.
    pub conflicts: prometheus_client::metrics::counter::Counter,
}

/// The outcome of the durability check at startup.
#[derive(Clone, Debug, Default)]
pub struct Durability {
    /// Settings under which a committed record can be lost: Palisade refuses to start.
    pub unsafe_settings: Vec<String>,
    /// Worth knowing, not fatal.
    pub notes: Vec<String>,
}

/// Connection settings.
#[derive(Clone, Debug)]
pub struct DbOptions {
    /// PostgreSQL connections per replica.
    pub pool_size: u32,
    /// How long one database operation may take before the signing is refused (503).
    pub timeout: Duration,
    /// How long startup waits for the database to be reachable.
    pub connect_timeout: Duration,
    /// How long blocks and attestations are held after the database is found to be another
    /// one than before (restored, failed over).
    pub change_hold: Duration,
    pub stats: CommitStats,
    /// The PostgreSQL password, when given apart from the URL (`--database-password-file`).
    pub password: Option<zeroize::Zeroizing<String>>,
    /// The PostgreSQL role, when given apart from the URL (`--database-username`).
    pub username: Option<String>,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            pool_size: default_pool_size(),
            timeout: Duration::from_millis(1500),
            connect_timeout: Duration::from_secs(30),
            change_hold: Duration::from_secs(4),
            stats: CommitStats::default(),
            password: None,
            username: None,
        }
    }
}

/// Enough connections to keep every core busy while others wait on the network.
pub fn default_pool_size() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 4).clamp(4, 64) as u32
}

/// Totals of one prune pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub blocks: u64,
    pub attestations: u64,
}

/// The slashing-protection database, whichever backend holds it.
pub enum SlashingDatabase {
    Postgres(postgres::PgStore),
    Sqlite(sqlite::SqliteStore),
}

macro_rules! dispatch {
    ($self:ident . $m:ident ( $($a:expr),* )) => {
        match $self {
            SlashingDatabase::Postgres(s) => s.$m($($a),*).await,
            SlashingDatabase::Sqlite(s) => s.$m($($a),*).await,
        }
    };
}

/// The storage contract: every call of `SlashingDatabase` that the backends answer as they
/// are, written once. A line is a call; `else X` is what SQLite (one host's database) answers
/// for what only a shared PostgreSQL keeps. The calls with logic of their own (validation,
/// registration, grouping) are the methods below.
macro_rules! storage_contract {
    ($( $(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $(, else $sqlite:expr)?; )*) => {
        impl SlashingDatabase { $(
            $(#[$doc])*
            pub async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, ProtectionError> {
                match self {
                    SlashingDatabase::Postgres(s) => s.$name($($arg),*).await,
                    SlashingDatabase::Sqlite(_s) => storage_contract!(@sqlite _s.$name($($arg),*) $(, $sqlite)?),
                }
            }
        )* }
    };
    (@sqlite $s:ident.$name:ident($($arg:ident),*)) => { $s.$name($($arg),*).await };
    (@sqlite $s:ident.$name:ident($($arg:ident),*), $e:expr) => {{ let _ = ($($arg,)*); $e }};
}

storage_contract! {
    /// The one call on the signing path: checks `message` against the validator's watermarks
    /// and, if it is new, records it, in one committed transaction. Only after this returns
    /// `Ok` may a signature be made.
    fn check_and_record(pubkey: &PublicKey, message: &SlashableMessage, client: &str) -> Accepted;
    /// Creates rows for validators not yet in the database (sorted, idempotent, safe to race).
    fn register(pubkeys: &[PublicKey]) -> ();
    /// The chain the database is pinned to, if any.
    fn pinned_chain() -> Option<Root>;
    /// Pins the database to `root` if it is not pinned yet; returns the pinned root.
    fn pin_chain(root: Root) -> Root;
    /// Exports the retained history and the watermarks as EIP-3076 (all validators, or the
    /// given ones).
    fn export(pubkeys: Option<&[PublicKey]>) -> Interchange;
    /// Disables (or re-enables) validators, creating their rows if needed: a disabled
    /// validator is refused by every replica.
    fn set_enabled(pubkeys: &[PublicKey], enabled: bool) -> ();
    /// Which of `pubkeys` the database knows, and whether each is enabled.
    fn key_states(pubkeys: &[PublicKey]) -> Vec<(PublicKey, bool)>;
    /// The watermarks of the given validators (those the database knows).
    fn watermarks_of(pubkeys: &[PublicKey]) -> Vec<(PublicKey, Watermarks)>;
    /// Raises validators' repair counts to at least the given ones (a replica restoring what
    /// a database that went back in time forgot).
    fn raise_repairs(pairs: &[(PublicKey, u32)]) -> ();
    /// The global high watermark (slot, epoch), if set.
    fn high_watermark() -> Option<(Slot, Epoch)>;
    /// Every disabled validator (deleted through the Key Manager API on some replica).
    fn disabled_keys() -> Vec<PublicKey>;
    /// This replica's heartbeat, committed as durably as a signing, within `limit`: proof
    /// that protected signing works now. Returns the number of live replicas.
    fn probe(replica: &str, limit: Duration) -> u32;
    /// A round trip to the database; its latency.
    fn ping() -> Duration;
    /// Whether a committed record could be lost with the database's settings. SQLite is
    /// always opened with `synchronous = FULL` in WAL mode.
    fn durability() -> Durability, else Ok(Durability::default());
    /// A number that changes with every change to the shared keystores.
    fn keystore_generation() -> i64, else Ok(0);
    /// The fleet secret the shared keystores are sealed with (its id), once pinned.
    fn fleet_secret_id() -> Option<String>, else Ok(None);
    /// The shared keystores and the generation they are, from one snapshot.
    fn stored_keystores() -> (i64, Vec<StoredKeystore>), else Ok((0, Vec::new()));
    /// Stores keystores for every replica, sealed with the fleet secret `secret_id` (pinned
    /// by the first such call; another one is refused and nothing is stored).
    fn store_keystores(rows: &[StoredKeystore], secret_id: &str, replica: &str) -> (), else Err(Self::not_shared());
    /// The Commit-Boost proxy keys every replica shares (none on SQLite: one host's files).
    fn stored_proxies() -> Vec<StoredProxy>, else Ok(Vec::new());
    /// Shares a new proxy key with every replica (nothing to do on SQLite).
    fn store_proxy(row: &StoredProxy, replica: &str) -> (), else Ok(());
    /// Removes stored keystores (a Key Manager deletion); how many there were.
    fn delete_stored_keystores(pubkeys: &[PublicKey]) -> u64, else Ok(0);
}

impl SlashingDatabase {
    /// Opens `postgres://...` or `sqlite://PATH`, waits for it to be reachable and applies
    /// the schema migrations.
    pub async fn open(url: &str, opts: &DbOptions) -> Result<Self, ProtectionError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(postgres::PgStore::open(url, opts).await?))
        } else if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            Ok(Self::Sqlite(sqlite::SqliteStore::open(path, opts).await?))
        } else {
            Err(ProtectionError::Internal(
                "unsupported database URL (not shown: it may hold a password): use postgres://... or sqlite://PATH"
                    .into(),
            ))
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            SlashingDatabase::Postgres(_) => "postgres",
            SlashingDatabase::Sqlite(_) => "sqlite",
        }
    }

    /// Checks and records several messages as one group (PostgreSQL: one batch of the group
    /// commit; SQLite: one after the other), each decided as if they came in this order.
    pub async fn check_together(
        &self,
        messages: &[(PublicKey, SlashableMessage)],
        client: &str,
    ) -> Vec<Result<Accepted, ProtectionError>> {
        match self {
            SlashingDatabase::Postgres(s) => s.check_together(messages, client).await,
            SlashingDatabase::Sqlite(s) => {
                let mut out = Vec::with_capacity(messages.len());
                for (pk, p) in messages {
                    out.push(s.check_and_record(pk, p, client).await);
                }
                out
            }
        }
    }

    /// Imports EIP-3076 data, all or nothing, merging to the highest values. Returns the
    /// number of validators in the file.
    pub async fn import(&self, interchange: &Interchange) -> Result<usize, ProtectionError> {
        interchange.validate().map_err(ProtectionError::InvalidInterchange)?;
        dispatch!(self.import(interchange))
    }

    /// Sets (or with `None` clears) the high watermark, for all keys or only `pubkeys`.
    pub async fn set_high_watermark(&self, change: HighWatermarkChange<'_>) -> Result<(), ProtectionError> {
        // The named keys need a row of their own to carry it.
        if let Some(keys) = change.keys {
            self.register(keys).await?;
        }
        dispatch!(self.set_high_watermark(change))
    }

    /// Sets validators' watermarks to the operator's values (lowering included), audited.
    pub async fn repair(&self, req: &repair::RepairRequest) -> Result<Vec<repair::Repaired>, ProtectionError> {
        req.validate()?;
        dispatch!(self.repair(req))
    }

    /// Deletes history older than `keep_epochs` behind each validator's watermark. The
    /// watermarks themselves always stay.
    pub async fn prune(&self, keep_epochs: u64, slots_per_epoch: u64) -> Result<PruneReport, ProtectionError> {
        let keep_slots = keep_epochs.saturating_mul(slots_per_epoch);
        Ok(PruneReport {
            attestations: dispatch!(self.prune_history(sql::History::Attestations, keep_epochs))?,
            blocks: dispatch!(self.prune_history(sql::History::Blocks, keep_slots))?,
        })
    }

    /// Open and idle connections of this replica's pool (PostgreSQL only).
    pub fn pool_state(&self) -> Option<(u32, usize)> {
        match self {
            SlashingDatabase::Postgres(s) => Some((s.pool().size(), s.pool().num_idle())),
            SlashingDatabase::Sqlite(_) => None,
        }
    }

    /// Woken when the database turns out to be another one than before (PostgreSQL).
    pub fn incarnation(&self) -> Option<&incarnation::Incarnation> {
        match self {
            SlashingDatabase::Postgres(s) => Some(&s.incarnation),
            SlashingDatabase::Sqlite(_) => None,
        }
    }

    /// Whether keystores imported on one replica are kept here for all (PostgreSQL).
    pub fn shares_keystores(&self) -> bool {
        matches!(self, SlashingDatabase::Postgres(_))
    }

    fn not_shared() -> ProtectionError {
        ProtectionError::NotShared("an SQLite database is one host's: it keeps no shared keystores".into())
    }
}

/// Hides the passwords of a database URL for logs and errors: in the user information
/// (everything up to the last `@`, so that an unencoded `?`, `/` or `@` in a password does not
/// move the boundary) and in query parameters (`?password=`, `sslpassword=`). Anything that is
/// not a URL is not shown at all: a `key=value` connection string holds its password in words.
pub fn redact_url(url: &str) -> String {
    let Some(s) = url.find("://") else {
        return "(not shown: not a URL)".into();
    };
    let (scheme, rest) = (&url[..s], &url[s + 3..]);
    let (user, host_and_rest) = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let shown = if userinfo.contains(':') {
                format!("{user}:***@")
            } else {
                format!("{user}@")
            };
            (shown, &rest[at + 1..])
        }
        None => (String::new(), rest),
    };
    let (base, query) = match host_and_rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (host_and_rest, None),
    };
    let base = format!("{scheme}://{user}{base}");
    match query {
        None => base,
        Some(q) => {
            let q: Vec<String> = q
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.to_ascii_lowercase().contains("pass") => format!("{k}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{base}?{}", q.join("&"))
        }
    }
}

/// Whether a database URL carries a password (in the user information or a parameter).
pub fn url_has_password(url: &str) -> bool {
    let Some(s) = url.find("://") else {
        return url.contains("password");
    };
    let rest = &url[s + 3..];
    let userinfo_password = rest.rfind('@').is_some_and(|at| rest[..at].contains(':'));
    let query_password = rest.split_once('?').is_some_and(|(_, q)| {
        q.split('&')
            .any(|p| p.split('=').next().is_some_and(|k| k.contains("pass")))
    });
    userinfo_password || query_password
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://palisade:s3cret@db:5432/p"),
            "postgres://palisade:***@db:5432/p"
        );
        assert_eq!(redact_url("postgres://db/p"), "postgres://db/p");
        assert_eq!(redact_url("sqlite://x.sqlite"), "sqlite://x.sqlite");
        assert_eq!(
            redact_url("postgres://db/p?user=u&password=s3cret&sslmode=require&sslpassword=x"),
            "postgres://db/p?user=u&password=***&sslmode=require&sslpassword=***"
        );
        // Characters a password may hold unencoded do not move the boundary.
        for (url, shown) in [
            ("postgres://u:pa?ss@db/p", "postgres://u:***@db/p"),
            (
                "postgres://u:p/a@s@db:5432/p?sslmode=require",
                "postgres://u:***@db:5432/p?sslmode=require",
            ),
            ("postgres://db/p?pass=s3cret", "postgres://db/p?pass=***"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(url_has_password(url), "{url}");
        }
        // Not a URL: nothing of it is shown.
        assert!(!redact_url("host=db password=s3cret").contains("s3cret"));
        assert!(!url_has_password("postgres://u@db/p?sslmode=require"));
    }
}
