//! A threshold group's key as a coordinator holds it: no secret at all. A signing goes to every
//! share node at once (the client's request as it is, over mutual TLS); each node checks it
//! against its own slashing protection and answers a partial signature. The first `t` partials
//! that verify against their shares' public keys are combined, and the result is checked
//! against the group key before it leaves.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::keys::handle::{KeyError, SignRequest, SigningKey};
use crate::keys::secret::verify;
use crate::keys::threshold::{VerificationVector, combine_signatures};
use crate::types::{PublicKey, Signature, SigningRoot};

/// What share nodes answered that the coordinator could not use, by node and reason
/// (`invalid_partial`, `refused`, `unavailable`): one counter for every group of the process,
/// which `/metrics` exports.
pub static NODE_ERRORS: std::sync::LazyLock<Family<NodeErrorLabels, Counter>> =
    std::sync::LazyLock::new(Family::default);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeErrorLabels {
    pub node: String,
    pub reason: &'static str,
}

const NODE_ERROR_REASONS: [&str; 3] = ["invalid_partial", "refused", "unavailable"];

fn node_error(node: &str, reason: &'static str) {
    NODE_ERRORS
        .get_or_create(&NodeErrorLabels {
            node: node.to_string(),
            reason,
        })
        .inc();
}

/// The route share nodes answer partial signatures on.
pub const PARTIAL_ROUTE: &str = "/internal/v1/threshold/sign";

/// A `type: threshold` key definition.
pub struct GroupDefinition {
    /// `group.json` as `palisade keys split` writes it.
    pub group_file: PathBuf,
    pub nodes: Vec<String>,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub ca: PathBuf,
    pub timeout: Duration,
}

pub struct ThresholdKey {
    vector: VerificationVector,
    threshold: usize,
    /// Each share's public key, by index - 1.
    shares: Vec<PublicKey>,
    nodes: Vec<String>,
    client: reqwest::Client,
}

impl std::fmt::Debug for ThresholdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ThresholdKey({}, {} of {})",
            self.vector.group_public_key(),
            self.threshold,
            self.nodes.len()
        )
    }
}

#[derive(serde::Deserialize)]
struct GroupFile {
    group_public_key: PublicKey,
    threshold: usize,
    shares: usize,
    verification_vector: Vec<PublicKey>,
}

#[derive(serde::Deserialize)]
struct Partial {
    index: u32,
    signature: String,
}

impl ThresholdKey {
    pub fn open(d: &GroupDefinition) -> Result<ThresholdKey, String> {
        let text =
            std::fs::read_to_string(&d.group_file).map_err(|e| format!("groupFile {}: {e}", d.group_file.display()))?;
        let g: GroupFile =
            serde_json::from_str(&text).map_err(|e| format!("groupFile {}: {e}", d.group_file.display()))?;
        let vector = VerificationVector(g.verification_vector);
        if vector.0.first() != Some(&g.group_public_key) || vector.threshold() != g.threshold || g.threshold > g.shares
        {
            return Err(format!(
                "groupFile {}: the verification vector does not match the group key and threshold",
                d.group_file.display()
            ));
        }
        let shares = (1..=g.shares as u32)
            .map(|i| vector.share_public_key(i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("groupFile {}: {e}", d.group_file.display()))?;
        if d.nodes.len() < g.threshold {
            return Err(format!(
                "{} nodes cannot give {} partial signatures",
                d.nodes.len(),
                g.threshold
            ));
        }
        let read = |p: &PathBuf, what: &str| std::fs::read(p).map_err(|e| format!("{what} {}: {e}", p.display()));
        let mut identity = read(&d.client_cert, "tlsClientCertFile")?;
        identity.extend(read(&d.client_key, "tlsClientKeyFile")?);
        let identity =
            reqwest::Identity::from_pem(&identity).map_err(|e| format!("tlsClientCertFile/tlsClientKeyFile: {e}"))?;
        let ca = reqwest::Certificate::from_pem(&read(&d.ca, "tlsCaFile")?).map_err(|e| format!("tlsCaFile: {e}"))?;
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .identity(identity)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(d.timeout)
            .connect_timeout(d.timeout)
            .build()
            .map_err(|e| {
                let mut why = format!("TLS client: {e}");
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    why.push_str(&format!(": {s}"));
                    source = s.source();
                }
                why
            })?;
        // Every node's series from zero, so that the first error is an increase an alert sees.
        for node in &d.nodes {
            for reason in NODE_ERROR_REASONS {
                let _ = NODE_ERRORS.get_or_create(&NodeErrorLabels {
                    node: node.clone(),
                    reason,
                });
            }
        }
        Ok(ThresholdKey {
            threshold: g.threshold,
            vector,
            shares,
            nodes: d.nodes.clone(),
            client,
        })
    }

