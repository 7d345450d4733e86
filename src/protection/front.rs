//! Slashing protection's one front: the database, this replica's own record of what it
//! committed, the chain pin and the database's health verdict, behind calls that each do one
//! whole thing. The signing path asks one question (`check`); the admin routes, the Key
//! Manager and the background duties use the rest. Whatever is not a yes is a
//! `ProtectionError`, which `http::error` maps to a status in one place.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::chain::ChainPin;
use super::interchange::{FORMAT_VERSION, Metadata, SignedAttestation, SignedBlock, ValidatorData};
use super::repair::{RepairRequest, Repaired};
use super::replica::{ReplicaRecord, Rollback};
use super::verdict::DbHealth;
use super::{HighWatermarkChange, Interchange, ProtectionError, Recorded, SlashingDatabase, Watermarks};
use crate::types::{Epoch, PublicKey, Root, SlashableMessage, Slot};

/// What the front counts (handles into the process's metrics).
pub struct ProtectionMetrics {
    /// How long each check-and-record took.
    pub seconds: Histogram,
    /// How often the database was found behind this replica's record.
    pub rollbacks: Counter,
}

pub struct Protection {
    db: Arc<SlashingDatabase>,
    chain: ChainPin,
    record: ReplicaRecord,
    verdict: DbHealth,
    metrics: ProtectionMetrics,
    /// Woken when the database is found behind this replica's record: write the record back.
    write_back_wanted: tokio::sync::Notify,
}

impl Protection {
    /// `chain`: the pinned chain if known; `probe_timeout`: how long a health probe may take
    /// (a verdict older than an interval and that is not trusted).
    pub fn new(
        db: Arc<SlashingDatabase>,
        chain: Option<Root>,
        record: ReplicaRecord,
        probe_timeout: Duration,
        metrics: ProtectionMetrics,
    ) -> Protection {
        Protection {
            db,
            chain: ChainPin::new(chain),
            record,
            verdict: DbHealth::new(probe_timeout),
            metrics,
            write_back_wanted: Default::default(),
        }
    }

    /// The storage, for what is kept beside the protection data (keys, proxies, disabled
    /// keys, heartbeats); protection decisions go through the calls below.
    pub fn database(&self) -> &Arc<SlashingDatabase> {
        &self.db
    }

    pub fn backend_name(&self) -> &'static str {
        self.db.backend_name()
    }

    /// The chain this replica signs for, once pinned.
    pub fn chain(&self) -> Option<Root> {
        self.chain.get()
    }

    /// The last database probe's verdict.
    pub fn verdict(&self) -> &DbHealth {
        &self.verdict
    }

    /// This replica's record of what it committed (saved to its state file by `serve`).
    pub fn record(&self) -> &ReplicaRecord {
        &self.record
    }

    /// Lets a signing for chain `given` through, pinning it first when nothing is pinned.
    pub async fn admit(&self, given: Root) -> Result<(), ProtectionError> {
        self.chain.admit(&self.db, given).await
    }

    /// The one call on the signing path: `message` is checked against this replica's record
    /// and the database and, when it may be signed, recorded and committed. Only after this
    /// returns `Ok` may a signature be made.
    pub async fn check(
        &self,
        pubkey: &PublicKey,
        message: &SlashableMessage,
        client: &str,
    ) -> Result<Recorded, ProtectionError> {
        // Never at or below what this replica committed itself, whatever the database says.
        if let Some(r) = self.record.check(pubkey, message) {
            return Err(ProtectionError::Refused(r));
        }
        // Known down: refuse at once, so the client can try another replica in time. A stale
        // verdict is not trusted: then the database is tried, and recovery is quick.
        if let Some(why) = self.verdict.known_down() {
            return Err(ProtectionError::Unavailable(format!(
                "its last check failed ({why}); refused without waiting"
            )));
        }
        let started = Instant::now();
        let accepted = self.db.check_and_record(pubkey, message, client).await;
        self.metrics.seconds.observe(started.elapsed().as_secs_f64());
        let accepted = accepted?;
        if let Some(rollback) = self.record.committed(pubkey, message, &accepted.held) {
            self.rollback_detected(&rollback);
        }
        Ok(accepted.recorded)
    }

    /// Imports `interchange` (all or nothing) once its chain is admitted.
    pub async fn import(&self, interchange: &Interchange) -> Result<usize, ProtectionError> {
        self.chain.import(&self.db, interchange).await
    }

    /// The EIP-3076 export, of every key or of `pubkeys`.
    pub async fn export(&self, pubkeys: Option<&[PublicKey]>) -> Result<Interchange, ProtectionError> {
        self.db.export(pubkeys).await
    }

    pub async fn high_watermark(&self) -> Result<Option<(Slot, Epoch)>, ProtectionError> {
        self.db.high_watermark().await
    }

    /// Sets or clears the high watermark.
    pub async fn set_high_watermark(&self, change: HighWatermarkChange<'_>) -> Result<(), ProtectionError> {
        self.db.set_high_watermark(change).await
    }

    /// Sets validators' watermarks to the operator's values (see `protection::repair`); this
    /// replica then forgets its own record of those keys, or it would refuse what the repair
    /// allows.
    pub async fn repair(&self, req: &RepairRequest) -> Result<Vec<Repaired>, ProtectionError> {
        let done = self.db.repair(req).await?;
        self.record.forget(&req.pubkeys);
        Ok(done)
    }

    /// Waits until the database was found behind this replica's record.
    pub async fn write_back_wanted(&self) {
        self.write_back_wanted.notified().await
    }

    /// Asks for the record to be written back again (after a failed attempt).
    pub fn want_write_back(&self) {
        self.write_back_wanted.notify_one();
    }

    /// The database holds less than this replica committed: it went back in time.
    fn rollback_detected(&self, r: &Rollback) {
        self.metrics.rollbacks.inc();
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
        let floors = self.record.snapshot();
        if floors.is_empty() {
            return Ok(0);
        }
        let keys: Vec<PublicKey> = floors.iter().map(|(k, _)| *k).collect();
        let db: HashMap<PublicKey, Watermarks> = self.db.watermarks_of(&keys).await?.into_iter().collect();
        let mut behind = 0;
        for (pk, _) in &floors {
            let found = match db.get(pk) {
                Some(w) => self.record.compare(pk, w),
                None => self.record.compare(pk, &Default::default()),
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
        let floors = self.record.snapshot();
        let keys: Vec<PublicKey> = floors.iter().map(|(k, _)| *k).collect();
        let repairs: HashMap<PublicKey, u32> = self
            .db
            .watermarks_of(&keys)
            .await?
            .into_iter()
            .map(|(k, w)| (k, w.repairs))
            .collect();
        let keep: Vec<_> = floors
            .into_iter()
            .filter(|(k, f)| repairs.get(k).is_none_or(|r| *r <= f.repairs))
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
        let raised: Vec<(PublicKey, u32)> = keep.iter().map(|(k, f)| (*k, f.repairs)).collect();
        self.db.raise_repairs(&raised).await?;
        tracing::warn!(
            validators = n,
            "wrote this replica's record back into the slashing-protection database"
        );
        Ok(n)
    }
}
