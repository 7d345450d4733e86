//! consensus-specs style config YAML (`PRESET_BASE`, `*_FORK_VERSION`, `*_FORK_EPOCH`,
//! optional `GENESIS_VALIDATORS_ROOT`, `SECONDS_PER_SLOT`, and the genesis time: an explicit
//! `GENESIS_TIME`, else `MIN_GENESIS_TIME` + `GENESIS_DELAY`). Every other key is ignored.

use std::path::Path;

use serde::Deserialize;

use super::{FAR_FUTURE_EPOCH, Fork, ForkName, Network, NetworkError, PresetKind};
use crate::types::{Epoch, Root, Version, parse_hex_array, parse_u64_decimal};

/// Values are read as raw scalar text: YAML would otherwise turn `0x00000001` into the
/// integer 1 and lose the byte width.
#[derive(Deserialize)]
#[allow(non_snake_case)]
struct RawConfig {
    PRESET_BASE: Option<String>,
    CONFIG_NAME: Option<String>,
    GENESIS_FORK_VERSION: Option<String>,
    GENESIS_VALIDATORS_ROOT: Option<String>,
    GENESIS_TIME: Option<String>,
    MIN_GENESIS_TIME: Option<String>,
    GENESIS_DELAY: Option<String>,
    SECONDS_PER_SLOT: Option<String>,
    DEPOSIT_CHAIN_ID: Option<String>,
    ALTAIR_FORK_VERSION: Option<String>,
    ALTAIR_FORK_EPOCH: Option<String>,
    BELLATRIX_FORK_VERSION: Option<String>,
    BELLATRIX_FORK_EPOCH: Option<String>,
    CAPELLA_FORK_VERSION: Option<String>,
    CAPELLA_FORK_EPOCH: Option<String>,
    DENEB_FORK_VERSION: Option<String>,
    DENEB_FORK_EPOCH: Option<String>,
    ELECTRA_FORK_VERSION: Option<String>,
    ELECTRA_FORK_EPOCH: Option<String>,
    FULU_FORK_VERSION: Option<String>,
    FULU_FORK_EPOCH: Option<String>,
}

pub fn load(path: &Path) -> Result<Network, NetworkError> {
    let text = std::fs::read_to_string(path).map_err(|source| NetworkError::Read {
        path: path.into(),
        source,
    })?;
    parse(&text).map_err(|reason| NetworkError::Invalid {
        path: path.into(),
        reason,
    })
}

fn parse(text: &str) -> Result<Network, String> {
    let raw: RawConfig = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let preset = match raw.PRESET_BASE.as_deref().map(str::trim) {
        Some("mainnet") => PresetKind::Mainnet,
        Some("minimal") => PresetKind::Minimal,
        Some("gnosis") => PresetKind::Gnosis,
        Some(other) => {
            return Err(format!(
                "PRESET_BASE `{other}` is not supported (mainnet, minimal or gnosis)"
            ));
        }
        None => return Err("PRESET_BASE is missing".into()),
    };
    let forks = forks(&raw)?;
    let genesis_validators_root = raw
        .GENESIS_VALIDATORS_ROOT
        .as_deref()
        .map(|v| {
            parse_hex_array::<32>(v.trim())
                .map(Root::from)
                .map_err(|e| format!("GENESIS_VALIDATORS_ROOT: {e}"))
        })
        .transpose()?;
    let genesis_time = genesis_time(&raw)?;
    let seconds_per_slot =
        number("SECONDS_PER_SLOT", &raw.SECONDS_PER_SLOT)?.unwrap_or(preset.default_seconds_per_slot());
    if seconds_per_slot == 0 {
        return Err("SECONDS_PER_SLOT must be positive".into());
    }
    Ok(Network {
        genesis_time,
        chain_id: number("DEPOSIT_CHAIN_ID", &raw.DEPOSIT_CHAIN_ID)?,
        name: raw.CONFIG_NAME.unwrap_or_else(|| "custom".into()),
        preset,
        forks,
        genesis_validators_root,
        seconds_per_slot,
    })
}

