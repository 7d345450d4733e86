//! Client conformance: requests built exactly as Lighthouse, Teku, Prysm, Nimbus and Lodestar
//! build them in their own source (`conformance/clients/`), for every type each sends at
//! every fork from PHASE0 to FULU, on mainnet and Sepolia, on both backends; each answer read
//! the way that client reads it, and each signature verified against a root computed by the
//! suite's own SSZ (`conformance/ssz.rs`), never by Palisade's code.

mod chain;
mod clients;
mod messages;
mod ssz;

use std::time::Duration;

use serde_json::{Value, json};

use chain::{Chain, FORKS, hex0x};
use clients::{Answer, Client, Outcome};
use messages::Msg;
use testkit::server::Palisade;

const DST: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn send(p: &Palisade, client: &Client, pubkey: &str, body: &Value) -> Answer {
    let mut req = http().post(p.url(&format!("/api/v1/eth2/sign/{pubkey}")));
    for (k, v) in client.headers {
        req = req.header(*k, *v);
    }
    let r = req.body(body.to_string()).send().await.unwrap();
    let status = r.status().as_u16();
    let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
    Answer {
        status,
        content_type,
        body: r.text().await.unwrap(),
    }
}

fn verify(pubkey: &str, root: &[u8; 32], sig: &[u8; 96]) -> bool {
    let pk = blst::min_pk::PublicKey::from_bytes(&hex::decode(&pubkey[2..]).unwrap()).unwrap();
    let Ok(sig) = blst::min_pk::Signature::from_bytes(sig) else {
        return false;
    };
    sig.verify(true, root, DST, &[], &pk, true) == blst::BLST_ERROR::BLST_SUCCESS
}

/// The interop keys, plus a signer for `chain` on `database` (`None`: the default SQLite file).
fn signer(chain: &Chain, database: Option<&str>) -> (tempfile::TempDir, Palisade) {
    let (dir, ks, pw) = testkit::interop_keystores();
    let mut args = vec![
        "--network",
        chain.name,
        "--keystores-path",
        ks.to_str().unwrap(),
        "--keystores-password-file",
        pw.to_str().unwrap(),
    ];
    if let Some(url) = database {
        args.extend(["--database-url", url]);
    }
    (dir, Palisade::serve(&args))
}

/// Sends `msg` as `client` does, and in the other form (with the root if the client sends
/// none, without if it does); both must be signed, by the same valid signature.
async fn sign_both_ways(
    p: &Palisade,
    chain: &Chain,
    fork: usize,
    client: &Client,
    pubkey: &str,
    msg: &Msg,
) -> Option<[u8; 96]> {
    let request = (client.request)(chain, msg)?;
    let root = msg.signing_root(chain);
    let with_root = {
        let mut r = request.clone();
        r["signingRoot"] = hex0x(&root).into();
        r
    };
    let (as_sent, other) = if client.sends_root {
        (with_root, request)
    } else {
        (request, clients::nimbus::with_proofs(with_root))
    };
    let what = format!("{} {} {} on {}", client.name, msg.kind(), FORKS[fork], chain.name);
    let mut sigs = Vec::new();
    for body in [&as_sent, &other] {
        let answer = send(p, client, pubkey, body).await;
        match (client.read)(&answer) {
            Outcome::Signed(sig) => {
                assert!(
                    verify(pubkey, &root, &sig),
                    "{what}: the signature does not verify over the spec's root\n{body}"
                );
                sigs.push(sig);
            }
            other => panic!("{what}: {other:?} (HTTP {}: {})\n{body}", answer.status, answer.body),
        }
    }
    assert_eq!(sigs[0], sigs[1], "{what}: with and without signingRoot differ");
    Some(sigs[0])
}

/// What each client makes of a slashing refusal and of an unknown key.
fn expected_refusal(client: &str, o: &Outcome) -> bool {
    match client {
        "Teku" | "Prysm" | "Nimbus" => *o == Outcome::SlashingRefused,
        "Lighthouse" => matches!(o, Outcome::Failed(m) if m.contains("412")),
        "Lodestar" => matches!(o, Outcome::Failed(m) if m.contains("slashing protection")),
        _ => unreachable!(),
    }
}

fn expected_unknown_key(client: &str, o: &Outcome) -> bool {
    match client {
        "Prysm" | "Nimbus" => *o == Outcome::UnknownKey,
        "Teku" | "Lighthouse" => matches!(o, Outcome::Failed(m) if m.contains("404")),
        "Lodestar" => matches!(o, Outcome::Failed(m) if m.contains("no key loaded")),
        _ => unreachable!(),
    }
}

