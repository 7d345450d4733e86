//! `palisade keys reshare-recipient|reshare-deal|reshare-apply`: a threshold key moved to a new
//! set of holders (a node added, replaced or removed, or a new threshold), the group key kept.

use anyhow::{anyhow, bail};
use rand::RngCore;
use zeroize::Zeroizing;

use super::cli::{ReshareApplyArgs, ReshareDealArgs, ReshareRecipientArgs};
use super::keys::{
    open_keystore, read_deals, read_share, whole_folder, write_deal, write_group, write_keystore, write_share,
};
use crate::keys::keystore::{KdfChoice, Keystore};
use crate::keys::reshare::{self, Recipient, ReshareDeal};
use crate::keys::secret::SecretKey;
use crate::keys::threshold::VerificationVector;
use crate::types::PublicKey;

pub fn recipient(a: &ReshareRecipientArgs) -> anyhow::Result<()> {
    let mut ikm = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(ikm.as_mut());
    let key = SecretKey::generate(&ikm);
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(bytes.as_mut());
    let password = Zeroizing::new(hex::encode(bytes.as_ref()));
    let mut keystore = Keystore::encrypt(&key, &password, KdfChoice::Pbkdf2 { c: a.pbkdf2_rounds });
    keystore.description = Some("Palisade reshare recipient key (not a validator key)".into());
    whole_folder(&a.output_dir, |dir| write_keystore(dir, &keystore, &password))?;
    println!(
        "recipient key {} written to {}: give the dealers this public key",
        key.public_key(),
        a.output_dir.display()
    );
    Ok(())
}

/// `--recipient INDEX=PUBKEY` options; an index without one is the holder of that share today
/// (of the `current` shares in `vector`'s group), its sub-share encrypted to that share.
fn recipients(a: &ReshareDealArgs, vector: &VerificationVector, current: usize) -> anyhow::Result<Vec<Recipient>> {
    let mut given = std::collections::BTreeMap::new();
    for r in &a.recipients {
        let (index, key) = r
            .split_once('=')
            .ok_or_else(|| anyhow!("--recipient {r}: expected INDEX=PUBKEY"))?;
        let index: u32 = index
            .parse()
            .ok()
            .filter(|i| (1..=a.shares as u32).contains(i))
            .ok_or_else(|| anyhow!("--recipient {r}: the index must be 1 to --shares {}", a.shares))?;
        let key: PublicKey = key.parse().map_err(|e| anyhow!("--recipient {r}: {e}"))?;
        if given.insert(index, key).is_some() {
            bail!("--recipient {r}: index {index} given twice");
        }
    }
    (1..=a.shares as u32)
        .map(|index| {
            let public_key = match given.get(&index) {
                Some(k) => *k,
                None if index as usize <= current => vector.share_public_key(index)?,
                None => bail!("new holder {index} holds no share today: give its key with --recipient {index}=PUBKEY"),
            };
            Ok(Recipient { index, public_key })
        })
        .collect()
}

pub fn deal(a: &ReshareDealArgs) -> anyhow::Result<()> {
    let (share, info) = read_share(&a.share, &a.password_file)?;
    let vector = VerificationVector(info.verification_vector.clone());
    let recipients = recipients(a, &vector, info.shares)?;
    let deal = reshare::deal(&share, &vector, a.threshold, &recipients)?;
    write_deal(&a.output, &deal)?;
    println!(
        "reshare deal of share {} of {} ({} of {} from now on) written to {}",
        share.index,
        info.group_public_key,
        a.threshold,
        a.shares,
        a.output.display()
    );
    Ok(())
}

pub fn apply(a: &ReshareApplyArgs) -> anyhow::Result<()> {
    let group: PublicKey = a
        .group_public_key
        .parse()
        .map_err(|e| anyhow!("--group-public-key {}: {e}", a.group_public_key))?;
    let own = open_keystore(&a.keystore, &a.password_file)?;
    let deals: Vec<ReshareDeal> = read_deals(&a.deals)?;
    let new = reshare::apply(&own, a.index, &group, &deals)?;
    let kdf = KdfChoice::Pbkdf2 { c: a.pbkdf2_rounds };
    whole_folder(&a.output_dir, |dir| {
        write_share(dir, &new.share, &new.vector, new.shares, kdf)?;
        write_group(dir, &new.vector, new.shares)
    })?;
    println!(
        "share {} of {} ({} of {}) written to {}; every new holder must print the same vector {}",
        new.share.index,
        group,
        new.vector.threshold(),
        new.shares,
        a.output_dir.display(),
        crate::keys::dealing::vector_hash(&new.vector)
    );
    Ok(())
}
