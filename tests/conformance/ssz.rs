//! A second, independent SSZ `hash_tree_root`, written from the consensus specs for this
//! suite: it reads the consensus JSON form of an object (decimal-string uint64, 0x hex bytes)
//! against a schema below and shares no code with Palisade's `tree_hash` containers.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// An SSZ type, as much of it as validators sign.
#[derive(Clone, Debug)]
pub enum Ty {
    U64,
    /// `BytesN` / `ByteVector[N]`.
    Bytes(usize),
    Container(Vec<(&'static str, Ty)>),
    List(Box<Ty>, usize),
    Vector(Box<Ty>, usize),
    BitList(usize),
    BitVector(usize),
}

fn sha(a: &[u8], b: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(a);
    h.update(b);
    h.finalize().into()
}

fn zero_hashes() -> Vec<[u8; 32]> {
    let mut z = vec![[0u8; 32]];
    for i in 0..64 {
        let next = sha(&z[i], &z[i]);
        z.push(next);
    }
    z
}

/// `merkleize(chunks, limit)`: the tree over `limit` chunk slots (rounded up to a power of
/// two), empty slots zero.
fn merkleize(chunks: Vec<[u8; 32]>, limit: usize) -> [u8; 32] {
    assert!(chunks.len() <= limit.max(1), "more chunks than the limit allows");
    let width = limit.max(1).next_power_of_two();
    let depth = width.trailing_zeros() as usize;
    let zeros = zero_hashes();
    let mut layer = chunks;
    if layer.is_empty() {
        return zeros[depth];
    }
    for zero in zeros.iter().take(depth) {
        if layer.len() % 2 == 1 {
            layer.push(*zero);
        }
        layer = layer.chunks(2).map(|p| sha(&p[0], &p[1])).collect();
    }
    layer[0]
}

fn mix_in_length(root: [u8; 32], len: usize) -> [u8; 32] {
    let mut l = [0u8; 32];
    l[..8].copy_from_slice(&(len as u64).to_le_bytes());
    sha(&root, &l)
}

fn pack(bytes: &[u8]) -> Vec<[u8; 32]> {
    bytes
        .chunks(32)
        .map(|c| {
            let mut chunk = [0u8; 32];
            chunk[..c.len()].copy_from_slice(c);
            chunk
        })
        .collect()
}

fn u64_of(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("not a uint64: {s}")),
        Value::Number(n) => n.as_u64().expect("uint64"),
        other => panic!("not a uint64: {other}"),
    }
}

pub fn hex_bytes(v: &Value) -> Vec<u8> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a hex string: {v}"));
    hex::decode(s.strip_prefix("0x").unwrap_or(s)).expect("hex")
}

pub fn hash_tree_root(ty: &Ty, v: &Value) -> [u8; 32] {
    match ty {
        Ty::U64 => pack(&u64_of(v).to_le_bytes())[0],
        Ty::Bytes(n) => {
            let b = hex_bytes(v);
            assert_eq!(b.len(), *n, "expected {n} bytes: {v}");
            merkleize(pack(&b), n.div_ceil(32))
        }
        Ty::Container(fields) => {
            let obj = v.as_object().unwrap_or_else(|| panic!("not an object: {v}"));
            assert_eq!(obj.len(), fields.len(), "fields of {v}");
            let roots = fields
                .iter()
                .map(|(name, t)| hash_tree_root(t, obj.get(*name).unwrap_or_else(|| panic!("no `{name}` in {v}"))))
                .collect();
            merkleize(roots, fields.len())
        }
        Ty::List(elem, limit) => {
            let items = v.as_array().expect("array");
            assert!(items.len() <= *limit);
            let root = match **elem {
                Ty::U64 => {
                    let bytes: Vec<u8> = items.iter().flat_map(|i| u64_of(i).to_le_bytes()).collect();
                    merkleize(pack(&bytes), (limit * 8).div_ceil(32))
                }
                _ => merkleize(items.iter().map(|i| hash_tree_root(elem, i)).collect(), *limit),
            };
            mix_in_length(root, items.len())
        }
        Ty::Vector(elem, n) => {
            let items = v.as_array().expect("array");
            assert_eq!(items.len(), *n);
            merkleize(items.iter().map(|i| hash_tree_root(elem, i)).collect(), *n)
        }
        Ty::BitVector(n) => {
            let b = hex_bytes(v);
            assert_eq!(b.len(), n.div_ceil(8));
            merkleize(pack(&b), n.div_ceil(256))
        }
        Ty::BitList(limit) => {
            let mut b = hex_bytes(v);
            let last = *b.last().expect("a bitlist has its delimiter bit");
            assert_ne!(last, 0, "bitlist without delimiter");
            let top = 7 - last.leading_zeros() as usize;
            let len = (b.len() - 1) * 8 + top;
            assert!(len <= *limit);
            *b.last_mut().unwrap() ^= 1 << top;
            while b.last() == Some(&0) {
                b.pop();
            }
            mix_in_length(merkleize(pack(&b), limit.div_ceil(256)), len)
        }
    }
}

// ------------------------------------------------------------------ schemas (mainnet preset)

