//! `palisade keys split|combine`: t-of-n shares of a validator key as EIP-2335 keystores, each
//! carrying its index, the threshold, the group public key and the verification vector (a
//! `threshold` object beside the standard fields), each with its own random password.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use rand::RngCore;
use zeroize::Zeroizing;

use super::cli::{CombineArgs, RefreshApplyArgs, RefreshDealArgs, SplitArgs};
use crate::keys::keystore::{KdfChoice, Keystore};
use crate::keys::secret::SecretKey;
use crate::keys::threshold::{self, Share, ShareInfo, VerificationVector};

/// A password file's first line (read as `serve` reads keystore password files).
pub(super) fn first_line(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let text =
        Zeroizing::new(std::fs::read_to_string(path).with_context(|| format!("password file {}", path.display()))?);
    Ok(Zeroizing::new(text.lines().next().unwrap_or("").to_string()))
}

/// The secret of the `--keystore` file, opened with its password file's first line.
pub(super) fn open_keystore(file: &Path, password_file: &Path) -> anyhow::Result<SecretKey> {
    let json = std::fs::read_to_string(file).with_context(|| format!("--keystore {}", file.display()))?;
    let password = first_line(password_file)?;
    Keystore::from_json(&json)
        .and_then(|k| k.decrypt(&password))
        .map_err(|e| anyhow!("--keystore {}: {e}", file.display()))
}

/// The `--deal` files, each parsed whole (a file that is not one names itself).
pub(super) fn read_deals<D: serde::de::DeserializeOwned>(files: &[PathBuf]) -> anyhow::Result<Vec<D>> {
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).with_context(|| format!("--deal {}", f.display()))?;
            serde_json::from_str(&text).with_context(|| format!("--deal {}", f.display()))
        })
        .collect()
}

pub fn split(a: &SplitArgs) -> anyhow::Result<()> {
    if a.output_dir.exists() {
        bail!(
            "--output-dir {}: exists already (a new folder is written whole, or not at all)",
            a.output_dir.display()
        );
    }
    let key = match (&a.keystore, &a.password_file) {
        (Some(file), Some(pw)) => open_keystore(file, pw)?,
        _ => {
            let mut ikm = Zeroizing::new([0u8; 32]);
            rand::rng().fill_bytes(ikm.as_mut());
            SecretKey::generate(&ikm)
        }
    };
    let (shares, vector) = threshold::split(&key, a.threshold, a.shares)?;
    drop(key);
    let kdf = KdfChoice::Pbkdf2 { c: a.pbkdf2_rounds };
    whole_folder(&a.output_dir, |dir| {
        for share in &shares {
            write_share(
                &dir.join(format!("share-{}", share.index)),
                share,
                &vector,
                a.shares,
                kdf,
            )?;
        }
        write_group(dir, &vector, a.shares)
    })?;
    println!(
        "split {} into {} shares, any {} of which sign: {}",
        vector.group_public_key(),
        a.shares,
        a.threshold,
        a.output_dir.display()
    );
    Ok(())
}

