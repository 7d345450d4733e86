//! Admin endpoints.

use super::*;

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
    // Replica A: no keys at start; imports go to the database, for the fleet. Replica B: all
    // 8 keys of its own.
    let a_dir = tempfile::tempdir().unwrap();
    let (a_ks, a_pw) = (a_dir.path().join("ks"), a_dir.path().join("pw"));
    std::fs::create_dir_all(&a_ks).unwrap();
    std::fs::create_dir_all(&a_pw).unwrap();
    let secret = a_dir.path().join("fleet-secret");
    let bytes: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(0xf1)).collect();
    palisade::fsutil::write_private(
        &secret,
        hex::encode(bytes).as_bytes(),
        palisade::fsutil::Existing::Replace,
    )
    .unwrap();
    let a_args = [
        "--network",
        &net,
        "--database-url",
        &db,
        "--keystores-path",
        a_ks.to_str().unwrap(),
        "--keystores-passwords-path",
        a_pw.to_str().unwrap(),
        "--shared-keystore-secret-file",
        secret.to_str().unwrap(),
    ];
    let mut a = Palisade::serve_in(a_dir.path(), &a_args);
    let mut b_args = key_args(&ks, &pw);
    b_args.extend([
        "--network",
        &net,
        "--database-url",
        &db,
        "--shared-keystore-secret-file",
        secret.to_str().unwrap(),
    ]);
    let b = Palisade::serve(&b_args);
    // B's keys registered in the database and usable (the DELETE below relies on both).
    keys_loaded(&b).await;
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
    let refused = testkit::wait::within(
        "B refuses RANDAO for the deleted key",
        Duration::from_secs(30),
        || async {
            let s = post(&sign_url(&b, &keys[6]), randao(1, MINIMAL_GVR).to_string())
                .await
                .0;
            (s == 412).then_some(())
        },
    )
    .await;
    assert!(refused.is_some(), "B still signs RANDAO for a key deleted on A");
    let (_, listed) = get(&b.url("/api/v1/eth2/publicKeys")).await;
    assert!(
        !listed.to_string().contains(&keys[6][2..]),
        "B still lists a deleted key: {listed}"
    );

    // The deleted key's stored keystore is gone from the database; importing it again after a
    // restart works.
    let stored = || {
        testkit::pg::shared()
            .psql(db.rsplit('/').next().unwrap(), "SELECT count(*) FROM shared_keystores")
            .trim()
            .to_string()
    };
    assert_eq!(stored(), "0");
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
    assert_eq!(stored(), "1");
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