    async fn ask(&self, node: &str, request: SignRequest<'_>) -> Result<Partial, (bool, String)> {
        let url = format!("{}{PARTIAL_ROUTE}/{}", node.trim_end_matches('/'), request.identifier);
        let resp = self
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(request.body.to_vec())
            .send()
            .await
            .map_err(|e| (false, format!("{node}: {e}")))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        match status {
            200 => {
                serde_json::from_str(&text).map_err(|e| (false, format!("{node}: an answer that is no partial ({e})")))
            }
            412 => Err((true, format!("{node}: {}", super::http::short(text.as_bytes())))),
            s => Err((false, format!("{node}: {s} {}", super::http::short(text.as_bytes())))),
        }
    }

    /// Optimistic: the first `t` well-formed partials are combined and the result checked once
    /// against the group key; only when that fails is each partial checked, the bad ones
    /// dropped (and their nodes named), and more awaited.
    async fn combine(&self, root: &SigningRoot, request: SignRequest<'_>) -> Result<Signature, KeyError> {
        let mut asked: FuturesUnordered<_> = self
            .nodes
            .iter()
            .map(|n| async move { (n.as_str(), self.ask(n, request).await) })
            .collect();
        let group = self.vector.group_public_key();
        // (share index, partial, node) of the well-formed answers.
        let mut partials: Vec<(u32, Signature, &str)> = Vec::new();
        let (mut refused, mut failed) = (Vec::new(), Vec::new());
        let invalid = |node: &str, index: u32, failed: &mut Vec<String>| {
            tracing::warn!(%node, index, %group,
                "a share node answered a partial signature that does not verify for its share: ignored");
            node_error(node, "invalid_partial");
            failed.push(format!("{node}: an invalid partial signature"));
        };
        while let Some((node, answer)) = asked.next().await {
            match answer {
                Ok(p) => {
                    let known = p.index.checked_sub(1).is_some_and(|i| (i as usize) < self.shares.len());
                    match crate::types::parse_hex_array::<96>(&p.signature).map(Signature) {
                        Ok(sig) if known && !partials.iter().any(|(i, _, _)| *i == p.index) => {
                            partials.push((p.index, sig, node))
                        }
                        _ => invalid(node, p.index, &mut failed),
                    }
                }
                Err((true, why)) => {
                    node_error(node, "refused");
                    refused.push(why)
                }
                Err((false, why)) => {
                    node_error(node, "unavailable");
                    failed.push(why)
                }
            }
            if partials.len() < self.threshold {
                continue;
            }
            let used: Vec<(u32, Signature)> = partials.iter().map(|(i, s, _)| (*i, *s)).collect();
            if let Ok(combined) = combine_signatures(&used, self.threshold)
                && verify(&group, root, &combined)
            {
                return Ok(combined);
            }
            // Some partial is bad: find it, drop it, and wait for more.
            partials.retain(|(i, s, node)| {
                let good = verify(&self.shares[*i as usize - 1], root, s);
                if !good {
                    invalid(node, *i, &mut failed);
                }
                good
            });
            if partials.len() >= self.threshold {
                return Err(KeyError::Failed(
                    "valid partial signatures combine to no valid group signature".into(),
                ));
            }
        }
        let answered = partials.len() + refused.len();
        let why = format!(
            "{} of {} needed partial signatures (refused: [{}]; failed: [{}])",
            partials.len(),
            self.threshold,
            refused.join("; "),
            failed.join("; ")
        );
        // Nodes that answer are enough, but some refused what they had signed otherwise.
        Err(if !refused.is_empty() && answered >= self.threshold {
            KeyError::Refused(why)
        } else {
            KeyError::Unavailable(why)
        })
    }
}

impl SigningKey for ThresholdKey {
    fn public_key(&self) -> PublicKey {
        self.vector.group_public_key()
    }

    fn sign<'a>(
        &'a self,
        root: &'a SigningRoot,
        request: SignRequest<'a>,
    ) -> BoxFuture<'a, Result<Signature, KeyError>> {
        Box::pin(self.combine(root, request))
    }

    fn protected_by_holders(&self) -> bool {
        true
    }
}
