//! Request body -> `SigningJob`: Palisade computes every signing root itself.
//!
//! Domain rule (as Web3Signer): the fork version is `fork_info.fork.previous_version` when the
//! message's epoch is below `fork_info.fork.epoch`, else `current_version`. The message's epoch
//! is the target epoch for attestations, the `epoch` field for RANDAO reveals and exits, and
//! the slot's epoch otherwise.
//!
//! Container rule (as consensus clients): the fork that the message's slot falls in on this
//! network decides which container a block or an aggregate is. A `version` that says
//! otherwise, or a body that does not fit that container (a missing field, an unknown one),
//! is refused: a signature is never made over a root other than the one the message implies.

use serde_json::value::RawValue;
use tree_hash::TreeHash;

use super::job::{SignType, SigningJob};
use super::request::{
    AggregateForm, AggregateSlotProbe, AggregationSlot, BlockV2, DepositRequest, Envelope, ForkInfo, RandaoReveal,
    SlotProbe, SyncCommitteeMessage, VersionedAggregate,
};
use crate::consensus::containers::{
    AggregateAndProof, AggregateAndProofElectra, AttestationData, BeaconBlockAltair, BeaconBlockPhase0,
    ContributionAndProof, DepositMessage, SyncAggregatorSelectionData, ValidatorRegistration, VoluntaryExit,
};
use crate::consensus::{DomainType, Mainnet, Minimal, Preset, compute_domain, compute_signing_root};
use crate::json::parse_at;
use crate::network::{ForkName, Network, PresetKind};
use crate::types::{Epoch, PublicKey, Root, SigningRoot, SlashableMessage, Slot};

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

/// Parses and checks a sign request on `network`: the URL's key identifier and the body.
pub fn parse_signing_request(network: &Network, identifier: &str, body: &[u8]) -> Result<SigningJob, ParseError> {
    let pubkey: PublicKey = identifier
        .parse()
        .map_err(|e| ParseError::Malformed(format!("invalid public key in the URL: {e}")))?;
    let body = crate::json::body_text(body)?;
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
    only_own_payload(&env)?;

    let message = match network.preset {
        PresetKind::Mainnet | PresetKind::Gnosis => message_root::<Mainnet>(network, &env)?,
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
        slashable: {
            debug_assert_eq!(
                !matches!(message.protect, Protect::No),
                env.sign_type.row().slashable,
                "TYPES and message_root disagree on {}",
                env.sign_type
            );
            message.protect.with_root(signing_root)
        },
        chain: message.chain,
        slot: message.slot,
    })
}

/// A request carries the payload of its own type and no other: a second object would be
/// one the signature does not cover.
fn only_own_payload(env: &Envelope) -> Result<(), String> {
    let own = env.sign_type.payload_field();
    match env.payloads().iter().find(|(name, v)| v.is_some() && *name != own) {
        Some((name, _)) => Err(format!(
            "field `{name}` does not belong to a request of type {} (it carries `{own}`)",
            env.sign_type
        )),
        None => Ok(()),
    }
}

/// Which kind of slashable message a request is, before its signing root is known.
#[derive(Clone, Copy)]
enum Protect {
    /// Not slashable (RANDAO, aggregates, sync committee, exits, ...).
    No,
    Block(Slot),
    Attestation {
        source: Epoch,
        target: Epoch,
    },
}

impl Protect {
    fn with_root(self, root: SigningRoot) -> Option<SlashableMessage> {
        match self {
            Protect::No => None,
            Protect::Block(slot) => Some(SlashableMessage::Block { slot, root }),
            Protect::Attestation { source, target } => Some(SlashableMessage::Attestation { source, target, root }),
        }
    }
}

/// The object's root, the domain it is signed in, what slashing protection must check and
/// the chain the domain binds it to.
struct Message {
    object_root: Root,
    domain: Root,
    protect: Protect,
    chain: Option<Root>,
    slot: Option<Slot>,
}

