//! An independent checker for end-to-end and fault-injection runs.
//!
//! Input: every signing response a client received (JSON lines, as the e2e load balancer and
//! the fault harness write them) and Palisade's EIP-3076 export afterwards. It asserts:
//! - every 200 carries a valid BLS signature over the signing root its request implies;
//! - no two signed blocks or attestations of one key form a slashable pair (computed here
//!   from the full list, not with Palisade's rule);
//! - every signed block and attestation is in the export (recorded before it was returned);
//! - optionally, every 5xx happened while the database was known to be down.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use palisade::network::Network;
use palisade::protection::Interchange;
use palisade::signing::parse_signing_request;
use palisade::types::SlashableMessage;
use palisade::types::{PublicKey, SigningRoot};
use serde::Deserialize;

/// One line of the responses log.
#[derive(Deserialize)]
pub struct Exchange {
    pub pubkey: String,
    pub request: serde_json::Value,
    pub status: u16,
    #[serde(default)]
    pub response: serde_json::Value,
    /// Milliseconds since the Unix epoch when the request was sent and answered.
    #[serde(default)]
    pub t0: f64,
    #[serde(default)]
    pub t1: f64,
    #[serde(default)]
    pub source: String,
    /// Which replica answered, when known (`host:port` or a replica name).
    #[serde(default)]
    pub backend: Option<String>,
}

/// A time the database was unreachable, for every replica or for one (a cut connection).
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
pub struct Outage {
    pub start: f64,
    pub end: f64,
    #[serde(default)]
    pub replica: Option<String>,
    /// The database went back in time (restored from a backup): history signed before this
    /// outage may be gone from it; only what the replicas remembered was written back.
    #[serde(default)]
    pub lost_history: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Signed {
    Block {
        slot: u64,
        root: SigningRoot,
    },
    Attestation {
        source: u64,
        target: u64,
        root: SigningRoot,
    },
}

#[derive(Default, Debug)]
pub struct Report {
    pub responses: usize,
    pub by_status: BTreeMap<u16, usize>,
    pub signed_by_type: BTreeMap<String, usize>,
    /// Statuses per client (`source` of each line: a validator client, an adversary...).
    pub by_source: BTreeMap<String, BTreeMap<u16, usize>>,
    pub protected_signed: usize,
    pub bad_signatures: Vec<String>,
    pub slashable_pairs: Vec<String>,
    pub missing_from_export: Vec<String>,
    /// Messages signed before the database went back in time and not in it (its history was
    /// lost; each replica wrote back only the latest it signed).
    pub lost_in_rollback: usize,
    pub unexplained_5xx: Vec<String>,
    /// Outages after which no block or attestation was signed again.
    pub not_resumed: Vec<String>,
    /// Per outage: milliseconds from its end to the last 5xx it explains, and to the first
    /// block or attestation signed after it.
    pub recovery: Vec<(f64, f64)>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.bad_signatures.is_empty()
            && self.slashable_pairs.is_empty()
            && self.missing_from_export.is_empty()
            && self.unexplained_5xx.is_empty()
            && self.not_resumed.is_empty()
    }

    pub fn print(&self) {
        println!("checker: {} responses, statuses {:?}", self.responses, self.by_status);
        println!("checker: signed by type {:?}", self.signed_by_type);
        println!("checker: statuses by client {:?}", self.by_source);
        println!(
            "checker: {} blocks and attestations signed; bad signatures {}, slashable pairs {}, missing from the database {}, 5xx outside database outages {}, outages not followed by signing {}",
            self.protected_signed,
            self.bad_signatures.len(),
            self.slashable_pairs.len(),
            self.missing_from_export.len(),
            self.unexplained_5xx.len(),
            self.not_resumed.len()
        );
        if self.lost_in_rollback > 0 {
            println!(
                "checker: {} messages signed before the database was restored from a backup are gone from its history",
                self.lost_in_rollback
            );
        }
        for (what, list) in [
            ("bad signature", &self.bad_signatures),
            ("SLASHABLE", &self.slashable_pairs),
            ("not in the database", &self.missing_from_export),
            ("unexplained 5xx", &self.unexplained_5xx),
            ("did not resume", &self.not_resumed),
        ] {
            for line in list.iter().take(10) {
                println!("  {what}: {line}");
            }
        }
        for (i, (last_5xx, first_ok)) in self.recovery.iter().enumerate() {
            println!(
                "checker: outage {}: last 5xx {:.0} ms after it ended, first block/attestation signed {:.0} ms after it ended",
                i + 1,
                last_5xx,
                first_ok
            );
        }
    }
}