fn c(fields: Vec<(&'static str, Ty)>) -> Ty {
    Ty::Container(fields)
}
fn list(t: Ty, n: usize) -> Ty {
    Ty::List(Box::new(t), n)
}
const ROOT: Ty = Ty::Bytes(32);
const SIG: Ty = Ty::Bytes(96);

pub fn checkpoint() -> Ty {
    c(vec![("epoch", Ty::U64), ("root", ROOT)])
}
pub fn attestation_data() -> Ty {
    c(vec![
        ("slot", Ty::U64),
        ("index", Ty::U64),
        ("beacon_block_root", ROOT),
        ("source", checkpoint()),
        ("target", checkpoint()),
    ])
}
pub fn attestation() -> Ty {
    c(vec![
        ("aggregation_bits", Ty::BitList(2048)),
        ("data", attestation_data()),
        ("signature", SIG),
    ])
}
pub fn attestation_electra() -> Ty {
    c(vec![
        ("aggregation_bits", Ty::BitList(2048 * 64)),
        ("data", attestation_data()),
        ("signature", SIG),
        ("committee_bits", Ty::BitVector(64)),
    ])
}
pub fn aggregate_and_proof(electra: bool) -> Ty {
    c(vec![
        ("aggregator_index", Ty::U64),
        ("aggregate", if electra { attestation_electra() } else { attestation() }),
        ("selection_proof", SIG),
    ])
}
pub fn block_header() -> Ty {
    c(vec![
        ("slot", Ty::U64),
        ("proposer_index", Ty::U64),
        ("parent_root", ROOT),
        ("state_root", ROOT),
        ("body_root", ROOT),
    ])
}
fn indexed_attestation() -> Ty {
    c(vec![
        ("attesting_indices", list(Ty::U64, 2048)),
        ("data", attestation_data()),
        ("signature", SIG),
    ])
}
fn signed_header() -> Ty {
    c(vec![("message", block_header()), ("signature", SIG)])
}
pub fn body(altair: bool) -> Ty {
    let mut f = vec![
        ("randao_reveal", SIG),
        (
            "eth1_data",
            c(vec![
                ("deposit_root", ROOT),
                ("deposit_count", Ty::U64),
                ("block_hash", ROOT),
            ]),
        ),
        ("graffiti", ROOT),
        (
            "proposer_slashings",
            list(
                c(vec![
                    ("signed_header_1", signed_header()),
                    ("signed_header_2", signed_header()),
                ]),
                16,
            ),
        ),
        (
            "attester_slashings",
            list(
                c(vec![
                    ("attestation_1", indexed_attestation()),
                    ("attestation_2", indexed_attestation()),
                ]),
                2,
            ),
        ),
        ("attestations", list(attestation(), 128)),
        (
            "deposits",
            list(
                c(vec![
                    ("proof", Ty::Vector(Box::new(ROOT), 33)),
                    (
                        "data",
                        c(vec![
                            ("pubkey", Ty::Bytes(48)),
                            ("withdrawal_credentials", ROOT),
                            ("amount", Ty::U64),
                            ("signature", SIG),
                        ]),
                    ),
                ]),
                16,
            ),
        ),
        (
            "voluntary_exits",
            list(c(vec![("message", voluntary_exit()), ("signature", SIG)]), 16),
        ),
    ];
    if altair {
        f.push((
            "sync_aggregate",
            c(vec![
                ("sync_committee_bits", Ty::BitVector(512)),
                ("sync_committee_signature", SIG),
            ]),
        ));
    }
    c(f)
}
pub fn block(altair: bool) -> Ty {
    c(vec![
        ("slot", Ty::U64),
        ("proposer_index", Ty::U64),
        ("parent_root", ROOT),
        ("state_root", ROOT),
        ("body", body(altair)),
    ])
}
pub fn voluntary_exit() -> Ty {
    c(vec![("epoch", Ty::U64), ("validator_index", Ty::U64)])
}
pub fn sync_aggregator_selection_data() -> Ty {
    c(vec![("slot", Ty::U64), ("subcommittee_index", Ty::U64)])
}
pub fn contribution_and_proof() -> Ty {
    c(vec![
        ("aggregator_index", Ty::U64),
        (
            "contribution",
            c(vec![
                ("slot", Ty::U64),
                ("beacon_block_root", ROOT),
                ("subcommittee_index", Ty::U64),
                ("aggregation_bits", Ty::BitVector(128)),
                ("signature", SIG),
            ]),
        ),
        ("selection_proof", SIG),
    ])
}
pub fn validator_registration() -> Ty {
    c(vec![
        ("fee_recipient", Ty::Bytes(20)),
        ("gas_limit", Ty::U64),
        ("timestamp", Ty::U64),
        ("pubkey", Ty::Bytes(48)),
    ])
}
pub fn deposit_message() -> Ty {
    c(vec![
        ("pubkey", Ty::Bytes(48)),
        ("withdrawal_credentials", ROOT),
        ("amount", Ty::U64),
    ])
}

/// `compute_domain(domain_type, fork_version, genesis_validators_root)`.
pub fn domain(domain_type: [u8; 4], version: [u8; 4], gvr: [u8; 32]) -> [u8; 32] {
    let fork_data = merkleize(vec![pack(&version)[0], gvr], 2);
    let mut d = [0u8; 32];
    d[..4].copy_from_slice(&domain_type);
    d[4..].copy_from_slice(&fork_data[..28]);
    d
}

/// `compute_signing_root(object, domain)`.
pub fn signing_root(object_root: [u8; 32], domain: [u8; 32]) -> [u8; 32] {
    merkleize(vec![object_root, domain], 2)
}

#[test]
fn known_roots() {
    // Mainnet's deposit domain (genesis version, zero root), a well-known constant.
    assert_eq!(
        hex::encode(domain([3, 0, 0, 0], [0; 4], [0; 32])),
        "03000000f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a9"
    );
    // hash_tree_root(uint64 5) is the value in the first bytes of a chunk.
    let r = hash_tree_root(&Ty::U64, &Value::from("5"));
    assert_eq!(r[0], 5);
    // An empty list of a composite type with limit 16: zero tree of depth 4, length 0.
    let zeros = zero_hashes();
    assert_eq!(
        hash_tree_root(&list(checkpoint(), 16), &Value::Array(vec![])),
        mix_in_length(zeros[4], 0)
    );
}
