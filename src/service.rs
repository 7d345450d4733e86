//! The signing path, in one direction: body -> `SigningJob` (root computed, nothing secret
//! touched) -> chain pin -> key -> slashing protection (committed) -> signature.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::keys::{KeyRegistry, Lookup};
use crate::metrics::Metrics;
use crate::metrics::{RefusalLabels, TypeLabels};
use crate::network::Network;
use crate::network::clock::ClockWindow;
use crate::protection::{ChainPin, Proposal, ProtectionError, Recorded, Refusal, SlashingDatabase};
use crate::signing::{ParseError, SignType, SlashingCheck, parse_signing_request};
use crate::types::{PublicKey, Root, Signature};

/// Who sent a request: recorded with every block and attestation signed for it.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub remote: Option<SocketAddr>,
    /// Subject of the TLS client certificate, when client authentication is on.
    pub certificate: Option<String>,
}

impl fmt::Display for ClientInfo {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match (&self.certificate, &self.remote) {
            (Some(c), Some(r)) => write!(f, "{c} ({r})"),
            (Some(c), None) => f.write_str(c),
            (None, Some(r)) => write!(f, "{r}"),
            (None, None) => f.write_str("unknown"),
        }
    }
}

/// Why a signing request did not produce a signature. `http::error` maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{0}")]
    BadRequest(#[from] ParseError),
    #[error("request is for genesis validators root {given}, but this signer is pinned to {pinned}")]
    WrongChain { pinned: Root, given: Root },
    #[error("{}", ProtectionError::ZeroChain)]
    ZeroChain,
    #[error("no key loaded for {0}")]
    UnknownKey(PublicKey),
    #[error("key {0} failed to load: {1}")]
    KeyFailed(PublicKey, Arc<str>),
    #[error("key {0} is still being decrypted; try again shortly")]
    KeyLoading(PublicKey),
    #[error("refused by slashing protection: {0}")]
    Refused(Refusal),
    #[error("{0}")]
    ProtectionUnavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl SignError {
    /// The `outcome` label of the requests metric.
    pub fn outcome(&self) -> &'static str {
        match self {
            SignError::BadRequest(_) | SignError::WrongChain { .. } | SignError::ZeroChain => "bad_request",
            SignError::UnknownKey(_) | SignError::KeyFailed(..) => "unknown_key",
            SignError::KeyLoading(_) => "key_loading",
            SignError::Refused(_) => "refused",
            SignError::ProtectionUnavailable(_) => "unavailable",
            SignError::Internal(_) => "error",
        }
    }
}

impl From<ProtectionError> for SignError {
    fn from(e: ProtectionError) -> Self {
        match e {
            ProtectionError::Refused(r) => SignError::Refused(r),
            ProtectionError::Unavailable(_) => SignError::ProtectionUnavailable(e.to_string()),
            ProtectionError::WrongChain { pinned, given } => SignError::WrongChain { pinned, given },
            ProtectionError::ZeroChain => SignError::ZeroChain,
            ProtectionError::InvalidInterchange(m) | ProtectionError::Internal(m) => {
                SignError::Internal(format!("slashing protection: {m}"))
            }
        }
    }
}

#[cfg(test)]
mod outcome_tests {
    use super::*;
    use crate::types::PublicKey;

    #[test]
    fn every_outcome_is_pre_registered() {
        let pk = PublicKey([0; 48]);
        let errors = [
            SignError::BadRequest(ParseError::Malformed(String::new())),
            SignError::UnknownKey(pk),
            SignError::KeyLoading(pk),
            SignError::Refused(Refusal::Disabled),
            SignError::ProtectionUnavailable(String::new()),
            SignError::Internal(String::new()),
        ];
        for e in errors {
            assert!(crate::metrics::OUTCOMES.contains(&e.outcome()), "{}", e.outcome());
        }
    }
}

/// The database monitor's last verdict, for cheap readiness probes.
#[derive(Default)]
pub struct DbHealth {
    up: std::sync::atomic::AtomicBool,
    checked_at_ms: std::sync::atomic::AtomicU64,
}

impl DbHealth {
    pub fn set(&self, up: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.up.store(up, Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.checked_at_ms.store(now, Relaxed);
    }

    /// Up, and checked within `fresh`.
    pub fn ready(&self, fresh: Duration) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.up.load(Relaxed) && now.saturating_sub(self.checked_at_ms.load(Relaxed)) <= fresh.as_millis() as u64
    }
}

pub struct Signer {
    pub network: Network,
    pub keys: Arc<KeyRegistry>,
    pub db: Arc<SlashingDatabase>,
    pub chain: ChainPin,
    pub metrics: Arc<Metrics>,
    /// How long a request for a key that is still being decrypted waits for it.
    pub key_patience: Duration,
    pub db_health: DbHealth,
    /// Keys disabled in the database (deleted through the Key Manager API on any replica),
    /// refreshed with every database probe: refused for every type, and not listed.
    pub disabled: std::sync::RwLock<std::collections::HashSet<PublicKey>>,
    /// Slots further ahead of the wall clock are refused; `None` when the genesis time is
    /// unknown or the window is turned off.
    pub clock: Option<ClockWindow>,
}

