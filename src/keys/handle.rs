//! The handle signing goes through. A key held here signs at once; a key held elsewhere (a
//! remote or threshold signer) may take a round trip, so a signature is a future.

use futures::future::BoxFuture;

use super::secret::SecretKey;
use crate::types::{PublicKey, Signature, SigningRoot};

/// Why a key handle gave no signature (a remote signer may fail; a local key never does).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

/// A validator key that can sign: the signing path knows keys only through this.
pub trait SigningKey: Send + Sync + std::fmt::Debug {
    fn public_key(&self) -> PublicKey;
    /// Signs `root`; called only after slashing protection has committed the message.
    fn sign<'a>(&'a self, root: &'a SigningRoot) -> BoxFuture<'a, Result<Signature, KeyError>>;
}

impl SigningKey for SecretKey {
    fn public_key(&self) -> PublicKey {
        SecretKey::public_key(self)
    }

    fn sign<'a>(&'a self, root: &'a SigningRoot) -> BoxFuture<'a, Result<Signature, KeyError>> {
        let signature = SecretKey::sign(self, root);
        Box::pin(std::future::ready(Ok(signature)))
    }
}
