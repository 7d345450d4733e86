//! Which chain Palisade signs for: preset, fork schedule and genesis validators root.
//!
//! The fork schedule is needed for the few domains that do not come from the request's
//! `fork_info` (EIP-7044 voluntary exits, builder registrations); the preset fixes
//! `SLOTS_PER_EPOCH` and the SSZ list sizes.

mod builtin;
pub mod clock;
mod config_file;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::types::{Epoch, Root, Version};

/// Consensus-specs presets Palisade knows the container sizes of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresetKind {
    Mainnet,
    Minimal,
    /// Gnosis Chain's: the mainnet preset's container sizes (every one a signing request holds:
    /// committees, sync committee, operations per block) with 16 slots an epoch.
    Gnosis,
}

impl PresetKind {
    pub fn slots_per_epoch(self) -> u64 {
        match self {
            PresetKind::Mainnet => 32,
            PresetKind::Minimal => 8,
            PresetKind::Gnosis => 16,
        }
    }

    /// `SECONDS_PER_SLOT` of the preset's own config, when a config file does not say.
    pub fn default_seconds_per_slot(self) -> u64 {
        match self {
            PresetKind::Mainnet => 12,
            PresetKind::Minimal => 6,
            PresetKind::Gnosis => 5,
        }
    }
}

/// Consensus forks in activation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ForkName {
    Phase0,
    Altair,
    Bellatrix,
    Capella,
    Deneb,
    Electra,
    Fulu,
}

impl ForkName {
    pub const ALL: [ForkName; 7] = [
        ForkName::Phase0,
        ForkName::Altair,
        ForkName::Bellatrix,
        ForkName::Capella,
        ForkName::Deneb,
        ForkName::Electra,
        ForkName::Fulu,
    ];

    /// The upper-case name used by Web3Signer's `version` fields and by config files.
    pub fn as_str(self) -> &'static str {
        match self {
            ForkName::Phase0 => "PHASE0",
            ForkName::Altair => "ALTAIR",
            ForkName::Bellatrix => "BELLATRIX",
            ForkName::Capella => "CAPELLA",
            ForkName::Deneb => "DENEB",
            ForkName::Electra => "ELECTRA",
            ForkName::Fulu => "FULU",
        }
    }
}

impl fmt::Display for ForkName {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ForkName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ForkName::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = ForkName::ALL.iter().map(|f| f.as_str()).collect();
                format!("unknown fork `{s}`, expected one of {}", names.join(", "))
            })
    }
}

impl<'de> serde::Deserialize<'de> for ForkName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One fork of a chain: its version and the epoch it activates (u64::MAX = not scheduled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fork {
    pub name: ForkName,
    pub version: Version,
    pub epoch: Epoch,
}

pub const FAR_FUTURE_EPOCH: Epoch = Epoch(u64::MAX);

/// A chain Palisade can sign for.
#[derive(Clone, Debug)]
pub struct Network {
    pub name: String,
    pub preset: PresetKind,
    /// Forks in activation order; index = `ForkName as usize`. Phase0 is always present.
    pub forks: Vec<Fork>,
    pub genesis_validators_root: Option<Root>,
    /// Unix time of slot 0, when known: it turns the clock window on.
    pub genesis_time: Option<u64>,
    pub seconds_per_slot: u64,
    /// The execution chain's id (`DEPOSIT_CHAIN_ID`), which Commit-Boost signs into its roots.
    pub chain_id: Option<u64>,
}

/// Why a network could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(
        "unknown network `{0}`: expected one of {names} or the path of a consensus-specs config YAML",
        names = builtin::NAMES.join(", ")
    )]
    Unknown(String),
    #[error("cannot read network config {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// A field missing or wrong; `reason` names it.
    #[error("network config {}: {reason}", path.display())]
    Invalid { path: std::path::PathBuf, reason: String },
}

impl Network {
    /// A built-in name (`builtin::NAMES`), or a path to a config YAML.
    pub fn load(name_or_path: &str) -> Result<Network, NetworkError> {
        if let Some(n) = builtin::by_name(name_or_path) {
            return Ok(n);
        }
        let path = Path::new(name_or_path);
        if path.exists() {
            return config_file::load(path);
        }
        Err(NetworkError::Unknown(name_or_path.to_string()))
    }

    pub fn slots_per_epoch(&self) -> u64 {
        self.preset.slots_per_epoch()
    }

