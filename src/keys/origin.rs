//! Where a key came from, and so whether the Key Manager API may delete it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::signing::policy::TypeSet;

/// A key's source: a label for logs and health, and the files that hold it.
#[derive(Debug, PartialEq, Eq)]
pub struct Origin {
    pub label: String,
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
    /// Built in memory (tests, benchmarks): nothing on disk.
    Memory,
}

impl Origin {
    pub fn files(label: impl Into<String>, files: Vec<PathBuf>) -> Arc<Origin> {
        Arc::new(Origin {
            label: label.into(),
            kind: OriginKind::Files(files),
            signing_types: None,
        })
    }

    pub fn definition(label: impl Into<String>, signing_types: Option<TypeSet>) -> Arc<Origin> {
        Arc::new(Origin {
            label: label.into(),
            kind: OriginKind::Definition,
            signing_types,
        })
    }

    pub fn memory(label: impl Into<String>) -> Arc<Origin> {
        Arc::new(Origin {
            label: label.into(),
            kind: OriginKind::Memory,
            signing_types: None,
        })
    }

    /// Why the Key Manager API may not delete this key, if it may not: a YAML definition, or
    /// a keystore in a folder this process cannot write (`readonly` in the key list).
    pub fn read_only_reason(&self) -> Option<String> {
        match &self.kind {
            OriginKind::Definition => Some(format!(
                "key is read-only: it comes from the YAML key definition {}; remove that definition instead",
                self.label
            )),
            OriginKind::Files(files) => files.iter().find(|f| !parent_writable(f)).map(|f| {
                format!(
                    "key is read-only: the folder of {} is not writable by Palisade, so the key would be loaded again at the next start",
                    f.display()
                )
            }),
            OriginKind::Memory => None,
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
