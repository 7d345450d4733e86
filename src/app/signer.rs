//! The signing path, in one direction: identifier and body -> `SigningJob` (root computed,
//! nothing secret touched) -> key lookup, signing policy, disabled keys, clock window, chain
//! pin -> slashing protection (committed) -> signature -> the outcome counted and logged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::disabled::DisabledKeys;
use crate::app::metrics::Metrics;
use crate::app::metrics::{RefusalLabels, TypeLabels};
use crate::keys::handle::{KeyError, SignRequest};
use crate::keys::{KeyRegistry, Lookup};
use crate::network::Network;
use crate::network::clock::ClockWindow;
use crate::protection::{Protection, ProtectionError, Recorded, Refusal};
use crate::ratelimit::RateLimit;
use crate::signing::policy::{Scope, TypeSet};
use crate::signing::{ParseError, SigningJob, parse_signing_request};
use crate::types::{PublicKey, Signature, SlashableMessage};

/// Why a signing request did not produce a signature. `http::error` maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{0}")]
    BadRequest(#[from] ParseError),
    #[error("no key loaded for {0}")]
    UnknownKey(PublicKey),
    #[error("key {0} failed to load: {1}")]
    KeyFailed(PublicKey, Arc<str>),
    #[error(
        "key {0} is not loaded yet (its keystore is being decrypted, or its key source is still being read); try again shortly"
    )]
    KeyLoading(PublicKey),
    #[error("refused by slashing protection: {0}")]
    Refused(Refusal),
    #[error("signing type {sign_type} is not allowed {scope}")]
    NotPermitted {
        sign_type: crate::signing::SignType,
        scope: crate::signing::policy::Scope,
    },
    /// Slashing protection could not answer yes or no (unavailable, another chain, ...).
    #[error("{0}")]
    Protection(ProtectionError),
    /// This node holds only a share of the key: its signatures are partial, for coordinators.
    #[error("this signer holds a share of {0}, whose signatures only a threshold coordinator can use")]
    ShareOnly(PublicKey),
    /// A threshold key's share nodes refused the message on their own slashing protection.
    #[error("refused by the key's share nodes: {0}")]
    HoldersRefused(String),
    /// Too few of a threshold key's share nodes answered.
    #[error("{0}")]
    HoldersUnavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl SignError {
    /// The `outcome` label of the requests metric.
    pub fn outcome(&self) -> &'static str {
        match self {
            SignError::BadRequest(_) => "bad_request",
            SignError::UnknownKey(_) | SignError::KeyFailed(..) => "unknown_key",
            SignError::KeyLoading(_) => "key_loading",
            SignError::Refused(_) => "refused",
            SignError::NotPermitted { .. } | SignError::ShareOnly(_) => "not_permitted",
            SignError::HoldersRefused(_) => "refused",
            SignError::HoldersUnavailable(_) => "unavailable",
            SignError::Protection(p) => match p {
                ProtectionError::Unavailable(_) => "unavailable",
                ProtectionError::WrongChain { .. } | ProtectionError::ZeroChain => "bad_request",
                ProtectionError::Refused(_) => "refused",
                _ => "error",
            },
            SignError::Internal(_) => "error",
        }
    }

    /// Whether this replica failed (and an operator should hear of it), not the request.
    fn is_failure(&self) -> bool {
        matches!(self, SignError::Internal(_))
            || matches!(self, SignError::Protection(p) if !matches!(p, ProtectionError::WrongChain { .. } | ProtectionError::ZeroChain))
    }
}

/// The message of a job, for a log line: slot or epochs.
fn describe(job: &SigningJob) -> String {
    match job.slashable {
        Some(SlashableMessage::Block { slot, .. }) => format!("slot {slot}"),
        Some(SlashableMessage::Attestation { source, target, .. }) => format!("source {source} target {target}"),
        None => job.slot.map_or(String::new(), |s| format!("slot {s}")),
    }
}

