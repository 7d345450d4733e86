//! The signing path, in one direction: identifier and body -> `SigningJob` (root computed,
//! nothing secret touched) -> key lookup, signing policy, disabled keys, clock window, chain
//! pin -> slashing protection (committed) -> signature -> the outcome counted and logged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::disabled::DisabledKeys;
use crate::app::health::DbHealth;
use crate::app::metrics::Metrics;
use crate::app::metrics::{RefusalLabels, TypeLabels};
use crate::keys::handle::{KeyError, SignRequest};
use crate::keys::{KeyRegistry, Lookup};
use crate::network::Network;
use crate::network::clock::ClockWindow;
use crate::protection::interchange::{FORMAT_VERSION, Metadata, SignedAttestation, SignedBlock, ValidatorData};
use crate::protection::repair::{RepairRequest, Repaired};
use crate::protection::replica::{ReplicaMemory, Rollback};
use crate::protection::{ChainPin, Interchange, ProtectionError, Recorded, Refusal, SlashingDatabase};
use crate::ratelimit::RateLimit;
use crate::signing::policy::{Scope, TypeSet};
use crate::signing::{ParseError, SigningJob, parse_signing_request};
use crate::types::{PublicKey, Root, Signature, SlashableMessage};

/// Why a signing request did not produce a signature. `http::error` maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{0}")]
    BadRequest(#[from] ParseError),
    #[error("request is for genesis validators root {given}, but this signer is pinned to {pinned}")]
    WrongChain { pinned: Root, given: Root },
    #[error("{}", ProtectionError::ZeroChain)]
    ZeroChain,
    #[error("no key loaded for {0}")]
    UnknownKey(PublicKey),
    #[error("key {0} failed to load: {1}")]
    KeyFailed(PublicKey, Arc<str>),
    #[error(
        "key {0} is not loaded yet (its keystore is being decrypted, or its key source is still being read); try again shortly"
    )]
    KeyLoading(PublicKey),
    #[error("refused by slashing protection: {0}")]
    Refused(Refusal),
    #[error("signing type {sign_type} is not allowed {scope}")]
    NotPermitted {
        sign_type: crate::signing::SignType,
        scope: crate::signing::policy::Scope,
    },
    #[error("{0}")]
    ProtectionUnavailable(String),
    /// This node holds only a share of the key: its signatures are partial, for coordinators.
    #[error("this signer holds a share of {0}, whose signatures only a threshold coordinator can use")]
    ShareOnly(PublicKey),
    /// A threshold key's share nodes refused the message on their own slashing protection.
    #[error("refused by the key's share nodes: {0}")]
    HoldersRefused(String),
    /// Too few of a threshold key's share nodes answered.
    #[error("{0}")]
    HoldersUnavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl SignError {
    /// The `outcome` label of the requests metric.
    pub fn outcome(&self) -> &'static str {
        match self {
            SignError::BadRequest(_) | SignError::WrongChain { .. } | SignError::ZeroChain => "bad_request",
            SignError::UnknownKey(_) | SignError::KeyFailed(..) => "unknown_key",
            SignError::KeyLoading(_) => "key_loading",
            SignError::Refused(_) => "refused",
            SignError::NotPermitted { .. } | SignError::ShareOnly(_) => "not_permitted",
            SignError::HoldersRefused(_) => "refused",
            SignError::ProtectionUnavailable(_) | SignError::HoldersUnavailable(_) => "unavailable",
            SignError::Internal(_) => "error",
        }
    }
}

/// The message of a job, for a log line: slot or epochs.
fn describe(job: &SigningJob) -> String {
    match job.slashable {
        Some(SlashableMessage::Block { slot, .. }) => format!("slot {slot}"),
        Some(SlashableMessage::Attestation { source, target, .. }) => format!("source {source} target {target}"),
        None => job.slot.map_or(String::new(), |s| format!("slot {s}")),
    }
}