fn payload<'a>(env: &Envelope<'a>) -> Result<&'a str, String> {
    let field = env.sign_type.payload_field();
    env.payloads()
        .into_iter()
        .find(|(name, _)| *name == field)
        .and_then(|(_, v)| v)
        .map(RawValue::get)
        .ok_or_else(|| format!("missing field `{field}` (required for type {})", env.sign_type))
}

fn fork_info(env: &Envelope) -> Result<ForkInfo, String> {
    let raw = env
        .fork_info
        .ok_or_else(|| format!("missing field `fork_info` (required for type {})", env.sign_type))?;
    parse_at("fork_info", raw.get())
}

/// Domain for a message of `epoch`, from the request's `fork_info`.
fn domain_at(fi: &ForkInfo, domain_type: DomainType, epoch: Epoch) -> Root {
    compute_domain(domain_type, version_at(fi, epoch), fi.genesis_validators_root)
}

fn version_at(fi: &ForkInfo, epoch: Epoch) -> crate::types::Version {
    if epoch < fi.fork.epoch {
        fi.fork.previous_version
    } else {
        fi.fork.current_version
    }
}

/// The fork `slot` falls in on this network.
fn fork_of(network: &Network, slot: Slot) -> ForkName {
    network.fork_at_epoch(slot.epoch(network.slots_per_epoch()))
}

/// Parses `raw` as the container of `fork`; a failure names the field and says which fork's
/// container was expected and why.
fn parse_for_fork<'a, T: serde::Deserialize<'a>>(
    prefix: &str,
    raw: &'a str,
    network: &Network,
    slot: Slot,
    container: &str,
) -> Result<T, String> {
    parse_at(prefix, raw).map_err(|e| {
        format!(
            "{e} (slot {slot} is in {} on {}: the {} {container} is expected)",
            fork_of(network, slot),
            network.name,
            fork_of(network, slot)
        )
    })
}

/// The root of a full block of BLOCK_V2 (`beacon_block.block`), parsed as container `T`.
fn full_block_root<'a, T: serde::Deserialize<'a> + TreeHash>(
    raw: &'a str,
    network: &Network,
    slot: Slot,
) -> Result<Root, String> {
    parse_for_fork::<T>("beacon_block.block", raw, network, slot, "BeaconBlock").map(|b| b.tree_hash_root())
}

/// A `version` field must name the fork the message's slot is in.
fn check_version(field: &str, version: ForkName, network: &Network, slot: Slot) -> Result<(), String> {
    let actual = fork_of(network, slot);
    if version == actual {
        Ok(())
    } else {
        Err(format!(
            "{field} is {version}, but slot {slot} is in {actual} on {}",
            network.name
        ))
    }
}

