//! Keystores imported through the Key Manager API on a PostgreSQL fleet: kept in the shared
//! database (as imported, their passwords sealed with the fleet secret), so that every
//! replica, including one started tomorrow, loads them. This is the key source that reads
//! them back; replicas reread it when the database's keystore generation moves (checked with
//! every database probe).

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use crate::keys::fleet::FleetSecret;
use crate::keys::keystore::Keystore;
use crate::keys::loader::{Cores, KeyLoader};
use crate::keys::source::{Failure, Found, KeySource, Material, Password, Pending, SourceError};
use crate::keys::{Origin, OriginKind};
use crate::protection::{SlashingDatabase, StoredKeystore};
use crate::types::PublicKey;

pub struct SharedKeystores {
    name: Arc<str>,
    db: Arc<SlashingDatabase>,
    secret: Option<Arc<FleetSecret>>,
    /// What the last listing read: the database (its identity, which a failover or a restore
    /// changes) and the generation, from the listing's own snapshot. Only a listing that
    /// succeeded moves it, so a reread that failed is tried again.
    seen: Mutex<Option<(Option<String>, i64)>>,
    /// One reread at a time (released even if one panics).
    rereading: Arc<tokio::sync::Mutex<()>>,
}

impl SharedKeystores {
    pub fn new(db: Arc<SlashingDatabase>, secret: Option<Arc<FleetSecret>>) -> Self {
        SharedKeystores {
            name: Arc::from("shared keystores (Key Manager imports in the database)"),
            db,
            secret,
            seen: Mutex::new(None),
            rereading: Arc::default(),
        }
    }

    fn identity(&self) -> Option<String> {
        self.db.incarnation().and_then(|i| i.identity())
    }

    /// Rereads the shared keystores if the database holds another generation than the one last
    /// read (an import or a deletion on some replica, or another database after a failover).
    /// Called with every database probe: a key imported anywhere signs here within about a
    /// probe interval.
    pub async fn follow(self: &Arc<Self>, loader: &Arc<KeyLoader>) {
        let Ok(generation) = self.db.keystore_generation().await else {
            return;
        };
        if *self.seen.lock().expect("shared keystores") == Some((self.identity(), generation)) {
            return;
        }
        let Ok(turn) = self.rereading.clone().try_lock_owned() else {
            return;
        };
        let (me, loader) = (self.clone(), loader.clone());
        tokio::spawn(async move {
            let _turn = turn;
            let source: Arc<dyn KeySource> = me.clone();
            let report = loader.load(std::slice::from_ref(&source), Cores::Half).await;
            if !report.added.is_empty() || !report.removed.is_empty() || !report.failed.is_empty() {
                crate::keys::loader::log_report("shared keystores reread", &report);
                let added: Vec<PublicKey> = report.added.iter().map(|c| c.pubkey).collect();
                if let Err(e) = me.db.register(&added).await {
                    tracing::warn!(error = %e, "registering keys in the slashing-protection database (retried on first use)");
                }
            }
        });
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
                origin: Some(origin.clone()),
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
            let identity = self.identity();
            let (generation, rows) = self
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
            *self.seen.lock().expect("shared keystores") = Some((identity, generation));
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
