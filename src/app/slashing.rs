//! The operator's slashing-protection calls (admin routes): EIP-3076 import and export, the
//! high watermark, and watermark repair, on the protection front.

use std::sync::Arc;
use std::time::SystemTime;

use crate::network::clock::ClockWindow;
use crate::protection::repair::{RepairRequest, Repaired};
use crate::protection::{HighWatermarkChange, Interchange, Protection, ProtectionError};
use crate::types::{Epoch, PublicKey, Slot};

pub struct SlashingAdmin {
    protection: Arc<Protection>,
    /// With the network's slots per epoch: a repair over HTTP may discard only messages the
    /// wall clock has not reached.
    clock: Option<(ClockWindow, u64)>,
}

impl SlashingAdmin {
    pub fn new(protection: Arc<Protection>, clock: Option<(ClockWindow, u64)>) -> Self {
        SlashingAdmin { protection, clock }
    }

    /// Imports `interchange`, all or nothing: the number of validators.
    pub async fn import(&self, interchange: &Interchange) -> Result<usize, ProtectionError> {
        let n = self.protection.import(interchange).await?;
        tracing::info!(validators = n, "slashing-protection data imported");
        Ok(n)
    }

    pub async fn export(&self, pubkeys: Option<&[PublicKey]>) -> Result<Interchange, ProtectionError> {
        self.protection.export(pubkeys).await
    }

    pub async fn high_watermark(&self) -> Result<Option<(Slot, Epoch)>, ProtectionError> {
        self.protection.high_watermark().await
    }

    /// Sets or clears the high watermark, for all keys or only some.
    pub async fn set_high_watermark(&self, change: HighWatermarkChange<'_>) -> Result<(), ProtectionError> {
        self.protection.set_high_watermark(change).await?;
        let (keys, actor) = (change.keys.map(<[_]>::len), change.actor);
        match change.value {
            Some((slot, epoch)) => tracing::warn!(%slot, %epoch, ?keys, %actor, "high watermark set"),
            None => tracing::warn!(?keys, %actor, "high watermark cleared"),
        }
        Ok(())
    }

    /// Sets validators' watermarks to the operator's values (see `protection::repair`).
    pub async fn repair(&self, mut req: RepairRequest) -> Result<Vec<Repaired>, ProtectionError> {
        req.clock = self
            .clock
            .map(|(c, slots_per_epoch)| (c.limit(SystemTime::now(), 0), slots_per_epoch));
        let done = self.protection.repair(&req).await?;
        for d in &done {
            tracing::warn!(pubkey = %d.pubkey, actor = %req.actor, reason = %req.reason, before = ?d.before,
                after = ?d.after, discarded_blocks = d.discarded_blocks.len(),
                discarded_attestations = d.discarded_attestations.len(), "watermarks repaired");
        }
        Ok(done)
    }
}
