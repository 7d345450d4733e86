//! Request body -> `SigningJob`: Palisade computes every signing root itself.
//!
//! Domain rule (as Web3Signer): the fork version is `fork_info.fork.previous_version` when the
//! message's epoch is below `fork_info.fork.epoch`, else `current_version`. The message's epoch
//! is the target epoch for attestations, the `epoch` field for RANDAO reveals and exits, and
//! the slot's epoch otherwise.

use serde_json::value::RawValue;
use tree_hash::TreeHash;

use super::job::{SignType, SigningJob, SlashingCheck};
use super::request::{
    AggregationSlot, BlockV2, DepositRequest, Envelope, ForkInfo, RandaoReveal, SyncCommitteeMessage,
    VersionedAggregate, parse_at,
};
use crate::consensus::containers::{
    AggregateAndProof, AggregateAndProofElectra, AttestationData, BeaconBlockAltair, BeaconBlockPhase0,
    ContributionAndProof, DepositMessage, SyncAggregatorSelectionData, ValidatorRegistration, VoluntaryExit,
};
use crate::consensus::{DomainType, Mainnet, Minimal, Preset, compute_domain, compute_signing_root};
use crate::network::{ForkName, Network, PresetKind};
use crate::types::{Epoch, PublicKey, Root, SigningRoot, Slot};

/// Why a request body could not become a signing job. Always the client's fault (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{0}")]
    Malformed(String),
    #[error("signing root mismatch: the request says {supplied}, Palisade computed {computed} for this message")]
    SigningRootMismatch {
        supplied: SigningRoot,
        computed: SigningRoot,
    },
}

impl From<String> for ParseError {
    fn from(s: String) -> Self {
        ParseError::Malformed(s)
    }
}

/// Parses and checks a sign request for `pubkey` on `network`.
pub fn parse_signing_request(network: &Network, pubkey: PublicKey, body: &[u8]) -> Result<SigningJob, ParseError> {
    let body = std::str::from_utf8(body).map_err(|_| ParseError::Malformed("request body is not UTF-8".into()))?;
    if body.trim().is_empty() {
        return Err(ParseError::Malformed("request body is empty".into()));
    }
    let env: Envelope = parse_at("", body)?;
    let supplied = match (env.signing_root, env.signing_root_camel) {
        (Some(a), Some(b)) if a != b => {
            return Err(ParseError::Malformed(
                "signing_root and signingRoot are both given and differ".into(),
            ));
        }
        (a, b) => a.or(b).map(SigningRoot::from),
    };

    let message = match network.preset {
        PresetKind::Mainnet => message_root::<Mainnet>(network, &env)?,
        PresetKind::Minimal => message_root::<Minimal>(network, &env)?,
    };
    let signing_root = compute_signing_root(message.object_root, message.domain);
    if let Some(supplied) = supplied
        && supplied != signing_root
    {
        return Err(ParseError::SigningRootMismatch {
            supplied,
            computed: signing_root,
        });
    }
    Ok(SigningJob {
        pubkey,
        sign_type: env.sign_type,
        signing_root,
        check: message.check,
        genesis_validators_root: env.fork_info.as_ref().map(|f| f.genesis_validators_root),
    })
}

/// The object's root, the domain it is signed in and what slashing protection must check.
struct Message {
    object_root: Root,
    domain: Root,
    check: SlashingCheck,
}

fn payload<'a>(field: &str, value: Option<&'a RawValue>, sign_type: SignType) -> Result<&'a str, String> {
    value
        .map(RawValue::get)
        .ok_or_else(|| format!("missing field `{field}` (required for type {sign_type})"))
}

fn fork_info<'a>(env: &'a Envelope) -> Result<&'a ForkInfo, String> {
    env.fork_info
        .as_ref()
        .ok_or_else(|| format!("missing field `fork_info` (required for type {})", env.sign_type))
}

/// Domain for a message of `epoch`, from the request's `fork_info`.
fn domain_at(fi: &ForkInfo, domain_type: DomainType, epoch: Epoch) -> Root {
    let version = if epoch < fi.fork.epoch {
        fi.fork.previous_version
    } else {
        fi.fork.current_version
    };
    compute_domain(domain_type, version, fi.genesis_validators_root)
}

