//! The Commit-Boost signer API's operations: list a module's keys, sign a module's root with a
//! consensus or proxy key, make a proxy key. Every signature here is over a `CommitBoostRoot`
//! (Commit-Boost's own domain), so none can pass for a consensus message; slashing protection
//! has nothing to record. A module uses only the consensus keys the modules file gives it,
//! and only its own proxies (or proxies found in a Web3Signer folder, which have no module).

pub mod modules;
pub mod store;

use std::sync::Arc;

use crate::app::metrics::{CommitBoostLabels, Metrics};
use crate::app::signer::{SignError, Signer};
use crate::consensus::commit_boost::{CommitBoostDomain, CommitBoostRoot, DelegatedProxy};
use crate::keys::proxy::{ProxyId, ProxyKey, ProxyKeys, Scheme};
use crate::signing::commit_boost::{Dialect, KeyRef, ProxyRequest, ProxyScheme, SignatureRequest};
use crate::types::{Address, PublicKey, Signature};
use modules::Api;
pub use modules::{Module, Modules};
use store::ProxyStore;

/// Why a Commit-Boost request got no answer; `http::error` maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum CommitBoostError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    UnknownKey(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error("{0}")]
    Internal(String),
}

impl CommitBoostError {
    pub fn outcome(&self) -> &'static str {
        match self {
            CommitBoostError::Unauthorized(_) => "unauthorized",
            CommitBoostError::Forbidden(_) => "forbidden",
            CommitBoostError::UnknownKey(_) => "unknown_key",
            CommitBoostError::BadRequest(_) => "bad_request",
            CommitBoostError::Sign(e) => match e {
                SignError::UnknownKey(_) | SignError::KeyFailed(..) => "unknown_key",
                SignError::Refused(_) | SignError::ShareOnly(_) => "forbidden",
                SignError::KeyLoading(_)
                | SignError::Protection(crate::protection::ProtectionError::Unavailable(_)) => "unavailable",
                _ => "error",
            },
            CommitBoostError::Internal(_) => "error",
        }
    }
}

/// A consensus key and the module's proxies of it, as `get_pubkeys` lists them.
#[derive(Debug, serde::Serialize)]
pub struct KeyEntry {
    pub consensus: PublicKey,
    pub proxy_bls: Vec<PublicKey>,
    /// Addresses (current Commit-Boost) or compressed keys (Web3Signer), lower-case hex.
    pub proxy_ecdsa: Vec<String>,
}

/// Who signed and the signature's bytes (96 BLS; 65 or 64 secp256k1 by dialect).
#[derive(Debug)]
pub enum SignedBy {
    Bls(PublicKey),
    Ecdsa(Address),
}

#[derive(Debug)]
pub struct Signed {
    pub by: SignedBy,
    pub signature: Vec<u8>,
}

/// A proxy delegation and the consensus key's signature of it.
#[derive(Debug)]
pub struct Delegation {
    pub delegator: PublicKey,
    pub proxy: DelegatedProxy,
    pub signature: Signature,
}

/// Proxy keys a module may have of one consensus key: enough for any use, and a bound on what
/// a module can make the signer store.
pub const MAX_PROXIES: usize = 64;

pub struct CommitBoost {
    modules: Modules,
    proxies: Arc<ProxyKeys>,
    store: Arc<ProxyStore>,
    signer: Arc<Signer>,
    metrics: Arc<Metrics>,
    domain: CommitBoostDomain,
    chain_id: u64,
}

