//! Slow, silent and crowding connections: none holds the signer, and a validator client's
//! keep-alive connection is never cut for waiting between requests.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use testkit::http::{MINIMAL_GVR, randao, sign_url};

use super::{addr, closed_within, exchange, is_closed_now, metric};

#[tokio::test]
async fn slow_connections_are_closed_and_a_signing_is_answered_meanwhile() {
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
    let a = addr(&p);
    let pk = testkit::interop_pubkeys()[0].clone();
    let mut held = Vec::new();
    for i in 0..30 {
        let mut s = TcpStream::connect(&a).unwrap();
        match i % 3 {
            0 => s.write_all(b"POST /api/v1/eth2/sign/0x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").unwrap(),
            1 => s
                .write_all(
                    format!(
                        "POST /api/v1/eth2/sign/{pk} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 400000\r\n\r\n{{\"type\""
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
    // All 30 are closed by the timeouts (5 s each).
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, s) in held.iter_mut().enumerate() {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        assert!(closed_within(s, left), "connection {i} still open");
    }
}

/// What once locked clients out: more silent sockets than the connection limit, reopened as
/// soon as they are closed. Each new connection takes the place of the oldest silent one, so
/// a client that sends its request gets in, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_silent_sockets_cannot_lock_clients_out() {
    // A header deadline longer than the test: only making room can let the client in. The
    // crowd comes from eight other addresses, each within its share, and overfills the table.
    const TABLE: usize = 2048;
    const PER_ADDRESS: usize = 320;
    let (_keys, p) = testkit::http::signer_with_interop_keys(&[
        "--http-max-connections",
        &TABLE.to_string(),
        "--http-header-timeout-secs",
        "300",
    ]);
    testkit::http::keys_loaded(&p).await;
    let a = addr(&p);
    super::many_sockets();
    let mut crowd = Vec::new();
    for host in 2..10 {
        let source = format!("127.0.0.{host}");
        for _ in 0..PER_ADDRESS {
            crowd.push((source.clone(), connect_from(&source, &a).await));
        }
    }
    let overflow = (crowd.len() - TABLE) as f64;
    let evicted_silent = r#"palisade_http_connections_evicted_total{state="silent"}"#;
    testkit::wait::until("the crowd fills the table", Duration::from_secs(60), || async {
        let m = testkit::http::metrics_text(&p).await;
        (metric(&m, evicted_silent) >= overflow).then_some(())
    })
    .await;

    // The attacker reopens every socket that was closed, as fast as it can.
    let stop = Arc::new(AtomicBool::new(false));
    let reopened = Arc::new(AtomicUsize::new(0));
    let attacker = {
        let (stop, reopened, a) = (stop.clone(), reopened.clone(), a.clone());
        std::thread::spawn(move || {
            let mut crowd = crowd;
            while !stop.load(Ordering::Relaxed) {
                for (source, s) in crowd.iter_mut() {
                    if is_closed_now(s)
                        && let Ok(n) = connect_from_blocking(source, &a)
                    {
                        *s = n;
                        reopened.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    // Twelve attempts, each on a new connection (as after a client restart).
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let pk = &testkit::interop_pubkeys()[1];
    let mut answered = Vec::new();
    for epoch in 0..12u64 {
        let r = fresh
            .post(sign_url(&p, pk))
            .header("content-type", "application/json")
            .body(randao(epoch, MINIMAL_GVR).to_string())
            .send()
            .await;
        answered.push(r.map(|r| r.status().as_u16()).map_err(|e| e.to_string()));
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    assert!(answered.iter().all(|r| r == &Ok(200)), "{answered:?}");
    // The attack was live: sockets were closed to let the client in, and reopened.
    assert!(
        reopened.load(Ordering::Relaxed) >= 12,
        "{} reopened",
        reopened.load(Ordering::Relaxed)
    );
    let m = testkit::http::metrics_text(&p).await;
    assert_eq!(metric(&m, "palisade_http_connections_refused_total"), 0.0, "{m}");
    // The warning is rate-limited, not one per closed socket.
    let log = p.log();
    let lines = log.matches("closed the connection with least claim").count();
    let evicted = metric(&m, evicted_silent);
    assert!(
        lines >= 1 && (lines as f64) < evicted / 4.0,
        "{lines} lines for {evicted} evictions"
    );
}

/// A client waits between requests longer than the header deadline: its keep-alive
/// connection stays (the idle timeout applies, and is announced). A socket that never sends
/// a request, and a request head that stops half-way, are cut at the header deadline.
#[tokio::test]
async fn keep_alive_outlives_the_header_deadline_but_silence_does_not() {
    let (_keys, p) =
        testkit::http::signer_with_interop_keys(&["--http-header-timeout-secs", "2", "--http-idle-timeout-secs", "60"]);
    let a = addr(&p);
    let request = format!("GET /upcheck HTTP/1.1\r\nHost: {a}\r\n\r\n");
    let mut client = TcpStream::connect(&a).unwrap();
    let (s, head, _) = exchange(&mut client, request.as_bytes());
    assert_eq!(s, 200);
    assert!(head.contains("keep-alive: timeout=60"), "{head}");
    let mut silent = TcpStream::connect(&a).unwrap();
    let mut half = TcpStream::connect(&a).unwrap();
    half.write_all(b"GET /upcheck HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();

    // Twice the header deadline, as a validator client between two slots.
    std::thread::sleep(Duration::from_secs(4));
    let (s, _, _) = exchange(&mut client, request.as_bytes());
    assert_eq!(s, 200, "the keep-alive connection was cut");
    // Well within the idle timeout (60 s), so the header deadline (2 s) closed them.
    assert!(
        closed_within(&mut silent, Duration::from_secs(20)),
        "a silent socket is still open"
    );
    assert!(
        closed_within(&mut half, Duration::from_secs(20)),
        "a half head is still open"
    );

    // A later request's head that stops half-way is cut by the header deadline too.
    client.write_all(b"GET /upcheck HTTP/1.1\r\nHo").unwrap();
    assert!(
        closed_within(&mut client, Duration::from_secs(20)),
        "a half head after a request"
    );
    let m = testkit::http::metrics_text(&p).await;
    assert!(
        metric(
            &m,
            r#"palisade_http_connections_timed_out_total{state="first_request"}"#
        ) >= 2.0,
        "{m}"
    );
    assert!(
        metric(&m, r#"palisade_http_connections_timed_out_total{state="header"}"#) >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"palisade_http_connections_timed_out_total{state="idle"}"#),
        0.0,
        "{m}"
    );
}

/// A connection from `source` (an address of the loopback network) to `to`.
async fn connect_from(source: &str, to: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let s = socket.connect(to.parse().unwrap()).await.unwrap().into_std().unwrap();
    s.set_nonblocking(true).unwrap();
    s
}

/// As `connect_from`, for a plain thread.
fn connect_from_blocking(source: &str, to: &str) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&format!("{source}:0").parse::<std::net::SocketAddr>().unwrap().into())?;
    socket.connect(&to.parse::<std::net::SocketAddr>().unwrap().into())?;
    let s: TcpStream = socket.into();
    s.set_nonblocking(true)?;
    Ok(s)
}

/// One address holding more than its share displaces its own connections, never another's.
#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let (_keys, p) = testkit::http::signer_with_interop_keys(&[
        "--http-max-connections",
        "100",
        "--http-max-connections-per-client",
        "10",
        "--http-header-timeout-secs",
        "300",
    ]);
    testkit::http::keys_loaded(&p).await;
    let a = addr(&p);
    let mut greedy = Vec::new();
    for _ in 0..30 {
        greedy.push(connect_from("127.0.0.2", &a).await);
    }
    let mut modest = Vec::new();
    for _ in 0..10 {
        modest.push(connect_from("127.0.0.3", &a).await);
    }
    let mut closed = vec![false; greedy.len()];
    testkit::wait::until("the greedy address displaced its own", Duration::from_secs(60), || {
        for (s, c) in greedy.iter_mut().zip(closed.iter_mut()) {
            *c = *c || is_closed_now(s);
        }
        let n = closed.iter().filter(|c| **c).count();
        async move { (n >= 20).then_some(()) }
    })
    .await;
    let m = testkit::http::metrics_text(&p).await;
    let evicted = r#"palisade_http_connections_evicted_total{state="silent"}"#;
    assert_eq!(
        metric(&m, evicted),
        20.0,
        "the greedy address keeps its share, no more: {m}"
    );
    assert!(
        modest.iter_mut().all(|s| !is_closed_now(s)),
        "another address lost a connection"
    );
    let (s, _) = testkit::http::post(
        &sign_url(&p, &testkit::interop_pubkeys()[2]),
        randao(1, MINIMAL_GVR).to_string(),
    )
    .await;
    assert_eq!(s, 200);
}
