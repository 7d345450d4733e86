//! Every secret of AWS Secrets Manager whose name starts with one of the prefixes and whose
//! tags match (`--aws-secrets-enabled`, Web3Signer's bulk loading): each secret holds one key
//! or several, one per line. A secret that fails is reported alone; a store that cannot be
//! listed keeps every key it gave before.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};

use crate::keys::origin::{Origin, OriginKind};
use crate::keys::source::{Found, KeySource, Material, Pending, SourceError};
use crate::keys::stores::aws::{CredentialSource, Filter, SecretsManager};
use crate::keys::stores::http::{self as store_http, ClientOptions, with_retries};

const FETCH_CONCURRENCY: usize = 16;

/// `--aws-secrets-*` options, resolved.
#[derive(Clone, Debug)]
pub struct AwsBulk {
    pub credentials: CredentialSource,
    pub region: String,
    pub endpoint_override: Option<String>,
    /// Name prefixes (any); empty: every name.
    pub prefixes: Vec<String>,
    /// Tag names and tag values a secret must have (any of each: ListSecrets's `tag-key` and
    /// `tag-value` filters, prefix matches; names and values are not paired, as in Web3Signer).
    pub tag_keys: Vec<String>,
    pub tag_values: Vec<String>,
}

pub struct AwsBulkSource {
    name: Arc<str>,
    opts: AwsBulk,
}

impl AwsBulkSource {
    pub fn new(opts: AwsBulk) -> Self {
        let mut name = format!("AWS Secrets Manager bulk loading ({}", opts.region);
        if !opts.prefixes.is_empty() {
            name.push_str(&format!(", names {}*", opts.prefixes.join("*|")));
        }
        if !opts.tag_keys.is_empty() {
            name.push_str(&format!(", tag names {}", opts.tag_keys.join("|")));
        }
        if !opts.tag_values.is_empty() {
            name.push_str(&format!(", tag values {}", opts.tag_values.join("|")));
        }
        name.push(')');
        AwsBulkSource {
            name: Arc::from(name),
            opts,
        }
    }

    fn filters(&self) -> Vec<Filter> {
        let mut f = vec![Filter {
            key: "name",
            values: self.opts.prefixes.clone(),
        }];
        f.push(Filter {
            key: "tag-key",
            values: self.opts.tag_keys.clone(),
        });
        f.push(Filter {
            key: "tag-value",
            values: self.opts.tag_values.clone(),
        });
        f
    }
}

impl KeySource for AwsBulkSource {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn remote(&self) -> bool {
        true
    }

    fn list(&self) -> BoxFuture<'_, Result<Found, SourceError>> {
        Box::pin(async move {
            let err = |e: store_http::StoreError| SourceError(format!("{}: {e}", self.name));
            let http = store_http::client(&ClientOptions::default()).map_err(err)?;
            let sm = SecretsManager::new(
                http,
                &self.opts.region,
                self.opts.endpoint_override.as_deref(),
                self.opts.credentials.clone(),
            )
            .map_err(err)?;
            let filters = self.filters();
            let names = with_retries(|| sm.list_secrets(&filters)).await.map_err(err)?;
            let fetched: Vec<_> = stream::iter(names)
                .map(|name| {
                    let sm = &sm;
                    async move {
                        let value = with_retries(|| sm.get_secret_value(&name)).await;
                        (name, value)
                    }
                })
                .buffer_unordered(FETCH_CONCURRENCY)
                .collect()
                .await;
            let mut found = Found::default();
            for (secret, value) in fetched {
                let label = format!("AWS secret {secret} ({})", self.opts.region);
                match value {
                    Ok(v) => found.keys.push(Pending {
                        origin: Origin::new(&self.name, secret, label, OriginKind::Store, None),
                        declared: None,
                        material: Material::Secret(v),
                    }),
                    Err(e) => found.fail(label, Some(secret), e.to_string()),
                }
            }
            Ok(found)
        })
    }
}
