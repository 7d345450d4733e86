//! The chain pin: only a legitimate request (a loaded key, a type whose domain uses the
//! genesis validators root, a non-zero root) or a deliberate import pins a database.

use serde_json::json;
use testkit::http::*;
use testkit::server::{Palisade, run};

async fn pinned(p: &Palisade) -> serde_json::Value {
    get(&p.url("/healthcheck")).await.1["chain"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_legitimate_requests_pin_the_chain() {
    let (guard, ks, pw) = testkit::interop_keystores();
    let mut args = key_args(&ks, &pw);
    // The built-in minimal network has no genesis validators root.
    args.extend(["--network", "minimal"]);
    let workdir = guard.path().join("work");
    std::fs::create_dir(&workdir).unwrap();
    let mut p = Palisade::serve_in(&workdir, &args);
    keys_loaded(&p).await;
    let keys = testkit::interop_pubkeys();
    let sign = sign_url(&p, &keys[0]);
    let zero = format!("0x{}", "00".repeat(32));

    // Nimbus's registration (zero root in fork_info) and a deposit sign, and pin nothing.
    let (s, b) = post(&sign, registration_nimbus(&keys[0]).to_string()).await;
    assert_eq!(s, 200, "{b}");
    let deposit = json!({"type": "DEPOSIT", "deposit": {"pubkey": keys[0],
        "withdrawal_credentials": format!("0x00{}", "11".repeat(31)), "amount": "32000000000",
        "genesis_fork_version": "0x00000001"}});
    assert_eq!(post(&sign, deposit.to_string()).await.0, 200);
    assert!(pinned(&p).await.is_null());

    // A request for a key this signer does not hold pins nothing.
    let unknown = "0xb0e7791fb972fe014159aa33a98622da3cdc98ff707965e536d8636b5fcc5ac7a91a8c46e59a00dca575af0f18fb13dc";
    let other = format!("0x{}", "66".repeat(32));
    assert_eq!(post(&sign_url(&p, unknown), randao(1, &other).to_string()).await.0, 404);
    assert!(pinned(&p).await.is_null());
    // Nor does the zero root, for a key it holds.
    let (s, b) = post(&sign, randao(1, &zero).to_string()).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["error"].as_str().unwrap().contains("zero"), "{b}");
    assert!(pinned(&p).await.is_null());

    // The first real request pins, for good.
    assert_eq!(post(&sign, randao(1, MINIMAL_GVR).to_string()).await.0, 200);
    assert_eq!(pinned(&p).await, MINIMAL_GVR);
    p.stop(libc::SIGTERM);
    let p = Palisade::serve_in(&workdir, &args);
    keys_loaded(&p).await;
    let sign = sign_url(&p, &keys[0]);
    assert_eq!(post(&sign, randao(2, &other).to_string()).await.0, 400);
    assert_eq!(post(&sign, registration_nimbus(&keys[0]).to_string()).await.0, 200);
    assert_eq!(post(&sign, randao(2, MINIMAL_GVR).to_string()).await.0, 200);
}

fn interchange(gvr: &str, pubkey: &str) -> String {
    json!({
        "metadata": {"interchange_format_version": "5", "genesis_validators_root": gvr},
        "data": [{"pubkey": pubkey, "signed_blocks": [{"slot": "12"}], "signed_attestations": []}]
    })
    .to_string()
}

#[test]
fn the_import_command_checks_the_chain_and_says_when_it_pins() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let key = &testkit::interop_pubkeys()[0];
    let db = format!("sqlite://{}", w.join("p.sqlite").display());
    let zero = format!("0x{}", "00".repeat(32));
    std::fs::write(w.join("zero.json"), interchange(&zero, key)).unwrap();
    std::fs::write(w.join("dev.json"), interchange(MINIMAL_GVR, key)).unwrap();
    let net = minimal_network();
    let import = |file: &str, extra: &[&str]| {
        let mut args = vec!["slashing-protection", "import", "--database-url", &db, "--from", file];
        args.extend(extra);
        run(&args, w)
    };

    // A file for another chain than the configured network: refused, nothing pinned.
    let (ok, _, err) = import("dev.json", &["--network", "mainnet"]);
    assert!(!ok);
    assert!(err.contains("mainnet") && err.contains("nothing was imported"), "{err}");
    // The zero root never pins.
    let (ok, _, err) = import("zero.json", &[]);
    assert!(!ok);
    assert!(err.contains("zero"), "{err}");
    // An empty database is pinned to the file's chain, and the command says so.
    let (ok, _, err) = import("dev.json", &["--network", &net]);
    assert!(ok, "{err}");
    assert!(err.contains("pinned it to genesis validators root"), "{err}");
    // Pinned now: another chain is refused, the same one imports without a word about pins.
    let (ok, _, err) = import("zero.json", &[]);
    assert!(!ok, "{err}");
    let (ok, _, err) = import("dev.json", &[]);
    assert!(ok, "{err}");
    assert!(!err.contains("pinned it"), "{err}");
}
