//! What a web page, a slow client, a hostile keystore or a careless host can do to the signer,
//! tried against the real binary (issue 14). Deleted keys on other replicas, the chain pinned
//! by unknown keys and trailing data are attacked in `http_api.rs`, `chain_pin.rs` and the
//! parser's unit tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::http::{MINIMAL_GVR, attestation, client, get, key_args, minimal_network, randao, sign_url};
use testkit::server::Palisade;

async fn send(req: reqwest::RequestBuilder) -> (u16, String) {
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn a_web_page_cannot_make_it_sign() {
    let (_keys, p) = testkit::http::signer_with_interop_keys(&[]);
    let pk = &testkit::interop_pubkeys()[0];
    let url = sign_url(&p, pk);
    let body = attestation(1, 2, 0xaa, MINIMAL_GVR).to_string();

    // A form-like POST (no preflight in a browser), a foreign Origin, a rebinding Host.
    type Attack<'a> = (&'a [(&'a str, &'a str)], u16, &'a str);
    let attacks: [Attack; 3] = [
        (&[("content-type", "text/plain")], 415, "application/json"),
        (
            &[("content-type", "application/json"), ("origin", "http://evil.example")],
            403,
            "--http-cors-origins",
        ),
        (
            &[
                ("content-type", "application/json"),
                ("host", "rebind.attacker.example"),
            ],
            403,
            "--http-host-allowlist",
        ),
    ];
    for (headers, status, reason) in attacks {
        let mut req = client().post(&url).body(body.clone());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let (s, m) = send(req).await;
        assert_eq!(s, status, "{headers:?}: {m}");
        assert!(m.contains(reason), "{headers:?}: {m}");
    }
    // A preflight from a page is refused too.
    let (s, _) = send(
        client()
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", "http://evil.example")
            .header("access-control-request-method", "POST"),
    )
    .await;
    assert_eq!(s, 403);

    // None of them recorded anything: a different attestation for the same target signs.
    let (s, m) = testkit::http::post(&url, attestation(1, 2, 0xbb, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 200, "{m}");
}

#[tokio::test]
async fn named_origins_and_hosts_are_let_in() {
    let (_keys, p) = testkit::http::signer_with_interop_keys(&[
        "--http-cors-origins",
        "https://ops.example",
        "--http-host-allowlist",
        "signer.internal,127.0.0.1",
    ]);
    let url = sign_url(&p, &testkit::interop_pubkeys()[0]);
    let r = client()
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://ops.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://ops.example");
    let r = client()
        .post(&url)
        .header("content-type", "application/json")
        .header("host", "signer.internal:9000")
        .header("origin", "https://ops.example")
        .body(randao(3, MINIMAL_GVR).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://ops.example");
    let (s, _) = send(client().get(p.url("/upcheck")).header("host", "localhost")).await;
    assert_eq!(s, 403, "localhost is not in the configured list");
}

#[tokio::test]
async fn the_signing_policy_refuses_exits_and_deposits() {
    let (_keys, p) = testkit::http::signer_with_interop_keys(&["--deny-signing-types", "VOLUNTARY_EXIT,deposit"]);
    let pk = &testkit::interop_pubkeys()[1];
    let exit = json!({"type": "VOLUNTARY_EXIT",
        "fork_info": {"fork": {"previous_version": "0x00000001", "current_version": "0x00000001", "epoch": "0"},
                      "genesis_validators_root": MINIMAL_GVR},
        "voluntary_exit": {"epoch": "1", "validator_index": "1"}});
    let (s, m) = testkit::http::post(&sign_url(&p, pk), exit.to_string()).await;
    assert_eq!(s, 403, "{m}");
    assert!(m.to_string().contains("VOLUNTARY_EXIT"), "{m}");
    let (s, _) = testkit::http::post(&sign_url(&p, pk), randao(1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 200);
    let metrics = testkit::http::metrics_text(&p).await;
    assert!(
        metrics.contains(r#"palisade_signing_requests_total{type="VOLUNTARY_EXIT",outcome="not_permitted"} 1"#),
        "{metrics}"
    );

    // Per key, in its YAML definition: this key may only attest.
    let dir = tempfile::tempdir().unwrap();
    let ks = testkit::interop_dir().join("keystore-2.json");
    let pw = testkit::interop_dir().join("password.txt");
    std::fs::write(
        dir.path().join("k.yaml"),
        format!(
            "type: file-keystore\nkeystoreFile: {}\nkeystorePasswordFile: {}\nallowedSigningTypes: [ATTESTATION]\n",
            ks.display(),
            pw.display()
        ),
    )
    .unwrap();
    let net = minimal_network();
    let q = Palisade::serve(&["--network", &net, "--key-config-path", dir.path().to_str().unwrap()]);
    testkit::http::keys_loaded(&q).await;
    let pk2 = &testkit::interop_pubkeys()[2];
    let (s, m) = testkit::http::post(&sign_url(&q, pk2), randao(1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 403, "{m}");
    assert!(m.to_string().contains("k.yaml"), "{m}");
    let (s, _) = testkit::http::post(&sign_url(&q, pk2), attestation(0, 1, 1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 200);
}

/// An EIP-2335 keystore whose scrypt asks for `p` parallel lanes.
fn keystore_with_p(p: u64) -> String {
    let mut ks: Value =
        serde_json::from_str(&std::fs::read_to_string(testkit::interop_dir().join("keystore-0.json")).unwrap())
            .unwrap();
    ks["crypto"]["kdf"]["function"] = "scrypt".into();
    ks["crypto"]["kdf"]["params"] = json!({"dklen": 32, "n": 2, "r": 1, "p": p, "salt": "00".repeat(32)});
    ks.to_string()
}

#[tokio::test]
async fn a_hostile_keystore_is_refused_quickly_and_the_process_lives() {
    // In --keystores-path: the service starts (no crash loop), the key is reported failed.
    let dir = tempfile::tempdir().unwrap();
    let (ks, pw) = (dir.path().join("ks"), dir.path().join("pw.txt"));
    std::fs::create_dir_all(&ks).unwrap();
    std::fs::write(ks.join("hostile.json"), keystore_with_p(536_870_912)).unwrap();
    std::fs::write(&pw, "x").unwrap();
    let net = minimal_network();
    let mut args = key_args(&ks, &pw);
    args.extend(["--network", &net]);
    let p = Palisade::serve(&args);
    let keys = testkit::http::keys_loaded(&p).await;
    assert_eq!(keys["failed"], 1, "{keys}");
    // Which file failed, and why, only with the token.
    assert!(!keys.to_string().contains("hostile.json"), "{keys}");
    // Not ready (a key failed): 503, but the details are there with the token.
    let r = testkit::http::client()
        .get(p.url("/healthcheck"))
        .bearer_auth(p.token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let detailed: serde_json::Value = r.json().await.unwrap();
    assert!(detailed.to_string().contains("p at most"), "{detailed}");

    // Through the Key Manager API: an error for that keystore, answered at once.
    let started = Instant::now();
    let (s, v) = testkit::http::admin(
        &p,
        reqwest::Method::POST,
        "/eth/v1/keystores",
        &json!({"keystores": [keystore_with_p(1 << 20)], "passwords": ["x"]}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"][0]["status"], "error", "{v}");
    assert!(started.elapsed() < Duration::from_secs(5), "refused before any work");
    let (s, _) = get(&p.url("/upcheck")).await;
    assert_eq!(s, 200);
    // Too many keystores in one import.
    let many = vec![keystore_with_p(1); 1001];
    let (s, v) = testkit::http::admin(
        &p,
        reqwest::Method::POST,
        "/eth/v1/keystores",
        &json!({"keystores": many, "passwords": vec!["x"; 1001]}),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("at most 1000"), "{v}");
}

/// True when the server closed the connection (EOF or reset) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a 408 or an error answer first, then the close
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_and_limited() {
    // Timeouts long enough that a real signing on a loaded machine is done well before them.
    let (_keys, p) = testkit::http::signer_with_interop_keys(&[
        "--http-header-timeout-secs",
        "5",
        "--http-body-timeout-secs",
        "5",
        "--http-idle-timeout-secs",
        "5",
        "--http-max-connections",
        "40",
    ]);
    testkit::http::keys_loaded(&p).await;
    let addr = p.base.trim_start_matches("http://").to_string();
    let pk = testkit::interop_pubkeys()[0].clone();
    let mut held = Vec::new();
    for i in 0..30 {
        let mut s = TcpStream::connect(&addr).unwrap();
        match i % 3 {
            0 => s.write_all(b"POST /api/v1/eth2/sign/0x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").unwrap(),
            1 => s
                .write_all(
                    format!(
                        "POST /api/v1/eth2/sign/{pk} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 4000000\r\n\r\n{{\"type\""
                    )
                    .as_bytes(),
                )
                .unwrap(),
            _ => {}
        }
        held.push(s);
    }
    // A real signing is answered meanwhile, in time: before the slow ones are cut off.
    let started = Instant::now();
    let (s, m) = testkit::http::post(&sign_url(&p, &pk), randao(2, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 200, "{m}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a signing waited for the slow connections' timeouts"
    );
    // All 30 are closed by the timeouts (5 s each, checked every 0.5 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, s) in held.iter_mut().enumerate() {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        assert!(closed_within(s, left), "connection {i} still open");
    }

    // Beyond the limit, connections are closed on arrival; the signer still answers.
    let started = Instant::now();
    let mut crowd: Vec<(TcpStream, bool)> = (0..60)
        .map(|_| {
            let s = TcpStream::connect(&addr).unwrap();
            s.set_nonblocking(true).unwrap();
            (s, false)
        })
        .collect();
    let refused = testkit::wait::until("20 of 60 connections closed", Duration::from_secs(30), || {
        for (s, closed) in crowd.iter_mut().filter(|(_, c)| !*c) {
            *closed = is_closed_now(s);
        }
        let n = crowd.iter().filter(|(_, c)| *c).count();
        async move { (n >= 20).then_some(n) }
    })
    .await;
    let took = started.elapsed();
    drop(crowd);
    // Closed on arrival, not by a timeout: counted as refusals.
    let metrics = testkit::http::metrics_text(&p).await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("palisade_http_connections_refused_total"))
        .unwrap()
        .to_string();
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 20.0, "{refused} of 60 closed, but: {line}");
    let log = p.wait_for_log("connection closed on arrival").await;
    let logged = log.matches("connection closed on arrival").count();
    // At most one line a second (however long the machine took to see the crowd), plus one.
    assert!(
        (1..=2 + took.as_secs() as usize).contains(&logged),
        "{logged} log lines for {count} refusals in {took:?}"
    );
}

/// Whether the server has closed this non-blocking connection (EOF or reset) by now.
fn is_closed_now(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

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
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
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
    assert!(log.contains("readable by other users"), "{log}");
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