fn message_root<P: Preset>(network: &Network, env: &Envelope) -> Result<Message, String> {
    let spe = network.slots_per_epoch();
    let t = env.sign_type;
    let unprotected = |object_root: Root, domain: Root| Message {
        object_root,
        domain,
        check: SlashingCheck::None,
    };
    let block = |object_root: Root, slot: Slot| -> Result<Message, String> {
        Ok(Message {
            object_root,
            domain: domain_at(fork_info(env)?, DomainType::BEACON_PROPOSER, slot.epoch(spe)),
            check: SlashingCheck::Block { slot },
        })
    };

    match t {
        SignType::Block => {
            let b: BeaconBlockPhase0 = parse_at("block", payload("block", env.block, t)?)?;
            block(b.tree_hash_root(), b.slot)
        }
        SignType::BlockV2 => {
            let raw = payload("beacon_block", env.beacon_block, t)?;
            let v: BlockV2 = parse_at("beacon_block", raw)?;
            match (v.block_header, v.block) {
                (Some(_), Some(_)) => Err("beacon_block: give either `block` or `block_header`, not both".into()),
                (Some(h), None) => block(h.tree_hash_root(), h.slot),
                (None, Some(raw)) => match v.version {
                    ForkName::Phase0 => {
                        let b: BeaconBlockPhase0 = parse_at("beacon_block.block", raw.get())?;
                        block(b.tree_hash_root(), b.slot)
                    }
                    ForkName::Altair => {
                        let b: BeaconBlockAltair<P> = parse_at("beacon_block.block", raw.get())?;
                        block(b.tree_hash_root(), b.slot)
                    }
                    later => Err(format!(
                        "beacon_block: a full `block` is accepted for PHASE0 and ALTAIR only; send `block_header` for {later}"
                    )),
                },
                (None, None) => Err(format!(
                    "beacon_block: missing field `block_header` (or `block` for PHASE0/ALTAIR) for version {}",
                    v.version
                )),
            }
        }
        SignType::Attestation => {
            let a: AttestationData = parse_at("attestation", payload("attestation", env.attestation, t)?)?;
            Ok(Message {
                object_root: a.tree_hash_root(),
                domain: domain_at(fork_info(env)?, DomainType::BEACON_ATTESTER, a.target.epoch),
                check: SlashingCheck::Attestation {
                    source: a.source.epoch,
                    target: a.target.epoch,
                },
            })
        }
        SignType::AggregationSlot => {
            let a: AggregationSlot = parse_at(
                "aggregation_slot",
                payload("aggregation_slot", env.aggregation_slot, t)?,
            )?;
            let d = domain_at(fork_info(env)?, DomainType::SELECTION_PROOF, a.slot.epoch(spe));
            Ok(unprotected(a.slot.tree_hash_root(), d))
        }
        SignType::AggregateAndProof => {
            let a: AggregateAndProof = parse_at(
                "aggregate_and_proof",
                payload("aggregate_and_proof", env.aggregate_and_proof, t)?,
            )?;
            let epoch = a.aggregate.data.slot.epoch(spe);
            let d = domain_at(fork_info(env)?, DomainType::AGGREGATE_AND_PROOF, epoch);
            Ok(unprotected(a.tree_hash_root(), d))
        }
        SignType::AggregateAndProofV2 => {
            let raw = payload("aggregate_and_proof", env.aggregate_and_proof, t)?;
            let v: VersionedAggregate = parse_at("aggregate_and_proof", raw)?;
            let (root, slot) = if v.version >= ForkName::Electra {
                let a: AggregateAndProofElectra<P> = parse_at("aggregate_and_proof.data", v.data.get())?;
                (a.tree_hash_root(), a.aggregate.data.slot)
            } else {
                let a: AggregateAndProof = parse_at("aggregate_and_proof.data", v.data.get())?;
                (a.tree_hash_root(), a.aggregate.data.slot)
            };
            let d = domain_at(fork_info(env)?, DomainType::AGGREGATE_AND_PROOF, slot.epoch(spe));
            Ok(unprotected(root, d))
        }
        SignType::Deposit => {
            let d: DepositRequest = parse_at("deposit", payload("deposit", env.deposit, t)?)?;
            let message = DepositMessage {
                pubkey: d.pubkey,
                withdrawal_credentials: d.withdrawal_credentials,
                amount: d.amount,
            };
            // Deposits are valid on any fork: the domain uses the genesis version, no chain root.
            let domain = compute_domain(DomainType::DEPOSIT, d.genesis_fork_version, Root::ZERO);
            Ok(unprotected(message.tree_hash_root(), domain))
        }
        SignType::RandaoReveal => {
            let r: RandaoReveal = parse_at("randao_reveal", payload("randao_reveal", env.randao_reveal, t)?)?;
            let d = domain_at(fork_info(env)?, DomainType::RANDAO, r.epoch);
            Ok(unprotected(r.epoch.tree_hash_root(), d))
        }
        SignType::VoluntaryExit => {
            let e: VoluntaryExit = parse_at("voluntary_exit", payload("voluntary_exit", env.voluntary_exit, t)?)?;
            let fi = fork_info(env)?;
            Ok(unprotected(e.tree_hash_root(), exit_domain(network, fi, e.epoch)?))
        }
        SignType::SyncCommitteeMessage => {
            let m: SyncCommitteeMessage = parse_at(
                "sync_committee_message",
                payload("sync_committee_message", env.sync_committee_message, t)?,
            )?;
            let d = domain_at(fork_info(env)?, DomainType::SYNC_COMMITTEE, m.slot.epoch(spe));
            // The signed object is the block root itself (its own hash_tree_root).
            Ok(unprotected(m.beacon_block_root, d))
        }
        SignType::SyncCommitteeSelectionProof => {
            let s: SyncAggregatorSelectionData = parse_at(
                "sync_aggregator_selection_data",
                payload("sync_aggregator_selection_data", env.sync_aggregator_selection_data, t)?,
            )?;
            let d = domain_at(
                fork_info(env)?,
                DomainType::SYNC_COMMITTEE_SELECTION_PROOF,
                s.slot.epoch(spe),
            );
            Ok(unprotected(s.tree_hash_root(), d))
        }
        SignType::SyncCommitteeContributionAndProof => {
            let c: ContributionAndProof<P> = parse_at(
                "contribution_and_proof",
                payload("contribution_and_proof", env.contribution_and_proof, t)?,
            )?;
            let epoch = c.contribution.slot.epoch(spe);
            let d = domain_at(fork_info(env)?, DomainType::CONTRIBUTION_AND_PROOF, epoch);
            Ok(unprotected(c.tree_hash_root(), d))
        }
        SignType::ValidatorRegistration => {
            let r: ValidatorRegistration = parse_at(
                "validator_registration",
                payload("validator_registration", env.validator_registration, t)?,
            )?;
            let domain = compute_domain(
                DomainType::APPLICATION_BUILDER,
                network.genesis_fork_version(),
                Root::ZERO,
            );
            Ok(unprotected(r.tree_hash_root(), domain))
        }
    }
}

