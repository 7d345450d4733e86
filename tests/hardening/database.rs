//! The database password: never in the log or an error, whatever shape the connection string
//! has, and given from a file rather than the command line.

use testkit::http::{MINIMAL_GVR, attestation, minimal_network, sign_url};
use testkit::server::Palisade;

/// `palisade serve` with `url`, which cannot connect: its whole output.
fn refused_with(url: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let net = minimal_network();
    let (ok, out, err) = testkit::server::run(
        &[
            "serve",
            "--http-port",
            "0",
            "--network",
            &net,
            "--database-connect-timeout-secs",
            "1",
            "--database-url",
            url,
        ],
        dir.path(),
    );
    assert!(!ok, "{url}: started");
    format!("{out}{err}")
}

#[test]
fn a_password_never_reaches_the_log_in_any_form_of_connection_string() {
    let cases = [
        // The userinfo and a query parameter.
        "postgres://palisade:userinfo-secret@127.0.0.1:1/db?password=query-secret&sslmode=disable",
        // An unencoded `?` and `@` in the password: the URL is not what it seems.
        "postgres://palisade:pa?ss-secret@127.0.0.1:1/db",
        "postgres://palisade:p@ss-secret@127.0.0.1:1/db",
        // A key=value connection string (libpq's other form), not a URL this signer takes.
        "host=127.0.0.1 port=1 user=palisade password=kv-secret",
        // A misspelt parameter the driver would log with its value.
        "postgres://palisade@127.0.0.1:1/db?pass=param-secret",
    ];
    for url in cases {
        let out = refused_with(url);
        assert!(!out.contains("secret"), "{url}:\n{out}");
    }
    // The misspelt parameter is named, so the operator can fix it.
    let out = refused_with("postgres://palisade@127.0.0.1:1/db?pass=param-secret");
    assert!(out.contains("unknown parameter `pass`"), "{out}");
    // A password on the command line is warned about (every local user can read it).
    let out = refused_with("postgres://palisade:cmdline-secret@127.0.0.1:1/db");
    assert!(out.contains("--database-password-file"), "{out}");
}

#[tokio::test]
async fn the_database_password_comes_from_a_file() {
    let cluster = testkit::pg::PgCluster::start_with(&[]);
    let password = "file-only-password-7f3a";
    let url = cluster.password_role("palisade_pw", password);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db-password");
    palisade::fsutil::write_private(
        &file,
        format!("{password}\n").as_bytes(),
        palisade::fsutil::Existing::Replace,
    )
    .unwrap();
    let (_keys, ks, pw) = testkit::interop_keystores();
    let net = minimal_network();
    let mut args = testkit::http::key_args(&ks, &pw);
    args.extend([
        "--network",
        &net,
        "--database-url",
        &url,
        "--database-connect-timeout-secs",
        "5",
    ]);

    // Without the password: refused by PostgreSQL, and the signer does not start.
    let refused = Palisade::try_serve_in(dir.path(), &args)
        .err()
        .expect("started without the password");
    assert!(refused.contains("password"), "{refused}");

    // A wrong password, an unknown role, a missing database: no waiting can fix them, so the
    // start fails at once with the server's reason (not after the 60 s connect patience).
    let wrong = dir.path().join("wrong-password");
    palisade::fsutil::write_private(&wrong, b"not-it\n", palisade::fsutil::Existing::Replace).unwrap();
    let no_role = url.replacen("palisade_pw@", "nobody_here@", 1);
    let no_db = format!("{}/no_such_db", url.rsplit_once('/').unwrap().0);
    for (what, db_url, password_file, code) in [
        ("a wrong password", url.as_str(), &wrong, "28P01"),
        ("an unknown role", no_role.as_str(), &file, "28P01"),
        ("a missing database", no_db.as_str(), &file, "3D000"),
    ] {
        let mut bad = testkit::http::key_args(&ks, &pw);
        bad.extend([
            "--network",
            &net,
            "--database-url",
            db_url,
            "--database-password-file",
            password_file.to_str().unwrap(),
            "--database-connect-timeout-secs",
            "60",
        ]);
        let started = std::time::Instant::now();
        let refused = Palisade::try_serve_in(dir.path(), &bad)
            .err()
            .unwrap_or_else(|| panic!("started with {what}"));
        let took = started.elapsed();
        eprintln!("{what}: the start failed after {took:?}");
        // Half the connect patience: a start that waited for the database would take all 60 s.
        assert!(took < std::time::Duration::from_secs(30), "{what}: waited {took:?}");
        assert!(refused.contains(&format!("SQLSTATE {code}")), "{what}: {refused}");
        assert!(
            !refused.contains("cannot reach PostgreSQL yet"),
            "{what} was retried: {refused}"
        );
        assert!(!refused.contains(password), "{what}: {refused}");
    }

    // The role apart from the URL (--database-username), the password from the file.
    let without_role = url.replacen("palisade_pw@", "", 1);
    let mut args = testkit::http::key_args(&ks, &pw);
    args.extend([
        "--network",
        &net,
        "--database-url",
        &without_role,
        "--database-username",
        "palisade_pw",
        "--database-password-file",
        file.to_str().unwrap(),
    ]);
    let p = Palisade::serve_in(dir.path(), &args);
    testkit::http::keys_loaded(&p).await;
    let (s, m) = testkit::http::post(
        &sign_url(&p, &testkit::interop_pubkeys()[0]),
        attestation(1, 2, 1, MINIMAL_GVR).to_string(),
    )
    .await;
    assert_eq!(s, 200, "{m}");
    assert!(!p.log().contains(password));
    assert!(!p.log().contains("command line"), "no password is on the command line");
}