fn number(field: &str, v: &Option<String>) -> Result<Option<u64>, String> {
    v.as_deref()
        .map(|v| parse_u64_decimal(v.trim()).map_err(|e| format!("{field}: {e}")))
        .transpose()
}

/// MIN_GENESIS_TIME + GENESIS_DELAY is the earliest genesis the config allows: a clock window
/// taken from it can only be looser than the real one, never refuse an honest duty.
fn genesis_time(raw: &RawConfig) -> Result<Option<u64>, String> {
    Ok(match number("GENESIS_TIME", &raw.GENESIS_TIME)? {
        Some(t) => Some(t),
        None => match (
            number("MIN_GENESIS_TIME", &raw.MIN_GENESIS_TIME)?,
            number("GENESIS_DELAY", &raw.GENESIS_DELAY)?,
        ) {
            (Some(min), delay) => Some(min.saturating_add(delay.unwrap_or(0))),
            (None, _) => None,
        },
    })
}

/// The forks in order, from phase0 to the last one the config lists.
fn forks(raw: &RawConfig) -> Result<Vec<Fork>, String> {
    let version = |field: &str, v: &str| -> Result<Version, String> {
        parse_hex_array::<4>(v.trim())
            .map(Version::from)
            .map_err(|e| format!("{field}: {e}"))
    };
    let epoch = |field: &str, v: &str| -> Result<Epoch, String> {
        parse_u64_decimal(v.trim())
            .map(Epoch)
            .map_err(|e| format!("{field}: {e}"))
    };

    let genesis = raw
        .GENESIS_FORK_VERSION
        .as_deref()
        .ok_or("GENESIS_FORK_VERSION is missing")?;
    let mut forks = vec![Fork {
        name: ForkName::Phase0,
        version: version("GENESIS_FORK_VERSION", genesis)?,
        epoch: Epoch(0),
    }];

    let later = [
        (ForkName::Altair, &raw.ALTAIR_FORK_VERSION, &raw.ALTAIR_FORK_EPOCH),
        (
            ForkName::Bellatrix,
            &raw.BELLATRIX_FORK_VERSION,
            &raw.BELLATRIX_FORK_EPOCH,
        ),
        (ForkName::Capella, &raw.CAPELLA_FORK_VERSION, &raw.CAPELLA_FORK_EPOCH),
        (ForkName::Deneb, &raw.DENEB_FORK_VERSION, &raw.DENEB_FORK_EPOCH),
        (ForkName::Electra, &raw.ELECTRA_FORK_VERSION, &raw.ELECTRA_FORK_EPOCH),
        (ForkName::Fulu, &raw.FULU_FORK_VERSION, &raw.FULU_FORK_EPOCH),
    ];
    let mut ended_at: Option<ForkName> = None;
    for (name, v, e) in later {
        let vfield = format!("{name}_FORK_VERSION");
        let efield = format!("{name}_FORK_EPOCH");
        match (v, e) {
            (None, None) => {
                ended_at.get_or_insert(name);
            }
            (Some(v), e) => {
                if let Some(missing) = ended_at {
                    return Err(format!(
                        "{vfield} is set but {missing}_FORK_VERSION is missing: forks must be listed in order"
                    ));
                }
                let epoch = match e {
                    Some(e) => epoch(&efield, e)?,
                    None => FAR_FUTURE_EPOCH,
                };
                let prev = forks.last().expect("phase0 is always present");
                if epoch < prev.epoch {
                    return Err(format!(
                        "{efield} ({epoch}) is before {}_FORK_EPOCH ({})",
                        prev.name, prev.epoch
                    ));
                }
                forks.push(Fork {
                    name,
                    version: version(&vfield, v)?,
                    epoch,
                });
            }
            (None, Some(_)) => return Err(format!("{efield} is set but {vfield} is missing")),
        }
    }

    Ok(forks)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = include_str!("../../tests/data/lodestar-dev-minimal.yaml");

    #[test]
    fn parses_the_lodestar_dev_config() {
        let n = parse(DEV).unwrap();
        assert_eq!(n.name, "lodestar-dev-minimal");
        assert_eq!(n.preset, PresetKind::Minimal);
        assert_eq!(n.forks.len(), 7);
        assert_eq!(n.genesis_fork_version(), Version::from([0, 0, 0, 1]));
        assert_eq!(n.fork(ForkName::Capella).unwrap().epoch, Epoch(3));
        assert_eq!(n.fork(ForkName::Deneb).unwrap().epoch, FAR_FUTURE_EPOCH);
        assert_eq!(
            n.genesis_validators_root.unwrap().to_string(),
            "0x270d43e74ce340de4bca2b1936beca0f4f5408d9e78aec4850920baf659d5b69"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse("PRESET_BASE: mainnet\n").unwrap_err();
        assert!(e.contains("GENESIS_FORK_VERSION"), "{e}");
        let e = parse("PRESET_BASE: holesky\nGENESIS_FORK_VERSION: 0x00000000\n").unwrap_err();
        assert!(e.contains("PRESET_BASE"), "{e}");
        let e =
            parse("PRESET_BASE: mainnet\nGENESIS_FORK_VERSION: 0x00000000\nALTAIR_FORK_VERSION: 0x01\n").unwrap_err();
        assert!(e.contains("ALTAIR_FORK_VERSION"), "{e}");
        let e = parse(
            "PRESET_BASE: mainnet\nGENESIS_FORK_VERSION: 0x00000000\nALTAIR_FORK_VERSION: 0x01000000\nALTAIR_FORK_EPOCH: -3\n",
        )
        .unwrap_err();
        assert!(e.contains("ALTAIR_FORK_EPOCH"), "{e}");
        let e = parse("PRESET_BASE: mainnet\nGENESIS_FORK_VERSION: 0x00000000\nBELLATRIX_FORK_VERSION: 0x02000000\n")
            .unwrap_err();
        assert!(e.contains("ALTAIR_FORK_VERSION is missing"), "{e}");
    }

    #[test]
    fn unscheduled_tail_forks_are_absent() {
        let n = parse("PRESET_BASE: 'mainnet'\nGENESIS_FORK_VERSION: 0x00000000\nALTAIR_FORK_VERSION: 0x01000000\nALTAIR_FORK_EPOCH: 10\n").unwrap();
        assert_eq!(n.forks.len(), 2);
        assert_eq!(n.fork_at_epoch(Epoch(9)), ForkName::Phase0);
        assert_eq!(n.fork_at_epoch(Epoch(10)), ForkName::Altair);
        assert!(n.genesis_validators_root.is_none());
        assert_eq!((n.genesis_time, n.seconds_per_slot), (None, 12));
    }

    #[test]
    fn genesis_time_from_the_config() {
        let base = "PRESET_BASE: minimal\nGENESIS_FORK_VERSION: 0x00000001\nSECONDS_PER_SLOT: 3\n";
        let n = parse(&format!("{base}MIN_GENESIS_TIME: 1000\nGENESIS_DELAY: 300\n")).unwrap();
        assert_eq!((n.genesis_time, n.seconds_per_slot), (Some(1300), 3));
        let n = parse(&format!(
            "{base}MIN_GENESIS_TIME: 1000\nGENESIS_DELAY: 300\nGENESIS_TIME: 5000\n"
        ))
        .unwrap();
        assert_eq!(n.genesis_time, Some(5000));
        assert!(
            parse(&format!("{base}GENESIS_TIME: soon\n"))
                .unwrap_err()
                .contains("GENESIS_TIME")
        );
    }
}