impl From<ProtectionError> for SignError {
    fn from(e: ProtectionError) -> Self {
        match e {
            ProtectionError::Refused(r) => SignError::Refused(r),
            ProtectionError::Unavailable(_) => SignError::ProtectionUnavailable(e.to_string()),
            ProtectionError::WrongChain { pinned, given } => SignError::WrongChain { pinned, given },
            ProtectionError::ZeroChain => SignError::ZeroChain,
            ProtectionError::InvalidInterchange(m)
            | ProtectionError::Internal(m)
            | ProtectionError::InvalidRepair(m)
            | ProtectionError::RepairRefused(m)
            | ProtectionError::NotShared(m) => SignError::Internal(format!("slashing protection: {m}")),
            ProtectionError::FleetSecretMismatch { .. } => SignError::Internal(e.to_string()),
        }
    }
}

/// What a signer is made of; `commands::serve` builds the shared pieces and hands them over.
pub struct SignerParts {
    pub network: Network,
    pub keys: Arc<KeyRegistry>,
    pub db: Arc<SlashingDatabase>,
    pub chain: Arc<ChainPin>,
    pub metrics: Arc<Metrics>,
    /// The last database probe's verdict (kept by `Health`), for fail-fast.
    pub db_health: Arc<DbHealth>,
    pub disabled: Arc<DisabledKeys>,
    /// How long a request for a key that is still being decrypted waits for it.
    pub key_patience: Duration,
    /// Slots further ahead of the wall clock are refused; `None` when the genesis time is
    /// unknown or the window is turned off.
    pub clock: Option<ClockWindow>,
    /// What this replica committed itself (see `protection::replica`).
    pub memory: ReplicaMemory,
    /// The signing types this signer signs at all; a key's definition may narrow it.
    pub signing_types: TypeSet,
}

/// The signing path and the replica's own record. Its parts are its own: other modules get
/// narrow handles (`Health`, `KeyManager`) built from the same shared pieces.
pub struct Signer {
    network: Network,
    keys: Arc<KeyRegistry>,
    db: Arc<SlashingDatabase>,
    chain: Arc<ChainPin>,
    metrics: Arc<Metrics>,
    db_health: Arc<DbHealth>,
    disabled: Arc<DisabledKeys>,
    key_patience: Duration,
    clock: Option<ClockWindow>,
    memory: ReplicaMemory,
    signing_types: TypeSet,
    /// Woken when the database is found behind this replica's record: write the record back.
    write_back_wanted: tokio::sync::Notify,
}

impl Signer {
    pub fn new(p: SignerParts) -> Self {
        Signer {
            network: p.network,
            keys: p.keys,
            db: p.db,
            chain: p.chain,
            metrics: p.metrics,
            db_health: p.db_health,
            disabled: p.disabled,
            key_patience: p.key_patience,
            clock: p.clock,
            memory: p.memory,
            signing_types: p.signing_types,
            write_back_wanted: Default::default(),
        }
    }

    /// Whether the signing policy lets this key sign this type; if not, which policy refused.
    fn permits(&self, pubkey: &PublicKey, t: crate::signing::SignType) -> Result<(), Scope> {
        if !self.signing_types.contains(t) {
            return Err(Scope::Signer);
        }
        match self.keys.policy(pubkey) {
            Some((types, by)) if !types.contains(t) => Err(Scope::Key(by)),
            _ => Ok(()),
        }
    }

    /// This replica's record of what it committed (saved to its state file by `serve`).
    pub fn record(&self) -> &ReplicaMemory {
        &self.memory
    }

    /// Waits until the database was found behind this replica's record.
    pub async fn write_back_wanted(&self) {
        self.write_back_wanted.notified().await
    }

    /// Asks for the record to be written back again (after a failed attempt).
    pub fn want_write_back(&self) {
        self.write_back_wanted.notify_one();
    }

