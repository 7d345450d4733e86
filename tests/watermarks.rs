//! No single request can end a validator, and a database that went back in time is caught:
//! the wall-clock window, audited repairs, the high watermark and each replica's memory of
//! what it committed, against the real binary on both backends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use testkit::http::*;
use testkit::server::Palisade;

const MAINNET_GVR: &str = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95";
const MAINNET_GENESIS: u64 = 1_606_824_023;

fn now_slot() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    (now - MAINNET_GENESIS) / 12
}

fn now_epoch() -> u64 {
    now_slot() / 32
}

fn fork() -> Value {
    json!({"fork": {"previous_version": "0x05000000", "current_version": "0x06000000", "epoch": "411392"},
           "genesis_validators_root": MAINNET_GVR})
}

fn att(source: u64, target: u64, root: u8) -> String {
    json!({"type": "ATTESTATION", "fork_info": fork(),
        "attestation": {"slot": (target * 32).to_string(), "index": "0",
            "beacon_block_root": format!("0x{}", hex::encode([root; 32])),
            "source": {"epoch": source.to_string(), "root": format!("0x{}", "11".repeat(32))},
            "target": {"epoch": target.to_string(), "root": format!("0x{}", "22".repeat(32))}}})
    .to_string()
}

fn block(slot: u64, root: u8) -> String {
    json!({"type": "BLOCK_V2", "fork_info": fork(),
        "beacon_block": {"version": "FULU", "block_header": {"slot": slot.to_string(), "proposer_index": "3",
            "parent_root": format!("0x{}", "33".repeat(32)), "state_root": format!("0x{}", hex::encode([root; 32])),
            "body_root": format!("0x{}", "44".repeat(32))}}})
    .to_string()
}

/// A mainnet signer with the interop keys in `workdir`, plus `extra` options.
fn signer(workdir: &std::path::Path, keys: &std::path::Path, pw: &std::path::Path, extra: &[&str]) -> Palisade {
    let mut args = key_args(keys, pw);
    args.extend(["--network", "mainnet"]);
    args.extend(extra);
    Palisade::serve_in(workdir, &args)
}

struct Setup {
    _guard: tempfile::TempDir,
    keys: std::path::PathBuf,
    pw: std::path::PathBuf,
    work: std::path::PathBuf,
}

fn setup() -> Setup {
    let (guard, keys, pw) = testkit::interop_keystores();
    let work = guard.path().join("work");
    std::fs::create_dir(&work).unwrap();
    Setup {
        _guard: guard,
        keys,
        pw,
        work,
    }
}

async fn metric(p: &Palisade, name: &str) -> f64 {
    let (_, text) = get(&p.url("/metrics")).await;
    let text = text.as_str().unwrap().to_string();
    text.lines()
        .filter(|l| l.starts_with(name))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

const BACKENDS: [&str; 2] = ["sqlite", "postgres"];

fn database(backend: &str) -> Option<String> {
    (backend == "postgres").then(|| testkit::pg::shared().new_database())
}

/// Far-future blocks and attestations are refused with their own reason, change nothing,
/// and the key signs its current duties; the window's edges hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_ahead_of_the_clock_are_refused() {
    for backend in BACKENDS {
        let s = setup();
        let url = database(backend);
        let mut extra = vec![];
        if let Some(u) = &url {
            extra.extend(["--database-url", u.as_str()]);
        }
        let p = signer(&s.work, &s.keys, &s.pw, &extra);
        keys_loaded(&p).await;
        assert!(p.log().contains("clock window on"), "{}", p.log());
        let sign = sign_url(&p, &testkit::interop_pubkeys()[0]);
        assert_eq!(
            metric(
                &p,
                "palisade_slashing_refusals_total{type=\"ATTESTATION\",reason=\"ahead_of_clock\",risk=\"clock\"}"
            )
            .await,
            0.0
        );

        let (s1, b) = post(&sign, att(now_epoch(), 418_750_000_000, 1)).await;
        assert_eq!(s1, 412, "{backend}: {b}");
        assert!(b["error"].as_str().unwrap().contains("ahead of the wall clock"), "{b}");
        assert_eq!(post(&sign, block(10_000_000_000_000, 1)).await.0, 412);
        assert_eq!(
            metric(
                &p,
                "palisade_slashing_refusals_total{type=\"ATTESTATION\",reason=\"ahead_of_clock\",risk=\"clock\"}"
            )
            .await,
            1.0
        );

        // Edges: 2 slots ahead start within 24 s of now, 5 slots ahead at least 48 s after
        // (18 s of margin for a slow machine between reading the clock and the answer).
        let now = now_slot();
        assert_eq!(
            post(&sign, block(now + 2, 2)).await.0,
            200,
            "{backend}: inside the window"
        );
        let (s4, b) = post(&sign, block(now + 5, 2)).await;
        assert_eq!(s4, 412, "{backend}: past the window: {b}");
        // The key still signs its real duties: nothing was recorded for the refused ones.
        assert_eq!(
            post(&sign, att(now_epoch() - 1, now_epoch(), 1)).await.0,
            200,
            "{backend}"
        );
        let export = admin_get(&p, "/api/v1/eth2/slashing-protection/export").await;
        assert!(!export.to_string().contains("418750000000"), "{export}");
    }
}