/// The start of the 503 reason while blocks and attestations are held after a database change.
const DATABASE_CHANGED: &str = "the database changed";
/// How long after an outage a database-change hold is still explained by it: a replica finds
/// the database changed only at its next connection, and Patroni may hand the leader back once
/// more after the fault command returned (patroni#2689).
const HOLD_SLACK_MS: f64 = 60_000.0;

/// Whether a 5xx falls in the window an outage explains: from just before it (a request sent
/// before the stop may answer after it) to a few seconds after (the first requests may find
/// pooled connections broken), or up to a minute for the hold after a database change.
fn near(x: &Exchange, o: &Outage) -> bool {
    let slack = if x.response.to_string().contains(DATABASE_CHANGED) {
        HOLD_SLACK_MS
    } else {
        6000.0
    };
    x.t1 >= o.start - 1000.0 && x.t0 <= o.end + slack
}

const DST: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

fn slashable(a: &Signed, b: &Signed) -> bool {
    let differ = |x: &SigningRoot, y: &SigningRoot| x != y || x.is_zero();
    match (a, b) {
        (Signed::Block { slot: s1, root: r1 }, Signed::Block { slot: s2, root: r2 }) => s1 == s2 && differ(r1, r2),
        (
            Signed::Attestation {
                source: s1,
                target: t1,
                root: r1,
            },
            Signed::Attestation {
                source: s2,
                target: t2,
                root: r2,
            },
        ) => (t1 == t2 && differ(r1, r2)) || (s1 < s2 && t2 < t1) || (s2 < s1 && t1 < t2),
        _ => false,
    }
}