/// EIP-7044: from Deneb on, exits are signed with the Capella fork version, so that an exit
/// signed once stays valid forever.
fn exit_domain(network: &Network, fi: &ForkInfo, epoch: Epoch) -> Result<Root, String> {
    let version = if epoch < fi.fork.epoch {
        fi.fork.previous_version
    } else {
        fi.fork.current_version
    };
    let fork = network
        .fork_of_version(version)
        .unwrap_or_else(|| network.fork_at_epoch(epoch));
    let version = if fork >= ForkName::Deneb {
        network
            .fork(ForkName::Capella)
            .ok_or_else(|| {
                format!(
                    "voluntary_exit: network {} has no Capella fork version for an EIP-7044 exit",
                    network.name
                )
            })?
            .version
    } else {
        version
    };
    Ok(compute_domain(
        DomainType::VOLUNTARY_EXIT,
        version,
        fi.genesis_validators_root,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn network_for(name: &str) -> Network {
        match name {
            "minimal" => Network::load(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/lodestar-dev-minimal.yaml"
            ))
            .unwrap(),
            other => Network::load(other).unwrap(),
        }
    }

    fn vectors() -> Vec<Value> {
        include_str!("../../tests/data/signing-vectors/sample.jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Every recorded vector: the root Palisade computes is the independently computed one.
    #[test]
    fn signing_roots_match_the_vectors() {
        let vs = vectors();
        assert_eq!(vs.len(), 36);
        for v in vs {
            let name = v["name"].as_str().unwrap();
            let net = network_for(v["network"].as_str().unwrap());
            let pk: PublicKey = v["pubkey"].as_str().unwrap().parse().unwrap();
            let body = serde_json::to_vec(&v["request"]).unwrap();
            let job = parse_signing_request(&net, pk, &body).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                job.signing_root.to_string(),
                v["signing_root"].as_str().unwrap(),
                "{name}"
            );
        }
    }

    /// Every one of the 13 types is covered by the vectors.
    #[test]
    fn vectors_cover_every_type() {
        let types: std::collections::HashSet<String> = vectors()
            .iter()
            .map(|v| v["request"]["type"].as_str().unwrap().to_string())
            .collect();
        for t in SignType::ALL {
            assert!(types.contains(t.as_str()), "no vector for {t}");
        }
    }
}