impl Signer {
    pub fn is_disabled(&self, pk: &PublicKey) -> bool {
        self.disabled.read().expect("disabled keys lock").contains(pk)
    }

    pub fn remember_disabled(&self, pks: &[PublicKey]) {
        self.disabled.write().expect("disabled keys lock").extend(pks);
    }

    pub fn forget_disabled(&self, pks: &[PublicKey]) {
        let mut d = self.disabled.write().expect("disabled keys lock");
        for pk in pks {
            d.remove(pk);
        }
    }

    /// Replaces the cached set with the database's.
    pub async fn refresh_disabled(&self) -> Result<(), ProtectionError> {
        let keys = self.db.disabled_keys().await?;
        *self.disabled.write().expect("disabled keys lock") = keys.into_iter().collect();
        Ok(())
    }

    /// Keys that can sign (or will, once decrypted), without the disabled ones.
    pub fn listed_pubkeys(&self) -> Vec<PublicKey> {
        let disabled = self.disabled.read().expect("disabled keys lock");
        let mut keys = self.keys.known_pubkeys();
        keys.retain(|k| !disabled.contains(k));
        keys
    }

    /// Signs the request in `body` for `pubkey`, or says why not. Counts the outcome.
    pub async fn sign(&self, pubkey: PublicKey, body: &[u8], client: &ClientInfo) -> Result<Signature, SignError> {
        let start = Instant::now();
        let (sign_type, result) = self.sign_inner(pubkey, body, client).await;
        let type_label = sign_type.map_or("UNKNOWN", SignType::as_str);
        match &result {
            Ok((_, recorded)) => {
                // A repeat is the same message signed again (another client replica, a retry).
                let outcome = if *recorded == Some(Recorded::Repeat) {
                    "repeat"
                } else {
                    "signed"
                };
                self.metrics.request(type_label, outcome);
                self.metrics
                    .signing_seconds
                    .get_or_create(&TypeLabels { r#type: type_label })
                    .observe(start.elapsed().as_secs_f64());
            }
            Err(e) => {
                self.metrics.request(type_label, e.outcome());
                if let SignError::Refused(r) = e {
                    self.metrics
                        .refusals
                        .get_or_create(&RefusalLabels {
                            r#type: type_label,
                            reason: r.code(),
                        })
                        .inc();
                    tracing::warn!(%pubkey, r#type = type_label, client = %client, reason = %r, "slashing protection refused to sign");
                } else if matches!(e, SignError::ProtectionUnavailable(_) | SignError::Internal(_)) {
                    tracing::error!(%pubkey, r#type = type_label, error = %e, "signing failed");
                }
            }
        }
        result.map(|(signature, _)| signature)
    }

    /// The signature, and for blocks and attestations whether it was new or a repeat.
    async fn sign_inner(
        &self,
        pubkey: PublicKey,
        body: &[u8],
        client: &ClientInfo,
    ) -> (Option<SignType>, Result<(Signature, Option<Recorded>), SignError>) {
        let job = match parse_signing_request(&self.network, pubkey, body) {
            Ok(job) => job,
            Err(e) => return (None, Err(e.into())),
        };
        let t = Some(job.sign_type);

        // The key is looked up before anything is pinned or recorded: a request for a key
        // this replica cannot sign with changes nothing.
        let key = match self.keys.wait_for(&pubkey, self.key_patience).await {
            Lookup::Ready(k) => k,
            Lookup::Loading => return (t, Err(SignError::KeyLoading(pubkey))),
            Lookup::Failed(reason) => return (t, Err(SignError::KeyFailed(pubkey, reason))),
            Lookup::Unknown => return (t, Err(SignError::UnknownKey(pubkey))),
        };

        // Deleted on some replica: refused for every type, not only the protected ones.
        if self.is_disabled(&pubkey) {
            return (t, Err(SignError::Refused(Refusal::Disabled)));
        }

        if let (Some(clock), Some(slot)) = (&self.clock, job.slot)
            && let Err(ahead) = clock.check(slot, job.sign_type.epochs_ahead(), std::time::SystemTime::now())
        {
            return (
                t,
                Err(SignError::Refused(Refusal::AheadOfClock {
                    slot: ahead.slot,
                    limit: ahead.limit,
                })),
            );
        }

        if let Some(given) = job.chain
            && let Err(e) = self.chain.admit(&self.db, given).await
        {
            return (t, Err(e.into()));
        }

        let proposal = match job.check {
            SlashingCheck::None => None,
            SlashingCheck::Block { slot } => Some(Proposal::Block {
                slot,
                root: job.signing_root,
            }),
            SlashingCheck::Attestation { source, target } => Some(Proposal::Attestation {
                source,
                target,
                root: job.signing_root,
            }),
        };
        let mut recorded = None;
        if let Some(p) = proposal {
            let started = Instant::now();
            let r = self.db.check_and_record(&pubkey, &p, &client.to_string()).await;
            self.metrics.protection_seconds.observe(started.elapsed().as_secs_f64());
            match r {
                Ok(rec) => recorded = Some(rec),
                Err(e) => return (t, Err(e.into())),
            }
        }
        // Only now, with the record committed, does the signature exist.
        (t, Ok((key.sign(&job.signing_root), recorded)))
    }
}
