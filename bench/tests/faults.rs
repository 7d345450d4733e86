//! The fault-injection harness in its short form (CI). Run it longer by hand:
//! `cargo build --release && target/release/palisade-bench faults --seconds 600`.

use std::process::Command;

#[test]
fn replicas_survive_faults_without_signing_anything_slashable() {
    let out = Command::new(env!("CARGO_BIN_EXE_palisade-bench"))
        .args([
            "faults",
            "--seconds",
            "44",
            "--replicas",
            "3",
            "--clients",
            "4",
            "--validators",
            "12",
        ])
        .output()
        .expect("running palisade-bench faults");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "fault run failed:\n{stdout}\n{stderr}");
    for kind in [
        "cold start together",
        "kill",
        "database restart",
        "connection cut",
        "pause",
        "backup restored",
    ] {
        assert!(
            stdout.contains(&format!("\"{kind}\"")),
            "fault `{kind}` was not injected:\n{stdout}"
        );
    }
    assert!(stdout.contains("slashable pairs 0"), "{stdout}");
}
