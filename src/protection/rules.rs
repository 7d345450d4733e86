//! The EIP-3076 minimal rule, kept per validator as watermarks.
//!
//! A block is new only above the highest slot ever signed or imported; an attestation is new
//! only with its target above the highest target and its source at or above the highest
//! source. This refuses every double proposal, double vote and surround vote whatever the
//! history, in O(1). The one exception is an exact repeat of the latest message *this*
//! signer signed (same slot or epochs and same non-zero root): re-signing the same message
//! is harmless and returns the same signature. Imported messages are never "repeated".

use std::fmt;

use crate::types::{Epoch, SigningRoot, SlashableMessage, Slot};

/// What slashing protection knows about one validator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Watermarks {
    pub enabled: bool,
    /// Highest block slot signed or imported.
    pub block_slot: Option<Slot>,
    /// Signing root of the block Palisade signed at `block_slot`, if it signed it.
    pub block_root: Option<SigningRoot>,
    /// Highest attestation source epoch signed or imported.
    pub att_source: Option<Epoch>,
    /// Highest attestation target epoch signed or imported.
    pub att_target: Option<Epoch>,
    /// Signing root and source of the attestation Palisade signed at `att_target`, if any.
    pub att_root: Option<SigningRoot>,
    pub att_root_source: Option<Epoch>,
    /// The operator's high watermark in force for this key (its own, else the global one):
    /// nothing at or above it is signed.
    pub high_slot: Option<Slot>,
    pub high_epoch: Option<Epoch>,
    /// How many times the key's watermarks were repaired (lowered or set) by an operator.
    pub repairs: u32,
}

/// Why slashing protection refused to sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The key was deleted through the Key Manager API; every replica refuses it.
    Disabled,
    BlockSlotNotAbove {
        slot: Slot,
        highest: Slot,
    },
    SourceAfterTarget {
        source: Epoch,
        target: Epoch,
    },
    TargetNotAbove {
        target: Epoch,
        highest: Epoch,
    },
    SourceBelow {
        source: Epoch,
        highest: Epoch,
    },
    /// The message's slot lies further ahead of the wall clock than the window allows:
    /// signing it would raise the watermark past every real duty.
    AheadOfClock {
        slot: Slot,
        limit: Slot,
    },
    /// Above the high watermark the operator set (for all keys, or this one).
    AboveHighWatermark {
        what: &'static str,
        value: u64,
        high: u64,
    },
}

impl Refusal {
    /// Every `code()`.
    pub const CODES: [&'static str; 7] = [
        "validator_disabled",
        "block_slot_not_above_highest",
        "source_after_target",
        "target_not_above_highest",
        "source_below_highest",
        "ahead_of_clock",
        "above_high_watermark",
    ];