/// `outages`: when the database was down (milliseconds since the epoch); a 5xx whose request
/// overlaps none of them is reported, and so is an outage after which nothing was signed.
pub fn check(network: &Network, responses: &[Exchange], export: &Interchange, outages: Option<&[Outage]>) -> Report {
    let mut report = Report {
        responses: responses.len(),
        ..Default::default()
    };
    let mut signed: HashMap<PublicKey, Vec<Signed>> = HashMap::new();
    // When each message was last signed, as (answered, asked): a repeat after a restore must be
    // recorded again.
    let mut last_signed: HashMap<(PublicKey, Signed), (f64, f64)> = HashMap::new();
    for (i, x) in responses.iter().enumerate() {
        *report.by_status.entry(x.status).or_default() += 1;
        *report
            .by_source
            .entry(x.source.clone())
            .or_default()
            .entry(x.status)
            .or_default() += 1;
        if x.status >= 500
            && let Some(windows) = outages
        {
            let during = windows
                .iter()
                .any(|o| o.replica.as_ref().is_none_or(|r| x.backend.as_ref() == Some(r)) && near(x, o));
            if !during {
                report
                    .unexplained_5xx
                    .push(format!("line {}: {} {} at {:.0}", i + 1, x.status, x.response, x.t0));
            }
        }
        if x.status != 200 {
            continue;
        }
        let kind = x.request["type"].as_str().unwrap_or("?").to_string();
        *report.signed_by_type.entry(kind.clone()).or_default() += 1;
        let Ok(pubkey) = x.pubkey.parse::<PublicKey>() else {
            report.bad_signatures.push(format!("line {}: bad pubkey", i + 1));
            continue;
        };
        let body = serde_json::to_vec(&x.request).expect("JSON");
        let job = match parse_signing_request(network, &x.pubkey, &body) {
            Ok(j) => j,
            Err(e) => {
                report
                    .bad_signatures
                    .push(format!("line {}: 200 for an invalid request: {e}", i + 1));
                continue;
            }
        };
        let sig_ok = x.response["signature"]
            .as_str()
            .and_then(|s| hex::decode(s.trim_start_matches("0x")).ok())
            .and_then(|b| blst::min_pk::Signature::from_bytes(&b).ok())
            .zip(blst::min_pk::PublicKey::from_bytes(&pubkey.0).ok())
            .is_some_and(|(sig, pk)| {
                sig.verify(true, job.signing_root.as_bytes(), DST, &[], &pk, true) == blst::BLST_ERROR::BLST_SUCCESS
            });
        if !sig_ok {
            report.bad_signatures.push(format!(
                "line {}: {kind} for {pubkey}: signature does not verify",
                i + 1
            ));
        }
        let s = match job.slashable {
            None => continue,
            Some(SlashableMessage::Block { slot, root }) => Signed::Block { slot: slot.0, root },
            Some(SlashableMessage::Attestation { source, target, root }) => Signed::Attestation {
                source: source.0,
                target: target.0,
                root,
            },
        };
        report.protected_signed += 1;
        let at = last_signed.entry((pubkey, s)).or_insert((x.t1, x.t0));
        if x.t1 > at.0 {
            *at = (x.t1, x.t0);
        }
        let list = signed.entry(pubkey).or_default();
        if !list.contains(&s) {
            list.push(s);
        }
    }

    for (pk, list) in &signed {
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                if slashable(a, b) {
                    report.slashable_pairs.push(format!("{pk}: {a:?} and {b:?}"));
                }
            }
        }
    }

    if let Some(windows) = outages {
        let inside = |x: &Exchange, o: &Outage| {
            o.replica.as_ref().is_none_or(|r| x.backend.as_ref() == Some(r)) && x.t1 >= o.start && x.t0 <= o.end
        };
        for (i, o) in windows.iter().enumerate() {
            let mine = |x: &&Exchange| o.replica.as_ref().is_none_or(|r| x.backend.as_ref() == Some(r));
            let first_ok = responses
                .iter()
                .filter(mine)
                .filter(|x| {
                    x.status == 200
                        && x.t0 > o.end
                        && matches!(x.request["type"].as_str(), Some("BLOCK" | "BLOCK_V2" | "ATTESTATION"))
                })
                .map(|x| x.t1 - o.end)
                .fold(f64::INFINITY, f64::min);
            if first_ok.is_infinite() {
                report.not_resumed.push(format!("{o:?}"));
            }
            let last_5xx = responses
                .iter()
                .filter(mine)
                .filter(|x| x.status >= 500 && near(x, o))
                // A 5xx inside another outage belongs to that one.
                .filter(|x| !windows.iter().enumerate().any(|(j, w)| j != i && inside(x, w)))
                .map(|x| x.t1 - o.end)
                .fold(f64::NEG_INFINITY, f64::max);
            report.recovery.push((last_5xx.max(0.0), first_ok));
        }
    }

    let lost_before = outages
        .unwrap_or_default()
        .iter()
        .filter(|o| o.lost_history)
        .map(|o| o.end)
        .fold(f64::NEG_INFINITY, f64::max);
    let exported: HashMap<PublicKey, &palisade::protection::interchange::ValidatorData> =
        export.data.iter().map(|v| (v.pubkey, v)).collect();
    for (pk, list) in &signed {
        for s in list {
            let found = exported.get(pk).is_some_and(|v| match *s {
                Signed::Block { slot, root } => v
                    .signed_blocks
                    .iter()
                    .any(|b| b.slot.0 == slot && b.signing_root == Some(root)),
                Signed::Attestation { source, target, root } => v
                    .signed_attestations
                    .iter()
                    .any(|a| a.source_epoch.0 == source && a.target_epoch.0 == target && a.signing_root == Some(root)),
            });
            // A signing commits between its request and its answer: one asked before the restore
            // ended may have committed into the database that the restore replaced.
            let lost = last_signed
                .get(&(*pk, *s))
                .is_some_and(|(_, asked)| *asked <= lost_before);
            if lost && !found {
                report.lost_in_rollback += 1;
            } else if !found {
                report.missing_from_export.push(format!("{pk}: {s:?}"));
            }
        }
    }
    report
}

