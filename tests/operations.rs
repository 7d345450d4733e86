//! Running Palisade in production: database durability at startup, TLS with client
//! certificates, readiness for load balancers, and alert rules that match the metrics.

use std::path::Path;
use std::time::Duration;

use testkit::http::{MINIMAL_GVR, minimal_network};
use testkit::pg::PgCluster;
use testkit::pki::Pki;
use testkit::server::Palisade;

fn attestation(source: u64, target: u64) -> serde_json::Value {
    testkit::http::attestation(source, target, 0x44, MINIMAL_GVR)
}

// ---------------------------------------------------------------- durability

#[test]
fn refuses_to_start_when_the_database_can_lose_commits() {
    let pg = testkit::pg::shared();
    let url = pg.new_database();
    let db = url.rsplit('/').next().unwrap().to_string();
    pg.psql("postgres", &format!("ALTER DATABASE {db} SET synchronous_commit = off"));
    let work = tempfile::tempdir().unwrap();
    let args = ["--network", "minimal", "--database-url", &url];
    let err = Palisade::try_serve_in(work.path(), &args)
        .err()
        .expect("must refuse to start");
    assert!(
        err.contains("refusing to start") && err.contains("synchronous_commit = off"),
        "{err}"
    );
    assert!(err.contains("--allow-unsafe-database-durability"), "{err}");

    // The named unsafe option starts it, loudly.
    let mut unsafe_args = args.to_vec();
    unsafe_args.push("--allow-unsafe-database-durability");
    let p = Palisade::serve_in(work.path(), &unsafe_args);
    assert!(p.log().contains("UNSAFE"), "{}", p.log());
    drop(p);

    // A server with fsync off is refused too.
    let no_fsync = PgCluster::start_with(&["fsync=off"]);
    let url = no_fsync.new_database();
    let err = Palisade::try_serve_in(work.path(), &["--network", "minimal", "--database-url", &url])
        .err()
        .expect("must refuse to start");
    assert!(err.contains("fsync = off"), "{err}");
}

// ---------------------------------------------------------------- TLS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates_records_who_asked() {
    let pki = Pki::new();
    let url = testkit::pg::shared().new_database();
    let (_keys, ks, pw) = testkit::interop_keystores();
    let p = Palisade::serve(&[
        "--network",
        &minimal_network(),
        "--database-url",
        &url,
        "--keystores-path",
        ks.to_str().unwrap(),
        "--keystores-password-file",
        pw.to_str().unwrap(),
        "--tls-cert-file",
        &pki.path("server.pem"),
        "--tls-key-file",
        &pki.path("server.key"),
        "--tls-client-ca-file",
        &pki.path("ca.pem"),
    ]);
    assert!(p.base.starts_with("https://"), "{}", p.base);
    let pk = &testkit::interop_pubkeys()[0];
    let sign = p.url(&format!("/api/v1/eth2/sign/{pk}"));

    let ok = pki.client(Some("client.pem"));
    let r = ok.post(&sign).json(&attestation(0, 1)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);

    // No certificate, or one the CA did not sign: the connection is refused.
    assert!(
        pki.client(None)
            .post(&sign)
            .json(&attestation(1, 2))
            .send()
            .await
            .is_err()
    );
    assert!(
        pki.client(Some("rogue.pem"))
            .post(&sign)
            .json(&attestation(1, 2))
            .send()
            .await
            .is_err()
    );
    // Plain HTTP to the TLS port gets nowhere.
    let plain = reqwest::Client::new()
        .get(p.base.replace("https://", "http://") + "/upcheck")
        .send()
        .await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));

    // The history records the certificate subject of the client that asked.
    let db = url.rsplit('/').next().unwrap();
    let who = testkit::pg::shared().psql(db, "SELECT client FROM signed_attestations");
    assert!(who.contains("CN=vc-1"), "{who}");
}