/// Every client, every fork, every type it sends, on one signer.
async fn run_clients(p: &Palisade, chain: &Chain) -> usize {
    let keys = testkit::interop_pubkeys();
    let mut signed = 0;
    for (i, client) in clients::all().iter().enumerate() {
        eprintln!("{}: shapes from {}", client.name, client.sources);
        let pubkey = &keys[i];
        for fork in 0..FORKS.len() {
            for msg in messages::duties(chain, fork, 1, pubkey, (i * 10 + fork) as u64) {
                if sign_both_ways(p, chain, fork, client, pubkey, &msg).await.is_some() {
                    signed += 2;
                }
            }
        }

        // A double vote at the last target: refused, and read as that client reads a 412.
        let fulu = chain.epoch_in(6, 1);
        let double = Msg::Attestation(messages::attestation_data(fulu * 32 + 3, fulu - 1, fulu, 999));
        let mut body = (client.request)(chain, &double).unwrap();
        if client.sends_root {
            body["signingRoot"] = hex0x(&double.signing_root(chain)).into();
        }
        let answer = send(p, client, pubkey, &body).await;
        assert_eq!(answer.status, 412, "{}: {}", client.name, answer.body);
        let outcome = (client.read)(&answer);
        assert!(
            expected_refusal(client.name, &outcome),
            "{}: read a 412 as {outcome:?}",
            client.name
        );

        // A key the signer does not hold.
        let unknown =
            "0xb0e7791fb972fe014159aa33a98622da3cdc98ff707965e536d8636b5fcc5ac7a91a8c46e59a00dca575af0f18fb13dc";
        let randao = Msg::Randao(fulu);
        let mut body = (client.request)(chain, &randao).unwrap();
        if client.sends_root {
            body["signingRoot"] = hex0x(&randao.signing_root(chain)).into();
        }
        let answer = send(p, client, unknown, &body).await;
        assert_eq!(answer.status, 404, "{}: {}", client.name, answer.body);
        let outcome = (client.read)(&answer);
        assert!(
            expected_unknown_key(client.name, &outcome),
            "{}: read a 404 as {outcome:?}",
            client.name
        );

        // The key list, for the clients that fetch it.
        if let Some(read_keys) = client.read_keys {
            let mut req = http().get(p.url("/api/v1/eth2/publicKeys"));
            for (k, v) in client.headers.iter().filter(|(k, _)| *k != "Content-Type") {
                req = req.header(*k, *v);
            }
            let r = req.send().await.unwrap();
            let answer = Answer {
                status: r.status().as_u16(),
                content_type: r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()),
                body: r.text().await.unwrap(),
            };
            let listed = read_keys(&answer).unwrap_or_else(|e| panic!("{}: key list: {e}", client.name));
            for k in &keys {
                assert!(listed.contains(k), "{}: {k} not listed in {listed:?}", client.name);
            }
        }
    }
    signed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_signs_every_type_at_every_fork() {
    let pg = testkit::pg::shared();
    let mut total = 0;
    for chain in [chain::mainnet(), chain::sepolia()] {
        let url = pg.new_database();
        for database in [None, Some(url.as_str())] {
            let (_keys, p) = signer(&chain, database);
            let n = run_clients(&p, &chain).await;
            eprintln!(
                "{}, {}: {n} requests signed and verified",
                chain.name,
                database.map_or("sqlite", |_| "postgres")
            );
            total += n;
        }
    }
    // 5 clients x 7 forks x their types x 2 forms x 2 networks x 2 backends.
    assert!(total > 2000, "only {total} requests signed");
}

/// The suite's own SSZ agrees with the independently computed roots of the recorded mainnet
/// vectors, so a bug in it cannot hide one in Palisade.
#[test]
fn the_oracle_reproduces_the_recorded_mainnet_roots() {
    let text = std::fs::read_to_string(testkit::data_dir().join("signing-vectors/sample.jsonl")).unwrap();
    let chain = chain::mainnet();
    let mut checked = 0;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["network"] != "mainnet" {
            continue;
        }
        let r = &v["request"];
        let slot_of = |x: &Value| x.as_str().unwrap().parse::<u64>().unwrap();
        let msg = match r["type"].as_str().unwrap() {
            "ATTESTATION" => Msg::Attestation(r["attestation"].clone()),
            "RANDAO_REVEAL" => Msg::Randao(slot_of(&r["randao_reveal"]["epoch"])),
            "AGGREGATION_SLOT" => Msg::AggregationSlot(slot_of(&r["aggregation_slot"]["slot"])),
            "VOLUNTARY_EXIT" => Msg::Exit(r["voluntary_exit"].clone()),
            "VALIDATOR_REGISTRATION" => Msg::Registration(r["validator_registration"].clone()),
            "DEPOSIT" => Msg::Deposit(r["deposit"].clone()),
            "SYNC_COMMITTEE_SELECTION_PROOF" => Msg::SyncSelection(r["sync_aggregator_selection_data"].clone()),
            "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF" => Msg::Contribution(r["contribution_and_proof"].clone()),
            "SYNC_COMMITTEE_MESSAGE" => Msg::SyncMessage {
                slot: slot_of(&r["sync_committee_message"]["slot"]),
                root: r["sync_committee_message"]["beacon_block_root"]
                    .as_str()
                    .unwrap()
                    .into(),
            },
            "AGGREGATE_AND_PROOF_V2" => {
                let data = r["aggregate_and_proof"]["data"].clone();
                Msg::Aggregate {
                    electra: data["aggregate"].get("committee_bits").is_some(),
                    value: data,
                }
            }
            "AGGREGATE_AND_PROOF" => Msg::Aggregate {
                electra: false,
                value: r["aggregate_and_proof"].clone(),
            },
            "BLOCK_V2" if r["beacon_block"].get("block_header").is_some() => Msg::Block {
                slot: slot_of(&r["beacon_block"]["block_header"]["slot"]),
                full: None,
                header: r["beacon_block"]["block_header"].clone(),
            },
            _ => continue,
        };
        // The vectors' fork_info may differ from the schedule only where the spec agrees.
        assert_eq!(
            hex0x(&msg.signing_root(&chain)),
            v["signing_root"].as_str().unwrap(),
            "{}",
            v["name"]
        );
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} mainnet vectors checked");
}

