//! Group commit: the blocks and attestations that arrive while a commit is in flight are
//! checked and recorded together, in one statement and one transaction.
//!
//! - A lone request goes at once: a worker takes whatever is waiting when it is free, so
//!   batches only form under load, and never wait for company.
//! - One statement per batch: arrays in (one element per validator), one row per signed
//!   message out. The rows are locked in pubkey order before any is changed, so two batches
//!   (of this replica or another) wait for each other in one order and cannot deadlock.
//! - A validator appears at most once in a statement. Later messages for it wait for the next
//!   round of the same batch, so two messages for one validator are decided in the order they
//!   arrived, exactly as if they came one after the other.
//! - Each member's fate is its own: a repeat or a refusal is found for it alone; a statement
//!   error that is not a retryable conflict is retried member by member, so a bad member
//!   fails alone. A serialization conflict rolls the whole statement back and it is tried
//!   again with a fresh snapshot: as for a single signing, a retry can only become a repeat
//!   or a refusal, never a second, different signature.
//! - Every request is answered only after the transaction holding its record committed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::register_keys;
use crate::protection::incarnation::Incarnation;
use crate::protection::rules::Verdict;
use crate::protection::sql::{
    MAX_ATTEMPTS, Retries, WATERMARK_COLUMNS, from_db, root_to_db, to_db, watermarks_from_row,
};
use crate::protection::{Accepted, CommitStats, HeldBefore, HeldMark, ProtectionError, Recorded};
use crate::types::SlashableMessage;
use crate::types::{Epoch, PublicKey, Slot};

/// Most validators in one statement: large enough to absorb a slot's burst in a few
/// commits, small enough that one statement stays short and its locks few.
pub const MAX_BATCH: usize = 128;

/// Batches in flight at once per replica. One: what arrives while it commits forms the next
/// batch. Two in flight halved the batches and made each signing cost the database about
/// twice the CPU (`palisade-bench load --saturate`), for no gain in latency.
pub const WORKERS: usize = 1;

/// The batched check-and-record. Every input array has one element per validator; `blk`
/// tells a block (slot in `a`) from an attestation (source in `a`, target in `t`). The UPDATE
/// matches only safe messages below the high watermark in force; SET expressions see the row
/// as it was, so `prev_mark` keeps the watermark the row held before (the replica compares it
/// with what it committed itself). The first row reports the isolation level the statement
/// ran at; below SERIALIZABLE the UPDATE matches nothing.
const SIGN_BATCH: &str = "
WITH input AS MATERIALIZED (
    SELECT * FROM UNNEST($1::bytea[], $2::bool[], $3::bigint[], $4::bigint[], $5::bytea[], $6::text[])
        WITH ORDINALITY AS u(pubkey, blk, a, t, root, client, n)),
locked AS MATERIALIZED (
    SELECT v.id FROM validators v
     WHERE v.pubkey = ANY($1) AND current_setting('transaction_isolation') = 'serializable'
     ORDER BY v.pubkey
       FOR UPDATE),
v AS (
    UPDATE validators v
       SET prev_mark = CASE WHEN i.blk THEN v.block_slot ELSE v.att_target END,
           block_slot = CASE WHEN i.blk THEN i.a ELSE v.block_slot END,
           block_root = CASE WHEN i.blk THEN i.root ELSE v.block_root END,
           att_source = CASE WHEN i.blk THEN v.att_source ELSE i.a END,
           att_target = CASE WHEN i.blk THEN v.att_target ELSE i.t END,
           att_root = CASE WHEN i.blk THEN v.att_root ELSE i.root END,
           att_root_source = CASE WHEN i.blk THEN v.att_root_source ELSE i.a END,
           updated_at = now()
      FROM locked l, input i
     WHERE v.id = l.id AND v.pubkey = i.pubkey AND v.enabled
       AND current_setting('transaction_isolation') = 'serializable'
       AND CASE WHEN i.blk THEN
               (v.block_slot IS NULL OR v.block_slot < i.a)
               AND NOT COALESCE(i.a >= COALESCE(v.high_slot, (SELECT slot FROM high_watermark)), FALSE)
           ELSE
               i.a <= i.t
               AND (v.att_target IS NULL OR v.att_target < i.t)
               AND (v.att_source IS NULL OR v.att_source <= i.a)
               AND NOT COALESCE(i.t >= COALESCE(v.high_epoch, (SELECT epoch FROM high_watermark)), FALSE)
           END
 RETURNING v.id, i.n, i.blk, i.a, i.t, i.root, i.client, v.prev_mark, v.repairs),
