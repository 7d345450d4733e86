//! Repairing watermarks: the operator's deliberate, audited way out of a bricked key (a block or
//! attestation signed far in the future raises its watermark past every real duty).
//!
//! A repair sets a validator's block watermark and/or attestation watermarks to given values,
//! lowering included, and discards the history above them (kept in the audit record). It takes
//! the validator's row lock, waiting briefly for signings in flight (a key whose row stays
//! locked is refused). It
//! discards only messages beyond the wall clock unless told otherwise, because a message at a
//! slot that has passed may have been broadcast: lowering below it allows a slashable pair.
//! Every repair bumps the validator's repair count, so replicas drop their memory of the key.

use serde::Serialize;

use super::ProtectionError;
use super::rules::Watermarks;
use crate::types::{Epoch, PublicKey, SigningRoot, Slot};

/// What the operator asks for.
#[derive(Clone, Debug)]
pub struct RepairRequest {
    pub pubkeys: Vec<PublicKey>,
    pub block_slot: Option<Slot>,
    /// (source, target)
    pub attestation: Option<(Epoch, Epoch)>,
    pub reason: String,
    /// Who asked: `cli:<user>@<host>` or `api:<client>`.
    pub actor: String,
    /// The highest slot the wall clock allows now and the slots per epoch; `None` when the
    /// clock window is off (then every discarded message counts as possibly broadcast).
    pub clock: Option<(Slot, u64)>,
    /// Discard messages at slots that have already passed too. Dangerous: see the module.
    pub discard_past: bool,
}

impl RepairRequest {
    pub fn validate(&self) -> Result<(), ProtectionError> {
        let bad = |m: &str| Err(ProtectionError::InvalidRepair(m.into()));
        if self.pubkeys.is_empty() {
            return bad("name at least one validator (pubkeys)");
        }
        if self.block_slot.is_none() && self.attestation.is_none() {
            return bad("give the new block slot and/or the new attestation source and target");
        }
        if let Some((s, t)) = self.attestation
            && s > t
        {
            return bad("the attestation source epoch must not be above its target epoch");
        }
        if self.reason.trim().is_empty() {
            return bad("say why (reason): it is kept with the repair");
        }
        Ok(())
    }
}

/// The watermarks a repair reads and sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Marks {
    pub block_slot: Option<Slot>,
    pub attestation_source: Option<Epoch>,
    pub attestation_target: Option<Epoch>,
}

impl From<&Watermarks> for Marks {
    fn from(w: &Watermarks) -> Self {
        Marks {
            block_slot: w.block_slot,
            attestation_source: w.att_source,
            attestation_target: w.att_target,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DiscardedBlock {
    pub slot: Slot,
    pub signing_root: Option<SigningRoot>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DiscardedAttestation {
    pub source_epoch: Epoch,
    pub target_epoch: Epoch,
    pub signing_root: Option<SigningRoot>,
}

/// One validator's repair, as done (and recorded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Repaired {
    pub pubkey: PublicKey,
    pub before: Marks,
    pub after: Marks,
    pub discarded_blocks: Vec<DiscardedBlock>,
    pub discarded_attestations: Vec<DiscardedAttestation>,
}

impl Repaired {
    /// The audit record's JSON of what was discarded.
    pub fn discarded_json(&self) -> String {
        serde_json::json!({"blocks": self.discarded_blocks, "attestations": self.discarded_attestations}).to_string()
    }
}

/// Decides one validator's repair from its watermarks and the history rows above the new
/// values (blocks above the new slot; attestations with a target or source above the new ones).
pub fn plan(
    req: &RepairRequest,
    pubkey: PublicKey,
    w: &Watermarks,
    blocks_above: Vec<DiscardedBlock>,
    attestations_above: Vec<DiscardedAttestation>,
) -> Result<Repaired, ProtectionError> {
    let before = Marks::from(w);
    let mut after = before;
    if let Some(s) = req.block_slot {
        after.block_slot = Some(s);
    }
    if let Some((s, t)) = req.attestation {
        after.attestation_source = Some(s);
        after.attestation_target = Some(t);
    }
    if !req.discard_past {
        let passed = |slot: Slot| req.clock.is_none_or(|(limit, _)| slot <= limit);
        let spe = req.clock.map_or(1, |(_, spe)| spe);
        let recent_block = blocks_above.iter().find(|b| passed(b.slot));
        let recent_att = attestations_above
            .iter()
            .find(|a| passed(Slot(a.target_epoch.0.saturating_mul(spe))));
        let what = match (recent_block, recent_att) {
            (Some(b), _) => Some(format!("a block at slot {}", b.slot)),
            (_, Some(a)) => Some(format!(
                "an attestation with source {} and target {}",
                a.source_epoch, a.target_epoch
            )),
            _ => None,
        };
        if let Some(what) = what {
            let why = match req.clock {
                Some(_) => "its slot has passed, so it may have been broadcast",
                None => "the clock window is off, so Palisade cannot tell whether it was broadcast",
            };
            return Err(ProtectionError::RepairRefused(format!(
                "{pubkey}: the repair would discard {what}, and {why}: signing below it again could be \
                 slashable. Nothing was changed. If you are sure it never reached the chain, repeat with \
                 the option to discard past messages"
            )));
        }
    }
    Ok(Repaired {
        pubkey,
        before,
        after,
        discarded_blocks: blocks_above,
        discarded_attestations: attestations_above,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(clock: Option<(Slot, u64)>, discard_past: bool) -> RepairRequest {
        RepairRequest {
            pubkeys: vec![PublicKey([1; 48])],
            block_slot: Some(Slot(100)),
            attestation: Some((Epoch(2), Epoch(3))),
            reason: "bricked by a bad clock".into(),
            actor: "test".into(),
            clock,
            discard_past,
        }
    }

    #[test]
    fn only_future_messages_are_discarded_unless_told() {
        let w = Watermarks {
            enabled: true,
            block_slot: Some(Slot(1_000_000)),
            att_source: Some(Epoch(3)),
            att_target: Some(Epoch(40_000)),
            ..Default::default()
        };
        let far = vec![DiscardedBlock {
            slot: Slot(1_000_000),
            signing_root: None,
        }];
        let far_att = vec![DiscardedAttestation {
            source_epoch: Epoch(3),
            target_epoch: Epoch(40_000),
            signing_root: None,
        }];
        let clock = Some((Slot(500), 32));
        let r = plan(&req(clock, false), PublicKey([1; 48]), &w, far.clone(), far_att.clone()).unwrap();
        assert_eq!(r.after.block_slot, Some(Slot(100)));
        assert_eq!(r.after.attestation_target, Some(Epoch(3)));
        // A block at slot 400 has passed: refused, unless told.
        let passed = vec![DiscardedBlock {
            slot: Slot(400),
            signing_root: None,
        }];
        assert!(matches!(
            plan(&req(clock, false), PublicKey([1; 48]), &w, passed.clone(), vec![]),
            Err(ProtectionError::RepairRefused(_))
        ));
        assert!(plan(&req(clock, true), PublicKey([1; 48]), &w, passed, vec![]).is_ok());
        // Without a clock nothing can be called future.
        assert!(plan(&req(None, false), PublicKey([1; 48]), &w, far, far_att).is_err());
        let mut bad = req(clock, false);
        bad.reason = " ".into();
        assert!(bad.validate().is_err());
    }
}