impl From<ProtectionError> for SignError {
    fn from(e: ProtectionError) -> Self {
        match e {
            ProtectionError::Refused(r) => SignError::Refused(r),
            e => SignError::Protection(e),
        }
    }
}

/// What a signer is made of; `commands::serve` builds the shared pieces and hands them over.
pub struct SignerParts {
    pub network: Network,
    pub keys: Arc<KeyRegistry>,
    pub protection: Arc<Protection>,
    pub metrics: Arc<Metrics>,
    pub disabled: Arc<DisabledKeys>,
    /// How long a request for a key that is still being decrypted waits for it.
    pub key_patience: Duration,
    /// Slots further ahead of the wall clock are refused; `None` when the genesis time is
    /// unknown or the window is turned off.
    pub clock: Option<ClockWindow>,
    /// The signing types this signer signs at all; a key's definition may narrow it.
    pub signing_types: TypeSet,
}

/// The signing path. Its parts are its own: other modules get narrow handles (`Health`,
/// `KeyManager`, `SlashingAdmin`) built from the same shared pieces.
pub struct Signer {
    network: Network,
    keys: Arc<KeyRegistry>,
    protection: Arc<Protection>,
    metrics: Arc<Metrics>,
    disabled: Arc<DisabledKeys>,
    key_patience: Duration,
    clock: Option<ClockWindow>,
    signing_types: TypeSet,
}

impl Signer {
    pub fn new(p: SignerParts) -> Self {
        Signer {
            network: p.network,
            keys: p.keys,
            protection: p.protection,
            metrics: p.metrics,
            disabled: p.disabled,
            key_patience: p.key_patience,
            clock: p.clock,
            signing_types: p.signing_types,
        }
    }

    /// Whether the signing policy lets this key sign this type; if not, which policy refused.
    fn permits(&self, pubkey: &PublicKey, t: crate::signing::SignType) -> Result<(), Scope> {
        if !self.signing_types.contains(t) {
            return Err(Scope::Signer);
        }
        match self.keys.policy(pubkey) {
            Some((types, by)) if !types.contains(t) => Err(Scope::Key(by)),
            _ => Ok(()),
        }
    }

    /// Keys that can sign (or will, once decrypted), without the disabled ones.
    pub fn listed_pubkeys(&self) -> Vec<PublicKey> {
        self.disabled.filter(self.keys.known_pubkeys())
    }

    /// Signs a Commit-Boost root with the consensus key `pubkey`. No slashing protection is
    /// involved: a `CommitBoostRoot` carries Commit-Boost's own domain, which no consensus
    /// message has. A key disabled on some replica refuses this too.
    pub async fn sign_commit_boost(
        &self,
        pubkey: &PublicKey,
        root: &crate::consensus::commit_boost::CommitBoostRoot,
    ) -> Result<Signature, SignError> {
        let key = match self.keys.wait_for(pubkey, self.key_patience).await {
            Lookup::Ready(k) => k,
            Lookup::Loading => return Err(SignError::KeyLoading(*pubkey)),
            Lookup::Failed(reason) => return Err(SignError::KeyFailed(*pubkey, reason)),
            Lookup::Unknown => return Err(SignError::UnknownKey(*pubkey)),
        };
        if self.disabled.contains(pubkey) {
            return Err(SignError::Refused(Refusal::Disabled));
        }
        // Held in shares: no node signs what it cannot check against its own protection.
        if key.share_index().is_some() || key.protected_by_holders() {
            return Err(SignError::ShareOnly(*pubkey));
        }
        let request = SignRequest {
            identifier: "commit-boost",
            body: &[],
        };
        key.sign(root.signing_root(), request)
            .await
            .map_err(|e| SignError::Internal(format!("the key gave no signature: {e}")))
    }

    /// Whether `pubkey` is one of this signer's keys and not disabled.
    pub fn holds_enabled(&self, pubkey: &PublicKey) -> bool {
        self.keys.holds(pubkey) && !self.disabled.contains(pubkey)
    }

