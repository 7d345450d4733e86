//! Signing vectors.

use super::*;

/// Every recorded vector signs to exactly the recorded signature, in file order, through
/// the real server. Sent again, every one returns the same signature, except blocks and
/// attestations older than the latest one signed for their key: those are refused (412).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_vectors_sign_to_the_recorded_signatures() {
    let (_dir, ks, pw) = testkit::interop_keystores();
    for (network, net_arg) in [("minimal", minimal_network()), ("mainnet", "mainnet".to_string())] {
        let mut args = key_args(&ks, &pw);
        args.extend(["--network", &net_arg]);
        let p = Palisade::serve(&args);
        let vs = vectors(network);
        assert!(vs.len() >= 10, "{network}: only {} vectors", vs.len());
        for v in &vs {
            let (status, body) = post(&sign_url(&p, v["pubkey"].as_str().unwrap()), v["request"].to_string()).await;
            assert_eq!(status, 200, "{}: {body}", v["name"]);
            assert_eq!(body["signature"], v["signature"], "{}", v["name"]);
        }
        let mut repeats = 0;
        for (i, v) in vs.iter().enumerate() {
            let t = v["request"]["type"].as_str().unwrap();
            let protected = matches!(t, "BLOCK" | "BLOCK_V2" | "ATTESTATION");
            let is_block = |t: &str| t.starts_with("BLOCK");
            // The latest message of its kind for this key, which may be repeated.
            let latest = !vs[i + 1..].iter().any(|w| {
                let u = w["request"]["type"].as_str().unwrap();
                w["pubkey"] == v["pubkey"]
                    && matches!(u, "BLOCK" | "BLOCK_V2" | "ATTESTATION")
                    && is_block(u) == is_block(t)
            });
            let (status, body) = post(&sign_url(&p, v["pubkey"].as_str().unwrap()), v["request"].to_string()).await;
            if protected && !latest {
                assert_eq!(status, 412, "{} again: {body}", v["name"]);
            } else {
                assert_eq!(status, 200, "{} again: {body}", v["name"]);
                assert_eq!(body["signature"], v["signature"], "{} again", v["name"]);
                repeats += protected as usize;
            }
        }
        assert!(repeats > 0, "{network}: no protected message was repeated");
    }
}

/// Gnosis Chain has 16 slots an epoch: a block's fork follows from its slot by that, not by
/// mainnet's 32. An Altair block at epoch 600 (slot 9,600; Altair began at epoch 512) signs;
/// the same body at epoch 500 (slot 8,000, still Phase0) is refused as the wrong fork's.
#[tokio::test]
async fn gnosis_blocks_take_their_fork_from_sixteen_slot_epochs() {
    let (_dir, ks, pw) = testkit::interop_keystores();
    let mut args = key_args(&ks, &pw);
    args.extend(["--network", "gnosis", "--future-tolerance-secs", "off"]);
    let p = Palisade::serve(&args);
    keys_loaded(&p).await;
    let gvr = "0xf5dcb5564e829aab27264b9becd5dfaa017085611224cb3036f573368dbb9d47";
    let block = |slot: u64| {
        json!({
            "type": "BLOCK_V2",
            "fork_info": {"fork": {"previous_version": "0x00000064", "current_version": "0x01000064", "epoch": "512"},
                          "genesis_validators_root": gvr},
            "beacon_block": {"version": "ALTAIR", "block": {
                "slot": slot.to_string(), "proposer_index": "1",
                "parent_root": format!("0x{}", "11".repeat(32)), "state_root": format!("0x{}", "22".repeat(32)),
                "body": {
                    "randao_reveal": format!("0x{}", "c0".to_string() + &"00".repeat(95)),
                    "eth1_data": {"deposit_root": format!("0x{}", "33".repeat(32)), "deposit_count": "8",
                                  "block_hash": format!("0x{}", "44".repeat(32))},
                    "graffiti": format!("0x{}", "00".repeat(32)),
                    "proposer_slashings": [], "attester_slashings": [], "attestations": [],
                    "deposits": [], "voluntary_exits": [],
                    // Gnosis's sync committee is mainnet's size: 512 members.
                    "sync_aggregate": {"sync_committee_bits": format!("0x{}", "ff".repeat(64)),
                                       "sync_committee_signature": format!("0x{}", "c0".to_string() + &"00".repeat(95))}
                }
            }}
        })
    };
    let url = sign_url(&p, &testkit::interop_pubkeys()[1]);
    let (s, b) = post(&url, block(8_000).to_string()).await;
    assert_eq!(s, 400, "an Altair body at a Phase0 slot of gnosis: {b}");
    let (s, b) = post(&url, block(9_600).to_string()).await;
    assert_eq!(s, 200, "an Altair block in gnosis epoch 600: {b}");
}

/// Gnosis Chain requests sign to the signing roots computed apart from Palisade
/// (`tests/data/networks/gnosis_roots.py`, which reproduces every recorded vector's root
/// first): a request carrying that root signs, one carrying another is refused.
#[tokio::test]
async fn gnosis_requests_have_the_independently_computed_roots() {
    let (_dir, ks, pw) = testkit::interop_keystores();
    let mut args = key_args(&ks, &pw);
    args.extend(["--network", "gnosis", "--future-tolerance-secs", "off"]);
    let p = Palisade::serve(&args);
    keys_loaded(&p).await;
    let fork_info = json!({"fork": {"previous_version": "0x05000064", "current_version": "0x06000064", "epoch": "1714688"},
        "genesis_validators_root": "0xf5dcb5564e829aab27264b9becd5dfaa017085611224cb3036f573368dbb9d47"});
    let randao = |root: &str| {
        json!({"type": "RANDAO_REVEAL", "fork_info": fork_info, "signingRoot": root,
               "randao_reveal": {"epoch": "1714700"}})
    };
    let attestation = |root: &str| {
        json!({"type": "ATTESTATION", "fork_info": fork_info, "signingRoot": root,
               "attestation": {"slot": "27435203", "index": "0",
                   "beacon_block_root": format!("0x{}", "11".repeat(32)),
                   "source": {"epoch": "1714699", "root": format!("0x{}", "22".repeat(32))},
                   "target": {"epoch": "1714700", "root": format!("0x{}", "33".repeat(32))}}})
    };
    let url = sign_url(&p, &testkit::interop_pubkeys()[2]);
    let (s, b) = post(&url, randao(&format!("0x{}", "ab".repeat(32))).to_string()).await;
    assert_eq!(s, 400, "a root Palisade did not compute was accepted: {b}");
    let (s, b) = post(
        &url,
        randao("0xfc13cdec4caf6e47747d6dc190d7a07dddc1543b3ff8876dce4bc660474929ea").to_string(),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = post(
        &url,
        attestation("0x7a01f5d29a40b449d5594c523548aa4d896cb9f5dbb93d55b9111dbb8f413ccc").to_string(),
    )
    .await;
    assert_eq!(s, 200, "{b}");
}