    /// What a refusal says about the fleet, for metrics and alerts: `slashable` (the message
    /// could be slashable against what was signed: two clients or signers disagree, or a key
    /// is used in two places), `invalid` (no honest client sends it), `policy` (a disabled key
    /// or an operator's high watermark) or `clock` (ahead of this host's clock).
    pub fn risk(code: &str) -> &'static str {
        match code {
            "block_slot_not_above_highest" | "target_not_above_highest" | "source_below_highest" => "slashable",
            "source_after_target" => "invalid",
            "ahead_of_clock" => "clock",
            _ => "policy",
        }
    }

    /// Stable label for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Disabled => "validator_disabled",
            Refusal::BlockSlotNotAbove { .. } => "block_slot_not_above_highest",
            Refusal::SourceAfterTarget { .. } => "source_after_target",
            Refusal::TargetNotAbove { .. } => "target_not_above_highest",
            Refusal::SourceBelow { .. } => "source_below_highest",
            Refusal::AheadOfClock { .. } => "ahead_of_clock",
            Refusal::AboveHighWatermark { .. } => "above_high_watermark",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Refusal::Disabled => write!(
                f,
                "validator is disabled in the slashing-protection database (deleted through the Key Manager API)"
            ),
            Refusal::BlockSlotNotAbove { slot, highest } => write!(
                f,
                "block slot {slot} is not above slot {highest}, the highest already signed or imported for this validator (double proposal risk)"
            ),
            Refusal::SourceAfterTarget { source, target } => write!(
                f,
                "attestation source epoch {source} is after its target epoch {target}"
            ),
            Refusal::TargetNotAbove { target, highest } => write!(
                f,
                "attestation target epoch {target} is not above target epoch {highest}, the highest already signed or imported for this validator (double vote or surround risk)"
            ),
            Refusal::SourceBelow { source, highest } => write!(
                f,
                "attestation source epoch {source} is below source epoch {highest}, the highest already signed or imported for this validator (surround risk)"
            ),
            Refusal::AheadOfClock { slot, limit } => write!(
                f,
                "slot {slot} is ahead of the wall clock: the highest slot accepted now is {limit} (check the client's clock and chain)"
            ),
            Refusal::AboveHighWatermark { what, value, high } => write!(
                f,
                "{what} {value} is above the high watermark {high} set by the operator"
            ),
        }
    }
}

/// The rule's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Safe and not signed before: record it, then sign.
    New,
    /// Exactly the latest message this signer signed: sign again, record nothing.
    Repeat,
    Refused(Refusal),
}

fn nonzero(root: SigningRoot) -> Option<SigningRoot> {
    (!root.is_zero()).then_some(root)
}

impl Watermarks {
    pub fn check(&self, p: &SlashableMessage) -> Verdict {
        if !self.enabled {
            return Verdict::Refused(Refusal::Disabled);
        }
        if let Some(r) = self.above_high_watermark(p) {
            return Verdict::Refused(r);
        }
        match *p {
            SlashableMessage::Block { slot, root } => match self.block_slot {
                None => Verdict::New,
                Some(h) if slot > h => Verdict::New,
                Some(h) if slot == h && nonzero(root).is_some() && self.block_root == Some(root) => Verdict::Repeat,
                Some(h) => Verdict::Refused(Refusal::BlockSlotNotAbove { slot, highest: h }),
            },
            SlashableMessage::Attestation { source, target, root } => {
                if source > target {
                    return Verdict::Refused(Refusal::SourceAfterTarget { source, target });
                }
                let refusal = if let Some(h) = self.att_target.filter(|h| target <= *h) {
                    Refusal::TargetNotAbove { target, highest: h }
                } else if let Some(h) = self.att_source.filter(|h| source < *h) {
                    Refusal::SourceBelow { source, highest: h }
                } else {
                    return Verdict::New;
                };
                let repeat = nonzero(root).is_some()
                    && self.att_target == Some(target)
                    && self.att_root_source == Some(source)
                    && self.att_root == Some(root);
                if repeat {
                    Verdict::Repeat
                } else {
                    Verdict::Refused(refusal)
                }
            }
        }
    }

    fn above_high_watermark(&self, p: &SlashableMessage) -> Option<Refusal> {
        let (what, value, high) = match *p {
            SlashableMessage::Block { slot, .. } => ("block slot", slot.0, self.high_slot.map(|h| h.0)),
            SlashableMessage::Attestation { target, .. } => {
                ("attestation target epoch", target.0, self.high_epoch.map(|h| h.0))
            }
        };
        high.filter(|h| value >= *h)
            .map(|high| Refusal::AboveHighWatermark { what, value, high })
    }

    /// The watermarks after signing `p` (a `Verdict::New`).
    pub fn record(&mut self, p: &SlashableMessage) {
        match *p {
            SlashableMessage::Block { slot, root } => {
                self.block_slot = Some(slot);
                self.block_root = nonzero(root);
            }
            SlashableMessage::Attestation { source, target, root } => {
                self.att_source = Some(source);
                self.att_target = Some(target);
                self.att_root = nonzero(root);
                self.att_root_source = Some(source);
            }
        }
    }

