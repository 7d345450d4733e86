//! One key set for a PostgreSQL fleet: a keystore imported through the Key Manager API on one
//! replica signs on every replica, survives restarts, reaches replicas started later, and
//! leaves nothing in the database that unlocks it without the fleet secret.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use testkit::http::*;
use testkit::server::Palisade;

const KM: &str = "/eth/v1/keystores";

fn keystore(i: usize) -> String {
    std::fs::read_to_string(testkit::interop_dir().join(format!("keystore-{i}.json"))).unwrap()
}

fn password() -> String {
    std::fs::read_to_string(testkit::interop_dir().join("password.txt")).unwrap()
}

/// A fleet secret file (mode 0600): 32 distinct bytes from `seed`, as hex.
fn fleet_secret(dir: &Path, name: &str, seed: u8) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let f = dir.join(name);
    let bytes: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(seed)).collect();
    std::fs::write(&f, hex::encode(bytes)).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    f
}

/// A replica with no keys of its own, in `dir`, on `db`, with `secret` as its fleet secret.
fn replica(dir: &Path, db: &str, secret: Option<&Path>) -> Palisade {
    std::fs::create_dir_all(dir).unwrap();
    let net = minimal_network();
    let mut args = vec![
        "--network",
        net.as_str(),
        "--genesis-validators-root",
        MINIMAL_GVR,
        "--database-url",
        db,
    ];
    let secret = secret.map(|s| s.display().to_string());
    if let Some(s) = &secret {
        args.extend(["--shared-keystore-secret-file", s.as_str()]);
    }
    Palisade::serve_in(dir, &args)
}

