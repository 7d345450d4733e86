//! Where a key came from: which source, which file or secret in it, and so whether the Key
//! Manager API may delete it and what a reload keeps when that file or secret fails to read.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::signing::policy::TypeSet;

/// A key's source: a label for logs and health, the source and unit that define it, and what
/// deleting it means.
#[derive(Debug, PartialEq, Eq)]
pub struct Origin {
    pub label: String,
    /// The key source (`KeySource::name`) that produced it.
    pub source: Arc<str>,
    /// What within the source defines it (a file, a secret, a database row): when a reload
    /// cannot read this unit, the keys it gave before are kept.
    pub unit: String,
    pub kind: OriginKind,
    /// The signing types this key is limited to (its YAML definition), beyond the signer's.
    pub signing_types: Option<TypeSet>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum OriginKind {
    /// A keystore in a folder Palisade loads from (`--keystores-path`, or the Key Manager's
    /// own folder): deleting the key moves these files (keystore, and its own password file
    /// if it has one) aside, so that a restart does not load it again.
    Files(Vec<PathBuf>),
    /// A Web3Signer YAML key definition: read-only for the Key Manager API.
    Definition,
    /// Imported through the Key Manager API on some replica and kept in the shared database:
    /// deleting it removes it there, for every replica.
    Shared,
    /// A secret store's bulk loading (every secret matching a filter): read-only.
    Store,
    /// Built in memory (tests, benchmarks): nothing on disk.
    Memory,
}

impl Origin {
    pub fn new(
        source: &Arc<str>,
        unit: impl Into<String>,
        label: impl Into<String>,
        kind: OriginKind,
        signing_types: Option<TypeSet>,
    ) -> Arc<Origin> {
        Arc::new(Origin {
            label: label.into(),
            source: source.clone(),
            unit: unit.into(),
            kind,
            signing_types,
        })
    }

    pub fn memory(label: impl Into<String>) -> Arc<Origin> {
        let label = label.into();
        Arc::new(Origin {
            unit: label.clone(),
            label,
            source: Arc::from("memory"),
            kind: OriginKind::Memory,
            signing_types: None,
        })
    }

    /// Why the Key Manager API may not delete this key, if it may not: a YAML definition, a
    /// secret store, or a keystore in a folder this process cannot write (`readonly` in the
    /// key list).
    pub fn read_only_reason(&self) -> Option<String> {
        match &self.kind {
            OriginKind::Definition => Some(format!(
                "key is read-only: it comes from the YAML key definition {}; remove that definition instead",
                self.label
            )),
            OriginKind::Store => Some(format!(
                "key is read-only: it comes from {}; remove it from the secret store instead",
                self.label
            )),
            OriginKind::Files(files) => files.iter().find(|f| !parent_writable(f)).map(|f| {
                format!(
                    "key is read-only: the folder of {} is not writable by Palisade, so the key would be loaded again at the next start",
                    f.display()
                )
            }),
            OriginKind::Shared | OriginKind::Memory => None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.label)
    }
}

fn parent_writable(file: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path; access() only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}
