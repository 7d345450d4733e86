//! `palisade slashing-protection import|export`.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, anyhow, bail};

use crate::network::Network;
use crate::protection::{DbOptions, Interchange, SlashingDatabase, redact_url};
use crate::types::{PublicKey, Root};

/// Imports an interchange file, all or nothing. The chain is checked against the configured
/// network (when given) and the database's pin; an unpinned database is pinned to the file's
/// chain, and the command says so.
pub async fn import(
    database_url: &str,
    from: &Path,
    network: Option<&str>,
    genesis_validators_root: Option<Root>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(from).with_context(|| format!("cannot read {}", from.display()))?;
    let interchange = Interchange::from_json(&text).map_err(|e| anyhow!("{}: {e}", from.display()))?;
    let given = interchange.metadata.genesis_validators_root;
    let configured = match network {
        Some(n) => {
            let network = Network::load(n).map_err(|e| anyhow!(e))?;
            genesis_validators_root
                .or(network.genesis_validators_root)
                .map(|root| (root, network.name))
        }
        None => genesis_validators_root.map(|root| (root, "--genesis-validators-root".to_string())),
    };
    if let Some((root, name)) = &configured
        && *root != given
    {
        bail!(
            "{}: the file is for genesis validators root {given}, but {name} is {root}; nothing was imported",
            from.display()
        );
    }
    let db = open(database_url).await?;
    let pinned_before = db.pinned_chain().await?;
    if pinned_before.is_none()
        && let Some((root, _)) = configured
    {
        db.pin_chain(root).await?;
    }
    let n = db
        .import(&interchange)
        .await
        .map_err(|e| anyhow!("{}: {e}; nothing was imported", from.display()))?;
    if pinned_before.is_none() {
        eprintln!(
            "the database was not pinned to a chain: pinned it to genesis validators root {given}; \
             from now on it signs and imports for that chain only"
        );
    }
    eprintln!(
        "imported slashing-protection data for {n} validators from {} into {}",
        from.display(),
        redact_url(database_url)
    );
    Ok(())
}

pub async fn export(database_url: &str, to: &Path, pubkeys: &[PublicKey]) -> anyhow::Result<()> {
    let db = open(database_url).await?;
    let filter = (!pubkeys.is_empty()).then_some(pubkeys);
    let interchange = db.export(filter).await?;
    let json = serde_json::to_string_pretty(&interchange)?;
    if to.as_os_str() == "-" {
        std::io::stdout().write_all(json.as_bytes())?;
        println!();
    } else {
        // Written beside the target and renamed: a reader never sees half a file.
        let tmp = to.with_extension("json.tmp");
        std::fs::write(&tmp, &json).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, to).with_context(|| format!("cannot write {}", to.display()))?;
        eprintln!(
            "exported slashing-protection data for {} validators to {}",
            interchange.data.len(),
            to.display()
        );
    }
    Ok(())
}

async fn open(database_url: &str) -> anyhow::Result<SlashingDatabase> {
    SlashingDatabase::open(database_url, &DbOptions::default())
        .await
        .with_context(|| format!("opening slashing-protection database {}", redact_url(database_url)))
}
