//! `palisade slashing-protection import|export`.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, anyhow, bail};

use crate::commands::cli::DatabaseArgs;
use crate::commands::database::open;
use crate::network::Network;
use crate::protection::repair::RepairRequest;
use crate::protection::{Interchange, redact_url};
use crate::types::{Epoch, PublicKey, Root, Slot};

/// Imports an interchange file, all or nothing. The chain is checked against the configured
/// network (when given) and the database's pin; an unpinned database is pinned to the file's
/// chain, and the command says so.
pub async fn import(
    database: &DatabaseArgs,
    from: &Path,
    network: Option<&str>,
    genesis_validators_root: Option<Root>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(from).with_context(|| format!("cannot read {}", from.display()))?;
    let interchange = Interchange::from_json(&text).map_err(|e| anyhow!("{}: {e}", from.display()))?;
    let given = interchange.metadata.genesis_validators_root;
    let configured = match network {
        Some(n) => {
            let network = Network::load(n)?;
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
    let db = open(database).await?;
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
        redact_url(&database.database_url)
    );
    Ok(())
}

pub async fn export(database: &DatabaseArgs, to: &Path, pubkeys: &[PublicKey]) -> anyhow::Result<()> {
    let db = open(database).await?;
    let filter = (!pubkeys.is_empty()).then_some(pubkeys);
    let interchange = db.export(filter).await?;
    let json = serde_json::to_string_pretty(&interchange)?;
    if to.as_os_str() == "-" {
        std::io::stdout().write_all(json.as_bytes())?;
        println!();
    } else {
        // Written under a fresh name beside the target and renamed: a reader never sees half a
        // file, and a link planted at a temporary name is never followed.
        crate::fsutil::write_private(to, json.as_bytes(), crate::fsutil::Existing::Replace)
            .with_context(|| format!("cannot write {}", to.display()))?;
        eprintln!(
            "exported slashing-protection data for {} validators to {}",
            interchange.data.len(),
            to.display()
        );
    }
    Ok(())
}

fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "?".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "?".into());
    format!("cli:{user}@{}", host.trim())
}

/// `palisade slashing-protection repair`.
pub async fn repair(a: &crate::commands::cli::RepairArgs) -> anyhow::Result<()> {
    let mut network = Network::load(&a.network).map_err(|e| anyhow!(e))?;
    if let Some(t) = a.genesis_time {
        network.genesis_time = Some(t);
    }
    let clock = crate::network::clock::ClockWindow::new(&network, std::time::Duration::ZERO)
        .map(|c| (c.limit(std::time::SystemTime::now(), 0), network.slots_per_epoch()));
    let req = RepairRequest {
        pubkeys: a.pubkey.clone(),
        block_slot: a.block_slot,
        attestation: a.attestation_source.zip(a.attestation_target),
        reason: a.reason.clone(),
        actor: cli_actor(),
        clock,
        discard_past: a.discard_past_messages,
    };
    req.validate()?;
    let db = open(&a.database).await?;
    if !a.confirm {
        for (pk, w) in db.watermarks_of(&req.pubkeys).await? {
            eprintln!(
                "{pk}: block slot {:?} -> {:?}; attestation source/target {:?}/{:?} -> {:?}",
                w.block_slot,
                req.block_slot.or(w.block_slot),
                w.att_source,
                w.att_target,
                req.attestation
                    .map_or((w.att_source, w.att_target), |(s, t)| (Some(s), Some(t)))
            );
        }
        bail!("nothing was changed: repeat with --confirm to apply this repair");
    }
    for r in db.repair(&req).await? {
        eprintln!(
            "{}: repaired {:?} -> {:?}; discarded {} blocks and {} attestations (kept in watermark_repairs)",
            r.pubkey,
            r.before,
            r.after,
            r.discarded_blocks.len(),
            r.discarded_attestations.len()
        );
    }
    eprintln!("replicas drop their memory of these keys within their next database check (10 s)");
    Ok(())
}

/// `palisade slashing-protection high-watermark`.
pub async fn high_watermark(
    database: &DatabaseArgs,
    value: Option<(Slot, Epoch)>,
    clear: bool,
    pubkeys: &[PublicKey],
) -> anyhow::Result<()> {
    let db = open(database).await?;
    let keys = (!pubkeys.is_empty()).then_some(pubkeys);
    let actor = cli_actor();
    let change = |value| crate::protection::HighWatermarkChange {
        value,
        keys,
        actor: &actor,
    };
    match (value, clear) {
        (Some(v), _) => {
            db.set_high_watermark(change(Some(v))).await?;
            eprintln!("high watermark set: slot {}, epoch {}", v.0, v.1);
        }
        (None, true) => {
            db.set_high_watermark(change(None)).await?;
            eprintln!("high watermark cleared");
        }
        (None, false) => match db.high_watermark().await? {
            Some((s, e)) => println!("{{\"slot\":\"{s}\",\"epoch\":\"{e}\"}}"),
            None => println!("{{}}"),
        },
    }
    Ok(())
}