#[test]
fn bad_tls_files_are_named() {
    let work = tempfile::tempdir().unwrap();
    let missing = work.path().join("nope.pem");
    let err = Palisade::try_serve_in(
        work.path(),
        &[
            "--network",
            "minimal",
            "--tls-cert-file",
            missing.to_str().unwrap(),
            "--tls-key-file",
            missing.to_str().unwrap(),
        ],
    )
    .err()
    .unwrap();
    assert!(err.contains("--tls-cert-file") && err.contains("nope.pem"), "{err}");
    let err = Palisade::try_serve_in(
        work.path(),
        &["--network", "minimal", "--tls-cert-file", missing.to_str().unwrap()],
    )
    .err()
    .unwrap();
    assert!(err.contains("--tls-key-file"), "{err}");
}

// ---------------------------------------------------------------- readiness

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database() {
    let pg = PgCluster::start_with(&[]);
    let url = pg.new_database();
    // Without keys, on purpose: only the database decides here.
    let p = Palisade::serve(&[
        "--network",
        "minimal",
        "--genesis-validators-root",
        MINIMAL_GVR,
        "--database-url",
        &url,
        "--ready-min-keys",
        "0",
    ]);
    let ready = || async { reqwest::get(p.url("/readyz")).await.unwrap().status().as_u16() };
    let wait_for = |want: u16| async move {
        testkit::wait::within(&format!("/readyz is {want}"), Duration::from_secs(60), || async {
            (ready().await == want).then_some(())
        })
        .await
        .is_some()
    };
    assert!(wait_for(200).await, "not ready with the database up");
    pg.stop_immediate();
    assert!(wait_for(503).await, "still ready with the database down");
    assert_eq!(
        reqwest::get(p.url("/upcheck")).await.unwrap().status(),
        200,
        "liveness is not readiness"
    );
    pg.start();
    assert!(wait_for(200).await, "not ready again after the database came back");
}

/// A replica started without any key is not ready (a balancer would send it clients it can
/// only refuse) and says why, at startup and in `/readyz`, unless the operator allows it.
#[tokio::test]
async fn a_replica_without_keys_is_not_ready_unless_allowed() {
    let p = Palisade::serve(&["--network", "minimal", "--genesis-validators-root", MINIMAL_GVR]);
    let (status, why) = testkit::wait::until("/readyz answers", Duration::from_secs(60), || async {
        let r = reqwest::get(p.url("/readyz")).await.ok()?;
        Some((r.status().as_u16(), r.text().await.ok()?))
    })
    .await;
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("no keys loaded"), "{why}");
    assert!(
        p.log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("no keys loaded")),
        "no warning at startup:\n{}",
        p.log()
    );

    let allowed = Palisade::serve(&[
        "--network",
        "minimal",
        "--genesis-validators-root",
        MINIMAL_GVR,
        "--ready-min-keys",
        "0",
    ]);
    let ok = testkit::wait::within("ready without keys when allowed", Duration::from_secs(60), || async {
        (reqwest::get(allowed.url("/readyz")).await.ok()?.status() == 200).then_some(())
    })
    .await;
    assert!(ok.is_some(), "{}", allowed.log());
    assert!(!allowed.log().contains("no keys loaded"), "{}", allowed.log());
}

// ---------------------------------------------------------------- alerts