    /// The network this signer serves.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Signs the request for the key `identifier` (the URL's) with `body`, or says why not.
    /// `client` says who asked (recorded with blocks and attestations).
    pub async fn sign(&self, identifier: &str, body: &[u8], client: &str) -> Result<Signature, SignError> {
        self.sign_as(SignRequest { identifier, body }, client, false)
            .await
            .map(|(signature, _)| signature)
    }

    /// For a threshold coordinator: the partial signature of this node's share of the key
    /// `identifier`, after this node's own slashing protection, and the share's index.
    pub async fn sign_partial(
        &self,
        identifier: &str,
        body: &[u8],
        client: &str,
    ) -> Result<(Signature, u32), SignError> {
        self.sign_as(SignRequest { identifier, body }, client, true)
            .await
            .map(|(signature, index)| (signature, index.expect("a share signed")))
    }

    async fn sign_as(
        &self,
        request: SignRequest<'_>,
        client: &str,
        partial: bool,
    ) -> Result<(Signature, Option<u32>), SignError> {
        let start = Instant::now();
        let (job, result) = match parse_signing_request(&self.network, request.identifier, request.body) {
            Ok(job) => {
                let result = self.sign_job(&job, request, client, partial).await;
                (Some(job), result)
            }
            Err(e) => (None, Err(e.into())),
        };
        self.record_outcome(request.identifier, job.as_ref(), &result, start, client);
        result.map(|(signature, _, index)| (signature, index))
    }

