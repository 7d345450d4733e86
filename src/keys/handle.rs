//! The handle signing goes through. A key held here signs at once; a key held elsewhere (a
//! threshold group's share nodes) takes a round trip, so a signature is a future.

use futures::future::BoxFuture;

use super::secret::SecretKey;
use crate::types::{PublicKey, Signature, SigningRoot};

/// Why a key handle gave no signature (a remote group may fail; a local key never does).
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    /// The key's holders refused it on their own slashing protection.
    #[error("{0}")]
    Refused(String),
    /// Too few of the key's holders could be reached.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Failed(String),
}

/// The request a signature is for, as the client sent it: what remote holders need to check
/// it themselves.
#[derive(Clone, Copy, Debug)]
pub struct SignRequest<'a> {
    pub identifier: &'a str,
    pub body: &'a [u8],
}

/// A validator key that can sign: the signing path knows keys only through this.
pub trait SigningKey: Send + Sync + std::fmt::Debug {
    fn public_key(&self) -> PublicKey;

    /// Signs `root` for `request`; called only after slashing protection has committed the
    /// message (by this signer, or by the holders when `protected_by_holders`).
    fn sign<'a>(
        &'a self,
        root: &'a SigningRoot,
        request: SignRequest<'a>,
    ) -> BoxFuture<'a, Result<Signature, KeyError>>;

    /// A share of a threshold key: its index. Its signatures are partial ones, given only to a
    /// coordinator.
    fn share_index(&self) -> Option<u32> {
        None
    }

    /// The holders of the key check every message against their own slashing protection
    /// (a threshold group's share nodes): this signer records nothing for it.
    fn protected_by_holders(&self) -> bool {
        false
    }
}

impl SigningKey for SecretKey {
    fn public_key(&self) -> PublicKey {
        SecretKey::public_key(self)
    }

    fn sign<'a>(&'a self, root: &'a SigningRoot, _: SignRequest<'a>) -> BoxFuture<'a, Result<Signature, KeyError>> {
        let signature = SecretKey::sign(self, root);
        Box::pin(std::future::ready(Ok(signature)))
    }
}
