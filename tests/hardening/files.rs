//! Planted files: links and files of other users where the signer reads what grants access
//! (tokens, the fleet secret, TLS keys) or creates its lock files; and a careless host.

use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use testkit::http::{client, minimal_network};
use testkit::server::Palisade;

use super::send;

#[test]
fn files_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    // A token path that is a planted link: never followed, nothing written where it points.
    let token = dir.path().join("token.txt");
    let target = dir.path().join("attacker-owned");
    std::os::unix::fs::symlink(&target, &token).unwrap();
    let (ok, _, err) = testkit::server::run(
        &["serve", "--http-port", "0", "--api-token-file", token.to_str().unwrap()],
        dir.path(),
    );
    assert!(!ok);
    assert!(err.contains("token.txt"), "{err}");
    assert!(!target.exists(), "the token went through the link");

    // A database password is never printed, whether in the userinfo or a query parameter.
    let (ok, _, err) = testkit::server::run(
        &[
            "serve",
            "--http-port",
            "0",
            "--database-connect-timeout-secs",
            "1",
            "--database-url",
            "postgres://palisade:userinfo-secret@127.0.0.1:1/db?password=query-secret&sslmode=disable",
        ],
        dir.path(),
    );
    assert!(!ok);
    assert!(
        !err.contains("userinfo-secret") && !err.contains("query-secret"),
        "{err}"
    );
}

#[tokio::test]
async fn careless_hosts_are_warned_and_core_dumps_are_off() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token.txt");
    std::fs::write(&token, "x").unwrap();
    // A token file other users can read is a key to the signer: refused, with the fix.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let args = [
        "--api-token-file",
        token.to_str().unwrap(),
        "--http-host",
        "0.0.0.0",
        "--network",
        &minimal_network(),
    ];
    let refused = Palisade::try_serve_in(dir.path(), &args)
        .err()
        .expect("a readable token file must be refused");
    assert!(
        refused.contains("chmod 600") && refused.contains("token.txt"),
        "{refused}"
    );
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let p = Palisade::serve_in(
        dir.path(),
        &[
            "--api-token-file",
            token.to_str().unwrap(),
            "--http-host",
            "0.0.0.0",
            "--network",
            &minimal_network(),
        ],
    );
    // The listening warnings come with the listening line, maybe just after it is read.
    let log = p.wait_for_log("without TLS").await;
    assert!(log.contains("has 1 characters"), "{log}");
    assert!(log.contains("without TLS"), "{log}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", p.pid())).unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");

    // Failed admin logins: logged, at most about one line a second, with who tried.
    let started = Instant::now();
    for _ in 0..20 {
        let (s, _) = send(client().get(p.url("/eth/v1/keystores")).bearer_auth("wrong")).await;
        assert_eq!(s, 403);
    }
    let took = started.elapsed();
    let log = p.wait_for_log("admin authentication failed").await;
    let failures = log.matches("admin authentication failed").count();
    // One line per started second (however slow the machine made the 20 requests), plus one.
    let most = 2 + took.as_secs() as usize;
    assert!(
        (1..=most).contains(&failures),
        "{failures} lines for 20 failures in {took:?}"
    );
    assert!(log.contains("127.0.0.1"));
}

#[test]
fn a_second_process_cannot_reach_the_sqlite_file_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let net = minimal_network();
    let db = dir.path().join("protection.sqlite");
    let url = format!("sqlite://{}", db.display());
    let _first = Palisade::serve_in(dir.path(), &["--network", &net, "--database-url", &url]);
    let other = tempfile::tempdir().unwrap();
    let link = other.path().join("link.sqlite");
    std::os::unix::fs::symlink(&db, &link).unwrap();
    let link_url = format!("sqlite://{}", link.display());
    let second = Palisade::try_serve_in(other.path(), &["--network", &net, "--database-url", &link_url]);
    let log = second.err().expect("the second process must not start");
    assert!(log.contains("in use by another Palisade process"), "{log}");
}

/// Each file that grants access is refused through a link, owned by another user or readable
/// by others: a clear startup error naming the option, the file and the fix.
#[test]
fn files_that_grant_access_must_be_private_regular_files_of_ours() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real-secret");
    std::fs::write(&real, "0123456789abcdef0123456789abcdef0123456789abcdef").unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.path().join("planted-link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let readable = dir.path().join("readable");
    std::fs::copy(&real, &readable).unwrap();
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o640)).unwrap();
    let cert = dir.path().join("cert.pem");
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    let options = [
        "--api-token-file",
        "--signing-token-file",
        "--shared-keystore-secret-file",
        "--tls-key-file",
    ];
    let net = minimal_network();
    for option in options {
        for (file, expect) in [(&link, "link"), (&readable, "chmod 600")] {
            let mut args = vec![
                "serve",
                "--http-port",
                "0",
                "--network",
                &net,
                option,
                file.to_str().unwrap(),
            ];
            if option == "--tls-key-file" {
                args.extend(["--tls-cert-file", cert.to_str().unwrap()]);
            }
            if option == "--shared-keystore-secret-file" {
                args.extend(["--database-url", "postgres://palisade@127.0.0.1:1/none"]);
            }
            let (ok, _, err) = testkit::server::run(&args, dir.path());
            assert!(!ok, "{option} {}: started", file.display());
            let name = file.file_name().unwrap().to_str().unwrap();
            assert!(
                err.contains(option) && err.contains(name) && err.contains(expect),
                "{option} {name}: {err}"
            );
        }
    }
    // Owned by another user (only root can make one here; CI runs as root).
    if unsafe { libc::geteuid() } == 0 {
        let theirs = dir.path().join("theirs");
        std::fs::copy(&real, &theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let (ok, _, err) = testkit::server::run(
            &[
                "serve",
                "--http-port",
                "0",
                "--network",
                &net,
                "--api-token-file",
                theirs.to_str().unwrap(),
            ],
            dir.path(),
        );
        assert!(!ok);
        assert!(err.contains("theirs") && err.contains("belongs to user 65534"), "{err}");
    }
}

/// Lock files planted as links: the signer refuses to start and creates nothing where they
/// point.
#[test]
fn planted_lock_file_links_are_not_followed() {
    let net = minimal_network();
    for lock in ["palisade.sqlite.lock", "replica-state.bin.lock"] {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("created-by-palisade");
        std::os::unix::fs::symlink(&target, dir.path().join(lock)).unwrap();
        let refused = Palisade::try_serve_in(dir.path(), &["--network", &net])
            .err()
            .unwrap_or_else(|| panic!("started with {lock} planted as a link"));
        assert!(refused.contains(lock), "{lock}: {refused}");
        assert!(!target.exists(), "{lock}: a file was created through the link");
    }
    // A lock file the signer creates is private.
    let dir = tempfile::tempdir().unwrap();
    let p = Palisade::serve_in(dir.path(), &["--network", &net]);
    for lock in ["palisade.sqlite.lock", "replica-state.bin.lock"] {
        let mode = std::fs::metadata(dir.path().join(lock)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{lock}");
    }
    drop(p);
}
