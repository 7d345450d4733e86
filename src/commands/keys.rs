//! `palisade keys split|combine`: t-of-n shares of a validator key as EIP-2335 keystores, each
//! carrying its index, the threshold, the group public key and the verification vector (a
//! `threshold` object beside the standard fields), each with its own random password.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use rand::RngCore;
use zeroize::Zeroizing;

use super::cli::{CombineArgs, SplitArgs};
use crate::keys::keystore::{KdfChoice, Keystore};
use crate::keys::secret::SecretKey;
use crate::keys::threshold::{self, Share, ShareInfo, VerificationVector};

/// A password file's first line (read as `serve` reads keystore password files).
fn first_line(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let text =
        Zeroizing::new(std::fs::read_to_string(path).with_context(|| format!("password file {}", path.display()))?);
    Ok(Zeroizing::new(text.lines().next().unwrap_or("").to_string()))
}

pub fn split(a: &SplitArgs) -> anyhow::Result<()> {
    if a.output_dir.exists() {
        bail!(
            "--output-dir {}: exists already (a new folder is written whole, or not at all)",
            a.output_dir.display()
        );
    }
    let key = match (&a.keystore, &a.password_file) {
        (Some(file), Some(pw)) => {
            let json = std::fs::read_to_string(file).with_context(|| format!("--keystore {}", file.display()))?;
            let password = first_line(pw)?;
            Keystore::from_json(&json)
                .and_then(|k| k.decrypt(&password))
                .map_err(|e| anyhow!("--keystore {}: {e}", file.display()))?
        }
        _ => {
            let mut ikm = Zeroizing::new([0u8; 32]);
            rand::rng().fill_bytes(ikm.as_mut());
            SecretKey::generate(&ikm)
        }
    };
    let (shares, vector) = threshold::split(&key, a.threshold, a.shares)?;
    drop(key);
    // Written into a hidden sibling, then renamed: the folder appears complete or not at all.
    let parent = a
        .output_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = a
        .output_dir
        .file_name()
        .ok_or_else(|| anyhow!("--output-dir needs a folder name"))?;
    let tmp = parent.join(format!(".{}.partial", name.to_string_lossy()));
    let _ = std::fs::remove_dir_all(&tmp);
    let kdf = KdfChoice::Pbkdf2 { c: a.pbkdf2_rounds };
    let written = write_shares(&tmp, &shares, &vector, a.threshold, a.shares, kdf);
    match written.and_then(|()| std::fs::rename(&tmp, &a.output_dir).map_err(Into::into)) {
        Ok(()) => {
            println!(
                "split {} into {} shares, any {} of which sign: {}",
                vector.group_public_key(),
                a.shares,
                a.threshold,
                a.output_dir.display()
            );
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn write_shares(
    dir: &Path,
    shares: &[Share],
    vector: &VerificationVector,
    t: usize,
    n: usize,
    kdf: KdfChoice,
) -> anyhow::Result<()> {
    crate::fsutil::private_dir(dir)?;
    for share in shares {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(bytes.as_mut());
        let password = Zeroizing::new(hex::encode(bytes.as_ref()));
        let mut keystore = serde_json::to_value(Keystore::encrypt(&share.secret, &password, kdf))?;
        keystore["description"] = format!(
            "share {} of {} ({} needed) of {}",
            share.index,
            n,
            t,
            vector.group_public_key()
        )
        .into();
        keystore["threshold"] = serde_json::to_value(ShareInfo {
            index: share.index,
            threshold: t,
            shares: n,
            group_public_key: vector.group_public_key(),
            verification_vector: vector.0.clone(),
        })?;
        let sub = dir.join(format!("share-{}", share.index));
        crate::fsutil::private_dir(&sub)?;
        crate::fsutil::write_private(
            &sub.join("password.txt"),
            password.as_bytes(),
            crate::fsutil::Existing::Keep,
        )?;
        crate::fsutil::write_private(
            &sub.join("keystore.json"),
            serde_json::to_string_pretty(&keystore)?.as_bytes(),
            crate::fsutil::Existing::Keep,
        )?;
    }
    let group = serde_json::json!({
        "group_public_key": vector.group_public_key(),
        "threshold": t,
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
