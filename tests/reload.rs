//! Reloading keys while signing goes on: `POST /reload` (Web3Signer's statuses), SIGHUP and
//! `--keys-refresh-secs` add new keys and drop removed ones; a half-written file changes
//! nothing; two reloads never run at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use testkit::http::*;
use testkit::server::Palisade;

struct Setup {
    _dir: tempfile::TempDir,
    keystores: PathBuf,
    definitions: PathBuf,
    password: PathBuf,
}

/// Keystores 0 and 1 in a folder, key 2 as a `file-raw` definition.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let keystores = dir.path().join("keystores");
    let definitions = dir.path().join("definitions");
    std::fs::create_dir_all(&keystores).unwrap();
    std::fs::create_dir_all(&definitions).unwrap();
    for i in 0..2 {
        copy_keystore(&keystores, i);
    }
    raw_definition(&definitions, 2);
    let password = dir.path().join("password.txt");
    std::fs::copy(testkit::interop_dir().join("password.txt"), &password).unwrap();
    Setup {
        _dir: dir,
        keystores,
        definitions,
        password,
    }
}

fn copy_keystore(dir: &Path, i: usize) {
    std::fs::copy(
        testkit::interop_dir().join(format!("keystore-{i}.json")),
        dir.join(format!("keystore-{i}.json")),
    )
    .unwrap();
}

fn raw_definition(dir: &Path, i: usize) {
    std::fs::write(
        dir.join(format!("key-{i}.yaml")),
        format!(
            "type: file-raw\nprivateKey: \"{}\"\n",
            testkit::interop_secret_keys()[i]
        ),
    )
    .unwrap();
}

fn signer(s: &Setup, extra: &[&str]) -> Palisade {
    let net = minimal_network();
    let mut args = vec![
        "--keystores-path",
        s.keystores.to_str().unwrap(),
        "--keystores-password-file",
        s.password.to_str().unwrap(),
        "--key-config-path",
        s.definitions.to_str().unwrap(),
        "--network",
        net.as_str(),
    ];
    args.extend(extra);
    Palisade::serve(&args)
}

async fn status_of_sign(p: &Palisade, i: usize) -> u16 {
    let pk = testkit::interop_pubkeys()[i].clone();
    post(&sign_url(p, &pk), randao(1, MINIMAL_GVR).to_string()).await.0
}

/// Waits for the last reload to finish; its state.
async fn reload_done(p: &Palisade) -> Value {
    testkit::wait::until("the reload finishes", Duration::from_secs(60), || async {
        let state = admin_get(p, "/reload").await;
        (state["status"] != "running").then_some(state)
    })
    .await
}

