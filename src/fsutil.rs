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
    fn moving_aside_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.json");
        std::fs::write(&f, "{}").unwrap();
        let moved = move_aside(&f).unwrap();
        assert!(!f.exists());
        assert_eq!(std::fs::read_to_string(moved).unwrap(), "{}");
    }
}