    /// Sets validators' watermarks to the operator's values (see `protection::repair`);
    /// this replica then forgets its own record of those keys, or it would refuse what the
    /// repair allows.
    pub async fn repair(&self, mut req: RepairRequest) -> Result<Vec<Repaired>, ProtectionError> {
        req.clock = self
            .clock
            .map(|c| (c.limit(std::time::SystemTime::now(), 0), self.network.slots_per_epoch()));
        let done = self.db.repair(&req).await?;
        self.memory.forget(&req.pubkeys);
        for d in &done {
            tracing::warn!(pubkey = %d.pubkey, actor = %req.actor, reason = %req.reason, before = ?d.before,
                after = ?d.after, discarded_blocks = d.discarded_blocks.len(),
                discarded_attestations = d.discarded_attestations.len(), "watermarks repaired");
        }
        Ok(done)
    }

    /// The database holds less than this replica committed: it went back in time.
    fn rollback_detected(&self, r: &Rollback) {
        self.metrics.database_rollbacks.inc();
        tracing::error!(
            pubkey = %r.pubkey,
            database = %r.database,
            replica = %r.replica,
            "the slashing-protection database holds less than this replica committed (restored from a backup? \
             a failover to a standby that was behind?): refusing at or below this replica's record and writing it back"
        );
        self.write_back_wanted.notify_one();
    }

    /// Compares the database with this replica's record for every validator it remembers;
    /// writes the record back if the database is behind. Run at startup and periodically.
    pub async fn sweep(&self) -> Result<usize, ProtectionError> {
        let floors = self.memory.snapshot();
        if floors.is_empty() {
            return Ok(0);
        }
        let keys: Vec<PublicKey> = floors.iter().map(|(k, _)| *k).collect();
        let db: std::collections::HashMap<PublicKey, crate::protection::Watermarks> =
            self.db.watermarks_of(&keys).await?.into_iter().collect();
        let mut behind = 0;
        for (pk, _) in &floors {
            let found = match db.get(pk) {
                Some(w) => self.memory.compare(pk, w),
                None => self.memory.compare(pk, &Default::default()),
            };
            if let Some(r) = found {
                behind += 1;
                if behind <= 10 {
                    self.rollback_detected(&r);
                }
            }
        }
        if behind > 0 {
            tracing::error!(
                validators = behind,
                "the slashing-protection database is behind this replica's record"
            );
            self.write_back().await?;
        }
        Ok(behind)
    }

    /// Writes this replica's record into the database, merging to the maxima as an import
    /// does, so that every replica is protected by what this one signed. Validators repaired
    /// since are left alone.
    pub async fn write_back(&self) -> Result<usize, ProtectionError> {
        let Some(chain) = self.chain.get() else { return Ok(0) };
        let floors = self.memory.snapshot();
        let keys: Vec<PublicKey> = floors.iter().map(|(k, _)| *k).collect();
        let db: std::collections::HashMap<PublicKey, u32> = self
            .db
            .watermarks_of(&keys)
            .await?
            .into_iter()
            .map(|(k, w)| (k, w.repairs))
            .collect();
        let keep: Vec<_> = floors
            .into_iter()
            .filter(|(k, f)| db.get(k).is_none_or(|r| *r <= f.repairs))
            .collect();
        let data = keep
            .iter()
            .map(|(pubkey, f)| ValidatorData {
                pubkey: *pubkey,
                signed_blocks: f
                    .block
                    .map(|(slot, signing_root)| SignedBlock { slot, signing_root })
                    .into_iter()
                    .collect(),
                signed_attestations: f
                    .attestation
                    .map(|(source_epoch, target_epoch, signing_root)| SignedAttestation {
                        source_epoch,
                        target_epoch,
                        signing_root,
                    })
                    .into_iter()
                    .collect(),
            })
            .collect();
        let interchange = Interchange {
            metadata: Metadata {
                interchange_format_version: FORMAT_VERSION.into(),
                genesis_validators_root: chain,
            },
            data,
        };
        let n = self.db.import(&interchange).await?;
        let repairs: Vec<(PublicKey, u32)> = keep.iter().map(|(k, f)| (*k, f.repairs)).collect();
        self.db.raise_repairs(&repairs).await?;
        tracing::warn!(
            validators = n,
            "wrote this replica's record back into the slashing-protection database"
        );
        Ok(n)
    }

