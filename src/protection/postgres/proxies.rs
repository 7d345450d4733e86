//! Commit-Boost proxy keys shared through the database (`commit_boost_proxies`). The rows are
//! opaque here: the keystores are encrypted by the keys' side.

use super::{PgStore, retrying};
use crate::protection::sql::{pubkey_from_db, timed};
use crate::protection::{ProtectionError, StoredProxy};

/// proxy, delegator, scheme, module, keystore
type ProxyRow = (Vec<u8>, Vec<u8>, String, Option<String>, String);

impl PgStore {
    pub async fn stored_proxies(&self) -> Result<Vec<StoredProxy>, ProtectionError> {
        timed(self.timeout * 4, async {
            let rows: Vec<ProxyRow> = sqlx::query_as(
                "SELECT proxy, delegator, scheme, module, keystore FROM commit_boost_proxies ORDER BY created_at, proxy",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter()
                .map(|(proxy, delegator, scheme, module, keystore)| {
                    Ok(StoredProxy {
                        proxy,
                        delegator: pubkey_from_db(&delegator)?,
                        scheme,
                        module,
                        keystore,
                    })
                })
                .collect()
        })
        .await
    }

    /// Stores a new proxy; a proxy already there is left as it is.
    pub async fn store_proxy(&self, row: &StoredProxy, replica: &str) -> Result<(), ProtectionError> {
        timed(
            self.timeout * 4,
            retrying(|| async {
                sqlx::query(
                    "INSERT INTO commit_boost_proxies (proxy, delegator, scheme, module, keystore, created_by)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (proxy) DO NOTHING",
                )
                .bind(&row.proxy)
                .bind(&row.delegator.0[..])
                .bind(&row.scheme)
                .bind(&row.module)
                .bind(&row.keystore)
                .bind(replica)
                .execute(&self.pool)
                .await?;
                Ok(())
            }),
        )
        .await
    }
}
