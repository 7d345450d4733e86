//! The public networks Palisade knows by name. Values from each network's published
//! consensus config (eth-clients/{mainnet,hoodi,sepolia,holesky}, consensus-specs minimal,
//! gnosischain/configs {mainnet,chiado}; chain ids are their `DEPOSIT_CHAIN_ID`); genesis times
//! and roots from their genesis states.

use super::{ForkName::*, Network, PresetKind, forks_from};
use crate::types::Root;

pub const NAMES: [&str; 7] = ["mainnet", "hoodi", "sepolia", "holesky", "gnosis", "chiado", "minimal"];

const FAR: u64 = u64::MAX;

/// One network as published.
struct Builtin {
    name: &'static str,
    /// Its `DEPOSIT_CHAIN_ID`.
    chain_id: u64,
    preset: PresetKind,
    forks: &'static [(super::ForkName, [u8; 4], u64)],
    genesis_validators_root: Option<&'static str>,
    /// From the genesis state; minimal has none.
    genesis_time: Option<u64>,
}

const BUILTIN: [Builtin; 7] = [
    Builtin {
        name: "mainnet",
        chain_id: 1,
        preset: PresetKind::Mainnet,
        forks: &[
            (Phase0, [0x00, 0, 0, 0], 0),
            (Altair, [0x01, 0, 0, 0], 74240),
            (Bellatrix, [0x02, 0, 0, 0], 144896),
            (Capella, [0x03, 0, 0, 0], 194048),
            (Deneb, [0x04, 0, 0, 0], 269568),
            (Electra, [0x05, 0, 0, 0], 364032),
            (Fulu, [0x06, 0, 0, 0], 411392),
        ],
        genesis_validators_root: Some("0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"),
        genesis_time: Some(1_606_824_023),
    },
    Builtin {
        name: "hoodi",
        chain_id: 560048,
        preset: PresetKind::Mainnet,
        forks: &[
            (Phase0, [0x10, 0x00, 0x09, 0x10], 0),
            (Altair, [0x20, 0x00, 0x09, 0x10], 0),
            (Bellatrix, [0x30, 0x00, 0x09, 0x10], 0),
            (Capella, [0x40, 0x00, 0x09, 0x10], 0),
            (Deneb, [0x50, 0x00, 0x09, 0x10], 0),
            (Electra, [0x60, 0x00, 0x09, 0x10], 2048),
            (Fulu, [0x70, 0x00, 0x09, 0x10], 50688),
        ],
        genesis_validators_root: Some("0x212f13fc4df078b6cb7db228f1c8307566dcecf900867401a92023d7ba99cb5f"),
        genesis_time: Some(1_742_213_400),
    },
    Builtin {
        name: "sepolia",
        chain_id: 11155111,
        preset: PresetKind::Mainnet,
        forks: &[
            (Phase0, [0x90, 0x00, 0x00, 0x69], 0),
            (Altair, [0x90, 0x00, 0x00, 0x70], 50),
            (Bellatrix, [0x90, 0x00, 0x00, 0x71], 100),
            (Capella, [0x90, 0x00, 0x00, 0x72], 56832),
            (Deneb, [0x90, 0x00, 0x00, 0x73], 132608),
            (Electra, [0x90, 0x00, 0x00, 0x74], 222464),
            (Fulu, [0x90, 0x00, 0x00, 0x75], 272640),
        ],
        genesis_validators_root: Some("0xd8ea171f3c94aea21ebc42a1ed61052acf3f9209c00e4efbaaddac09ed9b8078"),
        genesis_time: Some(1_655_733_600),
    },
    Builtin {
        name: "holesky",
        chain_id: 17000,
        preset: PresetKind::Mainnet,
        forks: &[
            (Phase0, [0x01, 0x01, 0x70, 0x00], 0),
            (Altair, [0x02, 0x01, 0x70, 0x00], 0),
            (Bellatrix, [0x03, 0x01, 0x70, 0x00], 0),
            (Capella, [0x04, 0x01, 0x70, 0x00], 256),
            (Deneb, [0x05, 0x01, 0x70, 0x00], 29696),
            (Electra, [0x06, 0x01, 0x70, 0x00], 115968),
            (Fulu, [0x07, 0x01, 0x70, 0x00], 165120),
        ],
        genesis_validators_root: Some("0x9143aa7c615a7f7115e2b6aac319c03529df8242ae705fba9df39b79c59fa8b1"),
        genesis_time: Some(1_695_902_400),
    },
    Builtin {
        name: "gnosis",
        chain_id: 100,
        preset: PresetKind::Gnosis,
        forks: &[
            (Phase0, [0x00, 0, 0, 0x64], 0),
            (Altair, [0x01, 0, 0, 0x64], 512),
            (Bellatrix, [0x02, 0, 0, 0x64], 385536),
            (Capella, [0x03, 0, 0, 0x64], 648704),
            (Deneb, [0x04, 0, 0, 0x64], 889856),
            (Electra, [0x05, 0, 0, 0x64], 1337856),
            (Fulu, [0x06, 0, 0, 0x64], 1714688),
        ],
        genesis_validators_root: Some("0xf5dcb5564e829aab27264b9becd5dfaa017085611224cb3036f573368dbb9d47"),
        genesis_time: Some(1_638_993_340),
    },
    Builtin {
        name: "chiado",
        chain_id: 10200,
        preset: PresetKind::Gnosis,
        forks: &[
            (Phase0, [0x00, 0, 0, 0x6f], 0),
            (Altair, [0x01, 0, 0, 0x6f], 90),
            (Bellatrix, [0x02, 0, 0, 0x6f], 180),
            (Capella, [0x03, 0, 0, 0x6f], 244224),
            (Deneb, [0x04, 0, 0, 0x6f], 516608),
            (Electra, [0x05, 0, 0, 0x6f], 948224),
            (Fulu, [0x06, 0, 0, 0x6f], 1353216),
        ],
        genesis_validators_root: Some("0x9d642dac73058fbf39c0ae41ab1e34e4d889043cb199851ded7095bc99eb4c1e"),
        genesis_time: Some(1_665_396_300),
    },
    // consensus-specs configs/minimal.yaml: no genesis, so no root; the first request's
    // root is pinned (by the database once slashing protection is on).
    Builtin {
        name: "minimal",
        chain_id: 5,
        preset: PresetKind::Minimal,
        forks: &[
            (Phase0, [0x00, 0, 0, 0x01], 0),
            (Altair, [0x01, 0, 0, 0x01], 74240),
            (Bellatrix, [0x02, 0, 0, 0x01], FAR),
            (Capella, [0x03, 0, 0, 0x01], FAR),
            (Deneb, [0x04, 0, 0, 0x01], FAR),
            (Electra, [0x05, 0, 0, 0x01], FAR),
            (Fulu, [0x06, 0, 0, 0x01], FAR),
        ],
        genesis_validators_root: None,
        genesis_time: None,
    },
];

pub fn by_name(name: &str) -> Option<Network> {
    let b = BUILTIN.iter().find(|b| b.name == name)?;
    Some(Network {
        name: name.to_string(),
        preset: b.preset,
        forks: forks_from(b.forks),
        genesis_validators_root: b
            .genesis_validators_root
            .map(|hex| hex.parse::<Root>().expect("built-in genesis validators root")),
        genesis_time: b.genesis_time,
        seconds_per_slot: b.preset.default_seconds_per_slot(),
        chain_id: Some(b.chain_id),
    })
}