    /// Keys that can sign (or will, once decrypted), without the disabled ones.
    pub fn listed_pubkeys(&self) -> Vec<PublicKey> {
        self.disabled.filter(self.keys.known_pubkeys())
    }

    /// Signs a Commit-Boost root with the consensus key `pubkey`. No slashing protection is
    /// involved: a `CommitBoostRoot` carries Commit-Boost's own domain, which no consensus
    /// message has. A key disabled on some replica refuses this too.
    pub async fn sign_commit_boost(
        &self,
        pubkey: &PublicKey,
        root: &crate::consensus::commit_boost::CommitBoostRoot,
    ) -> Result<Signature, SignError> {
        let key = match self.keys.wait_for(pubkey, self.key_patience).await {
            Lookup::Ready(k) => k,
            Lookup::Loading => return Err(SignError::KeyLoading(*pubkey)),
            Lookup::Failed(reason) => return Err(SignError::KeyFailed(*pubkey, reason)),
            Lookup::Unknown => return Err(SignError::UnknownKey(*pubkey)),
        };
        if self.disabled.contains(pubkey) {
            return Err(SignError::Refused(Refusal::Disabled));
        }
        // Held in shares: no node signs what it cannot check against its own protection.
        if key.share_index().is_some() || key.protected_by_holders() {
            return Err(SignError::ShareOnly(*pubkey));
        }
        let request = SignRequest {
            identifier: "commit-boost",
            body: &[],
        };
        key.sign(root.signing_root(), request)
            .await
            .map_err(|e| SignError::Internal(format!("the key gave no signature: {e}")))
    }

    /// Whether `pubkey` is one of this signer's keys and not disabled.
    pub fn holds_enabled(&self, pubkey: &PublicKey) -> bool {
        self.keys.holds(pubkey) && !self.disabled.contains(pubkey)
    }

    /// The network this signer serves.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Signs the request for the key `identifier` (the URL's) with `body`, or says why not.
    /// `client` says who asked (recorded with blocks and attestations).
    pub async fn sign(&self, identifier: &str, body: &[u8], client: &str) -> Result<Signature, SignError> {
        self.sign_as(SignRequest { identifier, body }, client, false)
            .await
            .map(|(signature, _)| signature)
    }

    /// For a threshold coordinator: the partial signature of this node's share of the key
    /// `identifier`, after this node's own slashing protection, and the share's index.
    pub async fn sign_partial(
        &self,
        identifier: &str,
        body: &[u8],
        client: &str,
    ) -> Result<(Signature, u32), SignError> {
        self.sign_as(SignRequest { identifier, body }, client, true)
            .await
            .map(|(signature, index)| (signature, index.expect("a share signed")))
    }

    async fn sign_as(
        &self,
        request: SignRequest<'_>,
        client: &str,
        partial: bool,
    ) -> Result<(Signature, Option<u32>), SignError> {
        let start = Instant::now();
        let (job, result) = match parse_signing_request(&self.network, request.identifier, request.body) {
            Ok(job) => {
                let result = self.sign_job(&job, request, client, partial).await;
                (Some(job), result)
            }
            Err(e) => (None, Err(e.into())),
        };
        self.record_outcome(request.identifier, job.as_ref(), &result, start, client);
        result.map(|(signature, _, index)| (signature, index))
    }