fn pubkeys_in(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["pubkey"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_adds_and_removes_keys() {
    let s = setup();
    let p = signer(&s, &[]);
    keys_loaded(&p).await;
    let keys = testkit::interop_pubkeys();
    assert_eq!(admin_get(&p, "/reload").await["status"], "idle");
    assert_eq!(status_of_sign(&p, 3).await, 404);

    // Key 3 arrives as a keystore, key 4 as a definition; key 0's keystore and key 2's
    // definition go.
    copy_keystore(&s.keystores, 3);
    raw_definition(&s.definitions, 4);
    std::fs::remove_file(s.keystores.join("keystore-0.json")).unwrap();
    std::fs::remove_file(s.definitions.join("key-2.yaml")).unwrap();

    // Web3Signer's contract: 202 and a background reload; the token is required here.
    let no_token = client().post(p.url("/reload")).send().await.unwrap();
    assert_eq!(no_token.status(), 401);
    let (st, v) = admin(&p, Method::POST, "/reload", &json!({})).await;
    assert_eq!(st, 202, "{v}");
    assert_eq!(v["status"], "accepted", "{v}");
    let state = reload_done(&p).await;
    assert_eq!(state["status"], "completed", "{state}");
    assert_eq!(state["trigger"], "api");
    assert!(state["lastOperationTime"].as_str().unwrap().ends_with('Z'), "{state}");
    let mut added = pubkeys_in(&state["last"]["added"]);
    added.sort();
    let mut want = vec![keys[3].clone(), keys[4].clone()];
    want.sort();
    assert_eq!(added, want, "{state}");
    let mut removed = pubkeys_in(&state["last"]["removed"]);
    removed.sort();
    let mut want = vec![keys[0].clone(), keys[2].clone()];
    want.sort();
    assert_eq!(removed, want, "{state}");
    assert_eq!(state["last"]["unchanged"], 1, "{state}");

    // Removed keys are refused at once; new ones sign; the others never stopped.
    for (i, want) in [(0, 404), (2, 404), (1, 200), (3, 200), (4, 200)] {
        assert_eq!(status_of_sign(&p, i).await, want, "key {i}");
    }
    let l = public_keys(&p).await;
    assert!(
        !l.contains(&keys[0]) && l.contains(&keys[3]) && l.contains(&keys[4]),
        "{l:?}"
    );
    let log = p.wait_for_log("reload: key removed").await;
    assert!(log.contains(&keys[0]) && log.contains("reload: key added"), "{log}");
}

/// A keystore that is being written (invalid JSON), and a definition file that breaks: each is
/// reported, and the keys they gave before stay; nothing else changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_file_changes_nothing() {
    let s = setup();
    let p = signer(&s, &[]);
    keys_loaded(&p).await;
    let keys = testkit::interop_pubkeys();
    let full = std::fs::read_to_string(s.keystores.join("keystore-1.json")).unwrap();
    std::fs::write(s.keystores.join("keystore-1.json"), &full[..full.len() / 2]).unwrap();
    std::fs::write(s.keystores.join("keystore-5.json"), &full[..40]).unwrap();
    std::fs::write(s.definitions.join("key-2.yaml"), "type: file-raw\nprivateKey: [\n").unwrap();
    copy_keystore(&s.keystores, 6);
    let (st, _) = admin(&p, Method::POST, "/reload", &json!({})).await;
    assert_eq!(st, 202);
    let state = reload_done(&p).await;
    assert_eq!(state["status"], "completed_with_errors", "{state}");
    assert!(
        state["lastError"].as_str().unwrap().contains("3 signer loading error"),
        "{state}"
    );
    let failed = state["last"]["failed"].to_string();
    assert!(
        failed.contains("keystore-1.json") && failed.contains("keystore-5.json") && failed.contains("key-2.yaml"),
        "{failed}"
    );
    assert_eq!(pubkeys_in(&state["last"]["added"]), vec![keys[6].clone()], "{state}");
    assert!(state["last"]["removed"].as_array().unwrap().is_empty(), "{state}");
    for i in [0, 1, 2, 6] {
        assert_eq!(status_of_sign(&p, i).await, 200, "key {i}");
    }
    // Written in full, it is read again at the next reload (and key 1 stays).
    std::fs::write(s.keystores.join("keystore-1.json"), &full).unwrap();
    std::fs::remove_file(s.keystores.join("keystore-5.json")).unwrap();
    raw_definition(&s.definitions, 2);
    admin(&p, Method::POST, "/reload", &json!({})).await;
    let state = reload_done(&p).await;
    assert_eq!(state["status"], "completed", "{state}");
    assert_eq!(state["last"]["unchanged"], 4, "{state}");
}

/// SIGHUP reloads; a reload asked while one runs gets 409 (Web3Signer's answer), and the key
/// set is what one reload gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_reloads_never_overlap() {
    use palisade::keys::keystore::{KdfChoice, Keystore};
    let s = setup();
    let mut p = signer(&s, &[]);
    keys_loaded(&p).await;
    // Keys whose scrypt takes a while, so that the reload is still running when asked again.
    let password = std::fs::read_to_string(&s.password).unwrap();
    let mut extra = Vec::new();
    for n in 0..24u8 {
        let mut b = zeroize::Zeroizing::new([0u8; 32]);
        b[0] = 0x11;
        b[31] = n + 1;
        let sk = palisade::keys::SecretKey::from_bytes(&b).unwrap();
        let ks = Keystore::encrypt(&sk, &password, KdfChoice::Scrypt { log_n: 15 });
        std::fs::write(
            s.keystores.join(format!("slow-{n}.json")),
            serde_json::to_string(&ks).unwrap(),
        )
        .unwrap();
        extra.push(sk.public_key().to_string());
    }
    testkit::procs::signal(p.pid(), libc::SIGHUP);
    let log = p.wait_for_log("reloading keys from every source").await;
    assert!(log.contains("SIGHUP"), "{log}");
    // Each POST sent while the reload runs, by its state before and after, must be refused.
    let mut conflicts = 0;
    loop {
        if admin_get(&p, "/reload").await["status"] != "running" {
            break;
        }
        let (st, v) = admin(&p, Method::POST, "/reload", &json!({})).await;
        if admin_get(&p, "/reload").await["status"] == "running" && st != 202 {
            assert_eq!(st, 409, "{v}");
            assert_eq!(v["status"], "error", "{v}");
            conflicts += 1;
        } else if st == 202 {
            // Ours started after the SIGHUP's ended: wait for it too.
            reload_done(&p).await;
        }
    }
    assert!(conflicts > 0, "no reload was asked while one ran");
    let state = reload_done(&p).await;
    assert!(state["status"] == "completed", "{state}");
    let mut l = public_keys(&p).await;
    l.sort();
    let mut want: Vec<String> = testkit::interop_pubkeys()[..3].to_vec();
    want.extend(extra);
    want.sort();
    assert_eq!(l, want);
    for i in 0..3 {
        assert_eq!(status_of_sign(&p, i).await, 200, "key {i}");
    }
    assert_eq!(
        p.stop(libc::SIGTERM).map(|s| s.success()),
        Some(true),
        "SIGHUP must not end the process"
    );
}

/// `--keys-refresh-secs`: a keystore added to the folder is picked up without being asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_refresh_picks_up_new_keystores() {
    let s = setup();
    let p = signer(&s, &["--keys-refresh-secs", "1"]);
    keys_loaded(&p).await;
    copy_keystore(&s.keystores, 7);
    testkit::wait::until("the refresh loads key 7", Duration::from_secs(30), || async {
        (status_of_sign(&p, 7).await == 200).then_some(())
    })
    .await;
    assert_eq!(admin_get(&p, "/reload").await["trigger"], "refresh");
}

/// A definition's signing policy changed on disk applies with the reload (the key itself is
/// not unlocked again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_policy_applies_after_a_reload() {
    let s = setup();
    let p = signer(&s, &[]);
    keys_loaded(&p).await;
    assert_eq!(status_of_sign(&p, 2).await, 200);
    std::fs::write(
        s.definitions.join("key-2.yaml"),
        format!(
            "type: file-raw\nprivateKey: \"{}\"\ndeniedSigningTypes: [RANDAO_REVEAL]\n",
            testkit::interop_secret_keys()[2]
        ),
    )
    .unwrap();
    let (st, _) = admin(&p, Method::POST, "/reload", &json!({})).await;
    assert_eq!(st, 202);
    let state = reload_done(&p).await;
    assert_eq!(state["last"]["unchanged"], 3, "{state}");
    assert_eq!(status_of_sign(&p, 2).await, 403, "the new policy does not apply");
    assert_eq!(status_of_sign(&p, 1).await, 200);
}