    /// The one place a request's outcome is counted and logged.
    fn record_outcome(
        &self,
        identifier: &str,
        job: Option<&SigningJob>,
        result: &Result<(Signature, Option<Recorded>, Option<u32>), SignError>,
        start: Instant,
        client: &str,
    ) {
        let type_label = job.map_or("UNKNOWN", |j| j.sign_type.as_str());
        // The URL's key as sent when the request did not parse (shown escaped and cut short).
        let pubkey = job.map_or_else(
            || identifier.chars().take(98).flat_map(char::escape_default).collect(),
            |j| j.pubkey.to_string(),
        );
        // A repeat is the same message signed again (another client replica, a retry).
        let outcome = match result {
            Ok((_, Some(Recorded::Repeat), _)) => "repeat",
            Ok(_) => "signed",
            Err(e) => e.outcome(),
        };
        tracing::debug!(
            %pubkey,
            r#type = type_label,
            message = %job.map_or(String::new(), describe),
            outcome,
            client,
            ms = start.elapsed().as_secs_f64() * 1e3,
            "signing"
        );
        self.metrics.request(type_label, outcome);
        match result {
            Ok(_) => {
                self.metrics
                    .signing_seconds
                    .get_or_create(&TypeLabels { r#type: type_label })
                    .observe(start.elapsed().as_secs_f64());
            }
            Err(SignError::Refused(r)) => {
                self.metrics
                    .refusals
                    .get_or_create(&RefusalLabels {
                        r#type: type_label,
                        reason: r.code(),
                        risk: Refusal::risk(r.code()),
                    })
                    .inc();
                // One line per refusal, but any client can send refusable requests at will:
                // at most one line a second per reason, saying how many were held back (the
                // metric counts every one).
                static BY_REASON: [RateLimit; Refusal::CODES.len()] =
                    [const { RateLimit::new() }; Refusal::CODES.len()];
                let limit = Refusal::CODES
                    .iter()
                    .position(|c| *c == r.code())
                    .map(|i| &BY_REASON[i]);
                if let Some(held) = limit.map_or(Some(0), RateLimit::allow) {
                    tracing::warn!(%pubkey, r#type = type_label, client = %client, reason = %r,
                        similar_since_last = held, "slashing protection refused to sign");
                }
            }
            Err(e) if e.is_failure() => {
                static FAILURES: RateLimit = RateLimit::new();
                if let Some(held) = FAILURES.allow() {
                    tracing::error!(%pubkey, r#type = type_label, error = %e, similar_since_last = held, "signing failed");
                }
            }
            // Malformed requests, unknown or loading keys, types a key may not sign: the
            // client's to fix, so said at info, at most once a second per outcome.
            Err(e) => {
                static OTHERS: [RateLimit; crate::app::metrics::OUTCOMES.len()] =
                    [const { RateLimit::new() }; crate::app::metrics::OUTCOMES.len()];
                let limit = crate::app::metrics::OUTCOMES
                    .iter()
                    .position(|o| *o == outcome)
                    .map(|i| &OTHERS[i]);
                if let Some(held) = limit.map_or(Some(0), RateLimit::allow) {
                    tracing::info!(%pubkey, r#type = type_label, client = %client, outcome, reason = %e,
                        similar_since_last = held, "signing refused");
                }
            }
        }
    }

    /// The signature for `job`, and for blocks and attestations whether it was new or a
    /// repeat; or why not.
    async fn sign_job(
        &self,
        job: &SigningJob,
        request: SignRequest<'_>,
        client: &str,
        partial: bool,
    ) -> Result<(Signature, Option<Recorded>, Option<u32>), SignError> {
        let pubkey = job.pubkey;
        // The key is looked up before anything is pinned or recorded: a request for a key
        // this replica cannot sign with changes nothing.
        let key = match self.keys.wait_for(&pubkey, self.key_patience).await {
            Lookup::Ready(k) => k,
            Lookup::Loading => return Err(SignError::KeyLoading(pubkey)),
            Lookup::Failed(reason) => return Err(SignError::KeyFailed(pubkey, reason)),
            Lookup::Unknown => return Err(SignError::UnknownKey(pubkey)),
        };
        // A share signs only partially, and only for a coordinator; a whole key never partially.
        let share = key.share_index();
        match (share, partial) {
            (Some(_), false) => return Err(SignError::ShareOnly(pubkey)),
            (None, true) => return Err(SignError::UnknownKey(pubkey)),
            _ => {}
        }

        self.permits(&pubkey, job.sign_type)
            .map_err(|scope| SignError::NotPermitted {
                sign_type: job.sign_type,
                scope,
            })?;

        // Deleted on some replica: refused for every type, not only the protected ones.
        if self.disabled.contains(&pubkey) {
            return Err(SignError::Refused(Refusal::Disabled));
        }

        if let (Some(clock), Some(slot)) = (&self.clock, job.slot) {
            clock
                .check(slot, job.sign_type.epochs_ahead(), std::time::SystemTime::now())
                .map_err(|ahead| {
                    SignError::Refused(Refusal::AheadOfClock {
                        slot: ahead.slot,
                        limit: ahead.limit,
                    })
                })?;
        }

        if let Some(given) = job.chain {
            self.protection.admit(given).await?;
        }

        let mut recorded = None;
        if let Some(message) = &job.slashable
            && !key.protected_by_holders()
        {
            recorded = Some(self.protection.check(&pubkey, message, client).await?);
        }
        // Only now, with the record committed (here, or by every share node that signs), does
        // the signature exist.
        let signature = key.sign(&job.signing_root, request).await.map_err(|e| match e {
            KeyError::Refused(m) => SignError::HoldersRefused(m),
            KeyError::Unavailable(m) => SignError::HoldersUnavailable(m),
            KeyError::Failed(m) => SignError::Internal(format!("the key gave no signature: {m}")),
        })?;
        Ok((signature, recorded, share))
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
            SignError::Protection(ProtectionError::Unavailable(String::new())),
            SignError::Protection(ProtectionError::ZeroChain),
            SignError::Internal(String::new()),
        ];
        for e in errors {
            assert!(crate::app::metrics::OUTCOMES.contains(&e.outcome()), "{}", e.outcome());
        }
    }
}
