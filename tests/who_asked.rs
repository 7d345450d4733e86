//! Who asked: the real client behind trusted proxies (forwarding headers, PROXY protocol v2)
//! recorded with what it was signed, a request id in the answer and every log line, a debug
//! line per signing, and JSON logs.

use std::io::{Read, Write};
use std::time::Duration;

use testkit::http::*;

fn recorded_clients(url: &str) -> String {
    let db = url.rsplit('/').next().unwrap();
    testkit::pg::shared().psql(db, "SELECT client FROM signed_attestations ORDER BY target_epoch")
}

/// A raw HTTP/1.1 request over `stream`, after `prefix` bytes; the status line.
fn raw_post(addr: &str, prefix: &[u8], path: &str, body: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may close a connection it finds malformed before the request is written
    // (a broken pipe then): what it answered, if anything, is what the caller checks.
    let _ = s.write_all(prefix).and_then(|_| {
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    });
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_client_is_recorded_and_logged() {
    let url = testkit::pg::shared().new_database();
    let (_k, p) = signer_with_interop_keys(&[
        "--database-url",
        &url,
        "--trusted-proxies",
        "127.0.0.1",
        "--log-level",
        "palisade=debug,info",
    ]);
    let key = &testkit::interop_pubkeys()[0];
    let sign = sign_url(&p, key);

    // Through a trusted proxy that forwards: the right-most untrusted address is the client.
    let r = client()
        .post(&sign)
        .header("content-type", "application/json")
        .header("x-forwarded-for", "6.6.6.6, 203.0.113.9")
        .header("x-request-id", "vc-1-duty-42")
        .body(attestation(1, 2, 1, MINIMAL_GVR).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "vc-1-duty-42");
    // A request id is made up when none is given.
    let (s, _) = post(&sign, attestation(2, 3, 1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 200);

    // Through a proxy speaking the PROXY protocol v2.
    let header = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (
            "198.51.100.23:40000".parse::<std::net::SocketAddr>().unwrap(),
            "10.0.0.1:9000".parse::<std::net::SocketAddr>().unwrap(),
        ),
    )
    .build()
    .unwrap();
    let addr = p.base.trim_start_matches("http://").to_string();
    let path = format!("/api/v1/eth2/sign/{key}");
    let status = raw_post(&addr, &header, &path, &attestation(3, 4, 1, MINIMAL_GVR).to_string());
    assert!(status.contains("200"), "{status}");

    let who = recorded_clients(&url);
    let lines: Vec<&str> = who.lines().collect();
    assert!(
        lines[0].starts_with("203.0.113.9") && lines[0].contains("via 127.0.0.1"),
        "{who}"
    );
    assert!(lines[1].starts_with("127.0.0.1"), "{who}");
    assert!(lines[2].starts_with("198.51.100.23:40000 via 127.0.0.1"), "{who}");

    let log = p.log();
    let line = log
        .lines()
        .find(|l| l.contains("vc-1-duty-42") && l.contains("signing"))
        .unwrap_or_else(|| panic!("no debug line for the signing with its request id:\n{log}"));
    assert!(
        line.contains("203.0.113.9")
            && line.contains("ATTESTATION")
            && line.contains("target 2")
            && line.contains("signed"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_is_ignored_from_untrusted_peers() {
    let url = testkit::pg::shared().new_database();
    let (_k, p) = signer_with_interop_keys(&["--database-url", &url]);
    let r = client()
        .post(sign_url(&p, &testkit::interop_pubkeys()[0]))
        .header("content-type", "application/json")
        .header("x-forwarded-for", "203.0.113.9")
        .body(attestation(1, 2, 1, MINIMAL_GVR).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let who = recorded_clients(&url);
    assert!(who.starts_with("127.0.0.1") && !who.contains("203.0.113.9"), "{who}");
    // A PROXY header from an untrusted peer is not a header: the request is malformed.
    let header = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (
            "198.51.100.23:1".parse::<std::net::SocketAddr>().unwrap(),
            "10.0.0.1:9000".parse::<std::net::SocketAddr>().unwrap(),
        ),
    )
    .build()
    .unwrap();
    let addr = p.base.trim_start_matches("http://").to_string();
    let status = raw_post(&addr, &header, "/upcheck", "");
    assert!(!status.contains("200"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs() {
    let (_k, p) = signer_with_interop_keys(&["--log-format", "json"]);
    keys_loaded(&p).await;
    let log = p.log();
    let mut n = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
        n += 1;
    }
    assert!(n >= 2, "{log}");
}