/// A custom network without a genesis time keeps working, with the window off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_genesis_time_means_no_window() {
    let (_k, p) = signer_with_interop_keys(&[]);
    assert!(p.log().contains("clock window off"), "{}", p.log());
    let sign = sign_url(&p, &testkit::interop_pubkeys()[0]);
    assert_eq!(
        post(&sign, attestation(1, 1_000_000_000, 1, MINIMAL_GVR).to_string())
            .await
            .0,
        200
    );
}

async fn repair(p: &Palisade, body: Value) -> (u16, Value) {
    admin(p, Method::POST, "/api/v1/eth2/slashing-protection/repair", &body).await
}

/// A key bricked by a far-future attestation and block (signed while the window was off) is
/// repaired: without confirmation nothing changes; a repair that would discard a message
/// whose slot has passed is refused; the repair makes the key sign again, and the discarded
/// messages are gone from the export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bricked_key_is_repaired() {
    for backend in BACKENDS {
        let s = setup();
        let url = database(backend);
        let mut extra = vec![];
        if let Some(u) = &url {
            extra.extend(["--database-url", u.as_str()]);
        }
        let key = testkit::interop_pubkeys()[1].clone();
        let e = now_epoch();
        let mut off = extra.clone();
        off.extend(["--future-tolerance-secs", "off"]);
        let mut p = signer(&s.work, &s.keys, &s.pw, &off);
        keys_loaded(&p).await;
        assert_eq!(post(&sign_url(&p, &key), att(e - 3, e - 2, 1)).await.0, 200);
        assert_eq!(post(&sign_url(&p, &key), att(e - 2, 418_750_000_000, 1)).await.0, 200);
        assert_eq!(post(&sign_url(&p, &key), block(10_000_000_000_000, 1)).await.0, 200);
        p.stop(libc::SIGTERM);

        let p = signer(&s.work, &s.keys, &s.pw, &extra);
        keys_loaded(&p).await;
        let sign = sign_url(&p, &key);
        assert_eq!(post(&sign, att(e - 1, e, 1)).await.0, 412, "{backend}: not bricked?");

        let ask = json!({"pubkeys": [key], "attestation_source": (e - 3).to_string(),
                         "attestation_target": (e - 2).to_string(), "block_slot": "0", "reason": "signed with a bad clock"});
        let (st, b) = repair(&p, ask.clone()).await;
        assert_eq!(st, 400, "{b}");
        assert!(b["error"].as_str().unwrap().contains("confirm"), "{b}");
        assert_eq!(
            post(&sign, att(e - 1, e, 1)).await.0,
            412,
            "{backend}: changed without confirmation"
        );

        // Lowering the attestation watermark below target e-2, which has passed, is refused.
        let mut too_low = ask.clone();
        too_low["confirm"] = true.into();
        too_low["attestation_source"] = (e - 6).to_string().into();
        too_low["attestation_target"] = (e - 5).to_string().into();
        let (st, b) = repair(&p, too_low).await;
        assert_eq!(st, 409, "{backend}: {b}");
        assert!(b["error"].as_str().unwrap().contains("may have been broadcast"), "{b}");

        let mut ok = ask.clone();
        ok["confirm"] = true.into();
        let (st, b) = repair(&p, ok).await;
        assert_eq!(st, 200, "{backend}: {b}");
        assert_eq!(
            b["data"][0]["discarded_attestations"].as_array().unwrap().len(),
            1,
            "{b}"
        );
        assert_eq!(b["data"][0]["discarded_blocks"].as_array().unwrap().len(), 1, "{b}");
        assert_eq!(
            post(&sign, att(e - 1, e, 1)).await.0,
            200,
            "{backend}: still bricked after the repair"
        );
        assert_eq!(post(&sign, block(now_slot(), 1)).await.0, 200, "{backend}");
        // What was really signed stays protected.
        assert_eq!(post(&sign, att(e - 3, e - 2, 9)).await.0, 412);
        let export = admin_get(&p, "/api/v1/eth2/slashing-protection/export").await;
        assert!(!export.to_string().contains("418750000000"), "{export}");
        assert!(!export.to_string().contains("10000000000000"), "{export}");
        assert!(p.log().contains("watermarks repaired"), "{}", p.log());
    }
}