/// Every metric the alert rules use is one Palisade exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_use_real_metrics() {
    let rules_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/palisade-alerts.yml");
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&rules_path).unwrap()).unwrap();
    // A threshold group's coordinator too, whose node metrics exist once a group is configured.
    let work = tempfile::tempdir().unwrap();
    let (pki, split) = (Pki::new(), work.path().join("split"));
    let (ok, _, err) = testkit::server::run(
        &[
            "keys",
            "split",
            "--generate",
            "--threshold",
            "2",
            "--shares",
            "3",
            "--output-dir",
            split.to_str().unwrap(),
            "--pbkdf2-rounds",
            "1024",
        ],
        work.path(),
    );
    assert!(ok, "{err}");
    let defs = work.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    std::fs::write(
        defs.join("group.yaml"),
        format!(
            "type: threshold\ngroupFile: {}\nnodes: [\"https://127.0.0.1:9\", \"https://127.0.0.1:10\", \"https://127.0.0.1:11\"]\ntlsClientCertFile: {}\ntlsClientKeyFile: {}\ntlsCaFile: {}\n",
            split.join("group.json").display(),
            pki.path("client.crt"),
            pki.path("client.key"),
            pki.path("ca.pem")
        ),
    )
    .unwrap();
    let p = Palisade::serve(&["--network", "minimal", "--key-config-path", defs.to_str().unwrap()]);
    testkit::http::keys_loaded(&p).await;
    let exposition = reqwest::get(p.url("/metrics")).await.unwrap().text().await.unwrap();
    let mut alerts = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap().to_string();
            let expr = rule["expr"].as_str().unwrap();
            assert!(rule["annotations"]["summary"].is_string(), "{name}: no summary");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                let Some(metric) = word.strip_prefix("palisade_") else {
                    continue;
                };
                let base = ["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .fold(metric, |m, s| m.strip_suffix(s).unwrap_or(m));
                assert!(
                    exposition.contains(&format!("# TYPE palisade_{base} "))
                        || exposition.contains(&format!("# TYPE palisade_{base}_total ")),
                    "{name} uses palisade_{metric}, which /metrics does not export"
                );
            }
            alerts.push(name);
        }
    }
    for needed in [
        "PalisadeReplicaDown",
        "PalisadeDatabaseUnreachable",
        "PalisadeSlashableMessageRefused",
        "PalisadeSigningLatencyHigh",
        "PalisadeKeysFailed",
    ] {
        assert!(alerts.iter().any(|a| a == needed), "missing alert {needed}");
    }
}

// ---------------------------------------------------------------- pruning

/// `--prune-*` (and Web3Signer's names for them): with pruning at boot, history older than the
/// epochs to keep goes at once, the highest messages stay; with pruning off, nothing goes.
#[tokio::test]
async fn pruning_keeps_what_it_is_told_to() {
    let pk = testkit::interop_pubkeys()[0].clone();
    let interchange = serde_json::json!({
        "metadata": {"interchange_format_version": "5", "genesis_validators_root": MINIMAL_GVR},
        "data": [{
            "pubkey": pk,
            "signed_blocks": (1..=100u64).map(|e| serde_json::json!({"slot": (e * 8).to_string()})).collect::<Vec<_>>(),
            "signed_attestations": (1..=100u64)
                .map(|e| serde_json::json!({"source_epoch": (e - 1).to_string(), "target_epoch": e.to_string()}))
                .collect::<Vec<_>>(),
        }]
    });
    let (_keys, ks, pw) = testkit::interop_keystores();
    let net = minimal_network();
    let history = |export: serde_json::Value| {
        let all = export["data"].as_array().unwrap().clone();
        let v = all
            .iter()
            .find(|v| v["pubkey"] == pk.as_str())
            .cloned()
            .unwrap_or_default();
        (
            v["signed_blocks"].as_array().map_or(0, Vec::len),
            v["signed_attestations"].as_array().map_or(0, Vec::len),
        )
    };
    for (prune, expect) in [(true, (11, 11)), (false, (100, 100))] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("history.json"), interchange.to_string()).unwrap();
        let (ok, _, err) =
            testkit::server::run(&["slashing-protection", "import", "--from", "history.json"], dir.path());
        assert!(ok, "{err}");
        let mut args = testkit::http::key_args(&ks, &pw);
        let enabled = format!("--slashing-protection-pruning-enabled={prune}");
        args.extend([
            "--network",
            &net,
            enabled.as_str(),
            "--prune-epochs-to-keep",
            "10",
            "--prune-at-boot",
            "true",
            "--prune-interval-secs",
            "1",
        ]);
        let p = Palisade::serve_in(dir.path(), &args);
        if prune {
            let got = testkit::wait::until("history pruned at boot", Duration::from_secs(60), || async {
                let h = history(testkit::http::admin_get(&p, "/api/v1/eth2/slashing-protection/export").await);
                (h == expect).then_some(h)
            })
            .await;
            assert_eq!(got, expect);
        } else {
            // Three pruning intervals go by: nothing is pruned.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let h = history(testkit::http::admin_get(&p, "/api/v1/eth2/slashing-protection/export").await);
            assert_eq!(h, expect, "pruned although pruning is off");
        }
    }
}