fn message_root<P: Preset>(network: &Network, env: &Envelope) -> Result<Message, String> {
    let spe = network.slots_per_epoch();
    let t = env.sign_type;
    // Every type but DEPOSIT and VALIDATOR_REGISTRATION is signed in a domain of its chain.
    let on_chain = |object_root: Root, domain_type: DomainType, epoch: Epoch, slot: Slot, protect: Protect| {
        let fi = fork_info(env)?;
        Ok::<_, String>(Message {
            object_root,
            domain: domain_at(&fi, domain_type, epoch),
            protect,
            chain: Some(fi.genesis_validators_root),
            slot: Some(slot),
        })
    };
    let block = |object_root: Root, slot: Slot| {
        on_chain(
            object_root,
            DomainType::BEACON_PROPOSER,
            slot.epoch(spe),
            slot,
            Protect::Block(slot),
        )
    };
    let unprotected = |object_root: Root, domain_type: DomainType, slot: Slot| {
        on_chain(object_root, domain_type, slot.epoch(spe), slot, Protect::No)
    };
    let first_slot = |epoch: Epoch| Slot(epoch.0.saturating_mul(spe));

    match t {
        SignType::Block => {
            let (root, slot) = phase0_block_root(network, payload(env)?)?;
            block(root, slot)
        }
        SignType::BlockV2 => {
            let (root, slot) = block_v2_root::<P>(network, payload(env)?)?;
            block(root, slot)
        }
        SignType::Attestation => {
            let a: AttestationData = parse_at("attestation", payload(env)?)?;
            on_chain(
                a.tree_hash_root(),
                DomainType::BEACON_ATTESTER,
                a.target.epoch,
                a.slot.max(first_slot(a.target.epoch)),
                Protect::Attestation {
                    source: a.source.epoch,
                    target: a.target.epoch,
                },
            )
        }
        SignType::AggregationSlot => {
            let a: AggregationSlot = parse_at("aggregation_slot", payload(env)?)?;
            unprotected(a.slot.tree_hash_root(), DomainType::SELECTION_PROOF, a.slot)
        }
        // Both type names, both body forms: Lighthouse and Teku still send AGGREGATE_AND_PROOF
        // with the Electra container; Prysm, Lodestar and Nimbus send `_V2` with `{version, data}`.
        SignType::AggregateAndProof | SignType::AggregateAndProofV2 => {
            let (root, slot) = aggregate_root::<P>(network, payload(env)?)?;
            unprotected(root, DomainType::AGGREGATE_AND_PROOF, slot)
        }
        SignType::Deposit => deposit_message(payload(env)?),
        SignType::RandaoReveal => {
            let r: RandaoReveal = parse_at("randao_reveal", payload(env)?)?;
            on_chain(
                r.epoch.tree_hash_root(),
                DomainType::RANDAO,
                r.epoch,
                first_slot(r.epoch),
                Protect::No,
            )
        }
        SignType::VoluntaryExit => {
            let e: VoluntaryExit = parse_at("voluntary_exit", payload(env)?)?;
            let fi = fork_info(env)?;
            Ok(Message {
                object_root: e.tree_hash_root(),
                domain: exit_domain(network, &fi, e.epoch)?,
                protect: Protect::No,
                chain: Some(fi.genesis_validators_root),
                // Exits may be signed ahead on purpose (pre-signed exits): no clock window.
                slot: None,
            })
        }
        SignType::SyncCommitteeMessage => {
            let m: SyncCommitteeMessage = parse_at("sync_committee_message", payload(env)?)?;
            // The signed object is the block root itself (its own hash_tree_root).
            unprotected(m.beacon_block_root, DomainType::SYNC_COMMITTEE, m.slot)
        }
        SignType::SyncCommitteeSelectionProof => {
            let s: SyncAggregatorSelectionData = parse_at("sync_aggregator_selection_data", payload(env)?)?;
            unprotected(s.tree_hash_root(), DomainType::SYNC_COMMITTEE_SELECTION_PROOF, s.slot)
        }
        SignType::SyncCommitteeContributionAndProof => {
            let c: ContributionAndProof<P> = parse_at("contribution_and_proof", payload(env)?)?;
            unprotected(
                c.tree_hash_root(),
                DomainType::CONTRIBUTION_AND_PROOF,
                c.contribution.slot,
            )
        }
        SignType::ValidatorRegistration => registration_message(network, payload(env)?),
    }
}

/// A BLOCK request's phase0 block: its root and slot (refused on a later fork).
fn phase0_block_root(network: &Network, raw: &str) -> Result<(Root, Slot), String> {
    let SlotProbe { slot } = parse_at("block", raw)?;
    if fork_of(network, slot) != ForkName::Phase0 {
        return Err(format!(
            "type BLOCK carries a PHASE0 block, but slot {slot} is in {} on {}: send BLOCK_V2",
            fork_of(network, slot),
            network.name
        ));
    }
    let b: BeaconBlockPhase0 = parse_for_fork("block", raw, network, slot, "BeaconBlock")?;
    Ok((b.tree_hash_root(), b.slot))
}