/// An Electra or Fulu aggregate is signed only with the Electra container, under either type
/// name and in either body form; anything else is a 400 that names the field and the fork.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_that_do_not_fit_their_fork_are_never_signed() {
    let chain = chain::mainnet();
    let (_keys, p) = signer(&chain, None);
    let pubkey = &testkit::interop_pubkeys()[0];
    let lighthouse = clients::lighthouse::client();
    for (fork, offset) in [(5, 1), (6, 1), (4, 1)] {
        let epoch = chain.epoch_in(fork, offset);
        let slot = epoch * 32 + 4;
        // The container of the *other* side of the Electra line.
        let wrong_electra = fork < 5;
        let value = {
            let m = messages::duties(&chain, if wrong_electra { 5 } else { 4 }, 1, pubkey, 7);
            let Msg::Aggregate { value, .. } = m.into_iter().find(|m| matches!(m, Msg::Aggregate { .. })).unwrap()
            else {
                unreachable!()
            };
            let mut v = value;
            v["aggregate"]["data"]["slot"] = slot.to_string().into();
            v["aggregate"]["data"]["target"]["epoch"] = epoch.to_string().into();
            v
        };
        let wrong = Msg::Aggregate {
            electra: wrong_electra,
            value: value.clone(),
        };
        let fi = clients::fork_info(&chain, epoch);
        let forms = [
            ("AGGREGATE_AND_PROOF", value.clone()),
            ("AGGREGATE_AND_PROOF_V2", value.clone()),
            ("AGGREGATE_AND_PROOF", json!({"version": FORKS[fork], "data": value})),
            ("AGGREGATE_AND_PROOF_V2", json!({"version": FORKS[fork], "data": value})),
        ];
        for (t, payload) in forms {
            for root in [None, Some(wrong.signing_root(&chain))] {
                let mut body = clients::body(t, Some(fi.clone()), "aggregate_and_proof", payload.clone());
                if let Some(r) = root {
                    body["signingRoot"] = hex0x(&r).into();
                }
                let a = send(&p, &lighthouse, pubkey, &body).await;
                assert_eq!(a.status, 400, "{} {t} {payload}: {}", FORKS[fork], a.body);
                assert!(
                    a.body.contains(FORKS[fork]),
                    "the reason does not name the fork: {}",
                    a.body
                );
            }
        }
        // A `version` that is not the slot's fork is refused even with a fitting body.
        let right = messages::duties(&chain, fork, 1, pubkey, 8)
            .into_iter()
            .find_map(|m| match m {
                Msg::Aggregate { value, .. } => Some(value),
                _ => None,
            })
            .unwrap();
        let other = FORKS[if fork == 6 { 5 } else { 6 }];
        let body = clients::body(
            "AGGREGATE_AND_PROOF_V2",
            Some(fi),
            "aggregate_and_proof",
            json!({"version": other, "data": right}),
        );
        let a = send(&p, &lighthouse, pubkey, &body).await;
        assert_eq!(a.status, 400, "{}", a.body);
        assert!(a.body.contains("version"), "{}", a.body);
    }
}

/// `0X` prefixes and upper-case hex in the URL name the same key (Web3Signer normalises them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifiers_in_any_case() {
    let chain = chain::mainnet();
    let (_keys, p) = signer(&chain, None);
    let pubkey = &testkit::interop_pubkeys()[2];
    let teku = clients::teku::client();
    let msg = Msg::Randao(chain.epoch_in(6, 2));
    let body = (teku.request)(&chain, &msg).unwrap();
    let mut sigs = Vec::new();
    for id in [
        pubkey.clone(),
        format!("0X{}", pubkey[2..].to_uppercase()),
        pubkey[2..].to_string(),
    ] {
        let a = send(&p, &teku, &id, &body).await;
        assert_eq!(a.status, 200, "{id}: {}", a.body);
        sigs.push(a.body);
    }
    assert!(sigs.windows(2).all(|w| w[0] == w[1]));
}