impl CommitBoost {
    /// The service, with the proxy keys in the folder and (PostgreSQL) the database loaded.
    pub async fn start(
        modules: Modules,
        store: ProxyStore,
        signer: Arc<Signer>,
        metrics: Arc<Metrics>,
    ) -> Result<CommitBoost, String> {
        let network = signer.network();
        let chain_id = network.chain_id.ok_or_else(|| {
            format!(
                "the Commit-Boost API needs the network's chain id: network `{}` has no DEPOSIT_CHAIN_ID",
                network.name
            )
        })?;
        let domain = crate::consensus::commit_boost::domain(network.forks[0].version);
        let proxies = Arc::new(ProxyKeys::default());
        let store = Arc::new(store);
        for problem in store.load_files(&proxies) {
            tracing::warn!(%problem, "a Commit-Boost proxy keystore cannot be used");
        }
        if let Err(e) = store.follow(&proxies).await {
            tracing::warn!(error = %e, "the shared Commit-Boost proxy keys cannot be read yet");
        }
        tracing::info!(
            modules = ?modules.ids().collect::<Vec<_>>(),
            proxies = proxies.len(),
            chain_id,
            "Commit-Boost signer API enabled"
        );
        Ok(CommitBoost {
            modules,
            proxies,
            store,
            signer,
            metrics,
            domain,
            chain_id,
        })
    }

    pub fn module(&self, id: &str) -> Option<&Module> {
        self.modules.get(id)
    }