    pub fn fork(&self, name: ForkName) -> Option<&Fork> {
        self.forks.iter().find(|f| f.name == name)
    }

    pub fn genesis_fork_version(&self) -> Version {
        self.forks[0].version
    }

    /// The fork a version belongs to on this chain, if it is one of its versions.
    pub fn fork_of_version(&self, version: Version) -> Option<ForkName> {
        self.forks.iter().find(|f| f.version == version).map(|f| f.name)
    }

    /// The fork active at `epoch` according to this chain's schedule.
    pub fn fork_at_epoch(&self, epoch: Epoch) -> ForkName {
        self.forks
            .iter()
            .rev()
            .find(|f| f.epoch <= epoch)
            .map(|f| f.name)
            .unwrap_or(ForkName::Phase0)
    }
}

/// Builds a fork list from (version, epoch) pairs in fork order, skipping unscheduled tails.
pub(crate) fn forks_from(list: &[(ForkName, [u8; 4], u64)]) -> Vec<Fork> {
    list.iter()
        .map(|(name, v, e)| Fork {
            name: *name,
            version: Version::from(*v),
            epoch: Epoch(*e),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_networks_load() {
        for name in builtin::NAMES {
            let n = Network::load(name).unwrap();
            assert_eq!(n.forks[0].name, ForkName::Phase0);
            // Forks are listed in order with non-decreasing epochs.
            for w in n.forks.windows(2) {
                assert!(w[0].name < w[1].name);
                assert!(w[0].epoch <= w[1].epoch, "{name}: {:?}", w);
            }
        }
        assert!(Network::load("goerli").is_err());
    }

    #[test]
    fn mainnet_fork_lookup() {
        let n = Network::load("mainnet").unwrap();
        assert_eq!(n.fork_at_epoch(Epoch(0)), ForkName::Phase0);
        assert_eq!(n.fork_at_epoch(Epoch(74240)), ForkName::Altair);
        assert_eq!(n.fork_at_epoch(Epoch(269568)), ForkName::Deneb);
        assert_eq!(n.fork_at_epoch(Epoch(u64::MAX)), ForkName::Fulu);
        assert_eq!(n.fork_of_version(Version::from([4, 0, 0, 0])), Some(ForkName::Deneb));
        assert_eq!(n.fork_of_version(Version::from([9, 9, 9, 9])), None);
        assert_eq!(n.slots_per_epoch(), 32);
    }

    /// The built-in Gnosis networks are their published configs (gnosischain/configs, copied
    /// to tests/data/networks) plus the genesis state's time and validators root.
    #[test]
    fn gnosis_networks_match_their_published_configs() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/networks");
        for (name, gvr, genesis_time) in [
            (
                "gnosis",
                "0xf5dcb5564e829aab27264b9becd5dfaa017085611224cb3036f573368dbb9d47",
                1_638_993_340,
            ),
            (
                "chiado",
                "0x9d642dac73058fbf39c0ae41ab1e34e4d889043cb199851ded7095bc99eb4c1e",
                1_665_396_300,
            ),
        ] {
            let built_in = Network::load(name).unwrap();
            let published = Network::load(data.join(format!("{name}.yaml")).to_str().unwrap()).unwrap();
            assert_eq!(built_in.forks, published.forks, "{name}");
            assert_eq!(built_in.preset, PresetKind::Gnosis);
            assert_eq!(published.preset, PresetKind::Gnosis);
            assert_eq!(built_in.seconds_per_slot, 5);
            assert_eq!(published.seconds_per_slot, 5);
            assert_eq!(built_in.slots_per_epoch(), 16);
            assert_eq!(built_in.genesis_validators_root, Some(gvr.parse().unwrap()));
            assert_eq!(built_in.genesis_time, Some(genesis_time));
        }
        let gnosis = Network::load("gnosis").unwrap();
        assert_eq!(gnosis.fork_at_epoch(Epoch(1_714_688)), ForkName::Fulu);
        assert_eq!(gnosis.fork_at_epoch(Epoch(1_714_687)), ForkName::Electra);
    }

    #[test]
    fn fork_names_parse() {
        assert_eq!("electra".parse::<ForkName>(), Ok(ForkName::Electra));
        assert_eq!("FULU".parse::<ForkName>(), Ok(ForkName::Fulu));
        assert!("GLOAS".parse::<ForkName>().is_err());
    }
}
