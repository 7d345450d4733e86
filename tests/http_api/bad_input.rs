//! Bad input.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let (_keys, p) = signer_with_interop_keys(&[]);
    let pk = testkit::interop_pubkeys()[0].clone();
    let unknown = "0xb89bebc699769726a318c8e9971bd3171297c61aea4a6578a7a4f94b547dcba5bac16a89108b6b6a1fe3695d1a874a0c";

    let good = attestation(0, 1, 1, MINIMAL_GVR);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        v.to_string()
    };
    let capella_full_block = json!({
        "type": "BLOCK_V2",
        "fork_info": good["fork_info"],
        "beacon_block": {"version": "CAPELLA", "block": {"slot": "30"}}
    })
    .to_string();
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("malformed JSON", &pk, "{".into(), 400, "EOF"),
        ("empty body", &pk, "".into(), 400, "empty"),
        (
            "missing type",
            &pk,
            with(&|v| {
                v.as_object_mut().unwrap().remove("type");
            }),
            400,
            "type",
        ),
        ("unknown type", &pk, with(&|v| v["type"] = "FOO".into()), 400, "FOO"),
        (
            "missing payload",
            &pk,
            with(&|v| {
                v.as_object_mut().unwrap().remove("attestation");
            }),
            400,
            "missing field `attestation`",
        ),
        (
            "missing fork_info",
            &pk,
            with(&|v| {
                v.as_object_mut().unwrap().remove("fork_info");
            }),
            400,
            "fork_info",
        ),
        (
            "bad epoch",
            &pk,
            with(&|v| v["attestation"]["source"]["epoch"] = "abc".into()),
            400,
            "attestation.source.epoch",
        ),
        (
            "negative slot",
            &pk,
            with(&|v| v["attestation"]["slot"] = "-1".into()),
            400,
            "attestation.slot",
        ),
        (
            "uint64 overflow",
            &pk,
            with(&|v| v["attestation"]["target"]["epoch"] = "18446744073709551616".into()),
            400,
            "attestation.target.epoch",
        ),
        (
            "short root",
            &pk,
            with(&|v| v["attestation"]["beacon_block_root"] = "0x1234".into()),
            400,
            "attestation.beacon_block_root",
        ),
        (
            "wrong signing root",
            &pk,
            with(&|v| v["signingRoot"] = format!("0x{}", "ab".repeat(32)).into()),
            400,
            "signing root mismatch",
        ),
        (
            "two different roots",
            &pk,
            with(&|v| {
                v["signingRoot"] = format!("0x{}", "ab".repeat(32)).into();
                v["signing_root"] = format!("0x{}", "cd".repeat(32)).into();
            }),
            400,
            "differ",
        ),
        (
            "another chain",
            &pk,
            with(&|v| v["fork_info"]["genesis_validators_root"] = format!("0x{}", "01".repeat(32)).into()),
            400,
            "genesis validators root",
        ),
        ("full block after altair", &pk, capella_full_block, 400, "block_header"),
        ("bad pubkey in URL", "0x1234", good.to_string(), 400, "public key"),
        ("unknown key", unknown, good.to_string(), 404, "no key loaded"),
    ];
    // Pin the chain first with a harmless request, so "another chain" is a mismatch.
    let (s, b) = post(&sign_url(&p, &pk), randao(0, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 200, "{b}");
    for (what, key, body, status, needle) in &cases {
        let (s, b) = post(&sign_url(&p, key), body.clone()).await;
        assert_eq!(s, *status, "{what}: {b}");
        let err = b["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error field in {b}"));
        assert!(err.contains(needle), "{what}: `{err}` does not mention `{needle}`");
    }
    // Not UTF-8.
    let (s, b) = post(&sign_url(&p, &pk), vec![0xffu8, 0xfe, 0x00]).await;
    assert_eq!(s, 400, "{b}");
    // Too large.
    let (s, b) = post(&sign_url(&p, &pk), vec![b' '; 5 * 1024 * 1024]).await;
    assert_eq!(s, 413, "{b}");
    assert!(b["error"].as_str().unwrap().contains("larger than"));
    // Wrong method, unknown route.
    let (s, _) = get(&sign_url(&p, &pk)).await;
    assert_eq!(s, 405);
    let (s, b) = get(&p.url("/api/v1/eth2/nothing")).await;
    assert_eq!((s, b["error"].is_string()), (404, true));

    // Nothing was recorded by any of them: the first real attestation at target 1 signs.
    let (s, b) = post(&sign_url(&p, &pk), good.to_string()).await;
    assert_eq!(s, 200, "{b}");
    assert!(!p.log().contains("panicked"));
}
