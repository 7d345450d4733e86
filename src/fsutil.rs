//! Files that hold secrets (tokens, keystores, their passwords): written whole or not at
//! all, private from the first byte, and never through a link someone planted.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;

/// What to do when the target already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    Replace,
    /// Fail with `AlreadyExists`: of several processes creating the same file, one wins.
    Keep,
}

/// Writes `bytes` to `path` with mode 0600: into a new file under a random name in the same
/// folder (`O_CREAT|O_EXCL|O_NOFOLLOW`, so a planted name or link is never followed), synced,
/// then moved into place.
pub fn write_private(path: &Path, bytes: &[u8], existing: Existing) -> std::io::Result<()> {
    let dir = parent(path);
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let mut random = [0u8; 8];
    rand::rng().fill_bytes(&mut random);
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(random)));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        match existing {
            Existing::Replace => std::fs::rename(&tmp, path),
            Existing::Keep => std::fs::hard_link(&tmp, path),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result?;
    sync_dir(&dir);
    Ok(())
}

/// Creates `dir` (and its parents) if missing; a folder Palisade creates is private (0700).
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Moves `file` into `.deleted/` beside it, under a name that never collides, and returns
/// the new path. Used instead of deleting key material: an operator's mistake stays
/// recoverable, and a restart no longer loads the file.
pub fn move_aside(file: &Path) -> std::io::Result<PathBuf> {
    let dir = parent(file).join(".deleted");
    private_dir(&dir)?;
    let name = file.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let target = dir.join(format!("{name}.{stamp}"));
    std::fs::rename(file, &target)?;
    sync_dir(&parent(file));
    Ok(target)
}

/// Why a file that grants access (a token, the fleet secret, a TLS private key) is refused.
/// Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum AccessFileError {
    #[error("{what} {}: cannot read: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {} is a symbolic link: point the option at the file itself", path.display())]
    Link { what: &'static str, path: PathBuf },
    #[error("{what} {} is not a regular file", path.display())]
    NotRegular { what: &'static str, path: PathBuf },
    #[error(
        "{what} {} belongs to user {owner}, not to the user Palisade runs as ({ours}): a file another user can \
         replace grants access to whoever does; `chown {ours} {}`",
        path.display(), path.display()
    )]
    Owner {
        what: &'static str,
        path: PathBuf,
        owner: u32,
        ours: u32,
    },
    #[error(
        "{what} {} can be read by other users (mode {mode:o}): `chmod 600 {}`",
        path.display(), path.display()
    )]
    Mode {
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
}

/// Reads a file that grants access: opened without following a link, and refused unless it is
/// a regular file owned by the user Palisade runs as and closed to other users (group and
/// others): a planted or world-readable token is a key to the signer.
pub fn read_access_file(path: &Path, what: &'static str) -> Result<zeroize::Zeroizing<Vec<u8>>, AccessFileError> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(libc::ELOOP) {
                AccessFileError::Link {
                    what,
                    path: path.into(),
                }
            } else {
                AccessFileError::Read {
                    what,
                    path: path.into(),
                    source,
                }
            }
        })?;
    let meta = f.metadata().map_err(|source| AccessFileError::Read {
        what,
        path: path.into(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(AccessFileError::NotRegular {
            what,
            path: path.into(),
        });
    }
    // SAFETY: geteuid has no failure mode.
    let ours = unsafe { libc::geteuid() };
    if meta.uid() != ours {
        return Err(AccessFileError::Owner {
            what,
            path: path.into(),
            owner: meta.uid(),
            ours,
        });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(AccessFileError::Mode {
            what,
            path: path.into(),
            mode: meta.mode() & 0o777,
        });
    }
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    f.read_to_end(&mut bytes).map_err(|source| AccessFileError::Read {
        what,
        path: path.into(),
        source,
    })?;
    Ok(bytes)
}

/// A warning for a file others can read that cannot be refused without breaking migrations
/// from other signers (keystore password files).
pub fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.mode())
        .filter(|mode| mode & 0o077 != 0)
        .map(|mode| mode & 0o777)
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A rename is durable once its folder is synced.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_privately_and_keeps_or_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret.txt");
        write_private(&f, b"one", Existing::Keep).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
        let e = write_private(&f, b"two", Existing::Keep).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&f).unwrap(), b"one");
        write_private(&f, b"three", Existing::Replace).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"three");
        // Nothing but the file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_symlink_planted_as_the_target_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let f = dir.path().join("token.txt");
        std::os::unix::fs::symlink(&victim, &f).unwrap();
        write_private(&f, b"secret", Existing::Replace).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(!std::fs::symlink_metadata(&f).unwrap().file_type().is_symlink());
    }

    #[test]
    fn access_files_must_be_private_regular_and_ours() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        write_private(&f, b"secret", Existing::Keep).unwrap();
        assert_eq!(&*read_access_file(&f, "--api-token-file").unwrap(), b"secret");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_access_file(&f, "--api-token-file").unwrap_err().to_string();
        assert!(e.contains("chmod 600") && e.contains("--api-token-file"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(
            read_access_file(&link, "x")
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );
        assert!(
            read_access_file(dir.path(), "x")
                .unwrap_err()
                .to_string()
                .contains("not a regular file")
        );
    }

    #[test]
    fn moving_aside_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.json");
        std::fs::write(&f, "{}").unwrap();
        let moved = move_aside(&f).unwrap();
        assert!(!f.exists());
        assert_eq!(std::fs::read_to_string(moved).unwrap(), "{}");
    }
}
