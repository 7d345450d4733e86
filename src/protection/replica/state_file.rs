//! The replica's state file: self-describing JSON, versioned, with a SHA-256 of its content:
//!
//! `{"state": {"format": "palisade-replica-state", "version": 3, "chain": ..., "database": ...,
//! "validators": [{"pubkey", "repairs", "block": {"slot", "signing_root"}, "attestation":
//! {"source", "target", "signing_root"}}]}, "sha256": "<hex of the state's bytes>"}`
//!
//! Version 2 (a fixed-offset binary layout) is still read, once: the next save writes
//! version 3.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Floor;
use crate::types::{Epoch, PublicKey, Root, SigningRoot, Slot};

const FORMAT: &str = "palisade-replica-state";
const VERSION: u32 = 3;

pub(super) struct Decoded {
    pub chain: Root,
    pub database: Option<String>,
    pub floors: HashMap<PublicKey, Floor>,
    /// Read from a version 2 file.
    pub old_format: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    format: String,
    version: u32,
    chain: Root,
    database: Option<String>,
    validators: Vec<Validator>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Validator {
    pubkey: PublicKey,
    repairs: u32,
    block: Option<Block>,
    attestation: Option<Attestation>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Block {
    slot: Slot,
    signing_root: Option<SigningRoot>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attestation {
    source: Epoch,
    target: Epoch,
    signing_root: Option<SigningRoot>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    state: &'a serde_json::value::RawValue,
    sha256: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(super) fn encode(chain: Root, database: Option<&str>, floors: &[(PublicKey, Floor)]) -> Vec<u8> {
    let state = State {
        format: FORMAT.into(),
        version: VERSION,
        chain,
        database: database.map(str::to_string),
        validators: floors
            .iter()
            .map(|(pubkey, f)| Validator {
                pubkey: *pubkey,
                repairs: f.repairs,
                block: f.block.map(|(slot, signing_root)| Block { slot, signing_root }),
                attestation: f.attestation.map(|(source, target, signing_root)| Attestation {
                    source,
                    target,
                    signing_root,
                }),
            })
            .collect(),
    };
    let state = serde_json::to_string(&state).expect("the state serialises");
    format!(
        "{{\"state\":{state},\"sha256\":\"{}\"}}\n",
        sha256_hex(state.as_bytes())
    )
    .into_bytes()
}

pub(super) fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    if bytes.starts_with(MAGIC_V2) {
        return decode_v2(bytes);
    }
    let envelope: Envelope = serde_json::from_slice(bytes).map_err(|e| format!("not a replica state file: {e}"))?;
    if sha256_hex(envelope.state.get().as_bytes()) != envelope.sha256 {
        return Err("checksum mismatch".into());
    }
    let state: State = serde_json::from_str(envelope.state.get()).map_err(|e| e.to_string())?;
    if state.format != FORMAT {
        return Err(format!("format `{}` is not {FORMAT}", state.format));
    }
    if state.version != VERSION {
        return Err(format!(
            "version {} is not one this Palisade reads ({VERSION}): written by a newer one?",
            state.version
        ));
    }
    let floors = state
        .validators
        .into_iter()
        .map(|v| {
            let floor = Floor {
                repairs: v.repairs,
                block: v.block.map(|b| (b.slot, b.signing_root)),
                attestation: v.attestation.map(|a| (a.source, a.target, a.signing_root)),
            };
            (v.pubkey, floor)
        })
        .collect();
    Ok(Decoded {
        chain: state.chain,
        database: state.database,
        floors,
        old_format: false,
    })
}

// Version 2: MAGIC_V2, the chain root, the database identity (u16 length, UTF-8), then
// fixed-size entries, then a SHA-256 of all before.

const MAGIC_V2: &[u8] = b"palisade-replica-state v2\n";
const ENTRY_V2: usize = 48 + 4 + 1 + 8 + 32 + 1 + 8 + 8 + 32;

fn decode_v2(bytes: &[u8]) -> Result<Decoded, String> {
    let body_len = bytes.len().checked_sub(32).ok_or("too short")?;
    let (body, sum) = bytes.split_at(body_len);
    if Sha256::digest(body).as_slice() != sum {
        return Err("checksum mismatch".into());
    }
    let rest = body.strip_prefix(MAGIC_V2).ok_or("not a replica state file")?;
    if rest.len() < 34 {
        return Err("truncated".into());
    }
    let chain = Root::from_slice(&rest[..32]);
    let n = u16::from_le_bytes([rest[32], rest[33]]) as usize;
    let database = rest.get(34..34 + n).ok_or("truncated")?;
    let database = String::from_utf8(database.to_vec()).map_err(|_| "bad database identity")?;
    let rest = &rest[34 + n..];
    if !rest.len().is_multiple_of(ENTRY_V2) {
        return Err("truncated".into());
    }
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let root_at = |b: &[u8], i: usize| SigningRoot(b[i..i + 32].try_into().expect("32 bytes"));
    let mut floors = HashMap::new();
    for e in rest.chunks(ENTRY_V2) {
        let pk = PublicKey::from_slice(&e[..48]).expect("48 bytes");
        let repairs = u32::from_le_bytes(e[48..52].try_into().expect("4 bytes"));
        let bflags = e[52];
        let block = (bflags & 1 == 1).then(|| (Slot(u64_at(e, 53)), (bflags & 2 == 2).then(|| root_at(e, 61))));
        let aflags = e[93];
        let attestation = (aflags & 1 == 1).then(|| {
            (
                Epoch(u64_at(e, 94)),
                Epoch(u64_at(e, 102)),
                (aflags & 2 == 2).then(|| root_at(e, 110)),
            )
        });
        floors.insert(
            pk,
            Floor {
                repairs,
                block,
                attestation,
            },
        );
    }
    Ok(Decoded {
        chain,
        database: (!database.is_empty()).then_some(database),
        floors,
        old_format: true,
    })
}

#[cfg(test)]
pub(super) fn encode_v2(chain: Root, database: Option<&str>, floors: &[(PublicKey, Floor)]) -> Vec<u8> {
    let database = database.unwrap_or("").as_bytes();
    let database = &database[..database.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(MAGIC_V2.len() + 34 + database.len() + floors.len() * ENTRY_V2 + 32);
    out.extend_from_slice(MAGIC_V2);
    out.extend_from_slice(&chain.0);
    out.extend_from_slice(&(database.len() as u16).to_le_bytes());
    out.extend_from_slice(database);
    for (pk, f) in floors {
        out.extend_from_slice(&pk.0);
        out.extend_from_slice(&f.repairs.to_le_bytes());
        let (slot, broot) = f.block.map_or((None, None), |(s, r)| (Some(s), r));
        out.push(slot.is_some() as u8 | (broot.is_some() as u8) << 1);
        out.extend_from_slice(&slot.map_or(0, |s| s.0).to_le_bytes());
        out.extend_from_slice(&broot.map_or([0; 32], |r| r.0));
        let (att, aroot) = f.attestation.map_or((None, None), |(s, t, r)| (Some((s, t)), r));
        out.push(att.is_some() as u8 | (aroot.is_some() as u8) << 1);
        out.extend_from_slice(&att.map_or(0, |a| a.0.0).to_le_bytes());
        out.extend_from_slice(&att.map_or(0, |a| a.1.0).to_le_bytes());
        out.extend_from_slice(&aroot.map_or([0; 32], |r| r.0));
    }
    let sum: [u8; 32] = Sha256::digest(&out).into();
    out.extend_from_slice(&sum);
    out
}