    /// Merges imported history: maxima only ever rise. A root is kept only where it is the
    /// one this signer signed at the (unchanged) highest slot or target, so an imported
    /// message can never be "repeated".
    pub fn merge_import(
        &mut self,
        max_block: Option<(Slot, Option<SigningRoot>)>,
        max_source: Option<Epoch>,
        max_target: Option<(Epoch, Option<(Epoch, SigningRoot)>)>,
    ) {
        if let Some((slot, root)) = max_block {
            match self.block_slot {
                Some(h) if h > slot => {}
                Some(h) if h == slot => {
                    if root.is_none() || root != self.block_root {
                        self.block_root = None;
                    }
                }
                _ => {
                    self.block_slot = Some(slot);
                    self.block_root = None;
                }
            }
        }
        if let Some(s) = max_source {
            self.att_source = Some(self.att_source.map_or(s, |h| h.max(s)));
        }
        if let Some((target, signed)) = max_target {
            match self.att_target {
                Some(h) if h > target => {}
                Some(h) if h == target => {
                    let ours = self.att_root_source.zip(self.att_root);
                    if signed.is_none() || signed != ours {
                        self.att_root = None;
                        self.att_root_source = None;
                    }
                }
                _ => {
                    self.att_target = Some(target);
                    self.att_root = None;
                    self.att_root_source = None;
                }
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::protection) fn r(b: u8) -> SigningRoot {
        SigningRoot([b; 32])
    }
    /// An attestation whose signing root is `root` repeated.
    pub(in crate::protection) fn att(s: u64, t: u64, root: u8) -> SlashableMessage {
        SlashableMessage::Attestation {
            source: Epoch(s),
            target: Epoch(t),
            root: r(root),
        }
    }
    fn block(slot: u64, root: u8) -> SlashableMessage {
        SlashableMessage::Block {
            slot: Slot(slot),
            root: r(root),
        }
    }
    fn fresh() -> Watermarks {
        Watermarks {
            enabled: true,
            ..Default::default()
        }
    }

    #[test]
    fn blocks() {
        let mut w = fresh();
        assert_eq!(w.check(&block(5, 1)), Verdict::New);
        w.record(&block(5, 1));
        assert_eq!(w.check(&block(5, 1)), Verdict::Repeat);
        assert!(matches!(w.check(&block(5, 2)), Verdict::Refused(_)));
        assert!(matches!(w.check(&block(4, 1)), Verdict::Refused(_)));
        assert_eq!(w.check(&block(6, 2)), Verdict::New);
        // A zero root never equals anything.
        w.record(&block(7, 0));
        assert!(matches!(w.check(&block(7, 0)), Verdict::Refused(_)));
    }

    #[test]
    fn attestations() {
        let mut w = fresh();
        assert!(matches!(
            w.check(&att(3, 2, 1)),
            Verdict::Refused(Refusal::SourceAfterTarget { .. })
        ));
        assert_eq!(w.check(&att(2, 4, 1)), Verdict::New);
        w.record(&att(2, 4, 1));
        assert_eq!(w.check(&att(2, 4, 1)), Verdict::Repeat);
        assert!(matches!(
            w.check(&att(2, 4, 2)),
            Verdict::Refused(Refusal::TargetNotAbove { .. })
        )); // double vote
        assert!(matches!(
            w.check(&att(1, 5, 2)),
            Verdict::Refused(Refusal::SourceBelow { .. })
        )); // surrounds (2,4)
        assert!(matches!(w.check(&att(3, 3, 2)), Verdict::Refused(_))); // surrounded
        assert_eq!(w.check(&att(2, 5, 2)), Verdict::New);
    }

    #[test]
    fn every_refusal_code_is_listed() {
        let all = [
            Refusal::Disabled,
            Refusal::BlockSlotNotAbove {
                slot: Slot(1),
                highest: Slot(1),
            },
            Refusal::SourceAfterTarget {
                source: Epoch(2),
                target: Epoch(1),
            },
            Refusal::TargetNotAbove {
                target: Epoch(1),
                highest: Epoch(1),
            },
            Refusal::SourceBelow {
                source: Epoch(1),
                highest: Epoch(2),
            },
            Refusal::AheadOfClock {
                slot: Slot(9),
                limit: Slot(8),
            },
            Refusal::AboveHighWatermark {
                what: "slot",
                value: 9,
                high: 8,
            },
        ];
        for r in all {
            assert!(Refusal::CODES.contains(&r.code()), "{}", r.code());
        }
        let slashable: Vec<_> = Refusal::CODES
            .iter()
            .filter(|c| Refusal::risk(c) == "slashable")
            .collect();
        assert_eq!(
            slashable,
            [
                &"block_slot_not_above_highest",
                &"target_not_above_highest",
                &"source_below_highest"
            ]
        );
        assert_eq!(Refusal::risk("validator_disabled"), "policy");
        assert_eq!(Refusal::risk("above_high_watermark"), "policy");
        assert_eq!(all.len(), Refusal::CODES.len());
    }

    #[test]
    fn high_watermark_is_an_exclusive_bound() {
        let mut w = fresh();
        w.high_slot = Some(Slot(10));
        w.high_epoch = Some(Epoch(4));
        assert_eq!(w.check(&block(9, 1)), Verdict::New);
        assert!(matches!(
            w.check(&block(10, 1)),
            Verdict::Refused(Refusal::AboveHighWatermark { .. })
        ));
        assert_eq!(w.check(&att(2, 3, 1)), Verdict::New);
        assert!(matches!(
            w.check(&att(2, 4, 1)),
            Verdict::Refused(Refusal::AboveHighWatermark { .. })
        ));
    }

    #[test]
    fn disabled_refuses_everything() {
        let w = Watermarks::default();
        assert_eq!(w.check(&block(1, 1)), Verdict::Refused(Refusal::Disabled));
    }

    #[test]
    fn import_never_lowers_and_clears_foreign_roots() {
        let mut w = fresh();
        w.record(&block(10, 1));
        w.record(&att(3, 4, 1));
        // Lower imports change nothing.
        w.merge_import(Some((Slot(9), None)), Some(Epoch(2)), Some((Epoch(3), None)));
        assert_eq!(w.check(&block(10, 1)), Verdict::Repeat);
        assert_eq!(w.check(&att(3, 4, 1)), Verdict::Repeat);
        // Re-importing our own latest messages keeps them repeatable.
        w.merge_import(
            Some((Slot(10), Some(r(1)))),
            Some(Epoch(3)),
            Some((Epoch(4), Some((Epoch(3), r(1))))),
        );
        assert_eq!(w.check(&att(3, 4, 1)), Verdict::Repeat);
        assert_eq!(w.check(&block(10, 1)), Verdict::Repeat);
        // A different message at the same height removes the repeat exception.
        w.merge_import(Some((Slot(10), Some(r(2)))), None, Some((Epoch(4), None)));
        assert!(matches!(w.check(&block(10, 1)), Verdict::Refused(_)));
        assert!(matches!(w.check(&att(3, 4, 1)), Verdict::Refused(_)));
        // Higher imports raise the watermarks.
        w.merge_import(Some((Slot(20), Some(r(3)))), Some(Epoch(8)), Some((Epoch(9), None)));
        assert!(matches!(w.check(&block(20, 3)), Verdict::Refused(_)));
        assert_eq!(w.check(&block(21, 3)), Verdict::New);
        assert!(matches!(w.check(&att(7, 10, 1)), Verdict::Refused(_)));
        assert_eq!(w.check(&att(8, 10, 1)), Verdict::New);
    }
}