/// A BLOCK_V2 request's block: a header (any fork) or a full PHASE0/ALTAIR block.
fn block_v2_root<P: Preset>(network: &Network, raw: &str) -> Result<(Root, Slot), String> {
    let v: BlockV2 = parse_at("beacon_block", raw)?;
    match (v.block_header, v.block) {
        (Some(_), Some(_)) => Err("beacon_block: give either `block` or `block_header`, not both".into()),
        (Some(h), None) => {
            // A header has one root whatever the fork; the version must still be right.
            check_version("beacon_block.version", v.version, network, h.slot)?;
            Ok((h.tree_hash_root(), h.slot))
        }
        (None, Some(raw)) => {
            let SlotProbe { slot } = parse_at("beacon_block.block", raw.get())?;
            check_version("beacon_block.version", v.version, network, slot)?;
            let root = match v.version {
                ForkName::Phase0 => full_block_root::<BeaconBlockPhase0>(raw.get(), network, slot)?,
                ForkName::Altair => full_block_root::<BeaconBlockAltair<P>>(raw.get(), network, slot)?,
                later => {
                    return Err(format!(
                        "beacon_block: a full `block` is accepted for PHASE0 and ALTAIR only; send `block_header` for {later}"
                    ));
                }
            };
            Ok((root, slot))
        }
        (None, None) => Err(format!(
            "beacon_block: missing field `block_header` (or `block` for PHASE0/ALTAIR) for version {}",
            v.version
        )),
    }
}

/// Deposits are valid on any fork and any chain of that genesis version: the domain uses the
/// genesis version and a zero root; `fork_info` is ignored.
fn deposit_message(raw: &str) -> Result<Message, String> {
    let d: DepositRequest = parse_at("deposit", raw)?;
    let message = DepositMessage {
        pubkey: d.pubkey,
        withdrawal_credentials: d.withdrawal_credentials,
        amount: d.amount,
    };
    Ok(Message {
        object_root: message.tree_hash_root(),
        domain: compute_domain(DomainType::DEPOSIT, d.genesis_fork_version, Root::ZERO),
        protect: Protect::No,
        chain: None,
        slot: None,
    })
}

/// Builder domain: the network's genesis version and a zero root, whatever `fork_info` says
/// (Nimbus sends one with a zero genesis validators root).
fn registration_message(network: &Network, raw: &str) -> Result<Message, String> {
    let r: ValidatorRegistration = parse_at("validator_registration", raw)?;
    let domain = compute_domain(
        DomainType::APPLICATION_BUILDER,
        network.genesis_fork_version(),
        Root::ZERO,
    );
    Ok(Message {
        object_root: r.tree_hash_root(),
        domain,
        protect: Protect::No,
        chain: None,
        slot: None,
    })
}

/// An aggregate's root and slot. The body is bare or `{version, data}`; the container is the
/// one of the fork the aggregate's slot is in (Electra's carries `committee_bits`).
fn aggregate_root<P: Preset>(network: &Network, raw: &str) -> Result<(Root, Slot), String> {
    let form: AggregateForm = parse_at("aggregate_and_proof", raw)?;
    let (prefix, data, version) = match (form.version, form.data) {
        (Some(_), Some(_)) => {
            let v: VersionedAggregate = parse_at("aggregate_and_proof", raw)?;
            ("aggregate_and_proof.data", v.data.get(), Some(v.version))
        }
        _ => ("aggregate_and_proof", raw, None),
    };
    let probe: AggregateSlotProbe = parse_at(prefix, data)?;
    let slot = probe.aggregate.data.slot;
    if let Some(v) = version {
        check_version("aggregate_and_proof.version", v, network, slot)?;
    }
    let root = if fork_of(network, slot) >= ForkName::Electra {
        parse_for_fork::<AggregateAndProofElectra<P>>(prefix, data, network, slot, "AggregateAndProof")?
            .tree_hash_root()
    } else {
        parse_for_fork::<AggregateAndProof>(prefix, data, network, slot, "AggregateAndProof")?.tree_hash_root()
    };
    Ok((root, slot))
}

/// EIP-7044: from Deneb on, exits are signed with the Capella fork version, so that an exit
/// signed once stays valid forever.
fn exit_domain(network: &Network, fi: &ForkInfo, epoch: Epoch) -> Result<Root, String> {
    let version = version_at(fi, epoch);
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
mod tests;
