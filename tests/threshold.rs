//! `palisade keys split|combine` with the real binary: an interop key split 3-of-4 into share
//! keystores that each open with their own password and match the published verification
//! vector; any 3 shares give the original secret back, 2 do not; bad input changes nothing.

use std::path::Path;

use serde_json::{Value, json};
use testkit::http::{MINIMAL_GVR, attestation, minimal_network, post, sign_url};
use testkit::server::{Palisade, run};

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

/// `palisade keys split` of `keystore` 3-of-4 into `out` (cheap KDF): (succeeded, stdout, stderr).
fn split_3_of_4(keystore: &Path, password: &Path, out: &Path, workdir: &Path) -> (bool, String, String) {
    run(
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
        workdir,
    )
}

#[test]
fn a_key_split_3_of_4_comes_back_from_any_3_shares() {
    let (_keys, keystore, password, pubkey, secret) = interop_key0();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("shares");
    let (ok, stdout, err) = split_3_of_4(&keystore, &password, &out, work.path());
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

/// Splits each interop key 3-of-4 into `dir/split-<k>`.
fn split_all(dir: &Path) -> Vec<std::path::PathBuf> {
    let (_keys, ks, pw) = testkit::interop_keystores();
    (0..KEYS)
        .map(|k| {
            let out = dir.join(format!("split-{k}"));
            let (ok, _, err) = split_3_of_4(&ks.join(format!("keystore-{k}.json")), &pw, &out, dir);
            assert!(ok, "{err}");
            out
        })
        .collect()
}

/// Puts the share in `share` (keystore and password) on node `i` as key `k`.
fn install(dir: &Path, i: usize, k: usize, share: &Path) {
    let node = dir.join(format!("node-{i}"));
    std::fs::create_dir_all(node.join("keys")).unwrap();
    std::fs::create_dir_all(node.join("passwords")).unwrap();
    std::fs::copy(share.join("keystore.json"), node.join(format!("keys/key-{k}.json"))).unwrap();
    std::fs::copy(share.join("password.txt"), node.join(format!("passwords/key-{k}.txt"))).unwrap();
}

/// `palisade keys reshare-recipient` into `dir/name`: the printed public key.
fn recipient_key(dir: &Path, name: &str) -> String {
    let out = dir.join(name);
    let (ok, stdout, err) = run(
        &[
            "keys",
            "reshare-recipient",
            "--output-dir",
            out.to_str().unwrap(),
            "--pbkdf2-rounds",
            "1024",
        ],
        dir,
    );
    assert!(ok, "{err}");
    let key = stdout
        .split_whitespace()
        .find(|w| w.starts_with("0x"))
        .unwrap()
        .to_string();
    let ks: Value = serde_json::from_str(&std::fs::read_to_string(out.join("keystore.json")).unwrap()).unwrap();
    assert_eq!(
        format!("0x{}", ks["pubkey"].as_str().unwrap().trim_start_matches("0x")),
        key
    );
    key
}

/// `palisade keys reshare-deal` by the share in `share` to 3-of-5, with `recipients`' keys.
fn reshare_deal(dir: &Path, share: &Path, recipients: &[(u32, String)], name: &str) -> std::path::PathBuf {
    let out = dir.join(name);
    let mut args: Vec<String> = ["keys", "reshare-deal", "--share"].map(String::from).to_vec();
    args.extend([
        share.join("keystore.json").display().to_string(),
        "--password-file".into(),
        share.join("password.txt").display().to_string(),
        "--threshold".into(),
        "3".into(),
        "--shares".into(),
        "5".into(),
        "--output".into(),
        out.display().to_string(),
    ]);
    for (i, key) in recipients {
        args.extend(["--recipient".into(), format!("{i}={key}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = run(&args, dir);
    assert!(ok, "{err}");
    out
}

/// `palisade keys reshare-apply` on new holder `index`, whose keystore is in `holder`.
fn reshare_apply(dir: &Path, holder: &Path, index: u32, group: &str, deals: &[std::path::PathBuf], out: &Path) {
    let (ok, _, err) = try_reshare_apply(dir, holder, index, group, deals, out);
    assert!(ok, "{err}");
}

fn try_reshare_apply(
    dir: &Path,
    holder: &Path,
    index: u32,
    group: &str,
    deals: &[std::path::PathBuf],
    out: &Path,
) -> (bool, String, String) {
    let mut args: Vec<String> = ["keys", "reshare-apply", "--keystore"].map(String::from).to_vec();
    args.extend([
        holder.join("keystore.json").display().to_string(),
        "--password-file".into(),
        holder.join("password.txt").display().to_string(),
        "--index".into(),
        index.to_string(),
        "--group-public-key".into(),
        group.to_string(),
        "--output-dir".into(),
        out.display().to_string(),
        "--pbkdf2-rounds".into(),
        "1024".into(),
    ]);
    for d in deals {
        args.extend(["--deal".into(), d.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args, dir)
}

/// `palisade_threshold_node_errors_total` of `node` for `reason` on a coordinator.
async fn node_errors(coordinator: &Palisade, node: &str, reason: &str) -> f64 {
    let metrics = reqwest::get(coordinator.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find(|l| {
            l.starts_with("palisade_threshold_node_errors_total{")
                && l.contains(&format!("node=\"{node}\""))
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// A 3-of-4 group of the eight interop keys: four share nodes (each its own SQLite database,
/// mutual TLS) and two coordinators that the validator client talks to over plain HTTP.
struct Cluster {
    pki: testkit::pki::Pki,
    _work: tempfile::TempDir,
    nodes: Vec<Option<Palisade>>,
    coordinators: Vec<Palisade>,
}

const KEYS: usize = 8;

impl Cluster {
    async fn start() -> Cluster {
        Self::start_with_pki(testkit::pki::Pki::new(), &[]).await
    }

    /// `replace`: node indices (1-based) whose URL the coordinators get in place of the node's.
    async fn start_with_pki(pki: testkit::pki::Pki, replace: &[(usize, String)]) -> Cluster {
        let work = tempfile::tempdir().unwrap();
        let groups = split_all(work.path());
        for (k, group) in groups.iter().enumerate() {
            for i in 1..=4 {
                install(work.path(), i, k, &group.join(format!("share-{i}")));
            }
        }
        let groups = groups.iter().map(|g| g.join("group.json")).collect();
        Self::serve(pki, work, 4, groups, replace).await
    }

    /// Every key split 3-of-4, then reshared 3-of-5 by holders 1, 3 and 4 (node 2 is lost):
    /// a new machine takes index 2 and another joins as 5, each with a recipient key.
    async fn reshared() -> Cluster {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path();
        let groups = split_all(dir);
        let recipients: Vec<(u32, String)> = [2, 5]
            .map(|i| (i, recipient_key(dir, &format!("recipient-{i}"))))
            .to_vec();
        let mut group_files = Vec::new();
        for (k, group) in groups.iter().enumerate() {
            let pubkey = &testkit::interop_pubkeys()[k];
            let deals: Vec<std::path::PathBuf> = [1, 3, 4]
                .map(|i| {
                    reshare_deal(
                        dir,
                        &group.join(format!("share-{i}")),
                        &recipients,
                        &format!("deal-{k}-{i}.json"),
                    )
                })
                .to_vec();
            for i in 1..=5 {
                let holder = match recipients.iter().find(|(r, _)| *r == i) {
                    Some(_) => dir.join(format!("recipient-{i}")),
                    None => group.join(format!("share-{i}")),
                };
                let out = dir.join(format!("reshared-{k}/share-{i}"));
                reshare_apply(dir, &holder, i, pubkey, &deals, &out);
                install(dir, i as usize, k, &out);
            }
            group_files.push(dir.join(format!("reshared-{k}/share-1/group.json")));
        }
        Self::serve(testkit::pki::Pki::new(), work, 5, group_files, &[]).await
    }

    /// Starts `n` share nodes from `work/node-<i>` and two coordinators for `groups`.
    async fn serve(
        pki: testkit::pki::Pki,
        work: tempfile::TempDir,
        n: usize,
        groups: Vec<std::path::PathBuf>,
        replace: &[(usize, String)],
    ) -> Cluster {
        let net = minimal_network();
        let mut nodes = Vec::new();
        for i in 1..=n {
            let node = work.path().join(format!("node-{i}"));
            let args = [
                "--keystores-path",
                node.join("keys").to_str().unwrap(),
                "--keystores-passwords-path",
                node.join("passwords").to_str().unwrap(),
                "--network",
                &net,
                "--tls-cert-file",
                &pki.path("server.pem"),
                "--tls-key-file",
                &pki.path("server.key"),
                "--tls-client-ca-file",
                &pki.path("ca.pem"),
            ]
            .map(String::from);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            nodes.push(Some(Palisade::serve_in(&node, &args)));
        }
        let defs = work.path().join("coordinator-keys");
        std::fs::create_dir_all(&defs).unwrap();
        let urls: Vec<String> = (1..=n)
            .map(|i| {
                replace
                    .iter()
                    .find(|(r, _)| *r == i)
                    .map(|(_, u)| u.clone())
                    .unwrap_or_else(|| nodes[i - 1].as_ref().unwrap().base.clone())
            })
            .collect();
        for (k, group) in groups.iter().enumerate() {
            std::fs::write(
                defs.join(format!("group-{k}.yaml")),
                format!(
                    "type: threshold\ngroupFile: {}\nnodes: {}\ntlsClientCertFile: {}\ntlsClientKeyFile: {}\ntlsCaFile: {}\ntimeout: 5000\n",
                    group.display(),
                    serde_json::to_string(&urls).unwrap(),
                    pki.path("client.crt"),
                    pki.path("client.key"),
                    pki.path("ca.pem"),
                ),
            )
            .unwrap();
        }
        let coordinators: Vec<Palisade> = (0..2)
            .map(|c| {
                let dir = work.path().join(format!("coordinator-{c}"));
                std::fs::create_dir_all(&dir).unwrap();
                Palisade::serve_in(&dir, &["--key-config-path", defs.to_str().unwrap(), "--network", &net])
            })
            .collect();
        let cluster = Cluster {
            pki,
            _work: work,
            nodes,
            coordinators,
        };
        // Share nodes list every group key once their shares are decrypted.
        let tls = cluster.pki.client(Some("client.pem"));
        for node in cluster.nodes.iter().flatten() {
            let url = node.url("/api/v1/eth2/publicKeys");
            testkit::wait::until("a share node's keys", std::time::Duration::from_secs(60), || async {
                let keys: Vec<String> = tls.get(&url).send().await.ok()?.json().await.ok()?;
                (keys.len() == KEYS).then_some(())
            })
            .await;
        }
        for c in &cluster.coordinators {
            testkit::http::keys_loaded(c).await;
        }
        cluster
    }

    fn stop(&mut self, node: usize) {
        self.nodes[node - 1] = None;
    }
}

/// Every recorded request of the dev chain (blocks of each fork, attestations, aggregates,
/// randao, sync committee) signs through a coordinator to exactly the whole key's recorded
/// signature; a share node will not give a partial signature to a client without a
/// certificate, nor a whole one to anybody; with one node down the group still signs, with two
/// it answers 503 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_of_4_group_signs_as_the_whole_key_and_survives_one_node() {
    let mut cluster = Cluster::start().await;
    let vectors = std::fs::read_to_string(testkit::data_dir().join("signing-vectors/sample.jsonl")).unwrap();
    let coordinator = &cluster.coordinators[0];
    let mut types = std::collections::BTreeSet::new();
    for line in vectors.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["network"] != "minimal" {
            continue;
        }
        let (s, body) = post(
            &sign_url(coordinator, v["pubkey"].as_str().unwrap()),
            v["request"].to_string(),
        )
        .await;
        assert_eq!(s, 200, "{}: {body}", v["name"]);
        assert_eq!(body["signature"], v["signature"], "{}", v["name"]);
        types.insert(v["request"]["type"].as_str().unwrap().to_string());
    }
    assert!(types.len() >= 7, "{types:?}");

    let key0 = &testkit::interop_pubkeys()[0];
    let node = cluster.nodes[0].as_ref().unwrap();
    let request = attestation(5, 6, 1, MINIMAL_GVR).to_string();
    // A share is no key for a validator client, and partials need a certificate.
    let tls = cluster.pki.client(Some("client.pem"));
    let r = tls
        .post(node.url(&format!("/api/v1/eth2/sign/{key0}")))
        .header("content-type", "application/json")
        .body(request.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "{}", r.text().await.unwrap());
    let no_cert = cluster.pki.client(None);
    assert!(
        no_cert
            .post(node.url(&format!("/internal/v1/threshold/sign/{key0}")))
            .body(request.clone())
            .send()
            .await
            .is_err(),
        "a client without a certificate got through the TLS handshake"
    );

    cluster.stop(4);
    let (s, body) = post(
        &sign_url(&cluster.coordinators[0], key0),
        attestation(6, 7, 1, MINIMAL_GVR).to_string(),
    )
    .await;
    assert_eq!(s, 200, "one node down: {body}");
    cluster.stop(3);
    let started = std::time::Instant::now();
    let (s, body) = post(
        &sign_url(&cluster.coordinators[0], key0),
        attestation(7, 8, 1, MINIMAL_GVR).to_string(),
    )
    .await;
    assert_eq!(s, 503, "two nodes down: {body}");
    eprintln!("two of four nodes down: 503 after {:?}", started.elapsed());
    assert!(body["error"].as_str().unwrap().contains("2 of 3"), "{body}");
}

/// One node's slashing protection refuses (it signed a conflicting attestation) and one node is
/// down: the two others are not enough, so the group refuses with 412; and of two coordinators
/// racing conflicting attestations for one target, never both sign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_racing_coordinators_never_make_a_slashable_pair() {
    let mut cluster = Cluster::start().await;
    let key0 = &testkit::interop_pubkeys()[0];
    let tls = cluster.pki.client(Some("client.pem"));
    let node1 = cluster.nodes[0].as_ref().unwrap();
    let r = tls
        .post(node1.url(&format!("/internal/v1/threshold/sign/{key0}")))
        .header("content-type", "application/json")
        .body(attestation(1, 2, 1, MINIMAL_GVR).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let partial: Value = r.json().await.unwrap();
    assert_eq!(partial["index"], 1, "{partial}");
    cluster.stop(2);
    let (s, body) = post(
        &sign_url(&cluster.coordinators[0], key0),
        attestation(1, 2, 2, MINIMAL_GVR).to_string(),
    )
    .await;
    assert_eq!(s, 412, "{body}");
    let node1 = &cluster.nodes[0].as_ref().unwrap().base;
    assert_eq!(node_errors(&cluster.coordinators[0], node1, "refused").await, 1.0);

    // Two coordinators, conflicting attestations for the same target, at the same time (key 1,
    // all four nodes of the first key's group but node 2 up).
    let key1 = &testkit::interop_pubkeys()[1];
    let (mut both, mut one) = (0, 0);
    for target in 10..20u64 {
        let (url_a, url_b) = (
            sign_url(&cluster.coordinators[0], key1),
            sign_url(&cluster.coordinators[1], key1),
        );
        let a = post(&url_a, attestation(target - 1, target, 1, MINIMAL_GVR).to_string());
        let b = post(&url_b, attestation(target - 1, target, 2, MINIMAL_GVR).to_string());
        let ((sa, _), (sb, _)) = tokio::join!(a, b);
        both += usize::from(sa == 200 && sb == 200);
        one += usize::from((sa == 200) != (sb == 200));
    }
    assert_eq!(both, 0, "both coordinators signed conflicting attestations");
    eprintln!("racing coordinators: {one} of 10 targets signed once, the rest by neither");
}

/// A node that answers a partial signature of another key is ignored: the three honest nodes
/// still make the whole key's signature. With one honest node down, the liar's answer cannot
/// make up the third: 503, and the coordinator names the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answering_another_keys_partial_is_ignored() {
    // Any valid signature that is not share 2's: the whole key 7's over some root.
    let key0 = testkit::interop_pubkeys()[0].clone();
    let other = blst::min_pk::SecretKey::key_gen(&[9u8; 32], &[]).unwrap();
    let wrong = other.sign(&[1u8; 32], b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_", &[]);
    let answer = json!({"index": 2, "signature": format!("0x{}", hex::encode(wrong.to_bytes()))}).to_string();
    let pki = testkit::pki::Pki::new();
    let tls = (
        std::fs::read_to_string(pki.path("server.pem")).unwrap(),
        std::fs::read_to_string(pki.path("server.key")).unwrap(),
    );
    let liar = testkit::mockstore::MockStore::start(
        vec![testkit::mockstore::Route {
            method: "POST",
            path: format!("/internal/v1/threshold/sign/{key0}"),
            status: 200,
            body: answer,
        }],
        Some(tls),
    )
    .await;
    // The coordinator trusts the cluster's CA: the liar needs a certificate from it.
    let cluster = Cluster::start_with_pki(pki, &[(2, liar.base.clone())]).await;
    let request = attestation(3, 4, 1, MINIMAL_GVR);
    let (s, body) = post(&sign_url(&cluster.coordinators[0], &key0), request.to_string()).await;
    assert_eq!(s, 200, "{body}");
    // The whole key's signature of the same request, from a plain signer.
    let (_keys, whole) = testkit::http::signer_with_interop_keys(&[]);
    let (s, expected) = post(&sign_url(&whole, &key0), request.to_string()).await;
    assert_eq!(s, 200, "{expected}");
    assert_eq!(body["signature"], expected["signature"]);
    assert!(!liar.requests().is_empty(), "the liar was never asked");
    let mut cluster = cluster;
    cluster.stop(4);
    let (s, body) = post(
        &sign_url(&cluster.coordinators[0], &key0),
        attestation(4, 5, 1, MINIMAL_GVR).to_string(),
    )
    .await;
    assert_eq!(s, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("an invalid partial signature"),
        "{body}"
    );
    let log = cluster.coordinators[0].log();
    assert!(
        log.contains("does not verify for its share") && log.contains(&liar.base),
        "{log}"
    );
    // ... and counted against it, for an alert; the honest nodes are not.
    let coordinator = &cluster.coordinators[0];
    assert!(node_errors(coordinator, &liar.base, "invalid_partial").await >= 1.0);
    let honest = &cluster.nodes[0].as_ref().unwrap().base;
    assert_eq!(node_errors(coordinator, honest, "invalid_partial").await, 0.0);
}

/// Proactive refresh through the binary: every holder deals, every holder applies all deals.
/// The group key stays, any 3 new shares give the key back, and old and new shares together
/// give no key at all.
#[test]
fn a_refresh_keeps_the_group_key_and_retires_the_old_shares() {
    let (_keys, keystore, password, pubkey, secret) = interop_key0();
    let work = tempfile::tempdir().unwrap();
    let old = work.path().join("old");
    let (ok, _, err) = split_3_of_4(&keystore, &password, &old, work.path());
    assert!(ok, "{err}");
    let share = |dir: &Path, i: u32| {
        (
            dir.join(format!("share-{i}/keystore.json")),
            dir.join(format!("share-{i}/password.txt")),
        )
    };
    let mut deals = Vec::new();
    for i in 1..=4 {
        let (ks, pw) = share(&old, i);
        let deal = work.path().join(format!("deal-{i}.json"));
        let (ok, _, err) = run(
            &[
                "keys",
                "refresh-deal",
                "--share",
                ks.to_str().unwrap(),
                "--password-file",
                pw.to_str().unwrap(),
                "--output",
                deal.to_str().unwrap(),
            ],
            work.path(),
        );
        assert!(ok, "{err}");
        deals.push(deal);
    }
    let new = work.path().join("new");
    std::fs::create_dir(&new).unwrap();
    for i in 1..=4 {
        let (ks, pw) = share(&old, i);
        let out = new.join(format!("share-{i}"));
        let mut args: Vec<String> = ["keys", "refresh-apply", "--share"].map(String::from).to_vec();
        args.extend([
            ks.display().to_string(),
            "--password-file".into(),
            pw.display().to_string(),
        ]);
        for d in &deals {
            args.extend(["--deal".to_string(), d.display().to_string()]);
        }
        args.extend([
            "--output-dir".into(),
            out.display().to_string(),
            "--pbkdf2-rounds".into(),
            "1024".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, err) = run(&args, work.path());
        assert!(ok, "{err}");
        let group: Value = serde_json::from_str(&std::fs::read_to_string(out.join("group.json")).unwrap()).unwrap();
        assert_eq!(group["group_public_key"], pubkey.as_str());
        assert_ne!(
            secret_of(&out.join("keystore.json"), &out.join("password.txt")),
            secret_of(&ks, &pw)
        );
    }
    let new_pw = work.path().join("pw.txt");
    palisade::fsutil::write_private(&new_pw, b"recovered", palisade::fsutil::Existing::Replace).unwrap();
    let combine = |picked: [(&Path, u32); 3], name: &str| {
        let out = work.path().join(name);
        let mut args: Vec<String> = ["keys", "combine"].map(String::from).to_vec();
        for (dir, i) in picked {
            let (ks, pw) = share(dir, i);
            args.extend(["--share".to_string(), format!("{}:{}", ks.display(), pw.display())]);
        }
        args.extend([
            "--output".into(),
            out.display().to_string(),
            "--output-password-file".into(),
            new_pw.display().to_string(),
            "--pbkdf2-rounds".into(),
            "1024".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, err) = run(&args, work.path());
        (ok, err, out)
    };
    let (ok, err, out) = combine([(&new, 1), (&new, 3), (&new, 4)], "from-new.json");
    assert!(ok, "{err}");
    assert_eq!(secret_of(&out, &new_pw), secret);
    let (ok, err, out) = combine([(&old, 1), (&old, 2), (&new, 4)], "mixed.json");
    assert!(!ok && err.contains("not to the group key"), "{err}");
    assert!(!out.exists());
    // A deal set missing a holder is refused, naming what is missing; nothing is written.
    let (ks, pw) = share(&old, 1);
    let out = work.path().join("short");
    let (ok, _, err) = run(
        &[
            "keys",
            "refresh-apply",
            "--share",
            ks.to_str().unwrap(),
            "--password-file",
            pw.to_str().unwrap(),
            "--deal",
            deals[0].to_str().unwrap(),
            "--deal",
            deals[1].to_str().unwrap(),
            "--output-dir",
            out.to_str().unwrap(),
        ],
        work.path(),
    );
    assert!(!ok && err.contains("one deal from each of the 4 holders"), "{err}");
    assert!(!out.exists());
}

/// A lost node replaced and a fifth added by resharing (holders 1, 3 and 4 deal; the key is
/// never whole): the 3-of-5 group signs every recorded request to the whole key's signature
/// through the replacement, the new node and one old holder alone, and with three down, 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_reshared_to_a_replaced_and_an_added_node_signs_as_the_whole_key() {
    let mut cluster = Cluster::reshared().await;
    cluster.stop(1);
    cluster.stop(3);
    let vectors = std::fs::read_to_string(testkit::data_dir().join("signing-vectors/sample.jsonl")).unwrap();
    let mut signed = 0;
    for line in vectors.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["network"] != "minimal" {
            continue;
        }
        let (s, body) = post(
            &sign_url(&cluster.coordinators[1], v["pubkey"].as_str().unwrap()),
            v["request"].to_string(),
        )
        .await;
        assert_eq!(s, 200, "{}: {body}", v["name"]);
        assert_eq!(body["signature"], v["signature"], "{}", v["name"]);
        signed += 1;
    }
    assert!(signed >= 7, "only {signed} vectors");
    cluster.stop(4);
    let (s, body) = post(
        &sign_url(&cluster.coordinators[0], &testkit::interop_pubkeys()[0]),
        attestation(7, 8, 1, MINIMAL_GVR).to_string(),
    )
    .await;
    assert_eq!(s, 503, "three of five down: {body}");
}

/// A reshare that cannot give a consistent share is refused, naming why, and writes nothing:
/// deals from fewer than the threshold of holders, a recipient key that is not the one dealt
/// to, a deal of another group; a dealer without a recipient key for a new node is told so.
#[test]
fn a_reshare_refuses_short_foreign_or_misaddressed_deals() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let groups = split_all(dir);
    let recipients = vec![(5, recipient_key(dir, "recipient-5"))];
    let deals: Vec<std::path::PathBuf> = [1, 2, 3]
        .map(|i| {
            reshare_deal(
                dir,
                &groups[0].join(format!("share-{i}")),
                &recipients,
                &format!("deal-{i}.json"),
            )
        })
        .to_vec();
    let key0 = &testkit::interop_pubkeys()[0];
    let holder = dir.join("recipient-5");
    let out = dir.join("out");
    let (ok, _, err) = try_reshare_apply(dir, &holder, 5, key0, &deals[..2], &out);
    assert!(!ok && err.contains("at least 3 current holders"), "{err}");
    let (ok, _, err) = try_reshare_apply(dir, &holder, 4, key0, &deals, &out);
    assert!(!ok && err.contains("recipient key"), "{err}");
    let other = reshare_deal(dir, &groups[1].join("share-3"), &recipients, "other.json");
    let mixed = [deals[0].clone(), deals[1].clone(), other];
    let (ok, _, err) = try_reshare_apply(dir, &holder, 5, key0, &mixed, &out);
    assert!(!ok && err.contains("deal of 3"), "{err}");
    assert!(!out.exists(), "a refused reshare wrote its output");
    let (ok, _, err) = run(
        &[
            "keys",
            "reshare-deal",
            "--share",
            groups[0].join("share-1/keystore.json").to_str().unwrap(),
            "--password-file",
            groups[0].join("share-1/password.txt").to_str().unwrap(),
            "--threshold",
            "3",
            "--shares",
            "5",
            "--output",
            dir.join("no-recipient.json").to_str().unwrap(),
        ],
        dir,
    );
    assert!(!ok && err.contains("--recipient 5=PUBKEY"), "{err}");
    // The reshared share opens and signs as share 5 of the same key.
    reshare_apply(dir, &holder, 5, key0, &deals, &out);
    let share: Value = serde_json::from_str(&std::fs::read_to_string(out.join("keystore.json")).unwrap()).unwrap();
    assert_eq!(share["threshold"]["index"], 5);
    assert_eq!(share["threshold"]["shares"], 5);
    assert_eq!(share["threshold"]["group_public_key"], key0.as_str());
}
