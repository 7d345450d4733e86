//! Signing policies, hostile keystores and keys defined twice.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::http::{MINIMAL_GVR, attestation, get, key_args, minimal_network, randao, sign_url};
use testkit::server::Palisade;

#[tokio::test]
async fn the_signing_policy_refuses_exits_and_deposits() {
    let (_keys, p) = testkit::http::signer_with_interop_keys(&["--deny-signing-types", "VOLUNTARY_EXIT,deposit"]);
    let pk = &testkit::interop_pubkeys()[1];
    let exit = json!({"type": "VOLUNTARY_EXIT",
        "fork_info": {"fork": {"previous_version": "0x00000001", "current_version": "0x00000001", "epoch": "0"},
                      "genesis_validators_root": MINIMAL_GVR},
        "voluntary_exit": {"epoch": "1", "validator_index": "1"}});
    let (s, m) = testkit::http::post(&sign_url(&p, pk), exit.to_string()).await;
    assert_eq!(s, 403, "{m}");
    assert!(m.to_string().contains("VOLUNTARY_EXIT"), "{m}");
    let (s, _) = testkit::http::post(&sign_url(&p, pk), randao(1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 200);
    let metrics = testkit::http::metrics_text(&p).await;
    assert!(
        metrics.contains(r#"palisade_signing_requests_total{type="VOLUNTARY_EXIT",outcome="not_permitted"} 1"#),
        "{metrics}"
    );

    // Per key, in its YAML definition: this key may only attest.
    let dir = tempfile::tempdir().unwrap();
    let ks = testkit::interop_dir().join("keystore-2.json");
    let pw = testkit::interop_dir().join("password.txt");
    std::fs::write(
        dir.path().join("k.yaml"),
        format!(
            "type: file-keystore\nkeystoreFile: {}\nkeystorePasswordFile: {}\nallowedSigningTypes: [ATTESTATION]\n",
            ks.display(),
            pw.display()
        ),
    )
    .unwrap();
    let net = minimal_network();
    let q = Palisade::serve(&["--network", &net, "--key-config-path", dir.path().to_str().unwrap()]);
    testkit::http::keys_loaded(&q).await;
    let pk2 = &testkit::interop_pubkeys()[2];
    let (s, m) = testkit::http::post(&sign_url(&q, pk2), randao(1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 403, "{m}");
    assert!(m.to_string().contains("k.yaml"), "{m}");
    let (s, _) = testkit::http::post(&sign_url(&q, pk2), attestation(0, 1, 1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 200);
}

/// An EIP-2335 keystore whose scrypt asks for `p` parallel lanes.
fn keystore_with_p(p: u64) -> String {
    let mut ks: Value =
        serde_json::from_str(&std::fs::read_to_string(testkit::interop_dir().join("keystore-0.json")).unwrap())
            .unwrap();
    ks["crypto"]["kdf"]["function"] = "scrypt".into();
    ks["crypto"]["kdf"]["params"] = json!({"dklen": 32, "n": 2, "r": 1, "p": p, "salt": "00".repeat(32)});
    ks.to_string()
}

#[tokio::test]
async fn a_hostile_keystore_is_refused_quickly_and_the_process_lives() {
    // In --keystores-path: the service starts (no crash loop), the key is reported failed.
    let dir = tempfile::tempdir().unwrap();
    let (ks, pw) = (dir.path().join("ks"), dir.path().join("pw.txt"));
    std::fs::create_dir_all(&ks).unwrap();
    std::fs::write(ks.join("hostile.json"), keystore_with_p(536_870_912)).unwrap();
    std::fs::write(&pw, "x").unwrap();
    let net = minimal_network();
    let mut args = key_args(&ks, &pw);
    args.extend(["--network", &net]);
    let p = Palisade::serve(&args);
    let keys = testkit::http::keys_loaded(&p).await;
    assert_eq!(keys["failed"], 1, "{keys}");
    // Which file failed, and why, only with the token.
    assert!(!keys.to_string().contains("hostile.json"), "{keys}");
    // Not ready (a key failed): 503, but the details are there with the token.
    let r = testkit::http::client()
        .get(p.url("/healthcheck"))
        .bearer_auth(p.token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let detailed: serde_json::Value = r.json().await.unwrap();
    assert!(detailed.to_string().contains("p at most"), "{detailed}");

    // Through the Key Manager API: an error for that keystore, answered at once.
    let started = Instant::now();
    let (s, v) = testkit::http::admin(
        &p,
        reqwest::Method::POST,
        "/eth/v1/keystores",
        &json!({"keystores": [keystore_with_p(1 << 20)], "passwords": ["x"]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"][0]["status"], "error", "{v}");
    assert!(started.elapsed() < Duration::from_secs(5), "refused before any work");
    let (s, _) = get(&p.url("/upcheck")).await;
    assert_eq!(s, 200);
    // Too many keystores in one import.
    let many = vec![keystore_with_p(1); 1001];
    let (s, v) = testkit::http::admin(
        &p,
        reqwest::Method::POST,
        "/eth/v1/keystores",
        &json!({"keystores": many, "passwords": vec!["x"; 1001]}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("at most 1000"), "{v}");
}

/// A key in `--keystores-path` and again in a definition that narrows it: the narrower policy
/// applies whichever definition loaded the key (once, a second definition was dropped with
/// its `deniedSigningTypes`).
#[tokio::test]
async fn a_key_defined_twice_signs_only_what_both_definitions_allow() {
    let definitions = tempfile::tempdir().unwrap();
    let ks = testkit::interop_dir().join("keystore-2.json");
    let pw = testkit::interop_dir().join("password.txt");
    std::fs::write(
        definitions.path().join("narrow.yaml"),
        format!(
            "type: file-keystore\nkeystoreFile: {}\nkeystorePasswordFile: {}\ndeniedSigningTypes: [RANDAO_REVEAL]\n",
            ks.display(),
            pw.display()
        ),
    )
    .unwrap();
    let (_keys, p) =
        testkit::http::signer_with_interop_keys(&["--key-config-path", definitions.path().to_str().unwrap()]);
    testkit::http::keys_loaded(&p).await;
    let pk2 = &testkit::interop_pubkeys()[2];
    let (s, m) = testkit::http::post(&sign_url(&p, pk2), randao(1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 403, "{m}");
    assert!(m.to_string().contains("narrow.yaml"), "{m}");
    let (s, _) = testkit::http::post(&sign_url(&p, pk2), attestation(0, 1, 1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 200);
    // Another key of the folder is not narrowed.
    let (s, _) = testkit::http::post(
        &sign_url(&p, &testkit::interop_pubkeys()[3]),
        randao(1, MINIMAL_GVR).to_string(),
    )
    .await;
    assert_eq!(s, 200);
    let log = p.wait_for_log("defined more than once").await;
    assert!(log.contains("signing only what every definition allows"), "{log}");
}
