//! `--config-file`: a Web3Signer configuration file for the eth2 subcommand, keys as its
//! documentation writes them, runs Palisade unchanged; the command line and the environment
//! win over the file; what Palisade cannot honour is refused, naming the file and the key.

use testkit::http::{MINIMAL_GVR, attestation, key_args, keys_loaded, minimal_network, post, sign_url};
use testkit::server::Palisade;

/// A Web3Signer configuration file (top-level options, `eth2.` subcommand options, a JDBC
/// URL, the password itself, pruning in hours), as in Web3Signer's documentation.
fn web3signer_file(pg_url: &str, password: &str, keystores: &str, password_file: &str, network: &str) -> String {
    let jdbc = format!(
        "jdbc:{}",
        pg_url
            .replacen("palisade_pw@", "", 1)
            .replacen("postgres://", "postgresql://", 1)
    );
    format!(
        r#"# Web3Signer configuration
http-listen-host: "127.0.0.1"
http-listen-port: 1
logging: "WARN"
idle-connection-timeout-seconds: 120
metrics-enabled: true
eth2.network: "{network}"
eth2.slashing-protection-enabled: true
eth2.slashing-protection-db-url: "{jdbc}"
eth2.slashing-protection-db-username: "palisade_pw"
eth2.slashing-protection-db-password: "{password}"
eth2.slashing-protection-pruning-enabled: true
eth2.slashing-protection-pruning-epochs-to-keep: 500
eth2.slashing-protection-pruning-interval: 12
eth2.keystores-path: "{keystores}"
eth2.keystores-password-file: "{password_file}"
eth2.key-manager-api-enabled: true
"#
    )
}

#[tokio::test]
async fn a_web3signer_configuration_file_runs_as_it_is() {
    let cluster = testkit::pg::PgCluster::start_with(&[]);
    let password = "config-file-password-42";
    let url = cluster.password_role("palisade_pw", password);
    let (_keys, ks, pw) = testkit::interop_keystores();
    let dir = tempfile::tempdir().unwrap();
    let net = minimal_network();
    let file = dir.path().join("web3signer.yaml");
    std::fs::write(
        &file,
        web3signer_file(&url, password, ks.to_str().unwrap(), pw.to_str().unwrap(), &net),
    )
    .unwrap();

    let p = Palisade::serve(&["--config-file", file.to_str().unwrap()]);
    keys_loaded(&p).await;
    // The command line's port (0: any free one) won over the file's 1.
    assert!(!p.base.ends_with(":1"), "{}", p.base);
    // The environment's log level (testkit sets info) won over the file's WARN.
    assert!(p.log().contains("INFO"), "{}", p.log());
    assert!(!p.log().contains(password), "the password reached the log");
    // Signed through the file's database, as its role with its password: the record is there.
    let pk = &testkit::interop_pubkeys()[0];
    let (s, m) = post(&sign_url(&p, pk), attestation(1, 2, 1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 200, "{m}");
    let rows = cluster.psql("palisade_pw_db", "SELECT count(*) FROM signed_attestations");
    assert_eq!(rows.trim(), "1", "the signing was not recorded in the file's database");
    // The same key on the command line wins over the file: the file's network is not used.
    drop(p);
    let refused = Palisade::try_serve_in(
        dir.path(),
        &["--config-file", file.to_str().unwrap(), "--network", "no-such-network"],
    )
    .err()
    .expect("the command line's network was not used");
    assert!(refused.contains("no-such-network"), "{refused}");
}

#[test]
fn what_palisade_cannot_honour_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (_keys, ks, pw) = testkit::interop_keystores();
    for (line, expect) in [
        (
            "tls-keystore-file: /etc/web3signer/tls.p12",
            "tls-keystore-file: no such option",
        ),
        (
            "eth2.slashing-protection-enabled: false",
            "never signs without slashing protection",
        ),
        ("eth2.keystores-path: [", "not YAML"),
    ] {
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, format!("{line}\n")).unwrap();
        let mut args = vec!["serve", "--config-file", file.to_str().unwrap()];
        args.extend(key_args(&ks, &pw));
        let (ok, _, err) = testkit::server::run(&args, dir.path());
        assert!(!ok, "{line}: started");
        assert!(err.contains(expect), "{line}: {err}");
        assert!(err.contains("bad.yaml"), "{line}: the file is not named: {err}");
    }
}

/// The operator's one file, written for `serve` (keys, port, network, database), is also the
/// slashing-protection commands' file: they take its database and network and leave `serve`'s
/// options to `serve`; what the import wrote is what the export reads back.
#[test]
fn the_serve_file_drives_import_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let (_keys, ks, pw) = testkit::interop_keystores();
    let db = dir.path().join("one.sqlite");
    let file = dir.path().join("palisade.yaml");
    std::fs::write(
        &file,
        format!(
            "http-port: 9000\nnetwork: {}\nkeystores-path: {}\nkeystores-password-file: {}\ndatabase-url: sqlite://{}\n",
            minimal_network(),
            ks.display(),
            pw.display(),
            db.display()
        ),
    )
    .unwrap();
    let pk = &testkit::interop_pubkeys()[0];
    let interchange = dir.path().join("in.json");
    std::fs::write(
        &interchange,
        serde_json::json!({
            "metadata": {"interchange_format_version": "5", "genesis_validators_root": MINIMAL_GVR},
            "data": [{"pubkey": pk, "signed_blocks": [{"slot": "4321"}], "signed_attestations": []}]
        })
        .to_string(),
    )
    .unwrap();
    let cfg = file.to_str().unwrap();
    let (ok, _, err) = testkit::server::run(
        &[
            "slashing-protection",
            "import",
            "--config-file",
            cfg,
            "--from",
            interchange.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(ok, "import: {err}");
    assert!(db.exists(), "the import did not use the file's database");
    let out = dir.path().join("out.json");
    let (ok, _, err) = testkit::server::run(
        &[
            "slashing-protection",
            "export",
            "--to",
            out.to_str().unwrap(),
            "--config-file",
            cfg,
        ],
        dir.path(),
    );
    assert!(ok, "export: {err}");
    let exported: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(exported["metadata"]["genesis_validators_root"], MINIMAL_GVR);
    assert_eq!(exported["data"][0]["pubkey"], pk.as_str());
    assert_eq!(exported["data"][0]["signed_blocks"][0]["slot"], "4321");
    // A key no command has is still an error, for the import as for `serve`.
    std::fs::write(&file, "databse-url: sqlite://x.sqlite\n").unwrap();
    let (ok, _, err) = testkit::server::run(
        &["slashing-protection", "export", "--to", "-", "--config-file", cfg],
        dir.path(),
    );
    assert!(!ok && err.contains("databse-url: no such option of `export`"), "{err}");
}
