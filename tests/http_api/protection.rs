//! Slashing protection.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_412_repeats_return_the_same_signature() {
    let (_keys, p) = signer_with_interop_keys(&[]);
    let pk = testkit::interop_pubkeys()[1].clone();
    let url = sign_url(&p, &pk);

    let (s, first) = post(&url, attestation(2, 3, 1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 200, "{first}");
    let (s, again) = post(&url, attestation(2, 3, 1, MINIMAL_GVR).to_string()).await;
    assert_eq!(
        (s, &again["signature"]),
        (200, &first["signature"]),
        "a repeat must return the same signature"
    );
    let (s, b) = post(&url, attestation(2, 3, 2, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 412, "double vote: {b}");
    assert!(b["error"].as_str().unwrap().contains("target epoch 3"), "{b}");
    let (s, b) = post(&url, attestation(1, 4, 1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 412, "surround vote: {b}");
    let (s, b) = post(&url, attestation(5, 4, 1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 412, "source after target: {b}");

    let (s, b1) = post(&url, block_header(40, 1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 200, "{b1}");
    let (s, b) = post(&url, block_header(40, 2, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 412, "double proposal: {b}");
    let (s, b) = post(&url, block_header(39, 2, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 412, "older slot: {b}");

    let (_, metrics) = get(&p.url("/metrics")).await;
    let m = metrics.as_str().unwrap();
    assert!(
        m.contains(r#"palisade_signing_requests_total{type="ATTESTATION",outcome="refused"} 3"#),
        "{m}"
    );
    assert!(
        m.contains(r#"palisade_slashing_refusals_total{type="BLOCK_V2",reason="block_slot_not_above_highest",risk="slashable"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"palisade_signing_requests_total{type="ATTESTATION",outcome="signed"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"palisade_signing_requests_total{type="ATTESTATION",outcome="repeat"} 1"#),
        "{m}"
    );
}

/// Database down: blocks and attestations get 503, other types still sign, health is 503.
/// Database back: signing resumes without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_fails_closed_and_recovers_by_itself() {
    let pg = PgCluster::start_with(&[]);
    let url = pg.new_database();
    let (_dir, ks, pw) = testkit::interop_keystores();
    let net = minimal_network();
    let mut args = key_args(&ks, &pw);
    args.extend([
        "--network",
        &net,
        "--database-url",
        &url,
        "--database-timeout-ms",
        "1500",
    ]);
    let p = Palisade::serve(&args);
    keys_loaded(&p).await;
    let pk = testkit::interop_pubkeys()[2].clone();
    let sign = sign_url(&p, &pk);

    let (s, b) = post(&sign, attestation(0, 1, 1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(get(&p.url("/healthcheck")).await.0, 200);

    pg.stop_immediate();
    let (s, b) = post(&sign, attestation(1, 2, 1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 503, "attestation with the database down: {b}");
    let (s, b) = post(&sign, block_header(30, 1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 503, "block with the database down: {b}");
    let (s, b) = post(&sign, randao(1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 200, "RANDAO needs no database: {b}");
    let (s, h) = get(&p.url("/healthcheck")).await;
    assert_eq!(s, 503, "{h}");
    assert_eq!(h["status"], "DOWN");
    assert!(
        p.log().contains("answered with a server error"),
        "5xx answers must be logged"
    );

    pg.start();
    let recovered = testkit::wait::within("signing resumes", Duration::from_secs(60), || async {
        let (s, _) = post(&sign, attestation(1, 2, 1, MINIMAL_GVR).to_string()).await;
        (s == 200).then_some(())
    })
    .await;
    assert!(
        recovered.is_some(),
        "signing did not resume after the database came back:\n{}",
        p.log()
    );
    // The health check may still meet a pooled connection from before the restart.
    testkit::wait::until("/healthcheck is 200", Duration::from_secs(30), || async {
        (get(&p.url("/healthcheck")).await.0 == 200).then_some(())
    })
    .await;
    // The refused attestation was never recorded: the export has targets 1 and 2 only.
    let export = admin_get(&p, "/api/v1/eth2/slashing-protection/export").await;
    let v = export["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["pubkey"] == pk.as_str())
        .unwrap();
    let targets: Vec<&str> = v["signed_attestations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["target_epoch"].as_str().unwrap())
        .collect();
    assert_eq!(targets, vec!["1", "2"]);
}
