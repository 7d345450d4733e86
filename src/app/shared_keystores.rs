//! Keystores imported through the Key Manager API on a PostgreSQL fleet: kept in the shared
//! database (as imported, their passwords sealed with the fleet secret), so that every
//! replica, including one started tomorrow, loads them. This is the key source that reads
//! them back; replicas reread it when the database's keystore generation moves (checked with
//! every database probe).

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::keys::fleet::FleetSecret;
use crate::keys::keystore::Keystore;
use crate::keys::source::{Failure, Found, KeySource, Material, Password, Pending, SourceError};
use crate::keys::{Origin, OriginKind};
use crate::protection::{SlashingDatabase, StoredKeystore};
use crate::types::PublicKey;

pub struct SharedKeystores {
    name: Arc<str>,
    db: Arc<SlashingDatabase>,
    secret: Option<Arc<FleetSecret>>,
}

impl SharedKeystores {
    pub fn new(db: Arc<SlashingDatabase>, secret: Option<Arc<FleetSecret>>) -> Self {
        SharedKeystores {
            name: Arc::from("shared keystores (Key Manager imports in the database)"),
            db,
            secret,
        }
    }

    /// The origin of a key imported here or read back: deletable, for every replica.
    pub fn origin(name: &Arc<str>, pubkey: &PublicKey) -> Arc<Origin> {
        Origin::new(
            name,
            pubkey.to_string(),
            format!("shared keystore {pubkey}"),
            OriginKind::Shared,
            None,
        )
    }

    fn pending(&self, row: StoredKeystore) -> Result<Pending, Box<Failure>> {
        let origin = Self::origin(&self.name, &row.pubkey);
        let fail = |reason: String| {
            Box::new(Failure {
                label: origin.label.clone(),
                reason,
                unit: Some(origin.unit.clone()),
                pubkey: Some(row.pubkey),
            })
        };
        let Some(secret) = &self.secret else {
            return Err(fail(
                "kept in the shared database, but this replica has no --shared-keystore-secret-file to unlock it"
                    .into(),
            ));
        };
        let password = secret
            .unseal(&row.pubkey, &row.sealed_password, &row.sealed_with)
            .map_err(|e| fail(e.to_string()))?;
        let mut keystore = Keystore::from_json(&row.keystore).map_err(|e| fail(e.to_string()))?;
        match keystore.declared_pubkey() {
            Ok(Some(pk)) if pk != row.pubkey => {
                return Err(fail(format!("the stored keystore is for {pk}, not {}", row.pubkey)));
            }
            Ok(Some(_)) => {}
            // Decryption then checks the key against the row's pubkey.
            Ok(None) => keystore.pubkey = Some(row.pubkey.to_string()),
            Err(e) => return Err(fail(e.to_string())),
        }
        Ok(Pending {
            origin,
            declared: Some(row.pubkey),
            material: Material::Keystore {
                keystore: Box::new(keystore),
                password: Password::Given(Arc::new(password)),
            },
        })
    }
}

impl KeySource for SharedKeystores {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn list(&self) -> BoxFuture<'_, Result<Found, SourceError>> {
        Box::pin(async move {
            let rows = self
                .db
                .stored_keystores()
                .await
                .map_err(|e| SourceError(format!("{}: {e}", self.name)))?;
            let mut found = Found::default();
            let mut unreadable = 0;
            for row in rows {
                match self.pending(row) {
                    Ok(p) => found.keys.push(p),
                    Err(f) => {
                        unreadable += 1;
                        found.failures.push(*f)
                    }
                }
            }
            if unreadable > 0 {
                tracing::error!(
                    keys = unreadable,
                    "shared keystores this replica cannot unlock (see /healthcheck with the token for which and why)"
                );
            }
            Ok(found)
        })
    }
}
