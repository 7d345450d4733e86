//! Large request bodies, over HTTP/1.1 and HTTP/2: an oversized one is refused unread, and
//! however many senders, the bodies in memory stay within `--http-body-budget-mb` while a
//! validator client's small requests are still signed.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use testkit::http::{MINIMAL_GVR, randao, sign_url};

use super::{addr, memory_kib, metric};

/// Sends a head declaring `length` body bytes, then (unless answered first) `sent` of them,
/// and holds the connection until `hold` passes. The status, when one came.
async fn large_body(to: String, path: String, length: usize, sent: usize, hold: Duration) -> Option<u16> {
    let mut s = TcpStream::connect(&to).await.ok()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.ok()?;
    let mut answer = [0u8; 512];
    // A refusal comes at once, before a byte of the body is read.
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(3), s.read(&mut answer)).await {
        return status(&answer[..n]);
    }
    let chunk = vec![b' '; 64 * 1024];
    let mut left = sent;
    while left > 0 {
        let n = left.min(chunk.len());
        if s.write_all(&chunk[..n]).await.is_err() {
            break;
        }
        left -= n;
    }
    match tokio::time::timeout(hold, s.read(&mut answer)).await {
        Ok(Ok(n)) => status(&answer[..n]),
        _ => None,
    }
}

fn status(answer: &[u8]) -> Option<u16> {
    std::str::from_utf8(answer)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_flight_stay_within_the_budget() {
    let (_keys, p) =
        testkit::http::signer_with_interop_keys(&["--http-body-budget-mb", "8", "--http-body-timeout-secs", "60"]);
    testkit::http::keys_loaded(&p).await;
    let a = addr(&p);
    let pk = testkit::interop_pubkeys()[0].clone();
    let path = format!("/api/v1/eth2/sign/{pk}");
    super::many_sockets();
    let before = memory_kib(p.pid(), "VmRSS");
    let peak = super::PeakMemory::watch(p.pid());

    // 300 senders of 4 MiB bodies: beyond the signing routes' 1 MiB, refused unread.
    let senders: Vec<_> = (0..300)
        .map(|_| tokio::spawn(large_body(a.clone(), path.clone(), 4 << 20, 0, Duration::ZERO)))
        .collect();
    for s in senders {
        assert_eq!(s.await.unwrap(), Some(413));
    }

    // 300 senders of bodies just under the limit, each stopping one byte short: the budget's
    // part for large bodies (6 of 8 MiB) holds six; the others are answered 503 at once.
    let hold = Duration::from_secs(30);
    let senders: Vec<_> = (0..300)
        .map(|_| tokio::spawn(large_body(a.clone(), path.clone(), 1_000_000, 999_999, hold)))
        .collect();
    // Meanwhile a validator client signs, every time.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for epoch in 0..10u64 {
        let (s, m) = testkit::http::post(&sign_url(&p, &pk), randao(epoch, MINIMAL_GVR).to_string()).await;
        assert_eq!(s, 200, "{m}");
    }
    let peak = peak.stop();
    let m = testkit::http::metrics_text(&p).await;
    let refused = metric(&m, "palisade_http_bodies_refused_total");
    assert_eq!(refused, 294.0, "{m}");
    // 300 bodies of 1 MB would be 300 MB; within the budget the signer grows by far less.
    let grown_mib = peak.saturating_sub(before) / 1024;
    assert!(grown_mib < 100, "grew by {grown_mib} MiB (from {before} KiB)");
    let log = p.log();
    let lines = log.matches("request refused unread").count();
    assert!((1..50).contains(&lines), "{lines} lines for {refused} refusals");
    for s in senders {
        s.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_share_the_same_budget() {
    let (_keys, p) =
        testkit::http::signer_with_interop_keys(&["--http-body-budget-mb", "8", "--http-body-timeout-secs", "60"]);
    testkit::http::keys_loaded(&p).await;
    let pk = testkit::interop_pubkeys()[0].clone();
    let tcp = TcpStream::connect(addr(&p)).await.unwrap();
    let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let uri = format!("http://{}/api/v1/eth2/sign/{pk}", addr(&p));
    // 40 streams on one connection, each declaring 1 MB and sending 64 KiB of it.
    let mut pending = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..40 {
        let mut h2 = h2.clone().ready().await.unwrap();
        let req = axum::http::Request::post(&uri)
            .header("content-type", "application/json")
            .header("content-length", "1000000")
            .body(())
            .unwrap();
        let (response, mut body) = h2.send_request(req, false).unwrap();
        body.send_data(vec![b' '; 64 * 1024].into(), false).unwrap();
        pending.push(response);
        streams.push(body);
    }
    let mut busy = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for r in pending.drain(..) {
        if let Ok(Ok(r)) = tokio::time::timeout_at(deadline, r).await {
            assert_eq!(r.status(), 503);
            assert_eq!(r.headers()["retry-after"], "1");
            busy += 1;
        }
    }
    assert_eq!(busy, 34, "six streams fit the large bodies' part of the budget");
    let (s, m) = testkit::http::post(&sign_url(&p, &pk), randao(1, MINIMAL_GVR).to_string()).await;
    assert_eq!(s, 200, "{m}");
    drop(streams);
}

/// Bodies without a declared length are counted at the route's limit, and one that grows
/// beyond it is cut off there.
#[tokio::test]
async fn a_chunked_body_beyond_the_limit_is_cut_off() {
    let (_keys, p) = testkit::http::signer_with_interop_keys(&[]);
    let pk = testkit::interop_pubkeys()[0].clone();
    let mut s = std::net::TcpStream::connect(addr(&p)).unwrap();
    use std::io::Write;
    s.write_all(
        format!(
            "POST /api/v1/eth2/sign/{pk} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
    for _ in 0..20 {
        if s.write_all(chunk.as_bytes()).is_err() {
            break;
        }
    }
    let (status, _, body) = super::read_response(&mut s).unwrap();
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("1048576"), "{body}");
}