/// Writes a new folder through `fill`: into a hidden sibling, then renamed, so that it appears
/// complete or not at all; an existing folder is refused.
pub(super) fn whole_folder(out: &Path, fill: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    if out.exists() {
        bail!(
            "{}: exists already (a new folder is written whole, or not at all)",
            out.display()
        );
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .ok_or_else(|| anyhow!("{}: needs a folder name", out.display()))?;
    let tmp = parent.join(format!(".{}.partial", name.to_string_lossy()));
    let _ = std::fs::remove_dir_all(&tmp);
    let written = crate::fsutil::private_dir(&tmp)
        .map_err(Into::into)
        .and_then(|()| fill(&tmp))
        .and_then(|()| std::fs::rename(&tmp, out).map_err(Into::into));
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written
}

/// `dir/keystore.json` (the share, with its `threshold` object) and `dir/password.txt` (a new
/// random password).
pub(super) fn write_share(
    dir: &Path,
    share: &Share,
    vector: &VerificationVector,
    n: usize,
    kdf: KdfChoice,
) -> anyhow::Result<()> {
    let t = vector.threshold();
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(bytes.as_mut());
    let password = Zeroizing::new(hex::encode(bytes.as_ref()));
    let mut keystore = Keystore::encrypt(&share.secret, &password, kdf);
    keystore.description = Some(format!(
        "share {} of {} ({} needed) of {}",
        share.index,
        n,
        t,
        vector.group_public_key()
    ));
    keystore.threshold = Some(ShareInfo::of(share.index, vector, n));
    crate::fsutil::private_dir(dir)?;
    write_keystore(dir, &keystore, &password)
}

/// `dir/keystore.json` and `dir/password.txt`, private, never over existing files.
pub(super) fn write_keystore(dir: &Path, keystore: &Keystore, password: &str) -> anyhow::Result<()> {
    crate::fsutil::write_private(
        &dir.join("password.txt"),
        password.as_bytes(),
        crate::fsutil::Existing::Keep,
    )?;
    crate::fsutil::write_private(
        &dir.join("keystore.json"),
        serde_json::to_string_pretty(keystore)?.as_bytes(),
        crate::fsutil::Existing::Keep,
    )?;
    Ok(())
}

/// `dir/group.json`: what coordinators need (group key, threshold, vector, share keys).
pub(super) fn write_group(dir: &Path, vector: &VerificationVector, n: usize) -> anyhow::Result<()> {
    let group = serde_json::json!({
        "group_public_key": vector.group_public_key(),
        "threshold": vector.threshold(),
        "shares": n,
        "verification_vector": vector.0,
        "share_public_keys": (1..=n as u32).map(|i| vector.share_public_key(i)).collect::<Result<Vec<_>, _>>()?,
    });
    crate::fsutil::write_private(
        &dir.join("group.json"),
        serde_json::to_string_pretty(&group)?.as_bytes(),
        crate::fsutil::Existing::Keep,
    )?;
    Ok(())
}

/// A deal (public) to `--output`, a new file.
pub(super) fn write_deal(output: &Path, deal: &impl serde::Serialize) -> anyhow::Result<()> {
    crate::fsutil::write_private(
        output,
        serde_json::to_string_pretty(deal)?.as_bytes(),
        crate::fsutil::Existing::Keep,
    )
    .with_context(|| format!("--output {}", output.display()))
}

/// `keys refresh-deal`: this holder's deal for the next refresh (a public file).
pub fn refresh_deal(a: &RefreshDealArgs) -> anyhow::Result<()> {
    let (share, info) = read_share(&a.share, &a.password_file)?;
    let vector = VerificationVector(info.verification_vector.clone());
    let deal = crate::keys::refresh::deal(&share, &vector, info.shares)?;
    write_deal(&a.output, &deal)?;
    println!(
        "deal of share {} of {} written to {}",
        share.index,
        info.group_public_key,
        a.output.display()
    );
    Ok(())
}

/// `keys refresh-apply`: this holder's new share from every holder's deal.
pub fn refresh_apply(a: &RefreshApplyArgs) -> anyhow::Result<()> {
    let (share, info) = read_share(&a.share, &a.password_file)?;
    let vector = VerificationVector(info.verification_vector.clone());
    let deals: Vec<crate::keys::refresh::Deal> = read_deals(&a.deals)?;
    let (new, new_vector) = crate::keys::refresh::apply(&share, &vector, info.shares, &deals)?;
    let kdf = KdfChoice::Pbkdf2 { c: a.pbkdf2_rounds };
    whole_folder(&a.output_dir, |dir| {
        write_share(dir, &new, &new_vector, info.shares, kdf)?;
        write_group(dir, &new_vector, info.shares)
    })?;
    println!(
        "share {} of {} refreshed into {}: replace the old share with it on this node, then destroy the old one",
        new.index,
        info.group_public_key,
        a.output_dir.display()
    );
    Ok(())
}

/// A share keystore's share, checked against its own verification vector.
pub fn read_share(keystore: &Path, password_file: &Path) -> anyhow::Result<(Share, ShareInfo)> {
    let at = |e: String| anyhow!("{}: {e}", keystore.display());
    let json = std::fs::read_to_string(keystore).map_err(|e| at(e.to_string()))?;
    let value: serde_json::Value = serde_json::from_str(&json).map_err(|e| at(e.to_string()))?;
    let info: ShareInfo = serde_json::from_value(
        value
            .get("threshold")
            .cloned()
            .ok_or_else(|| at("no `threshold` object: not a share keystore".into()))?,
    )
    .map_err(|e| at(format!("threshold: {e}")))?;
    let password = first_line(password_file)?;
    let secret = Keystore::from_json(&json)
        .and_then(|k| k.decrypt(&password))
        .map_err(|e| at(e.to_string()))?;
    let vector = VerificationVector(info.verification_vector.clone());
    if vector.group_public_key() != info.group_public_key || vector.threshold() != info.threshold {
        return Err(at(
            "threshold: the verification vector does not match the group key and threshold".into(),
        ));
    }
    if vector.share_public_key(info.index)? != secret.public_key() {
        return Err(at(format!(
            "threshold: share {} does not match the verification vector",
            info.index
        )));
    }
    Ok((
        Share {
            index: info.index,
            secret,
        },
        info,
    ))
}

pub fn combine(a: &CombineArgs) -> anyhow::Result<()> {
    if a.output.exists() {
        bail!("--output {}: exists already", a.output.display());
    }
    let mut shares = Vec::new();
    let mut group: Option<ShareInfo> = None;
    for s in &a.shares {
        let (ks, pw) = s
            .split_once(':')
            .map(|(k, p)| (PathBuf::from(k), PathBuf::from(p)))
            .ok_or_else(|| anyhow!("--share {s}: expected KEYSTORE:PASSWORD_FILE"))?;
        let (share, info) = read_share(&ks, &pw)?;
        if let Some(g) = &group
            && g.group_public_key != info.group_public_key
        {
            bail!(
                "--share {}: a share of {}, not of {}",
                ks.display(),
                info.group_public_key,
                g.group_public_key
            );
        }
        group = Some(info);
        shares.push(share);
    }
    let info = group.expect("at least one share");
    let key = threshold::combine_secret(&shares, info.threshold)?;
    if key.public_key() != info.group_public_key {
        bail!(
            "the shares combine to {}, not to the group key {}",
            key.public_key(),
            info.group_public_key
        );
    }
    let keystore = Keystore::encrypt(
        &key,
        &first_line(&a.output_password_file)?,
        KdfChoice::Pbkdf2 { c: a.pbkdf2_rounds },
    );
    crate::fsutil::write_private(
        &a.output,
        serde_json::to_string_pretty(&keystore)?.as_bytes(),
        crate::fsutil::Existing::Keep,
    )
    .with_context(|| format!("--output {}", a.output.display()))?;
    println!(
        "recovered {} into {}: destroy it when done",
        info.group_public_key,
        a.output.display()
    );
    Ok(())
}
