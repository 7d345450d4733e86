//! The Key Manager API (`/eth/v1/keystores`) as the keymanager-APIs standard says, and
//! deletions and imports that last across restarts.

use reqwest::Method;
use serde_json::{Value, json};
use testkit::http::*;
use testkit::server::Palisade;

const KM: &str = "/eth/v1/keystores";

/// The EIP-2335 test vectors' key (public test material), not among the interop keys.
const EIP2335_SECRET: &str = "0x000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";
const EIP2335_PUBKEY: &str =
    "0x9612d7a727c9d0a22e185a1c768478dfe919cada9266988cb32359c11f2b7b27f4ae4040902382ae2910c15e2b420d07";

fn keystore(i: usize) -> String {
    std::fs::read_to_string(testkit::interop_dir().join(format!("keystore-{i}.json"))).unwrap()
}

fn password() -> String {
    std::fs::read_to_string(testkit::interop_dir().join("password.txt")).unwrap()
}

fn statuses(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data in {v}"))
        .iter()
        .map(|s| s["status"].as_str().unwrap().to_string())
        .collect()
}

async fn listed(p: &Palisade) -> (Vec<String>, Value) {
    let (_, keys) = get(&p.url("/api/v1/eth2/publicKeys")).await;
    let keys = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    (keys, admin_get(p, KM).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_manager_errors_carry_message() {
    let (_k, p) = signer_with_interop_keys(&[]);
    let no_token = client().get(p.url(KM)).send().await.unwrap();
    assert_eq!(no_token.status(), 401);
    let wrong = client().get(p.url(KM)).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(wrong.status(), 403);
    let bad_body = admin(&p, Method::POST, KM, &json!({"keystores": "x"})).await;
    let bad_method = admin(&p, Method::PUT, KM, &json!({})).await;
    for (what, status, body) in [
        ("no token", 401, no_token.json::<Value>().await.unwrap()),
        ("wrong token", 403, wrong.json::<Value>().await.unwrap()),
        ("bad body", bad_body.0, bad_body.1),
        ("wrong method", bad_method.0, bad_method.1),
    ] {
        assert!(body["message"].is_string(), "{what} ({status}): {body}");
        assert!(body.get("error").is_none(), "{what}: {body}");
    }
    assert_eq!(bad_body.0, 400);
    assert_eq!(bad_method.0, 405);
    // The Web3Signer routes keep their `error` bodies.
    let (s, b) = post(&sign_url(&p, "0x12"), "{}").await;
    assert_eq!(s, 400);
    assert!(b["error"].is_string(), "{b}");
}

/// `--keystores-path` with one password file (the README's way to run): a deleted key is not
/// loaded again after a restart; imported again with its protection data it signs, and the
/// import survives a restart too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_and_imports_last_across_restarts() {
    let (guard, ks, pw) = testkit::interop_keystores();
    let net = minimal_network();
    let mut args = key_args(&ks, &pw);
    args.extend(["--network", &net]);
    let workdir = guard.path().join("work");
    std::fs::create_dir(&workdir).unwrap();
    let mut p = Palisade::serve_in(&workdir, &args);
    keys_loaded(&p).await;
    let key = testkit::interop_pubkeys()[0].clone();
    assert_eq!(
        post(&sign_url(&p, &key), attestation(1, 2, 1, MINIMAL_GVR).to_string())
            .await
            .0,
        200
    );

    let (s, deleted) = admin(&p, Method::DELETE, KM, &json!({"pubkeys": [key]})).await;
    assert_eq!(s, 200, "{deleted}");
    assert_eq!(statuses(&deleted), ["deleted"]);
    assert!(
        !ks.join("keystore-0.json").exists(),
        "the keystore file was left in place"
    );
    assert!(
        ks.join(".deleted").read_dir().unwrap().count() == 1,
        "the keystore was not kept aside"
    );
    let protection = deleted["slashing_protection"].as_str().unwrap().to_string();
    assert!(protection.contains(&key[2..]), "{protection}");

    for restart in [false, true] {
        if restart {
            p.stop(libc::SIGTERM);
            p = Palisade::serve_in(&workdir, &args);
            keys_loaded(&p).await;
        }
        let (keys, km) = listed(&p).await;
        assert!(
            !keys.contains(&key),
            "restart {restart}: deleted key listed in publicKeys"
        );
        assert!(
            !km.to_string().contains(&key[2..]),
            "restart {restart}: deleted key in the Key Manager list"
        );
        assert_eq!(
            post(&sign_url(&p, &key), randao(3, MINIMAL_GVR).to_string()).await.0,
            404
        );
    }

    let import = json!({"keystores": [keystore(0)], "passwords": [password()], "slashing_protection": protection});
    let (s, imported) = admin(&p, Method::POST, KM, &import).await;
    assert_eq!(s, 200, "{imported}");
    assert_eq!(statuses(&imported), ["imported"]);
    assert_eq!(
        post(&sign_url(&p, &key), randao(3, MINIMAL_GVR).to_string()).await.0,
        200
    );
    // Its history came back with it.
    assert_eq!(
        post(&sign_url(&p, &key), attestation(1, 2, 9, MINIMAL_GVR).to_string())
            .await
            .0,
        412
    );

    p.stop(libc::SIGTERM);
    let p = Palisade::serve_in(&workdir, &args);
    keys_loaded(&p).await;
    assert_eq!(
        post(&sign_url(&p, &key), randao(4, MINIMAL_GVR).to_string()).await.0,
        200,
        "an imported key is gone after a restart:\n{}",
        p.log()
    );
    // Stored privately under --data-path.
    use std::os::unix::fs::PermissionsExt;
    let stored = workdir.join("keymanager-keystores");
    assert_eq!(std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777, 0o700);
    for f in std::fs::read_dir(&stored).unwrap().flatten() {
        if f.path().is_file() {
            assert_eq!(
                f.metadata().unwrap().permissions().mode() & 0o777,
                0o600,
                "{}",
                f.path().display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_unknown_key_records_nothing() {
    let (_k, p) = signer_with_interop_keys(&[]);
    assert_eq!(
        post(
            &sign_url(&p, &testkit::interop_pubkeys()[1]),
            randao(1, MINIMAL_GVR).to_string()
        )
        .await
        .0,
        200
    );
    let unknown = "0xb0e7791fb972fe014159aa33a98622da3cdc98ff707965e536d8636b5fcc5ac7a91a8c46e59a00dca575af0f18fb13dc";
    let (s, r) = admin(&p, Method::DELETE, KM, &json!({"pubkeys": [unknown]})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(statuses(&r), ["not_found"]);
    let export = admin_get(&p, "/api/v1/eth2/slashing-protection/export").await;
    assert!(
        !export.to_string().contains(&unknown[2..]),
        "an unknown key was recorded: {export}"
    );
}

/// Keys from YAML definitions are `readonly`, and a DELETE of one is an error that changes
/// nothing; keystore keys are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_keys_are_readonly() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    std::fs::write(
        defs.join("raw.yaml"),
        format!("type: file-raw\nkeyType: BLS\nprivateKey: '{EIP2335_SECRET}'\n"),
    )
    .unwrap();
    let (_k, p) = signer_with_interop_keys(&["--key-config-path", defs.to_str().unwrap()]);
    keys_loaded(&p).await;
    let km = admin_get(&p, KM).await;
    assert_eq!(km["data"].as_array().unwrap().len(), 9, "{km}");
    for entry in km["data"].as_array().unwrap() {
        let is_yaml = entry["validating_pubkey"] == EIP2335_PUBKEY;
        assert_eq!(entry["readonly"], is_yaml, "{entry}");
    }
    let (s, r) = admin(&p, Method::DELETE, KM, &json!({"pubkeys": [EIP2335_PUBKEY]})).await;
    assert_eq!(s, 200);
    assert_eq!(statuses(&r), ["error"]);
    assert!(r["data"][0]["message"].as_str().unwrap().contains("read-only"), "{r}");
    assert_eq!(
        post(&sign_url(&p, EIP2335_PUBKEY), randao(1, MINIMAL_GVR).to_string())
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_imports_of_one_key_import_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let ks = dir.path().join("ks");
    std::fs::create_dir(&ks).unwrap();
    let net = minimal_network();
    let pw = dir.path().join("pw.txt");
    std::fs::write(&pw, password()).unwrap();
    let mut args = key_args(&ks, &pw);
    args.extend(["--network", &net]);
    let p = Palisade::serve(&args);
    let body = json!({"keystores": [keystore(3)], "passwords": [password()]});
    let answers = futures::future::join_all((0..4).map(|_| admin(&p, Method::POST, KM, &body))).await;
    let mut all: Vec<String> = answers.iter().flat_map(|(_, v)| statuses(v)).collect();
    all.sort();
    assert_eq!(all, ["duplicate", "duplicate", "duplicate", "imported"]);
}