    pub fn modules(&self) -> impl Iterator<Item = &Module> {
        self.modules.iter()
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// Counts a request's outcome (and logs refusals) under its module.
    pub fn count(&self, module: Option<&str>, route: &'static str, outcome: &'static str) {
        self.metrics
            .commit_boost
            .get_or_create(&CommitBoostLabels {
                module: module.unwrap_or("unauthenticated").to_string(),
                route,
                outcome,
            })
            .inc();
    }

    /// Proxies other replicas made since this one last looked (PostgreSQL); best effort.
    async fn follow(&self) {
        if let Err(e) = self.store.follow(&self.proxies).await {
            tracing::debug!(error = %e, "shared Commit-Boost proxy keys not reread");
        }
    }

    fn usable_by(&self, proxy: &ProxyKey, module: &Module) -> bool {
        proxy.module.as_deref().is_none_or(|m| m == module.id) && module.may_use(&proxy.delegator)
    }

    /// The consensus keys `module` may use, with its proxies of each.
    pub async fn pubkeys(&self, module: &Module) -> Vec<KeyEntry> {
        self.follow().await;
        self.signer
            .listed_pubkeys()
            .into_iter()
            .filter(|k| module.may_use(k))
            .map(|consensus| {
                let mut entry = KeyEntry {
                    consensus,
                    proxy_bls: Vec::new(),
                    proxy_ecdsa: Vec::new(),
                };
                for p in self.proxies.of(&consensus) {
                    if !self.usable_by(&p, module) {
                        continue;
                    }
                    match p.id {
                        ProxyId::Bls(k) => entry.proxy_bls.push(k),
                        ProxyId::Ecdsa { address, compressed } => entry.proxy_ecdsa.push(match module.api {
                            Api::CommitBoost => format!("0x{}", hex::encode(address)),
                            Api::Web3Signer => format!("0x{}", hex::encode(compressed)),
                        }),
                    }
                }
                entry
            })
            .collect()
    }

    fn root(&self, module: &Module, req: &SignatureRequest) -> CommitBoostRoot {
        match req.dialect {
            Dialect::Legacy => CommitBoostRoot::legacy(req.object_root, self.domain),
            Dialect::Current { nonce } => {
                CommitBoostRoot::for_module(req.object_root, module.signing_id, nonce, self.chain_id, self.domain)
            }
        }
    }

    async fn proxy(&self, module: &Module, id: &[u8], scheme: Scheme) -> Result<Arc<ProxyKey>, CommitBoostError> {
        let found = match self.proxies.find(id) {
            Some(p) => Some(p),
            None => {
                self.follow().await;
                self.proxies.find(id)
            }
        };
        let shown = format!("0x{}", hex::encode(id));
        let proxy = found
            .filter(|p| p.id.scheme() == scheme)
            .ok_or_else(|| CommitBoostError::UnknownKey(format!("unknown proxy signer: {shown}")))?;
        // Another module's proxy is as unknown to this one as a proxy that does not exist.
        if !self.usable_by(&proxy, module) {
            return Err(CommitBoostError::UnknownKey(format!("unknown proxy signer: {shown}")));
        }
        if !self.signer.holds_enabled(&proxy.delegator) {
            return Err(CommitBoostError::UnknownKey(format!(
                "proxy {shown} belongs to {}, which this signer does not hold (or has disabled)",
                proxy.delegator
            )));
        }
        Ok(proxy)
    }

    /// Signs the module's root with the key the request names.
    pub async fn sign(&self, module: &Module, req: &SignatureRequest) -> Result<Signed, CommitBoostError> {
        let root = self.root(module, req);
        match &req.key {
            KeyRef::Consensus(pk) => {
                if !module.may_use(pk) {
                    return Err(CommitBoostError::Forbidden(format!(
                        "module {} may not use {pk}",
                        module.id
                    )));
                }
                let sig = self.signer.sign_commit_boost(pk, &root).await?;
                Ok(Signed {
                    by: SignedBy::Bls(*pk),
                    signature: sig.0.to_vec(),
                })
            }
            KeyRef::ProxyBls(pk) => {
                let proxy = self.proxy(module, &pk.0, Scheme::Bls).await?;
                let sig = proxy
                    .sign_bls(&root)
                    .ok_or_else(|| CommitBoostError::Internal("not a BLS key".into()))?;
                Ok(Signed {
                    by: SignedBy::Bls(*pk),
                    signature: sig.0.to_vec(),
                })
            }
            KeyRef::ProxyEcdsa(id) => {
                let proxy = self.proxy(module, id, Scheme::Ecdsa).await?;
                let ProxyId::Ecdsa { address, .. } = proxy.id else {
                    return Err(CommitBoostError::Internal("not a secp256k1 key".into()));
                };
                let signature = match req.dialect {
                    Dialect::Legacy => proxy.sign_ecdsa_legacy(&root).map(|s| s.to_vec()),
                    Dialect::Current { .. } => proxy.sign_ecdsa(&root).map(|s| s.to_vec()),
                }
                .ok_or_else(|| CommitBoostError::Internal("the secp256k1 key gave no signature".into()))?;
                Ok(Signed {
                    by: SignedBy::Ecdsa(address),
                    signature,
                })
            }
        }
    }

    /// Makes a proxy key for `module`, has the consensus key sign its delegation, and keeps
    /// it (file, and database on PostgreSQL) before handing the delegation out.
    pub async fn generate(&self, module: &Module, req: &ProxyRequest) -> Result<Delegation, CommitBoostError> {
        if !module.may_use(&req.delegator) {
            return Err(CommitBoostError::Forbidden(format!(
                "module {} may not use {}",
                module.id, req.delegator
            )));
        }
        let scheme = match req.scheme {
            ProxyScheme::Bls => Scheme::Bls,
            ProxyScheme::Ecdsa => Scheme::Ecdsa,
        };
        let key = ProxyKey::generate(scheme, req.delegator, Some(module.id.clone()));
        let proxy = match (key.id, module.api) {
            (ProxyId::Bls(p), _) => DelegatedProxy::Bls(p),
            (ProxyId::Ecdsa { address, .. }, Api::CommitBoost) => DelegatedProxy::Address(address),
            (ProxyId::Ecdsa { compressed, .. }, Api::Web3Signer) => DelegatedProxy::Compressed(compressed),
        };
        let root = CommitBoostRoot::delegation(&req.delegator, &proxy, self.domain);
        let signature = self.signer.sign_commit_boost(&req.delegator, &root).await?;
        if self.proxies.count_of(&req.delegator, &module.id) >= MAX_PROXIES {
            return Err(CommitBoostError::Forbidden(format!(
                "module {} has {MAX_PROXIES} proxy keys of {} already",
                module.id, req.delegator
            )));
        }
        let key = self.store.keep(key).await.map_err(|e| {
            tracing::error!(module = %module.id, error = %e, "a Commit-Boost proxy key could not be kept");
            CommitBoostError::Internal("the proxy key could not be kept (the signer's log says why)".into())
        })?;
        tracing::info!(module = %module.id, delegator = %req.delegator, proxy = %key.id.key_hex(), "Commit-Boost proxy key made");
        self.proxies.insert(key);
        Ok(Delegation {
            delegator: req.delegator,
            proxy,
            signature,
        })
    }
}