/// Concurrent signings on two replicas race a repair of the key they sign for: nothing
/// slashable is ever signed (among what was not deliberately discarded), and signing resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_racing_signings_never_signs_a_slashable_pair() {
    let s = setup();
    let url = testkit::pg::shared().new_database();
    let a = signer(&s.work, &s.keys, &s.pw, &["--database-url", &url]);
    let work_b = s.work.join("b");
    std::fs::create_dir(&work_b).unwrap();
    let b = signer(&work_b, &s.keys, &s.pw, &["--database-url", &url]);
    keys_loaded(&a).await;
    keys_loaded(&b).await;
    let key = testkit::interop_pubkeys()[2].clone();
    let e = now_epoch();
    // Bricked by an imported far-future attestation.
    let bogus = json!({"metadata": {"interchange_format_version": "5", "genesis_validators_root": MAINNET_GVR},
        "data": [{"pubkey": key, "signed_blocks": [],
                  "signed_attestations": [{"source_epoch": (e - 20).to_string(), "target_epoch": "418750000000"}]}]});
    let (st, r) = admin(&a, Method::POST, "/api/v1/eth2/slashing-protection/import", &bogus).await;
    assert_eq!(st, 200, "{r}");

    let urls = [sign_url(&a, &key), sign_url(&b, &key)];
    // Every task signs on until it has sent 20 requests after the repair: a slow machine
    // changes how many, not whether the repair races them.
    let sent = Arc::new(AtomicU64::new(0));
    let repaired = Arc::new(AtomicBool::new(false));
    let guard = std::time::Instant::now() + Duration::from_secs(120);
    let mut tasks = Vec::new();
    for t in 0..6u64 {
        let urls = urls.clone();
        let (sent, repaired) = (sent.clone(), repaired.clone());
        tasks.push(tokio::spawn(async move {
            let mut signed = Vec::new();
            let mut i = 0u64;
            let mut after = 0;
            while after < 20 && std::time::Instant::now() < guard {
                i += 1;
                let target = e - (i + t) % 4;
                let source = target - 1 - (i * 7 + t) % 3;
                let root = ((i * 31 + t * 7) % 5) as u8;
                let was_repaired = repaired.load(Ordering::SeqCst);
                let (status, _) = post(&urls[((i + t) % 2) as usize], att(source, target, root)).await;
                sent.fetch_add(1, Ordering::SeqCst);
                if was_repaired {
                    after += 1;
                }
                if status == 200 {
                    signed.push((source, target, root));
                }
            }
            signed
        }));
    }
    // The repair lands while all six are busy signing (and being refused).
    testkit::wait::until("signings under way", Duration::from_secs(60), || async {
        (sent.load(Ordering::SeqCst) >= 24).then_some(())
    })
    .await;
    let (st, r) = repair(
        &a,
        json!({"pubkeys": [key], "attestation_source": (e - 10).to_string(), "attestation_target": (e - 9).to_string(),
               "reason": "imported a bad file", "confirm": true}),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    repaired.store(true, Ordering::SeqCst);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert!(!all.is_empty(), "nothing was signed after the repair");
    all.sort();
    all.dedup();
    for (i, x) in all.iter().enumerate() {
        for y in &all[i + 1..] {
            let double = x.1 == y.1 && x.2 != y.2;
            let surround = (x.0 < y.0 && y.1 < x.1) || (y.0 < x.0 && x.1 < y.1);
            assert!(!double && !surround, "slashable pair signed: {x:?} and {y:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_high_watermark_bounds_signing_until_cleared() {
    let s = setup();
    let p = signer(&s.work, &s.keys, &s.pw, &[]);
    keys_loaded(&p).await;
    let keys = testkit::interop_pubkeys();
    let (e, now) = (now_epoch(), now_slot());
    assert_eq!(get(&p.url("/api/v1/eth2/highWatermark")).await.1, json!({}));
    let (st, _) = admin(
        &p,
        Method::POST,
        "/api/v1/eth2/highWatermark",
        &json!({"slot": (now - 64).to_string(), "epoch": (e - 1).to_string()}),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        get(&p.url("/api/v1/eth2/highWatermark")).await.1,
        json!({"slot": (now - 64).to_string(), "epoch": (e - 1).to_string()})
    );
    let sign = sign_url(&p, &keys[0]);
    let (st, b) = post(&sign, block(now, 1)).await;
    assert_eq!(st, 412, "{b}");
    assert!(b["error"].as_str().unwrap().contains("high watermark"), "{b}");
    assert_eq!(post(&sign, att(e - 2, e - 1, 1)).await.0, 412);
    assert_eq!(
        post(&sign, att(e - 3, e - 2, 1)).await.0,
        200,
        "below the high watermark"
    );
    // Setting requires the token; reading does not.
    assert_eq!(post(&p.url("/api/v1/eth2/highWatermark"), "{}").await.0, 401);

    assert_eq!(
        admin(&p, Method::DELETE, "/api/v1/eth2/highWatermark", &json!({}))
            .await
            .0,
        200
    );
    assert_eq!(post(&sign, block(now, 1)).await.0, 200);
    // For one key only.
    let one = json!({"slot": "1", "epoch": "1", "pubkeys": [keys[1]]});
    assert_eq!(admin(&p, Method::POST, "/api/v1/eth2/highWatermark", &one).await.0, 200);
    assert_eq!(post(&sign_url(&p, &keys[1]), block(now, 1)).await.0, 412);
    assert_eq!(post(&sign_url(&p, &keys[3]), block(now, 1)).await.0, 200);
}

/// A `pg_dump` taken earlier is restored under running replicas, which are then restarted:
/// no replica signs at or below what it had committed, the rollback is counted, and the
/// database is repaired by the replicas, so that even a replica that signed nothing is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restored_from_a_backup_is_caught() {
    let pg = testkit::pg::shared();
    let s = setup();
    let url = pg.new_database();
    let args = ["--database-url", url.as_str()];
    let work_b = s.work.join("b");
    std::fs::create_dir(&work_b).unwrap();
    let mut a = signer(&s.work, &s.keys, &s.pw, &args);
    let mut b = signer(&work_b, &s.keys, &s.pw, &args);
    keys_loaded(&a).await;
    keys_loaded(&b).await;
    assert_eq!(
        metric(&a, "palisade_database_rollbacks_total").await,
        0.0,
        "series missing at startup"
    );
    let key = testkit::interop_pubkeys()[4].clone();
    let t = now_epoch() - 10;
    assert_eq!(post(&sign_url(&a, &key), att(t - 1, t, 1)).await.0, 200);
    let dump = s.work.join("backup.dump");
    pg.dump(&url, &dump);
    assert_eq!(post(&sign_url(&a, &key), att(t, t + 1, 1)).await.0, 200);
    assert_eq!(post(&sign_url(&b, &key), att(t + 1, t + 2, 1)).await.0, 200);
    assert_eq!(post(&sign_url(&a, &key), att(t + 2, t + 3, 1)).await.0, 200);

    pg.restore(&url, &dump);
    // Under the running replicas: each refuses at or below its own record.
    for (p, target) in [(&a, t + 3), (&b, t + 2)] {
        let status = testkit::wait::until("a refusal after the restore", Duration::from_secs(60), || async {
            let status = post(&sign_url(p, &key), att(target - 1, target, 7)).await.0;
            (status != 503).then_some(status)
        })
        .await;
        assert_eq!(status, 412, "a replica signed at or below what it had committed");
    }
    // A, which committed the most, finds the database behind its record once it reconnects
    // (B may find nothing if A has written back first).
    testkit::wait::until("replica A counts the rollback", Duration::from_secs(60), || async {
        (metric(&a, "palisade_database_rollbacks_total").await >= 1.0).then_some(())
    })
    .await;
    assert!(
        a.log().contains("holds less than this replica committed"),
        "{}",
        a.log()
    );
    a.stop(libc::SIGTERM);
    b.stop(libc::SIGTERM);
    let a = signer(&s.work, &s.keys, &s.pw, &args);
    let b = signer(&work_b, &s.keys, &s.pw, &args);
    for (p, target) in [(&a, t + 3), (&b, t + 2), (&a, t + 1)] {
        assert_eq!(
            post(&sign_url(p, &key), att(target - 1, target, 8)).await.0,
            412,
            "after the restart"
        );
    }
    // The database was written back: a replica that never signed for the key is held too.
    let work_c = s.work.join("c");
    std::fs::create_dir(&work_c).unwrap();
    let c = signer(&work_c, &s.keys, &s.pw, &args);
    keys_loaded(&c).await;
    for target in [t + 1, t + 2, t + 3] {
        assert_eq!(
            post(&sign_url(&c, &key), att(target - 1, target, 9)).await.0,
            412,
            "target {target}"
        );
    }
    assert_eq!(post(&sign_url(&c, &key), att(t + 3, t + 4, 9)).await.0, 200);
}