b AS (
    INSERT INTO signed_blocks (validator_id, slot, signing_root, client)
    SELECT id, a, root, client FROM v WHERE blk),
at AS (
    INSERT INTO signed_attestations (validator_id, source_epoch, target_epoch, signing_root, client)
    SELECT id, a, t, root, client FROM v WHERE NOT blk)
SELECT 0::bigint, NULL::bigint, NULL::int, current_setting('transaction_isolation')
UNION ALL
SELECT n, prev_mark, repairs, NULL FROM v";

static READ_WATERMARKS: LazyLock<String> =
    LazyLock::new(|| format!("SELECT v.pubkey, {WATERMARK_COLUMNS} FROM validators v WHERE pubkey = ANY($1)"));

type Answer = Result<Accepted, ProtectionError>;

struct QueuedCheck {
    pubkey: PublicKey,
    message: SlashableMessage,
    client: String,
    reply: oneshot::Sender<Answer>,
    /// Rounds this job went through without an answer (its row changed between the
    /// statement and the read that explains it, or it had no row yet).
    rounds: usize,
}

impl QueuedCheck {
    /// A job and where its answer will arrive.
    fn new(pubkey: PublicKey, message: SlashableMessage, client: &str) -> (QueuedCheck, oneshot::Receiver<Answer>) {
        let (reply, answer) = oneshot::channel();
        let job = QueuedCheck {
            pubkey,
            message,
            client: client.to_string(),
            reply,
            rounds: 0,
        };
        (job, answer)
    }
}

/// What a round decided for one member.
enum Outcome {
    Done(Answer),
    /// Not decided (no row yet, or the row changed under the explaining read): next round.
    Again,
}

/// What the workers share.
pub(super) struct Committer {
    pub pool: PgPool,
    pub timeout: Duration,
    pub incarnation: Arc<Incarnation>,
    pub stats: CommitStats,
}

/// The queue in front of the workers. Dropping it stops them once the queue is empty.
pub(super) struct Batcher {
    queue: mpsc::Sender<QueuedCheck>,
    committer: Arc<Committer>,
}

impl Batcher {
    /// Starts the workers (needs a Tokio runtime).
    pub fn start(committer: Committer) -> Self {
        let (queue, rx) = mpsc::channel(16 * 1024);
        let rx = Arc::new(Mutex::new(rx));
        let committer = Arc::new(committer);
        for _ in 0..WORKERS {
            tokio::spawn(work(committer.clone(), rx.clone()));
        }
        Self { queue, committer }
    }

    pub fn pool(&self) -> &PgPool {
        &self.committer.pool
    }

    /// Decides `messages` as one batch, in this order, exactly as a worker decides what it
    /// took from the queue (for tests and benchmarks that need to know what was batched).
    pub async fn check_together(&self, messages: &[(PublicKey, SlashableMessage)], client: &str) -> Vec<Answer> {
        let (jobs, answers): (Vec<QueuedCheck>, Vec<_>) = messages
            .iter()
            .map(|&(pubkey, message)| QueuedCheck::new(pubkey, message, client))
            .unzip();
        self.committer.run(jobs).await;
        let mut out = Vec::with_capacity(answers.len());
        for a in answers {
            out.push(
                a.await
                    .unwrap_or_else(|_| Err(ProtectionError::Internal("no answer".into()))),
            );
        }
        out
    }

    /// Queues one check and waits for its committed answer. The caller bounds the wait; a
    /// request given up on is left out of any batch not yet started, and if its record was
    /// already committed, asking again is a repeat.
    pub async fn check(&self, pubkey: PublicKey, message: SlashableMessage, client: &str) -> Answer {
        let (job, answer) = QueuedCheck::new(pubkey, message, client);
        self.queue
            .send(job)
            .await
            .map_err(|_| ProtectionError::Internal("the signing workers stopped".into()))?;
        answer
            .await
            .map_err(|_| ProtectionError::Internal("a signing worker stopped without answering".into()))?
    }
}

async fn work(committer: Arc<Committer>, rx: Arc<Mutex<mpsc::Receiver<QueuedCheck>>>) {
    loop {
        let jobs = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH * 2 {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            jobs
        };
        committer.run(jobs).await;
    }
}