/// `palisade-bench check`: loads the files and prints the report; Err when it fails.
pub fn run(network: &str, responses: &Path, export: &Path, outages: Option<&Path>) -> anyhow::Result<()> {
    let network = Network::load(network).map_err(|e| anyhow::anyhow!(e))?;
    let text = std::fs::read_to_string(responses)?;
    let mut exchanges = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        exchanges.push(
            serde_json::from_str::<Exchange>(line)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", responses.display(), i + 1))?,
        );
    }
    let export = Interchange::from_json(&std::fs::read_to_string(export)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", export.display()))?;
    let windows: Option<Vec<Outage>> = match outages {
        Some(p) => Some(serde_json::from_str(&std::fs::read_to_string(p)?)?),
        None => None,
    };
    let report = check(&network, &exchanges, &export, windows.as_deref());
    report.print();
    anyhow::ensure!(report.ok(), "the checker found violations");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(b: u8) -> SigningRoot {
        SigningRoot([b; 32])
    }

    #[test]
    fn slashable_pairs() {
        let a = |s, t, x| Signed::Attestation {
            source: s,
            target: t,
            root: r(x),
        };
        assert!(slashable(&a(1, 2, 1), &a(1, 2, 2)));
        assert!(!slashable(&a(1, 2, 1), &a(1, 2, 1)));
        assert!(slashable(&a(1, 4, 1), &a(2, 3, 1)));
        assert!(slashable(&a(2, 3, 1), &a(1, 4, 1)));
        assert!(!slashable(&a(1, 2, 1), &a(2, 3, 1)));
        let b = |s, x| Signed::Block { slot: s, root: r(x) };
        assert!(slashable(&b(5, 1), &b(5, 2)));
        assert!(!slashable(&b(5, 1), &b(6, 2)));
    }

    fn exchange(status: u16, response: serde_json::Value, t: f64) -> Exchange {
        Exchange {
            pubkey: String::new(),
            request: serde_json::Value::Null,
            status,
            response,
            t0: t,
            t1: t + 5.0,
            source: String::new(),
            backend: None,
        }
    }

    #[test]
    fn a_database_change_hold_is_explained_only_near_an_outage() {
        let network = Network::load("mainnet").expect("mainnet");
        let export = Interchange::from_json(
            r#"{"metadata":{"interchange_format_version":"5","genesis_validators_root":"0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"},"data":[]}"#,
        )
        .expect("export");
        let outage = [Outage {
            start: 1_000.0,
            end: 2_000.0,
            replica: None,
            lost_history: true,
        }];
        let held = serde_json::json!({"error": "the database changed (restored or failed over): held"});
        let other = serde_json::json!({"error": "database unavailable"});
        let unexplained = |x: Exchange| check(&network, &[x], &export, Some(&outage)).unexplained_5xx.len();
        assert_eq!(unexplained(exchange(503, held.clone(), 2_000.0 + 30_000.0)), 0);
        assert_eq!(unexplained(exchange(503, held, 2_000.0 + 61_000.0)), 1);
        assert_eq!(unexplained(exchange(503, other.clone(), 2_000.0 + 5_000.0)), 0);
        assert_eq!(unexplained(exchange(503, other, 2_000.0 + 30_000.0)), 1);
    }
}