async fn import(p: &Palisade, i: usize) -> Value {
    let (s, v) = admin(
        p,
        Method::POST,
        KM,
        &json!({"keystores": [keystore(i)], "passwords": [password()]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v
}

/// Signs a RANDAO reveal with key `i` until it works (keys imported elsewhere arrive with the
/// next database probe); how long that took.
async fn signs_within(p: &Palisade, i: usize, budget: Duration) -> Duration {
    let pk = testkit::interop_pubkeys()[i].clone();
    let start = Instant::now();
    testkit::wait::until(&format!("key {i} signs on {}", p.base), budget, || async {
        (post(&sign_url(p, &pk), randao(1, MINIMAL_GVR).to_string()).await.0 == 200).then_some(())
    })
    .await;
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_on_one_replica_signs_everywhere_and_survives_restarts() {
    let pg = testkit::pg::shared();
    let db = pg.new_database();
    let dir = tempfile::Builder::new()
        .prefix("palisade-fleet")
        .tempdir_in("/tmp")
        .unwrap();
    let secret = fleet_secret(dir.path(), "fleet-secret", 0x5e);
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let mut a = replica(&a_dir, &db, Some(&secret));
    let mut b = replica(&b_dir, &db, Some(&secret));
    let key = testkit::interop_pubkeys()[3].clone();
    assert_eq!(
        post(&sign_url(&b, &key), randao(1, MINIMAL_GVR).to_string()).await.0,
        404,
        "B signs a key nobody imported"
    );

    let v = import(&a, 3).await;
    assert_eq!(v["data"][0]["status"], "imported", "{v}");
    // On A at once; on B with its next probe (the bound deletions have: about 2 s).
    assert_eq!(
        post(&sign_url(&a, &key), randao(1, MINIMAL_GVR).to_string()).await.0,
        200
    );
    let took = signs_within(&b, 3, Duration::from_secs(30)).await;
    eprintln!("imported on A, signing on B after {took:?}");
    assert!(public_keys(&b).await.contains(&key));
    // B protects it like any key: the same attestation target with another root is refused
    // across the replicas.
    assert_eq!(
        post(&sign_url(&a, &key), attestation(1, 2, 1, MINIMAL_GVR).to_string())
            .await
            .0,
        200
    );
    assert_eq!(
        post(&sign_url(&b, &key), attestation(1, 2, 2, MINIMAL_GVR).to_string())
            .await
            .0,
        412
    );
    // And B's Key Manager lists it as deletable (it is the fleet's, not a file's).
    let km = admin_get(&b, KM).await;
    let entry = km["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["validating_pubkey"] == key.as_str())
        .unwrap();
    assert_eq!(entry["readonly"], false, "{km}");

    // Both restarted: both sign, from the database alone (nothing was written to their folders).
    a.stop(libc::SIGTERM);
    b.stop(libc::SIGTERM);
    for d in [&a_dir, &b_dir] {
        let km_dir = d.join("keymanager-keystores");
        assert!(
            !km_dir.exists() || std::fs::read_dir(&km_dir).unwrap().count() == 0,
            "a keystore was written to {}",
            km_dir.display()
        );
    }
    let a = replica(&a_dir, &db, Some(&secret));
    let b = replica(&b_dir, &db, Some(&secret));
    for p in [&a, &b] {
        keys_loaded(p).await;
        signs_within(p, 3, Duration::from_secs(30)).await;
    }
    // A replica started later, on a new host, signs too.
    let c = replica(&dir.path().join("c"), &db, Some(&secret));
    keys_loaded(&c).await;
    signs_within(&c, 3, Duration::from_secs(30)).await;
    let h = health(&c).await;
    assert_eq!(h["checks"][1]["data"]["failed"], 0, "{h}");

    // A copy of the database alone unlocks nothing: no password, no secret key, no fleet
    // secret anywhere in a plain dump.
    let dump = dir.path().join("dump.sql");
    let out = std::process::Command::new(pg_tool("pg_dump"))
        .args(["-Fp", "-d", &db, "-f", dump.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&dump).unwrap();
    let text = String::from_utf8_lossy(&bytes).to_lowercase();
    assert!(text.contains("shared_keystores"), "the dump has no shared keystores");
    assert!(
        text.contains(&key[2..]),
        "the dump does not hold the imported key's row"
    );
    let secret_hex = testkit::interop_secret_keys()[3]
        .trim_start_matches("0x")
        .to_lowercase();
    let secret_bytes = hex::decode(&secret_hex).unwrap();
    assert!(!text.contains(password().trim()), "the password is in the dump");
    assert!(!text.contains(&secret_hex), "the secret key (hex) is in the dump");
    assert!(
        !bytes.windows(32).any(|w| w == secret_bytes.as_slice()),
        "the secret key (bytes) is in the dump"
    );
    let fleet = std::fs::read_to_string(&secret).unwrap();
    assert!(!text.contains(fleet.trim()), "the fleet secret is in the dump");
}

fn pg_tool(name: &str) -> PathBuf {
    let dir = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).max());
    match dir {
        Some(d) if d.join(name).exists() => d.join(name),
        _ => name.into(),
    }
}

/// A replica given another fleet secret, or none, refuses to import (nothing would unlock it
/// elsewhere), says at startup which stored keys it cannot unlock, and is not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_the_fleet_secret_refuses_and_reports() {
    let db = testkit::pg::shared().new_database();
    let dir = tempfile::Builder::new()
        .prefix("palisade-fleet")
        .tempdir_in("/tmp")
        .unwrap();
    let secret = fleet_secret(dir.path(), "fleet-secret", 0xa1);
    let other = fleet_secret(dir.path(), "other-secret", 0xb2);
    let a = replica(&dir.path().join("a"), &db, Some(&secret));
    assert_eq!(import(&a, 2).await["data"][0]["status"], "imported");
    let key = testkit::interop_pubkeys()[2].clone();

    for (name, secret) in [("wrong", Some(other.as_path())), ("none", None)] {
        let d = replica(&dir.path().join(name), &db, secret);
        keys_loaded(&d).await;
        let v = import(&d, 5).await;
        assert_eq!(v["data"][0]["status"], "error", "{name}: {v}");
        let why = v["data"][0]["message"].as_str().unwrap();
        assert!(why.contains("--shared-keystore-secret-file"), "{name}: {why}");
        if name == "wrong" {
            assert!(why.contains("not the fleet secret"), "{why}");
        }
        // Nothing was stored by the refused import.
        assert_eq!(
            testkit::pg::shared()
                .psql(db.rsplit('/').next().unwrap(), "SELECT count(*) FROM shared_keystores")
                .trim(),
            "1"
        );
        // At startup it named the key it cannot unlock, and counts it as failed.
        let log = d.wait_for_log(&format!("shared keystore {key}")).await;
        assert!(log.contains("cannot unlock"), "{name}: {log}");
        let h = testkit::wait::until("the failure is counted", Duration::from_secs(30), || async {
            let h = health(&d).await;
            (h["checks"][1]["data"]["failed"] == 1).then_some(h)
        })
        .await;
        assert!(h.to_string().contains(&key), "{name}: {h}");
        let (s, _) = get(&d.url("/readyz")).await;
        assert_eq!(s, 503, "{name}: ready with a key it cannot unlock");
        assert_eq!(
            post(&sign_url(&d, &key), randao(1, MINIMAL_GVR).to_string()).await.0,
            404,
            "{name}: signed with a key it cannot unlock"
        );
    }
    // The fleet's replicas are unaffected.
    signs_within(&a, 2, Duration::from_secs(5)).await;
}

/// A deletion on one replica: every replica refuses the key (the database disables it), the
/// stored keystore is gone, and no replica loads it again, even after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_on_one_replica_removes_the_key_everywhere() {
    let pg = testkit::pg::shared();
    let db = pg.new_database();
    let db_name = db.rsplit('/').next().unwrap().to_string();
    let dir = tempfile::Builder::new()
        .prefix("palisade-fleet")
        .tempdir_in("/tmp")
        .unwrap();
    let secret = fleet_secret(dir.path(), "fleet-secret", 0xc3);
    let a_dir = dir.path().join("a");
    let mut a = replica(&a_dir, &db, Some(&secret));
    let b = replica(&dir.path().join("b"), &db, Some(&secret));
    import(&a, 6).await;
    let key = testkit::interop_pubkeys()[6].clone();
    signs_within(&b, 6, Duration::from_secs(30)).await;
    assert_eq!(
        post(&sign_url(&a, &key), attestation(3, 4, 1, MINIMAL_GVR).to_string())
            .await
            .0,
        200
    );

    let (s, v) = admin(&b, Method::DELETE, KM, &json!({"pubkeys": [key]})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"][0]["status"], "deleted", "{v}");
    // The protection data came back with it.
    assert!(v["slashing_protection"].as_str().unwrap().contains("\"4\""), "{v}");
    assert_eq!(pg.psql(&db_name, "SELECT count(*) FROM shared_keystores").trim(), "0");
    // A refuses at once for protected types (the database says disabled), and drops the key
    // with its next probe.
    let (s, e) = post(&sign_url(&a, &key), attestation(4, 5, 1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 412, "{e}");
    // (The listing hides disabled keys at once; the reread is what drops the key itself.)
    testkit::wait::until("A drops the deleted key", Duration::from_secs(30), || async {
        let log = a.log();
        log.lines()
            .any(|l| l.contains("key removed: its source no longer holds it") && l.contains(&key))
            .then_some(())
    })
    .await;
    assert!(!public_keys(&a).await.contains(&key));
    assert_ne!(
        post(&sign_url(&a, &key), randao(2, MINIMAL_GVR).to_string()).await.0,
        200
    );
    // Restarted, A does not load it again.
    a.stop(libc::SIGTERM);
    let a = replica(&a_dir, &db, Some(&secret));
    keys_loaded(&a).await;
    assert!(!public_keys(&a).await.contains(&key));
    // Imported again, it is enabled and signs again on both.
    assert_eq!(import(&a, 6).await["data"][0]["status"], "imported");
    signs_within(&b, 6, Duration::from_secs(30)).await;
}