impl Committer {
    /// Decides every job of a batch, in rounds of one message per validator.
    async fn run(&self, jobs: Vec<QueuedCheck>) {
        let mut order: Vec<PublicKey> = Vec::new();
        let mut queues: HashMap<PublicKey, VecDeque<QueuedCheck>> = HashMap::new();
        for job in jobs {
            let q = queues.entry(job.pubkey).or_default();
            if q.is_empty() {
                order.push(job.pubkey);
            }
            q.push_back(job);
        }
        loop {
            // The head of each validator's queue, skipping requests already given up on.
            let mut round: Vec<QueuedCheck> = Vec::new();
            for pk in &order {
                let q = queues.get_mut(pk).expect("queue");
                while q.front().is_some_and(|j| j.reply.is_closed()) {
                    q.pop_front();
                }
                if let Some(j) = q.pop_front() {
                    round.push(j);
                }
                if round.len() == MAX_BATCH {
                    break;
                }
            }
            if round.is_empty() {
                return;
            }
            // Lock order is pubkey order; arrays in the same order read best in a plan.
            round.sort_by_key(|j| j.pubkey);
            let outcomes = self.decide(&round).await;
            for (mut job, outcome) in round.into_iter().zip(outcomes) {
                match outcome {
                    Outcome::Done(answer) => {
                        let _ = job.reply.send(answer);
                    }
                    Outcome::Again if job.rounds + 1 >= MAX_ATTEMPTS => {
                        let _ = job.reply.send(Err(ProtectionError::Unavailable(
                            "the validator's row kept changing while its check was explained".into(),
                        )));
                    }
                    Outcome::Again => {
                        job.rounds += 1;
                        // Back to the front: it still comes before later messages of its validator.
                        queues.get_mut(&job.pubkey).expect("queue").push_front(job);
                    }
                }
            }
        }
    }

    /// One round: every member is a different validator.
    async fn decide(&self, members: &[QueuedCheck]) -> Vec<Outcome> {
        match self.decide_together(members).await {
            Ok(outcomes) => outcomes,
            Err(e) if members.len() == 1 => vec![Outcome::Done(Err(e))],
            // Not a conflict, not the database being away: maybe one member's fault. Each
            // alone, so that it fails alone.
            Err(ProtectionError::Internal(_)) => {
                let mut out = Vec::with_capacity(members.len());
                for m in members {
                    out.push(match self.decide_together(std::slice::from_ref(m)).await {
                        Ok(mut o) => o.pop().expect("one outcome"),
                        Err(e) => Outcome::Done(Err(e)),
                    });
                }
                out
            }
            Err(e) => members.iter().map(|_| Outcome::Done(Err(e.clone()))).collect(),
        }
    }

    async fn decide_together(&self, members: &[QueuedCheck]) -> Result<Vec<Outcome>, ProtectionError> {
        let mut retries = Retries::new(MAX_ATTEMPTS);
        let outcome = self.try_together(members, &mut retries).await;
        self.stats.conflicts.inc_by(retries.conflicts() as u64);
        if let Ok(o) = &outcome {
            self.stats.statements.inc();
            let decided = o.iter().filter(|o| matches!(o, Outcome::Done(_))).count();
            self.stats.decided.inc_by(decided as u64);
        }
        outcome
    }

