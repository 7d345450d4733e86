//! Keys, health, metrics.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_keystores_are_named_and_the_rest_load() {
    let dir = tempfile::tempdir().unwrap();
    let (ks, pw) = (dir.path().join("ks"), dir.path().join("pw"));
    std::fs::create_dir_all(&ks).unwrap();
    std::fs::create_dir_all(&pw).unwrap();
    let password = std::fs::read_to_string(testkit::interop_dir().join("password.txt")).unwrap();
    for i in 0..8 {
        std::fs::copy(
            testkit::interop_dir().join(format!("keystore-{i}.json")),
            ks.join(format!("k{i}.json")),
        )
        .unwrap();
        let p = if i == 3 {
            "the-wrong-password".to_string()
        } else {
            password.clone()
        };
        std::fs::write(pw.join(format!("k{i}.txt")), p).unwrap();
    }
    std::fs::write(ks.join("broken.json"), "{\"crypto\": {").unwrap();
    std::fs::write(pw.join("broken.txt"), &password).unwrap();
    std::fs::write(ks.join("notes.json"), "{\"hello\": 1}").unwrap();
    let p = Palisade::serve(&[
        "--keystores-path",
        ks.to_str().unwrap(),
        "--keystores-passwords-path",
        pw.to_str().unwrap(),
        "--network",
        &minimal_network(),
    ]);
    let keys = keys_loaded(&p).await;
    assert_eq!(
        (keys["loaded"].as_u64(), keys["failed"].as_u64()),
        (Some(7), Some(2)),
        "{keys}"
    );
    let log = p.log();
    assert!(log.contains("k3.json") && log.contains("wrong password"), "{log}");
    assert!(log.contains("broken.json") && log.contains("corrupt JSON"), "{log}");
    assert!(
        log.contains("notes.json") && log.contains("not an EIP-2335 keystore"),
        "{log}"
    );
    assert!(
        !log.contains(password.trim()) && !log.contains("the-wrong-password"),
        "a password reached the log"
    );
    let (_, list) = get(&p.url("/api/v1/eth2/publicKeys")).await;
    assert_eq!(list.as_array().unwrap().len(), 7);
    let failed_key = &testkit::interop_pubkeys()[3];
    let (s, b) = post(&sign_url(&p, failed_key), randao(1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 404);
    assert!(b["error"].as_str().unwrap().contains("wrong password"), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upcheck_public_keys_metrics_and_text_plain() {
    let (_dir, ks, pw) = testkit::interop_keystores();
    let mut args = key_args(&ks, &pw);
    let net = minimal_network();
    args.extend(["--network", &net]);
    let p = Palisade::serve(&args);
    assert_eq!(get(&p.url("/upcheck")).await, (200, Value::String("OK".into())));
    let (s, keys) = get(&p.url("/api/v1/eth2/publicKeys")).await;
    assert_eq!(s, 200);
    let mut want = testkit::interop_pubkeys();
    want.sort();
    let got: Vec<String> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, want);

    let pk = &testkit::interop_pubkeys()[0];
    let r = client()
        .post(sign_url(&p, pk))
        .header("accept", "text/plain")
        .header("content-type", "application/json")
        .body(randao(3, MINIMAL_GVR).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    assert!(text.starts_with("0x") && text.len() == 194, "{text}");
    let (s, j) = post(&sign_url(&p, pk), randao(3, MINIMAL_GVR).to_string()).await;
    assert_eq!((s, j["signature"].as_str().unwrap()), (200, text.as_str()));

    keys_loaded(&p).await;
    let (s, m) = get(&p.url("/metrics")).await;
    assert_eq!(s, 200);
    let m = m.as_str().unwrap();
    assert!(
        m.contains(r#"palisade_signing_requests_total{type="RANDAO_REVEAL",outcome="signed"} 2"#),
        "{m}"
    );
    assert!(m.contains(r#"palisade_keys{state="loaded"} 8"#), "{m}\n{}", p.log());
    assert!(m.contains("palisade_signing_duration_seconds_bucket"), "{m}");

    // Metrics can be turned off.
    let mut args = key_args(&ks, &pw);
    args.extend(["--network", &net, "--metrics=false"]);
    let q = Palisade::serve(&args);
    assert_eq!(get(&q.url("/metrics")).await.0, 404);
}
