//! The chain pin: the one genesis validators root a database, and so every replica on it,
//! signs and imports for.
//!
//! It is configured (the network's root, or `--genesis-validators-root`) or, where nothing is
//! configured, pinned by the first legitimate use: a signing for a loaded key whose domain
//! uses the root, or an import. The zero root belongs to no chain and never pins anything.

use std::sync::OnceLock;

use super::{Interchange, ProtectionError, SlashingDatabase};
use crate::types::Root;

pub struct ChainPin {
    root: OnceLock<Root>,
}

impl ChainPin {
    pub fn new(known: Option<Root>) -> Self {
        let root = OnceLock::new();
        if let Some(r) = known {
            let _ = root.set(r);
        }
        Self { root }
    }

    pub fn get(&self) -> Option<Root> {
        self.root.get().copied()
    }

    /// Lets a signing or import for chain `given` through when it is the pinned chain,
    /// pinning `given` first (in the database, where the first replica wins) when nothing is
    /// pinned yet.
    pub async fn admit(&self, db: &SlashingDatabase, given: Root) -> Result<(), ProtectionError> {
        let pinned = match self.root.get() {
            Some(r) => *r,
            None => {
                let pinned = match db.pinned_chain().await? {
                    Some(r) => r,
                    None if given == Root::ZERO => return Err(ProtectionError::ZeroChain),
                    None => db.pin_chain(given).await?,
                };
                *self.root.get_or_init(|| pinned)
            }
        };
        if pinned == given {
            Ok(())
        } else {
            Err(ProtectionError::WrongChain { pinned, given })
        }
    }

    /// Imports `interchange` (all or nothing) once its chain is admitted.
    pub async fn import(&self, db: &SlashingDatabase, interchange: &Interchange) -> Result<usize, ProtectionError> {
        self.admit(db, interchange.metadata.genesis_validators_root).await?;
        db.import(interchange).await
    }
}