    async fn try_together(
        &self,
        members: &[QueuedCheck],
        retries: &mut Retries,
    ) -> Result<Vec<Outcome>, ProtectionError> {
        loop {
            // The connection first: a new one may be the first to see a changed database,
            // and then nothing may be signed on it yet.
            let mut conn = match tokio::time::timeout(self.timeout, self.pool.acquire()).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    retries.again(e).await?;
                    continue;
                }
                Err(_) => {
                    retries.unavailable(format!("no connection within {} ms", self.timeout.as_millis()))?;
                    continue;
                }
            };
            self.refuse_while_held()?;
            let rows = match tokio::time::timeout(self.timeout, sign_statement(members).fetch_all(&mut *conn)).await {
                Ok(Ok(rows)) => rows,
                Ok(Err(e)) => {
                    drop(conn);
                    retries.again(e).await?;
                    continue;
                }
                // It may have committed: running the same check again is safe (a committed
                // record turns into a repeat of the same message).
                Err(_) => {
                    retries.unavailable(format!("no answer within {} ms", self.timeout.as_millis()))?;
                    continue;
                }
            };
            let mut outcomes: Vec<Option<Outcome>> = members.iter().map(|_| None).collect();
            for row in rows {
                let (n, prev, repairs, level): (i64, Option<i64>, Option<i32>, Option<String>) =
                    sqlx::FromRow::from_row(&row).map_err(|e| ProtectionError::Internal(e.to_string()))?;
                if n == 0 {
                    let level = level.unwrap_or_default();
                    if level != "serializable" {
                        return Err(ProtectionError::Internal(super::not_serializable(&level)));
                    }
                    continue;
                }
                let i = (n - 1) as usize;
                let mark = match members[i].message {
                    SlashableMessage::Block { .. } => HeldMark::Block(prev.map(|v| Slot(from_db(v)))),
                    SlashableMessage::Attestation { .. } => {
                        HeldMark::AttestationTarget(prev.map(|v| Epoch(from_db(v))))
                    }
                };
                outcomes[i] = Some(Outcome::Done(Ok(Accepted {
                    recorded: Recorded::New,
                    held: HeldBefore {
                        repairs: repairs.unwrap_or(0) as u32,
                        mark,
                    },
                })));
            }
            // The unmatched: a repeat, a refusal, or a validator without a row yet. Their
            // explanation may fail without harm to the signed ones (already committed).
            let unmatched: Vec<usize> = (0..members.len()).filter(|&i| outcomes[i].is_none()).collect();
            if !unmatched.is_empty() {
                self.explain(&mut conn, members, &unmatched, &mut outcomes).await;
            }
            return Ok(outcomes.into_iter().map(|o| o.unwrap_or(Outcome::Again)).collect());
        }
    }

    /// Reads the rows of the members the statement did not sign, to tell a repeat from a
    /// refusal. Members left undecided go to the next round.
    async fn explain(
        &self,
        conn: &mut sqlx::PgConnection,
        members: &[QueuedCheck],
        unmatched: &[usize],
        outcomes: &mut [Option<Outcome>],
    ) {
        let keys: Vec<Vec<u8>> = unmatched.iter().map(|&i| members[i].pubkey.0.to_vec()).collect();
        let read = tokio::time::timeout(
            self.timeout,
            sqlx::query(&READ_WATERMARKS).bind(&keys).fetch_all(&mut *conn),
        )
        .await;
        let Ok(Ok(rows)) = read else { return };
        let mut by_key: HashMap<Vec<u8>, &PgRow> = HashMap::new();
        for row in &rows {
            if let Ok(k) = row.try_get::<Vec<u8>, _>("pubkey") {
                by_key.insert(k, row);
            }
        }
        let mut missing = Vec::new();
        for &i in unmatched {
            let m = &members[i];
            let Some(row) = by_key.get(&m.pubkey.0[..]) else {
                missing.push(m.pubkey);
                continue;
            };
            let w = match watermarks_from_row(*row) {
                Ok(w) => w,
                Err(e) => {
                    outcomes[i] = Some(Outcome::Done(Err(ProtectionError::Internal(e.to_string()))));
                    continue;
                }
            };
            outcomes[i] = match w.check(&m.message) {
                Verdict::Repeat => Some(Outcome::Done(Ok(Accepted {
                    recorded: Recorded::Repeat,
                    held: HeldBefore::of(&w, &m.message),
                }))),
                Verdict::Refused(r) => Some(Outcome::Done(Err(ProtectionError::Refused(r)))),
                // The row changed between the two statements (a re-enable): next round.
                Verdict::New => None,
            };
        }
        // Keys loaded before the database was reachable have no row yet.
        if !missing.is_empty()
            && let Err(e) = register_keys(&self.pool, self.timeout, &missing).await
        {
            for &i in unmatched {
                if missing.contains(&members[i].pubkey) {
                    outcomes[i] = Some(Outcome::Done(Err(e.clone())));
                }
            }
        }
    }

    fn refuse_while_held(&self) -> Result<(), ProtectionError> {
        super::refuse_while_held(&self.incarnation)
    }
}

fn sign_statement(members: &[QueuedCheck]) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let n = members.len();
    let (mut keys, mut blk, mut a, mut t, mut roots, mut clients) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for m in members {
        keys.push(m.pubkey.0.to_vec());
        clients.push(m.client.clone());
        match m.message {
            SlashableMessage::Block { slot, root } => {
                blk.push(true);
                a.push(to_db(slot.0));
                t.push(to_db(0));
                roots.push(root_to_db(Some(root)));
            }
            SlashableMessage::Attestation { source, target, root } => {
                blk.push(false);
                a.push(to_db(source.0));
                t.push(to_db(target.0));
                roots.push(root_to_db(Some(root)));
            }
        }
    }
    sqlx::query(SIGN_BATCH)
        .bind(keys)
        .bind(blk)
        .bind(a)
        .bind(t)
        .bind(roots)
        .bind(clients)
}