    /// The one place a request's outcome is counted and logged.
    fn record_outcome(
        &self,
        identifier: &str,
        job: Option<&SigningJob>,
        result: &Result<(Signature, Option<Recorded>, Option<u32>), SignError>,
        start: Instant,
        client: &str,
    ) {
        let type_label = job.map_or("UNKNOWN", |j| j.sign_type.as_str());
        // The URL's key as sent when the request did not parse (shown escaped and cut short).
        let pubkey = job.map_or_else(
            || identifier.chars().take(98).flat_map(char::escape_default).collect(),
            |j| j.pubkey.to_string(),
        );
        // A repeat is the same message signed again (another client replica, a retry).
        let outcome = match result {
            Ok((_, Some(Recorded::Repeat), _)) => "repeat",
            Ok(_) => "signed",
            Err(e) => e.outcome(),
        };
        tracing::debug!(
            %pubkey,
            r#type = type_label,
            message = %job.map_or(String::new(), describe),
            outcome,
            client,
            ms = start.elapsed().as_secs_f64() * 1e3,
            "signing"
        );
        self.metrics.request(type_label, outcome);
        match result {
            Ok(_) => {
                self.metrics
                    .signing_seconds
                    .get_or_create(&TypeLabels { r#type: type_label })
                    .observe(start.elapsed().as_secs_f64());
            }
            Err(SignError::Refused(r)) => {
                self.metrics
                    .refusals
                    .get_or_create(&RefusalLabels {
                        r#type: type_label,
                        reason: r.code(),
                        risk: Refusal::risk(r.code()),
                    })
                    .inc();
                // One line per refusal, but any client can send refusable requests at will:
                // at most one line a second per reason, saying how many were held back (the
                // metric counts every one).
                static BY_REASON: [RateLimit; Refusal::CODES.len()] =
                    [const { RateLimit::new() }; Refusal::CODES.len()];
                let limit = Refusal::CODES
                    .iter()
                    .position(|c| *c == r.code())
                    .map(|i| &BY_REASON[i]);
                if let Some(held) = limit.map_or(Some(0), RateLimit::allow) {
                    tracing::warn!(%pubkey, r#type = type_label, client = %client, reason = %r,
                        similar_since_last = held, "slashing protection refused to sign");
                }
            }
            Err(e @ (SignError::ProtectionUnavailable(_) | SignError::Internal(_))) => {
                static FAILURES: RateLimit = RateLimit::new();
                if let Some(held) = FAILURES.allow() {
                    tracing::error!(%pubkey, r#type = type_label, error = %e, similar_since_last = held, "signing failed");
                }
            }
            // Malformed requests, unknown or loading keys, types a key may not sign: the
            // client's to fix, so said at info, at most once a second per outcome.
            Err(e) => {
                static OTHERS: [RateLimit; crate::app::metrics::OUTCOMES.len()] =
                    [const { RateLimit::new() }; crate::app::metrics::OUTCOMES.len()];
                let limit = crate::app::metrics::OUTCOMES
                    .iter()
                    .position(|o| *o == outcome)
                    .map(|i| &OTHERS[i]);
                if let Some(held) = limit.map_or(Some(0), RateLimit::allow) {
                    tracing::info!(%pubkey, r#type = type_label, client = %client, outcome, reason = %e,
                        similar_since_last = held, "signing refused");
                }
            }
        }
    }

    /// The signature for `job`, and for blocks and attestations whether it was new or a
    /// repeat; or why not.
    async fn sign_job(
        &self,
        job: &SigningJob,
        request: SignRequest<'_>,
        client: &str,
        partial: bool,
    ) -> Result<(Signature, Option<Recorded>, Option<u32>), SignError> {
        let pubkey = job.pubkey;
        // The key is looked up before anything is pinned or recorded: a request for a key
        // this replica cannot sign with changes nothing.
        let key = match self.keys.wait_for(&pubkey, self.key_patience).await {
            Lookup::Ready(k) => k,
            Lookup::Loading => return Err(SignError::KeyLoading(pubkey)),
            Lookup::Failed(reason) => return Err(SignError::KeyFailed(pubkey, reason)),
            Lookup::Unknown => return Err(SignError::UnknownKey(pubkey)),
        };
        // A share signs only partially, and only for a coordinator; a whole key never partially.
        let share = key.share_index();
        match (share, partial) {
            (Some(_), false) => return Err(SignError::ShareOnly(pubkey)),
            (None, true) => return Err(SignError::UnknownKey(pubkey)),
            _ => {}
        }

        self.permits(&pubkey, job.sign_type)
            .map_err(|scope| SignError::NotPermitted {
                sign_type: job.sign_type,
                scope,
            })?;

        // Deleted on some replica: refused for every type, not only the protected ones.
        if self.disabled.contains(&pubkey) {
            return Err(SignError::Refused(Refusal::Disabled));
        }

        if let (Some(clock), Some(slot)) = (&self.clock, job.slot) {
            clock
                .check(slot, job.sign_type.epochs_ahead(), std::time::SystemTime::now())
                .map_err(|ahead| {
                    SignError::Refused(Refusal::AheadOfClock {
                        slot: ahead.slot,
                        limit: ahead.limit,
                    })
                })?;
        }

        if let Some(given) = job.chain {
            self.chain.admit(&self.db, given).await?;
        }

        let mut recorded = None;
        if let Some(message) = &job.slashable
            && !key.protected_by_holders()
        {
            recorded = Some(self.protect(&pubkey, message, client).await?);
        }
        // Only now, with the record committed (here, or by every share node that signs), does
        // the signature exist.
        let signature = key.sign(&job.signing_root, request).await.map_err(|e| match e {
            KeyError::Refused(m) => SignError::HoldersRefused(m),
            KeyError::Unavailable(m) => SignError::HoldersUnavailable(m),
            KeyError::Failed(m) => SignError::Internal(format!("the key gave no signature: {m}")),
        })?;
        Ok((signature, recorded, share))
    }

    /// Checks `message` against this replica's record and the database, and records it
    /// (committed) when it may be signed.
    async fn protect(
        &self,
        pubkey: &PublicKey,
        message: &SlashableMessage,
        client: &str,
    ) -> Result<Recorded, SignError> {
        // Never at or below what this replica committed itself, whatever the database says.
        if let Some(r) = self.memory.check(pubkey, message) {
            return Err(SignError::Refused(r));
        }
        // Known down: refuse at once, so the client can try another replica in time. A stale
        // verdict is not trusted: then the database is tried, and recovery is quick.
        if let Some(why) = self.db_health.known_down() {
            return Err(SignError::ProtectionUnavailable(format!(
                "slashing-protection database unavailable (its last check failed: {why}); refused without waiting"
            )));
        }
        let started = Instant::now();
        let checked = self.db.check_and_record(pubkey, message, client).await;
        self.metrics.protection_seconds.observe(started.elapsed().as_secs_f64());
        let checked = checked?;
        if let Some(rollback) = self.memory.committed(pubkey, message, &checked.seen) {
            self.rollback_detected(&rollback);
        }
        Ok(checked.recorded)
    }
}

#[cfg(test)]
mod outcome_tests {
    use super::*;
    use crate::types::PublicKey;

    #[test]
    fn every_outcome_is_pre_registered() {
        let pk = PublicKey([0; 48]);
        let errors = [
            SignError::BadRequest(ParseError::Malformed(String::new())),
            SignError::UnknownKey(pk),
            SignError::KeyLoading(pk),
            SignError::Refused(Refusal::Disabled),
            SignError::ProtectionUnavailable(String::new()),
            SignError::Internal(String::new()),
        ];
        for e in errors {
            assert!(crate::app::metrics::OUTCOMES.contains(&e.outcome()), "{}", e.outcome());
        }
    }
}
