//! The log is the operator's, not the client's: no client can size a line or fill the disk,
//! and each refusal is one line.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use testkit::http::{MINIMAL_GVR, attestation, client, sign_url};

use super::{addr, log_since, metric, read_response};

/// Requests `n` times (16 at once), each with a header `name` of `size` bytes; the statuses.
async fn with_big_header(p: &testkit::server::Palisade, name: &'static str, size: usize, n: usize) -> Vec<u16> {
    let value = format!("http://{}.example", "a".repeat(size));
    let url = p.url("/upcheck");
    let mut statuses = Vec::new();
    for _ in 0..n / 16 {
        let batch: Vec<_> = (0..16)
            .map(|_| {
                let req = client().get(&url).header(name, &value).send();
                tokio::spawn(async move { req.await.map(|r| r.status().as_u16()).unwrap_or(0) })
            })
            .collect();
        for b in batch {
            statuses.push(b.await.unwrap());
        }
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_size_the_log() {
    let (_keys, p) = testkit::http::signer_with_interop_keys(&[]);
    let from = p.log().len();
    let started = Instant::now();
    // An Origin the guard refuses, 20 KB each: the line quotes 100 characters of it.
    let refused = with_big_header(&p, "origin", 20_000, 1_000).await;
    assert!(refused.iter().all(|s| *s == 403), "{:?}", &refused[..5]);
    // 60 KB: beyond the request head limit, refused before any handler, unlogged.
    let too_big = with_big_header(&p, "origin", 60_000, 320).await;
    assert!(too_big.iter().all(|s| *s == 431), "{:?}", &too_big[..5]);
    // One 300 KB header.
    let mut s = TcpStream::connect(addr(&p)).unwrap();
    let _ = s.write_all(
        format!(
            "GET /upcheck HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
            "b".repeat(300_000)
        )
        .as_bytes(),
    );
    if let Ok((status, _, _)) = read_response(&mut s) {
        assert_eq!(status, 431);
    }
    let took = started.elapsed();
    // Let the last lines reach the collector.
    p.wait_for_log("request refused").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = log_since(&p, from);
    let longest = written.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 1_000, "a line of {longest} bytes");
    let lines = written.matches("request refused").count();
    assert!(
        (1..=2 + took.as_secs() as usize).contains(&lines),
        "{lines} lines for 1000 refusals in {took:?}"
    );
    assert!(
        written.len() < 32 * 1024,
        "{} bytes of log for 1,321 requests",
        written.len()
    );
    assert!(written.contains("similar_since_last"), "{written}");
}

#[tokio::test]
async fn a_refused_double_vote_is_one_line() {
    let (_keys, p) = testkit::http::signer_with_interop_keys(&[]);
    testkit::http::keys_loaded(&p).await;
    let pk = &testkit::interop_pubkeys()[4];
    let url = sign_url(&p, pk);
    let (s, _) = testkit::http::post(&url, attestation(1, 2, 1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 200);
    let from = p.log().len();
    let (s, _) = testkit::http::post(&url, attestation(1, 2, 2, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 412);
    p.wait_for_log("refused to sign").await;
    // Any second line would have been written before this one (or with it).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = log_since(&p, from);
    let warnings: Vec<&str> = written.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{written}");
    assert!(
        warnings[0].contains(pk.trim_start_matches("0x")) || warnings[0].contains(pk.as_str()),
        "{written}"
    );

    // A client repeating it at will: at most a line a second, each counted in the metric.
    let started = Instant::now();
    for root in 3..203u8 {
        let (s, _) = testkit::http::post(&url, attestation(1, 2, root, MINIMAL_GVR).to_string()).await;
        assert_eq!(s, 412);
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = log_since(&p, from).matches("refused to sign").count();
    assert!(
        (1..=3 + took.as_secs() as usize).contains(&lines),
        "{lines} lines for 201 refusals in {took:?}"
    );
    let m = testkit::http::metrics_text(&p).await;
    let counted = metric(
        &m,
        r#"palisade_slashing_refusals_total{type="ATTESTATION",reason="target_not_above_highest",risk="slashable"}"#,
    );
    assert!(counted >= 201.0, "{m}");
}

#[tokio::test]
async fn failed_tls_handshakes_are_logged_at_most_once_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    palisade::fsutil::write_private(
        &key,
        generated.signing_key.serialize_pem().as_bytes(),
        palisade::fsutil::Existing::Replace,
    )
    .unwrap();
    let p = testkit::server::Palisade::serve(&[
        "--network",
        &testkit::http::minimal_network(),
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
    ]);
    let a = p.base.trim_start_matches("https://").to_string();
    let from = p.log().len();
    let started = Instant::now();
    for _ in 0..300 {
        // Plain HTTP to the TLS port: the handshake fails at once.
        let mut s = TcpStream::connect(&a).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let _ = super::closed_within(&mut s, Duration::from_secs(10));
    }
    let took = started.elapsed();
    let log = p.wait_for_log("TLS handshake failed").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = log_since(&p, from).matches("TLS handshake failed").count();
    assert!(
        (1..=2 + took.as_secs() as usize).contains(&lines),
        "{lines} lines for 300 failures in {took:?}"
    );
    drop(log);
}

/// A request the client must fix (malformed, for a key not here) is one INFO line that says
/// which key, which type and why, inside the request's span (its id and client); a flood of
/// them is held to one line a second per kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_is_one_line_that_says_why() {
    let (_keys, p) = testkit::http::signer_with_interop_keys(&[]);
    testkit::http::keys_loaded(&p).await;
    let pk = &testkit::interop_pubkeys()[0];
    let mut bad = attestation(1, 2, 1, MINIMAL_GVR);
    bad["attestation"]["source"]["epoch"] = "not-a-number".into();
    let from = p.log().len();
    let (s, _) = testkit::http::post(&sign_url(&p, pk), bad.to_string()).await;
    assert_eq!(s, 400);
    let unknown = format!("0x{}", "a1".repeat(48));
    let (s, _) = testkit::http::post(&sign_url(&p, &unknown), attestation(1, 2, 1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 404);
    let lines = testkit::wait::until("both refusals logged", Duration::from_secs(30), || {
        let log = log_since(&p, from);
        async move {
            let lines: Vec<String> = log
                .lines()
                .filter(|l| l.contains("signing refused"))
                .map(String::from)
                .collect();
            (lines.len() >= 2).then_some(lines)
        }
    })
    .await;
    let malformed = lines
        .iter()
        .find(|l| l.contains("bad_request"))
        .expect("a bad_request line");
    assert!(
        malformed.contains("INFO") && malformed.contains("request{id="),
        "{malformed}"
    );
    assert!(
        malformed.contains(pk.as_str()) && malformed.contains("source"),
        "{malformed}"
    );
    let not_here = lines
        .iter()
        .find(|l| l.contains("unknown_key"))
        .expect("an unknown_key line");
    assert!(
        not_here.contains(&unknown) && not_here.contains("ATTESTATION"),
        "{not_here}"
    );

    // 200 more malformed requests: a line or two, each saying how many were held back.
    let from = p.log().len();
    for _ in 0..200 {
        testkit::http::post(&sign_url(&p, pk), bad.to_string()).await;
    }
    let flood = log_since(&p, from);
    let n = flood.lines().filter(|l| l.contains("signing refused")).count();
    assert!((1..=20).contains(&n), "{n} lines for 200 bad requests:\n{flood}");
}
