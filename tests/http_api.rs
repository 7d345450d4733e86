//! The real binary over real HTTP: signing vectors, bad input, slashing refusals, database
//! outages, admin and Key Manager endpoints, key loading, CLI commands.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::http::*;
use testkit::pg::PgCluster;
use testkit::server::{Palisade, run};

fn vectors(network: &str) -> Vec<Value> {
    std::fs::read_to_string(testkit::data_dir().join("signing-vectors/sample.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["network"] == network)
        .collect()
}

// ---------------------------------------------------------------- signing vectors

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

// ---------------------------------------------------------------- bad input

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

// ---------------------------------------------------------------- slashing protection

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
        m.contains(r#"palisade_slashing_refusals_total{type="BLOCK_V2",reason="block_slot_not_above_highest"} 2"#),
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
    let mut recovered = false;
    for _ in 0..40 {
        let (s, _) = post(&sign, attestation(1, 2, 1, MINIMAL_GVR).to_string()).await;
        if s == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        recovered,
        "signing did not resume after the database came back:\n{}",
        p.log()
    );
    assert_eq!(get(&p.url("/healthcheck")).await.0, 200);
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

// ---------------------------------------------------------------- admin endpoints

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_import_and_export_need_the_token_and_are_all_or_nothing() {
    let (_keys, p) = signer_with_interop_keys(&[]);
    let export_url = p.url("/api/v1/eth2/slashing-protection/export");
    let import_url = p.url("/api/v1/eth2/slashing-protection/import");

    let r = client().get(&export_url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = client()
        .get(&export_url)
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    for path in ["/eth/v1/keystores"] {
        assert_eq!(client().get(p.url(path)).send().await.unwrap().status(), 401);
    }

    let keys = testkit::interop_pubkeys();
    let interchange = json!({
        "metadata": {"interchange_format_version": "5", "genesis_validators_root": MINIMAL_GVR},
        "data": [{"pubkey": keys[3], "signed_blocks": [{"slot": "100"}],
                  "signed_attestations": [{"source_epoch": "5", "target_epoch": "6"}]}]
    });
    let r = client()
        .post(&import_url)
        .bearer_auth(p.token())
        .header("content-type", "application/json")
        .body(interchange.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"imported_validators": 1}));

    // The import protects: lower messages are refused, higher ones sign.
    let sign = sign_url(&p, &keys[3]);
    assert_eq!(post(&sign, attestation(5, 6, 1, MINIMAL_GVR).to_string()).await.0, 412);
    assert_eq!(post(&sign, block_header(100, 1, MINIMAL_GVR).to_string()).await.0, 412);
    assert_eq!(post(&sign, attestation(6, 7, 1, MINIMAL_GVR).to_string()).await.0, 200);

    let before = admin_get(&p, "/api/v1/eth2/slashing-protection/export").await;
    // Refused imports change nothing: another chain, a bad pubkey in the second entry, not JSON.
    let mut other_chain = interchange.clone();
    other_chain["metadata"]["genesis_validators_root"] = format!("0x{}", "01".repeat(32)).into();
    other_chain["data"][0]["signed_blocks"][0]["slot"] = "500".into();
    let mut bad_key = interchange.clone();
    bad_key["data"][0]["signed_blocks"][0]["slot"] = "600".into();
    bad_key["data"]
        .as_array_mut()
        .unwrap()
        .push(json!({"pubkey": "0x1234"}));
    let mut bad_version = interchange.clone();
    bad_version["metadata"]["interchange_format_version"] = "4".into();
    for (what, body, needle) in [
        ("other chain", other_chain.to_string(), "genesis validators root"),
        ("bad pubkey", bad_key.to_string(), "data[1].pubkey"),
        ("version 4", bad_version.to_string(), "interchange_format_version"),
        ("not JSON", "{\"metadata\":".to_string(), "EOF"),
    ] {
        let r = client()
            .post(&import_url)
            .bearer_auth(p.token())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{what}");
        let b = r.json::<Value>().await.unwrap();
        assert!(b["error"].as_str().unwrap().contains(needle), "{what}: {b}");
    }
    let after = admin_get(&p, "/api/v1/eth2/slashing-protection/export").await;
    assert_eq!(before, after, "a refused import changed the database");

    // Export filtered by pubkey, and its re-import is accepted.
    let one = admin_get(
        &p,
        &format!("/api/v1/eth2/slashing-protection/export?pubkey={}", keys[3]),
    )
    .await;
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    let r = client()
        .post(&import_url)
        .bearer_auth(p.token())
        .header("content-type", "application/json")
        .body(one.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Key Manager on two replicas sharing PostgreSQL: POST imports a keystore with its
/// protection data; DELETE on one replica disables the key for every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_manager_import_and_delete_across_replicas() {
    let db = testkit::pg::shared().new_database();
    let net = minimal_network();
    let (_dir, ks, pw) = testkit::interop_keystores();
    // Replica A: no keys at start, keeps imports in its folders. Replica B: all 8 keys.
    let a_dir = tempfile::tempdir().unwrap();
    let (a_ks, a_pw) = (a_dir.path().join("ks"), a_dir.path().join("pw"));
    std::fs::create_dir_all(&a_ks).unwrap();
    std::fs::create_dir_all(&a_pw).unwrap();
    let a_args = [
        "--network",
        &net,
        "--database-url",
        &db,
        "--keystores-path",
        a_ks.to_str().unwrap(),
        "--keystores-passwords-path",
        a_pw.to_str().unwrap(),
    ];
    let mut a = Palisade::serve_in(a_dir.path(), &a_args);
    let mut b_args = key_args(&ks, &pw);
    b_args.extend(["--network", &net, "--database-url", &db]);
    let b = Palisade::serve(&b_args);
    let keys = testkit::interop_pubkeys();
    let km = a.url("/eth/v1/keystores");

    let keystore = std::fs::read_to_string(testkit::interop_dir().join("keystore-4.json")).unwrap();
    let password = std::fs::read_to_string(testkit::interop_dir().join("password.txt")).unwrap();
    let protection = json!({
        "metadata": {"interchange_format_version": "5", "genesis_validators_root": MINIMAL_GVR},
        "data": [{"pubkey": keys[4], "signed_blocks": [], "signed_attestations": [{"source_epoch": "9", "target_epoch": "10"}]}]
    });
    let body = json!({
        "keystores": [keystore, keystore.replace("\"crypto\"", "\"crypto_x\""), "not a keystore"],
        "passwords": [password, password, "x"],
        "slashing_protection": protection.to_string()
    });
    let r = client()
        .post(&km)
        .bearer_auth(a.token())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let statuses = r.json::<Value>().await.unwrap();
    let s: Vec<&str> = statuses["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["status"].as_str().unwrap())
        .collect();
    assert_eq!(s, vec!["imported", "error", "error"], "{statuses}");
    assert!(
        !statuses.to_string().contains(password.trim()),
        "a password leaked into the response"
    );

    let listed = admin_get(&a, "/eth/v1/keystores").await;
    assert_eq!(listed["data"][0]["validating_pubkey"], keys[4].as_str());
    // The imported protection data is in force on both replicas.
    assert_eq!(
        post(&sign_url(&a, &keys[4]), attestation(9, 10, 1, MINIMAL_GVR).to_string())
            .await
            .0,
        412
    );
    assert_eq!(
        post(&sign_url(&b, &keys[4]), attestation(9, 10, 1, MINIMAL_GVR).to_string())
            .await
            .0,
        412
    );
    assert_eq!(
        post(&sign_url(&a, &keys[4]), attestation(10, 11, 1, MINIMAL_GVR).to_string())
            .await
            .0,
        200
    );

    // Importing it again is a duplicate; a wrong-chain protection file refuses the whole POST.
    let again = json!({"keystores": [keystore], "passwords": [password]});
    let r = client()
        .post(&km)
        .bearer_auth(a.token())
        .json(&again)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["data"][0]["status"], "duplicate");
    let mut wrong = protection.clone();
    wrong["metadata"]["genesis_validators_root"] = format!("0x{}", "02".repeat(32)).into();
    let five = std::fs::read_to_string(testkit::interop_dir().join("keystore-5.json")).unwrap();
    let r = client()
        .post(&km)
        .bearer_auth(a.token())
        .json(&json!({"keystores": [five], "passwords": [password], "slashing_protection": wrong.to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        post(&sign_url(&a, &keys[5]), randao(1, MINIMAL_GVR).to_string())
            .await
            .0,
        404
    );

    // DELETE on A: A forgets the key, B (which loaded it from its own keystore) is refused.
    let r = client()
        .delete(&km)
        .bearer_auth(a.token())
        .json(&json!({"pubkeys": [keys[4], keys[6]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deleted = r.json::<Value>().await.unwrap();
    assert_eq!(deleted["data"][0]["status"], "deleted", "{deleted}");
    // Key 6 is not loaded on A, but B registered it: it is known, so it is disabled too.
    assert_eq!(deleted["data"][1]["status"], "not_active", "{deleted}");
    let interchange: Value = serde_json::from_str(deleted["slashing_protection"].as_str().unwrap()).unwrap();
    let v = interchange["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["pubkey"] == keys[4].as_str())
        .unwrap();
    assert!(
        v["signed_attestations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["target_epoch"] == "11")
    );
    assert_eq!(
        post(&sign_url(&a, &keys[4]), attestation(11, 12, 1, MINIMAL_GVR).to_string())
            .await
            .0,
        404
    );
    let (s, e) = post(&sign_url(&b, &keys[4]), attestation(11, 12, 1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 412, "{e}");
    assert!(e["error"].as_str().unwrap().contains("disabled"), "{e}");
    // Key 6 was never used anywhere, yet it too is now refused on B, for every type.
    assert_eq!(
        post(&sign_url(&b, &keys[6]), attestation(0, 1, 1, MINIMAL_GVR).to_string())
            .await
            .0,
        412
    );
    // Other types learn of the deletion with B's next database probe (every 2 s).
    let mut refused = false;
    for _ in 0..40 {
        if post(&sign_url(&b, &keys[6]), randao(1, MINIMAL_GVR).to_string())
            .await
            .0
            == 412
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(refused, "B still signs RANDAO for a key deleted on A");
    let (_, listed) = get(&b.url("/api/v1/eth2/publicKeys")).await;
    assert!(
        !listed.to_string().contains(&keys[6][2..]),
        "B still lists a deleted key: {listed}"
    );

    // A moved the deleted key's files aside; importing it again after a restart works.
    let stored = a_dir.path().join("keymanager-keystores");
    let json_files = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"))
            .count()
    };
    assert_eq!(json_files(&stored), 0);
    assert_eq!(json_files(&a_ks), 0);
    a.stop(libc::SIGTERM);
    let a = Palisade::serve_in(a_dir.path(), &a_args);
    let r = client()
        .post(a.url("/eth/v1/keystores"))
        .bearer_auth(a.token())
        .json(&again)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["data"][0]["status"], "imported");
    assert_eq!(json_files(&stored), 1);
    drop(a);
    let a = Palisade::serve_in(a_dir.path(), &a_args);
    assert_eq!(
        post(&sign_url(&a, &keys[4]), randao(2, MINIMAL_GVR).to_string())
            .await
            .0,
        200,
        "import did not survive a restart"
    );
}

// ---------------------------------------------------------------- keys, health, metrics

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

// ---------------------------------------------------------------- chain pinning, processes, CLI

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_is_pinned() {
    let (_dir, ks, pw) = testkit::interop_keystores();
    let work = tempfile::tempdir().unwrap();
    // `minimal` has no genesis validators root: the first request pins it.
    let mut args = key_args(&ks, &pw);
    args.extend(["--network", "minimal"]);
    let mut p = Palisade::serve_in(work.path(), &args);
    let pk = &testkit::interop_pubkeys()[0];
    let other = format!("0x{}", "05".repeat(32));
    assert_eq!(post(&sign_url(&p, pk), randao(1, MINIMAL_GVR).to_string()).await.0, 200);
    let (s, b) = post(&sign_url(&p, pk), randao(1, &other).to_string()).await;
    assert_eq!(s, 400, "{b}");
    p.stop(libc::SIGTERM);
    // The pin is in the database: a restart keeps it, and another configured chain is refused.
    let mut p = Palisade::serve_in(work.path(), &args);
    assert_eq!(post(&sign_url(&p, pk), randao(1, &other).to_string()).await.0, 400);
    p.stop(libc::SIGTERM);
    let mut wrong = args.clone();
    wrong.extend(["--genesis-validators-root", &other]);
    let err = Palisade::try_serve_in(work.path(), &wrong)
        .err()
        .expect("must refuse to start");
    assert!(err.contains("pinned to genesis validators root"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_refuses_a_second_palisade_process() {
    let work = tempfile::tempdir().unwrap();
    let _first = Palisade::serve_in(work.path(), &["--network", "minimal"]);
    let err = Palisade::try_serve_in(work.path(), &["--network", "minimal"])
        .err()
        .expect("a second process must refuse to start");
    assert!(err.contains("in use by another Palisade process"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_import_and_export() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let keys = testkit::interop_pubkeys();
    let file = w.join("in.json");
    std::fs::write(
        &file,
        json!({
            "metadata": {"interchange_format_version": "5", "genesis_validators_root": MINIMAL_GVR},
            "data": [{"pubkey": keys[0], "signed_blocks": [{"slot": "7"}], "signed_attestations": []},
                     {"pubkey": keys[1], "signed_blocks": [], "signed_attestations": [{"source_epoch": "1", "target_epoch": "2"}]}]
        })
        .to_string(),
    )
    .unwrap();
    let (ok, _, err) = run(
        &[
            "slashing-protection",
            "import",
            "--database-url",
            "sqlite://p.sqlite",
            "--from",
            "in.json",
        ],
        w,
    );
    assert!(ok, "{err}");
    assert!(err.contains("2 validators"), "{err}");
    let (ok, _, err) = run(
        &[
            "slashing-protection",
            "export",
            "--database-url",
            "sqlite://p.sqlite",
            "--to",
            "out.json",
            "--pubkey",
            &keys[1],
        ],
        w,
    );
    assert!(ok, "{err}");
    let out: Value = serde_json::from_str(&std::fs::read_to_string(w.join("out.json")).unwrap()).unwrap();
    assert_eq!(out["data"].as_array().unwrap().len(), 1);
    assert_eq!(out["data"][0]["signed_attestations"][0]["target_epoch"], "2");
    let (ok, stdout, _) = run(
        &[
            "slashing-protection",
            "export",
            "--database-url",
            "sqlite://p.sqlite",
            "--to",
            "-",
        ],
        w,
    );
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Bad input names the file and the field, and imports nothing.
    std::fs::write(w.join("bad.json"), r#"{"metadata":{"interchange_format_version":"5","genesis_validators_root":"0x270d43e74ce340de4bca2b1936beca0f4f5408d9e78aec4850920baf659d5b69"},"data":[{"pubkey":"0xzz"}]}"#).unwrap();
    let (ok, _, err) = run(
        &[
            "slashing-protection",
            "import",
            "--database-url",
            "sqlite://p.sqlite",
            "--from",
            "bad.json",
        ],
        w,
    );
    assert!(!ok);
    assert!(err.contains("bad.json") && err.contains("data[0].pubkey"), "{err}");
    let (ok, _, err) = run(
        &[
            "slashing-protection",
            "import",
            "--database-url",
            "sqlite://p.sqlite",
            "--from",
            "missing.json",
        ],
        w,
    );
    assert!(!ok && err.contains("missing.json"), "{err}");

    // While a server holds the SQLite file, the CLI is refused with a pointer to the API.
    let _server = Palisade::serve_in(
        w,
        &["--network", &minimal_network(), "--database-url", "sqlite://p.sqlite"],
    );
    let (ok, _, err) = run(
        &[
            "slashing-protection",
            "export",
            "--database-url",
            "sqlite://p.sqlite",
            "--to",
            "x.json",
        ],
        w,
    );
    assert!(!ok && err.contains("in use by another Palisade process"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_on_sigterm() {
    let (_dir, ks, pw) = testkit::interop_keystores();
    let mut args = key_args(&ks, &pw);
    args.extend(["--network", "minimal"]);
    let mut p = Palisade::serve(&args);
    assert_eq!(get(&p.url("/upcheck")).await.0, 200);
    let status = p.stop(libc::SIGTERM).unwrap();
    assert!(status.success(), "{status:?}");
}

/// A key whose keystore is still being decrypted (scrypt at the real cost, ~0.6 s) is known
/// at once: a request for it waits and signs, or after --key-wait-ms gets a 503, never a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_keys_still_decrypting_wait_or_get_503() {
    let dir = tempfile::tempdir().unwrap();
    let ks = dir.path().join("ks");
    std::fs::create_dir(&ks).unwrap();
    let cost = testkit::data_dir().join("test-keys/standard-cost");
    std::fs::copy(cost.join("keystore-8-scrypt.json"), ks.join("keystore-8-scrypt.json")).unwrap();
    let pw = cost.join("password.txt");
    let pk = "0xa6d310dbbfab9a22450f59993f87a4ce5db6223f3b5f1f30d2c4ec718922d400e0b3c7741de8e59960f72411a0ee10a7";
    let args = |wait: &'static str| {
        vec![
            "--keystores-path".to_string(),
            ks.display().to_string(),
            "--keystores-password-file".to_string(),
            pw.display().to_string(),
            "--network".to_string(),
            minimal_network(),
            "--key-wait-ms".to_string(),
            wait.to_string(),
        ]
    };

    let a = args("10000");
    let p = Palisade::serve(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (s, keys) = get(&p.url("/api/v1/eth2/publicKeys")).await;
    assert_eq!((s, keys), (200, json!([pk])), "a key being decrypted is listed");
    let (s, b) = post(&sign_url(&p, pk), randao(1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 200, "the request waits for the key: {b}");
    drop(p);

    let a = args("1");
    let p = Palisade::serve(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (s, b) = post(&sign_url(&p, pk), randao(1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 503, "{b}");
    assert!(b["error"].as_str().unwrap().contains("still being decrypted"), "{b}");
    let (_, h) = get(&p.url("/healthcheck")).await;
    assert_eq!(h["checks"][1]["data"]["loading"], 1, "{h}");
    assert_eq!(h["checks"][1]["status"], "LOADING", "{h}");
}

/// The README's signing examples work, as written, against the demo keystores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_examples_sign_with_the_demo_keys() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = &readme[readme.find("## Sign something").expect("README has a signing example")..];
    let bodies: Vec<&str> = section
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-d '"))
        .map(|l| l.trim_end_matches("; }").trim_end_matches('\''))
        .take(2)
        .collect();
    let url_path = section
        .lines()
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("http://127.0.0.1:9000/")))
        .unwrap()
        .trim_start_matches("http://127.0.0.1:9000");
    let ks = root.join("keystores");
    let pw = ks.join("password.txt");
    let p = Palisade::serve(&key_args(&ks, &pw));
    keys_loaded(&p).await;
    let url = p.url(url_path);
    let (s, b) = post(&url, bodies[0].to_string()).await;
    assert_eq!(s, 200, "the RANDAO example: {b}");
    let attestation = |byte: &str| bodies[1].replace("'$1'", &byte.repeat(32));
    let (s, b) = post(&url, attestation("11")).await;
    assert_eq!(s, 200, "the attestation example: {b}");
    let (s, b) = post(&url, attestation("22")).await;
    assert_eq!(s, 412, "the double vote example: {b}");
}
