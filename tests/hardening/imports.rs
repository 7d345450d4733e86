//! A large slashing-protection import on SQLite (one writer) while validators sign: committed
//! in small transactions, so signing for other keys goes on; a file that repeats entries is
//! deduplicated before the database sees it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use testkit::http::{MINIMAL_GVR, attestation, block_header, sign_url};

/// `n` valid BLS public keys (the import checks each is a curve point), none an interop key.
fn pubkeys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut ikm = [7u8; 32];
            ikm[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let sk = blst::min_pk::SecretKey::key_gen(&ikm, &[]).unwrap();
            format!("0x{}", hex::encode(sk.sk_to_pk().compress()))
        })
        .collect()
}

fn root(i: u64) -> String {
    format!("0x{i:064x}")
}

fn interchange(data: Vec<Value>) -> Value {
    json!({"metadata": {"interchange_format_version": "5", "genesis_validators_root": MINIMAL_GVR}, "data": data})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_import_does_not_stall_signing_for_other_keys() {
    // The production timeout: a signing that waits longer for the database is refused (503).
    let (_keys, p) = testkit::http::signer_with_interop_keys(&["--database-timeout-ms", "1500"]);
    testkit::http::keys_loaded(&p).await;
    let imported_keys = pubkeys(1_000);
    let data: Vec<Value> = imported_keys
        .iter()
        .map(|pk| {
            let blocks: Vec<Value> = (1..=40u64).map(|s| json!({"slot": s.to_string(), "signing_root": root(s)})).collect();
            let atts: Vec<Value> = (1..=40u64)
                .map(|t| json!({"source_epoch": (t - 1).to_string(), "target_epoch": t.to_string(), "signing_root": root(t)}))
                .collect();
            json!({"pubkey": pk, "signed_blocks": blocks, "signed_attestations": atts})
        })
        .collect();
    let file = interchange(data).to_string();

    // Validators sign blocks and attestations throughout the import.
    let importing = Arc::new(AtomicBool::new(true));
    let signer = {
        let (importing, url) = (importing.clone(), sign_url(&p, &testkit::interop_pubkeys()[3]));
        tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut n = 10u64;
            while importing.load(Ordering::Relaxed) {
                let (s, m) = testkit::http::post(&url, attestation(n - 1, n, 1, MINIMAL_GVR).to_string()).await;
                answers.push((s, m.to_string()));
                let (s, m) = testkit::http::post(&url, block_header(100 + n, 1, MINIMAL_GVR).to_string()).await;
                answers.push((s, m.to_string()));
                n += 1;
            }
            answers
        })
    };
    let (s, v) = testkit::http::admin(
        &p,
        reqwest::Method::POST,
        "/api/v1/eth2/slashing-protection/import",
        &serde_json::from_str(&file).unwrap(),
    )
    .await;
    importing.store(false, Ordering::Relaxed);
    assert_eq!(s, 200, "{v}");
    let answers = signer.await.unwrap();
    let failed: Vec<_> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} signings failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(answers.len() >= 4, "only {} signings during the import", answers.len());
    // Everything is in: the export holds every imported validator's whole history (the
    // validator that signed during the import is counted apart: it may have signed 40 too).
    let export = testkit::http::admin_get(&p, "/api/v1/eth2/slashing-protection/export").await;
    let imported = export["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| imported_keys.iter().any(|k| v["pubkey"].as_str() == Some(k.as_str())))
        .filter(|v| v["signed_blocks"].as_array().unwrap().len() == 40)
        .filter(|v| v["signed_attestations"].as_array().unwrap().len() == 40)
        .count();
    assert_eq!(imported, 1_000);
}

#[tokio::test]
async fn repeated_entries_are_written_once() {
    let (_keys, p) = testkit::http::signer_with_interop_keys(&[]);
    let pk = pubkeys(1).remove(0);
    let entry = json!({"pubkey": pk, "signed_blocks": [{"slot": "5", "signing_root": root(5)}],
                       "signed_attestations": [{"source_epoch": "1", "target_epoch": "2", "signing_root": root(2)}]});
    let file = interchange(vec![entry; 30_000]);
    let (s, v) = testkit::http::admin(
        &p,
        reqwest::Method::POST,
        "/api/v1/eth2/slashing-protection/import",
        &file,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let export = testkit::http::admin_get(&p, "/api/v1/eth2/slashing-protection/export").await;
    let ours: Vec<&Value> = export["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["pubkey"] == pk)
        .collect();
    assert_eq!(ours.len(), 1, "{export}");
    assert_eq!(ours[0]["signed_blocks"].as_array().unwrap().len(), 1);
    assert_eq!(ours[0]["signed_attestations"].as_array().unwrap().len(), 1);
}
