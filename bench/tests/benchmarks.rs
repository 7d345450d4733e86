//! Every `palisade-bench` mode runs to the end at a tiny size, and what it sends is answered as
//! it should be. The numbers are not checked here (benchmarks print them; README has them):
//! this catches a benchmark that panics or measures refusals instead of signatures.

use std::process::Command;

/// One benchmark at a time: each loads every core, and run side by side they would slow each
/// other into timeouts that say nothing about the code.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Far above any smoke run's time on a loaded 2-core machine (the longest takes about 60 s).
const BENCH_BUDGET: std::time::Duration = std::time::Duration::from_secs(600);

fn bench(args: &[&str]) -> String {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Output to files, so that a run that overstays can be killed and its output still shown.
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade-bench"))
        .args(args)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("running palisade-bench");
    let deadline = std::time::Instant::now() + BENCH_BUDGET;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    println!("palisade-bench {}\n{stdout}", args.join(" "));
    let Some(status) = status else {
        panic!("palisade-bench {args:?} still ran after {BENCH_BUDGET:?}; killed:\n{stdout}\n{stderr}")
    };
    assert!(status.success(), "palisade-bench {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// The line of a per-type table that starts with `kind`: (sent, 200, 412, 5xx, errors).
fn row(stdout: &str, kind: &str) -> (u64, u64, u64, u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with(kind) && l.trim_start()[kind.len()..].starts_with("  "))
        .unwrap_or_else(|| panic!("no `{kind}` row in:\n{stdout}"));
    let n: Vec<u64> = line.trim_start()[kind.len()..]
        .split_whitespace()
        .take(5)
        .map(|x| x.parse().unwrap())
        .collect();
    (n[0], n[1], n[2], n[3], n[4])
}

/// Every `statuses {..}` map printed holds only 200s.
fn only_200s(stdout: &str) {
    let maps: Vec<&str> = stdout
        .split("statuses {")
        .skip(1)
        .map(|r| r.split('}').next().unwrap())
        .collect();
    assert!(!maps.is_empty(), "no statuses printed:\n{stdout}");
    for m in maps {
        assert!(
            m.split(", ").all(|kv| kv.starts_with("200: ")),
            "a status other than 200 ({m}):\n{stdout}"
        );
    }
}

#[test]
fn blst_and_http_modes() {
    let out = bench(&["blst", "--seconds", "0.3"]);
    assert!(out.contains("raw blst, 1 core:"), "{out}");
    let out = bench(&["http", "--seconds", "1", "--connections", "4", "--keys", "4"]);
    only_200s(&out);
    assert!(out.contains("transport errors 0"), "{out}");
}

#[test]
fn protection_mode_signs_everything_it_sends() {
    let out = bench(&[
        "protection",
        "--seconds",
        "1",
        "--validators",
        "20",
        "--clients",
        "2,8",
        "--replicas",
        "1,2",
        "--history-rows",
        "200",
    ]);
    only_200s(&out);
    assert_eq!(out.matches("  check with ").count(), 2, "{out}");
    assert_eq!(out.matches("errors 0").count(), 4, "{out}");
}

#[test]
fn load_burst_and_rate_modes() {
    let out = bench(&["load", "--burst", "30", "--validators", "30"]);
    assert!(out.contains("30 signed"), "{out}");
    let out = bench(&[
        "load",
        "--rate",
        "50",
        "--seconds",
        "1",
        // One attestation per validator: two for one validator sent 20 ms apart could be
        // answered out of order on a loaded machine, and the later target refuses the earlier.
        "--validators",
        "50",
        "--history-rows",
        "100",
    ]);
    assert_eq!(row(&out, "ATTESTATION"), (50, 50, 0, 0, 0), "{out}");
}

#[test]
fn load_saturate_mode() {
    let out = bench(&["load", "--saturate", "--seconds", "1", "--validators", "8"]);
    only_200s(&out);
    assert!(out.contains("ratio"), "{out}");
}

#[test]
fn load_mainnet_shape_refuses_every_conflicting_duplicate() {
    let out = bench(&[
        "load",
        "--validators",
        "64",
        "--slots",
        "2",
        "--slot-seconds",
        "1",
        "--duplicates",
        "1",
    ]);
    let (sent, signed, refused, fivexx, errors) = row(&out, "ATTESTATION (duplicate)");
    assert!(sent > 0, "{out}");
    // Each duplicate conflicts with an original: of each pair exactly one is signed.
    let (orig_sent, orig_signed, orig_refused, ..) = row(&out, "ATTESTATION");
    assert_eq!((fivexx, errors), (0, 0), "{out}");
    assert_eq!(orig_sent, sent, "{out}");
    assert_eq!(signed + orig_signed, sent, "{out}");
    assert_eq!(refused + orig_refused, sent, "{out}");
    for kind in [
        "BLOCK_V2",
        "RANDAO_REVEAL",
        "AGGREGATION_SLOT",
        "SYNC_COMMITTEE_MESSAGE",
    ] {
        let (s, ok, ..) = row(&out, kind);
        assert!(s > 0 && s == ok, "{kind}: {out}");
    }
}

#[test]
fn keystores_mode_loads_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = bench(&[
        "keystores",
        "--count",
        "4",
        "--kdf",
        "pbkdf2",
        "--dir",
        dir.path().to_str().unwrap(),
        "--load-seconds",
        "1",
    ]);
    assert!(out.contains("all keys usable:"), "{out}");
    only_200s(&out);
}

#[test]
fn failover_mode_answers_every_request_through_haproxy() {
    // Needs haproxy (Debian: apt-get install haproxy; .ci/run installs it).
    let out = bench(&[
        "failover",
        "--clients",
        "2",
        "--validators",
        "4",
        // Long enough for the readiness probe (1 s timeout) to notice a silent partition.
        "--fault-seconds",
        "3",
        "--calm-seconds",
        "1",
    ]);
    only_200s(&out);
    // Both replicas served before the fault, and A was taken out of rotation and came back.
    assert!(out.contains(r#""p1": "#) && out.contains(r#""p2": "#), "{out}");
    assert_eq!(out.matches("A's /readyz: 503 after ").count(), 2, "{out}");
    assert!(!out.contains("never"), "{out}");
}

#[test]
fn stores_mode_loads_keys_from_moto_and_locally() {
    // Needs moto (pip install 'moto[server]'; .ci/run installs it).
    let out = bench(&["stores", "--count", "20", "--pbkdf2-c", "1024"]);
    for source in [
        "AWS Secrets Manager (moto), bulk:",
        "local file-raw definitions:",
        "local keystores",
    ] {
        assert!(out.contains(source), "{source}: {out}");
    }
}

#[test]
fn reload_mode_reloads_while_signing() {
    let out = bench(&["reload", "--count", "40", "--pbkdf2-c", "1024", "--connections", "2"]);
    assert!(out.contains("all keys usable: true"), "{out}");
    only_200s(&out);
}

#[test]
fn attack_mode_signs_through_the_flood() {
    let out = bench(&[
        "attack",
        "--idle",
        "300",
        "--large",
        "20",
        "--seconds",
        "2",
        "--connections",
        "2",
    ]);
    only_200s(&out);
    assert!(
        out.contains("new connections during the attack: 50 of 50 signed"),
        "{out}"
    );
}
