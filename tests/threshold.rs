//! `palisade keys split|combine` with the real binary: an interop key split 3-of-4 into share
//! keystores that each open with their own password and match the published verification
//! vector; any 3 shares give the original secret back, 2 do not; bad input changes nothing.

use std::path::Path;

use serde_json::Value;
use testkit::server::run;

/// Interop key 0's keystore and (private) password file, its public and secret key.
fn interop_key0() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    String,
    String,
) {
    let dir = testkit::data_dir().join("test-keys/interop");
    let keys: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("keys.json")).unwrap()).unwrap();
    let k = &keys["keys"][0];
    let (guard, ks, pw) = testkit::interop_keystores();
    (
        guard,
        ks.join(k["keystore"].as_str().unwrap()),
        pw,
        k["pubkey"].as_str().unwrap().to_string(),
        k["secret_key"].as_str().unwrap().to_string(),
    )
}

fn secret_of(keystore: &Path, password: &Path) -> String {
    let json = std::fs::read_to_string(keystore).unwrap();
    let pw = std::fs::read_to_string(password).unwrap();
    let sk = palisade::keys::keystore::Keystore::from_json(&json)
        .unwrap()
        .decrypt(pw.lines().next().unwrap())
        .unwrap();
    format!("0x{}", hex::encode(*sk.to_bytes()))
}

#[test]
fn a_key_split_3_of_4_comes_back_from_any_3_shares() {
    let (_keys, keystore, password, pubkey, secret) = interop_key0();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("shares");
    let (ok, stdout, err) = run(
        &[
            "keys",
            "split",
            "--keystore",
            keystore.to_str().unwrap(),
            "--password-file",
            password.to_str().unwrap(),
            "--threshold",
            "3",
            "--shares",
            "4",
            "--output-dir",
            out.to_str().unwrap(),
            "--pbkdf2-rounds",
            "1024",
        ],
        work.path(),
    );
    assert!(ok, "{err}");
    assert!(stdout.contains(&pubkey), "{stdout}");
    let group: Value = serde_json::from_str(&std::fs::read_to_string(out.join("group.json")).unwrap()).unwrap();
    assert_eq!(group["group_public_key"], pubkey.as_str());
    assert_eq!(group["verification_vector"].as_array().unwrap().len(), 3);
    let mut share_secrets = Vec::new();
    for i in 1..=4 {
        let dir = out.join(format!("share-{i}"));
        let ks = dir.join("keystore.json");
        let meta: Value = serde_json::from_str(&std::fs::read_to_string(&ks).unwrap()).unwrap();
        assert_eq!(meta["threshold"]["index"], i);
        assert_eq!(meta["crypto"]["kdf"]["params"]["c"], 1024);
        assert_eq!(meta["threshold"]["group_public_key"], pubkey.as_str());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join("password.txt")).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        // Each share opens with its own password only, and is the share the vector commits to.
        let s = secret_of(&ks, &dir.join("password.txt"));
        let sk = blst::min_pk::SecretKey::from_bytes(&hex::decode(&s[2..]).unwrap()).unwrap();
        let share_pk = format!("0x{}", hex::encode(sk.sk_to_pk().to_bytes()));
        assert_eq!(group["share_public_keys"][i - 1], share_pk.as_str());
        assert_ne!(s, secret, "share {i} is the whole key");
        share_secrets.push(s);
    }
    let other_pw = out.join("share-2/password.txt");
    let json = std::fs::read_to_string(out.join("share-1/keystore.json")).unwrap();
    assert!(
        palisade::keys::keystore::Keystore::from_json(&json)
            .unwrap()
            .decrypt(std::fs::read_to_string(&other_pw).unwrap().trim())
            .is_err(),
        "share 1 opened with share 2's password"
    );

    let share = |i: u32| {
        format!(
            "{}:{}",
            out.join(format!("share-{i}/keystore.json")).display(),
            out.join(format!("share-{i}/password.txt")).display()
        )
    };
    let new_pw = work.path().join("new-password.txt");
    palisade::fsutil::write_private(&new_pw, b"recovered-password", palisade::fsutil::Existing::Replace).unwrap();
    for (n, picked) in [[1, 2, 3], [1, 2, 4], [1, 3, 4], [2, 3, 4]].iter().enumerate() {
        let recovered = work.path().join(format!("recovered-{n}.json"));
        let mut args: Vec<String> = ["keys", "combine"].map(String::from).to_vec();
        for i in picked {
            args.extend(["--share".to_string(), share(*i)]);
        }
        args.extend([
            "--output".into(),
            recovered.display().to_string(),
            "--output-password-file".into(),
            new_pw.display().to_string(),
            "--pbkdf2-rounds".into(),
            "1024".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, err) = run(&args, work.path());
        assert!(ok, "{picked:?}: {err}");
        assert_eq!(secret_of(&recovered, &new_pw), secret, "shares {picked:?}");
    }
    // Two shares are not enough, and nothing is written.
    let two = work.path().join("two.json");
    let args = [
        "keys",
        "combine",
        "--share",
        &share(1),
        "--share",
        &share(4),
        "--output",
        two.to_str().unwrap(),
        "--output-password-file",
        new_pw.to_str().unwrap(),
    ];
    let (ok, _, err) = run(&args, work.path());
    assert!(!ok && err.contains("2 shares"), "{err}");
    assert!(!two.exists());
}

#[test]
fn bad_input_names_the_problem_and_writes_nothing() {
    let (_keys, keystore, password, _, _) = interop_key0();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("shares");
    let split = |t: &str, n: &str, pw: &Path| {
        run(
            &[
                "keys",
                "split",
                "--keystore",
                keystore.to_str().unwrap(),
                "--password-file",
                pw.to_str().unwrap(),
                "--threshold",
                t,
                "--shares",
                n,
                "--output-dir",
                out.to_str().unwrap(),
                "--pbkdf2-rounds",
                "1024",
            ],
            work.path(),
        )
    };
    let (ok, _, err) = split("5", "4", &password);
    assert!(!ok && err.contains("threshold 5 of 4"), "{err}");
    let wrong = work.path().join("wrong.txt");
    palisade::fsutil::write_private(&wrong, b"not-the-password", palisade::fsutil::Existing::Replace).unwrap();
    let (ok, _, err) = split("2", "3", &wrong);
    assert!(
        !ok && err.contains("wrong password") && err.contains(keystore.to_str().unwrap()),
        "{err}"
    );
    assert!(!out.exists(), "a folder was left behind");
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        1,
        "scratch left behind (only wrong.txt may be there)"
    );
    std::fs::create_dir(&out).unwrap();
    let (ok, _, err) = split("2", "3", &password);
    assert!(!ok && err.contains("exists already"), "{err}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
}
