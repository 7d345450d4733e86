//! Chain pinning, processes, CLI.

use super::*;

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
    // Without --database-url, the commands use `serve`'s default database (in the folder
    // they run in), as an operator who never named one expects.
    let (ok, _, err) = run(&["slashing-protection", "import", "--from", "in.json"], w);
    assert!(ok, "{err}");
    assert!(w.join("palisade.sqlite").exists(), "{err}");
    let (ok, stdout, err) = run(&["slashing-protection", "export", "--to", "-"], w);
    assert!(ok, "{err}");
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

    // Long enough for scrypt (n = 2^18) on a loaded machine.
    let a = args("60000");
    let p = Palisade::serve(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (s, keys) = get(&p.url("/api/v1/eth2/publicKeys")).await;
    assert_eq!((s, keys), (200, json!([pk])), "a key being decrypted is listed");
    let (s, b) = post(&sign_url(&p, pk), randao(1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 200, "the request waits for the key: {b}");
    drop(p);

    let a = args("1");
    let p = Palisade::serve(&a.iter().map(String::as_str).collect::<Vec<_>>());
    // Both asked while scrypt still runs (about a second of CPU).
    let (s, b) = post(&sign_url(&p, pk), randao(1, MINIMAL_GVR).to_string()).await;
    let (_, h) = get(&p.url("/healthcheck")).await;
    assert_eq!(s, 503, "{b}");
    assert!(b["error"].as_str().unwrap().contains("not loaded yet"), "{b}");
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
