//! Keys deleted through the Key Manager API on any replica: refused for every signing type
//! and not listed. The database is the truth; this is its cache, refreshed with every probe.

use std::collections::HashSet;
use std::sync::RwLock;

use crate::protection::{ProtectionError, SlashingDatabase};
use crate::types::PublicKey;

#[derive(Default)]
pub struct DisabledKeys(RwLock<HashSet<PublicKey>>);

impl DisabledKeys {
    pub fn contains(&self, pk: &PublicKey) -> bool {
        self.0.read().expect("disabled keys lock").contains(pk)
    }

    pub fn add(&self, pks: &[PublicKey]) {
        self.0.write().expect("disabled keys lock").extend(pks);
    }

    pub fn remove(&self, pks: &[PublicKey]) {
        let mut set = self.0.write().expect("disabled keys lock");
        for pk in pks {
            set.remove(pk);
        }
    }

    /// `keys` without the disabled ones.
    pub fn filter(&self, mut keys: Vec<PublicKey>) -> Vec<PublicKey> {
        let set = self.0.read().expect("disabled keys lock");
        keys.retain(|k| !set.contains(k));
        keys
    }

    /// Replaces the cache with the database's set.
    pub async fn refresh(&self, db: &SlashingDatabase) -> Result<(), ProtectionError> {
        let keys = db.disabled_keys().await?;
        *self.0.write().expect("disabled keys lock") = keys.into_iter().collect();
        Ok(())
    }
}
