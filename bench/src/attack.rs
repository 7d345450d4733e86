//! A validator client signing while it is attacked (issue 25): thousands of sockets that send
//! nothing (reopened as soon as they are closed) and hundreds of senders of large bodies
//! (retrying as soon as they are refused). Protected attestations in a closed loop before and
//! during the attack, new connections during it, and the signer's memory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::fixtures::raw_key_config;
use crate::load::{attestation_loop, closed_loop, http_get, http_get_text, loop_connections, ms, percentile};
use testkit::server::Palisade;

#[derive(clap::Args)]
pub struct Options {
    /// Sockets that connect and send nothing.
    #[arg(long, default_value_t = 4000)]
    idle: usize,
    /// Senders of 1 MB bodies that stop one byte short.
    #[arg(long, default_value_t = 300)]
    large: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// The validator client's keep-alive connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

/// The signer's resident memory in KiB (`field`: VmRSS or VmHWM).
fn memory_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| {
            v.trim_start_matches(':')
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// A connection from the attacker's own loopback address when the host allows, so that the
/// signer's per-client cap sees it as one client.
fn attacker_connect(addr: &str, from: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = from else {
        return TcpStream::connect(addr);
    };
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&std::net::SocketAddr::new(ip, 0).into())?;
    let target: std::net::SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    socket.connect(&target.into())?;
    Ok(socket.into())
}

fn closed_now(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

pub fn run(o: Options) -> anyhow::Result<()> {
    palisade::process::raise_open_file_limit();
    let work = tempfile::Builder::new().prefix("palisade-bench-attack.").tempdir()?;
    let defs = work.path().join("defs");
    let keys = 32;
    let pubkeys = raw_key_config(&defs, keys)?;
    let p = Palisade::serve_in(
        work.path(),
        &[
            "--network",
            "mainnet",
            "--future-tolerance-secs",
            "off",
            "--key-config-path",
            defs.to_str().unwrap(),
        ],
    );
    let addr = p.base.trim_start_matches("http://").to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !http_get(&addr, "/readyz").is_ok_and(|(status, _)| status == 200) {
        anyhow::ensure!(Instant::now() < deadline, "the signer was not ready within 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let connections = loop_connections(o.connections, keys);
    let first = crate::messages::FULU_EPOCH + 10;
    let before = closed_loop(
        &addr,
        connections,
        o.seconds,
        attestation_loop(&pubkeys, connections, first),
    );
    let rss_before = memory_kib(p.pid(), "VmRSS");

    let from = attacker_connect(&addr, Some("127.0.0.2".parse()?))
        .ok()
        .map(|_| "127.0.0.2".parse().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let (reopened, refused_bodies) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // How many of the crowd connected, and when the last did (ms after the attack began).
    let (crowd_open, crowd_ms) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(u64::MAX)));
    let attack_began = Instant::now();
    let mut threads = Vec::new();
    // The silent crowd, reopened as soon as the signer closes one.
    {
        let (stop, reopened, addr) = (stop.clone(), reopened.clone(), addr.clone());
        let (crowd_open, crowd_ms) = (crowd_open.clone(), crowd_ms.clone());
        let idle = o.idle;
        threads.push(std::thread::spawn(move || {
            let mut crowd: Vec<TcpStream> = (0..idle)
                .filter_map(|_| attacker_connect(&addr, from).ok())
                .inspect(|s| {
                    let _ = s.set_nonblocking(true);
                })
                .collect();
            crowd_open.store(crowd.len() as u64, Ordering::Relaxed);
            crowd_ms.store(attack_began.elapsed().as_millis() as u64, Ordering::Relaxed);
            while !stop.load(Ordering::Relaxed) {
                for s in crowd.iter_mut() {
                    if closed_now(s)
                        && let Ok(n) = attacker_connect(&addr, from)
                    {
                        let _ = n.set_nonblocking(true);
                        *s = n;
                        reopened.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
    }
    // The large bodies, each sent as fast as the signer reads it, then held.
    let path = format!("/api/v1/eth2/sign/{}", pubkeys[0]);
    for _ in 0..o.large {
        let (stop, refused, addr, path) = (stop.clone(), refused_bodies.clone(), addr.clone(), path.clone());
        threads.push(std::thread::spawn(move || {
            let body = vec![b' '; 64 * 1024];
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = attacker_connect(&addr, from) else {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                };
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                // A signer that stops reading must not hold this thread past the run's end.
                let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
                let head = format!(
                    "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
                );
                if s.write_all(head.as_bytes()).is_err() {
                    continue;
                }
                let mut answer = [0u8; 256];
                if let Ok(n) = s.read(&mut answer)
                    && n > 0
                {
                    refused.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                let mut left = 999_999usize;
                while left > 0 && !stop.load(Ordering::Relaxed) {
                    let n = left.min(body.len());
                    if s.write_all(&body[..n]).is_err() {
                        break;
                    }
                    left -= n;
                }
                // Held until the signer gives up on it (the body timeout) or the run ends.
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                while !stop.load(Ordering::Relaxed) {
                    match s.read(&mut answer) {
                        Ok(_) => break,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => break,
                    }
                }
            }
        }));
    }
    // The crowd connects in full before the client is measured (the signer accepts it while
    // the body senders churn), so that "during" means a full table being reopened.
    let crowd_deadline = Instant::now() + Duration::from_secs(120);
    while crowd_ms.load(Ordering::Relaxed) == u64::MAX && Instant::now() < crowd_deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak, pid) = (stop.clone(), peak.clone(), p.pid());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(memory_kib(pid, "VmRSS"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let during = closed_loop(
        &addr,
        connections,
        o.seconds,
        attestation_loop(&pubkeys, connections, first + 1_000_000),
    );
    // New connections during the attack, as after a client restart: one request each.
    let mut fresh = Vec::new();
    let mut fresh_failed = 0;
    for i in 0..50u64 {
        let started = Instant::now();
        let body = crate::messages::randao(i).to_string();
        let ok = (|| -> anyhow::Result<bool> {
            let mut s = TcpStream::connect(&addr)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            write!(
                s,
                "POST /api/v1/eth2/sign/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                pubkeys[1],
                body.len()
            )?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text.starts_with("HTTP/1.1 200"))
        })()
        .unwrap_or(false);
        if ok {
            fresh.push(started.elapsed());
        } else {
            fresh_failed += 1;
        }
    }
    fresh.sort();
    let metrics = http_get_text(&addr, "/metrics").unwrap_or_default();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let _ = sampler.join();
    let peak = peak.load(Ordering::Relaxed);
    let hwm = memory_kib(p.pid(), "VmHWM");
    let line = |name: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .map(|l| l.rsplit(' ').next().unwrap_or("0").parse::<f64>().unwrap_or(0.0))
            .sum::<f64>()
    };
    println!(
        "attack: {} silent sockets (reopened when closed) and {} senders of 1 MB bodies, from {}; \
         a validator client on {connections} keep-alive connections signs protected attestations",
        o.idle,
        o.large,
        from.map_or("127.0.0.1".to_string(), |ip| ip.to_string())
    );
    println!("  before the attack: {:.0}/s  {}", before.rate(), before.summary());
    println!("  during the attack: {:.0}/s  {}", during.rate(), during.summary());
    println!(
        "  p99 during / before: {:.2}",
        ms(during.percentile(0.99)) / ms(before.percentile(0.99)).max(1e-9)
    );
    println!(
        "  new connections during the attack: {} of 50 signed, p50 {:.2} ms  p99 {:.2} ms",
        fresh.len(),
        ms(percentile(&fresh, 0.5)),
        ms(percentile(&fresh, 0.99))
    );
    let _ = fresh_failed;
    println!(
        "  signer memory: {:.0} MiB before, peak {:.0} MiB sampled during ({:.0} MiB high-water mark of the process)",
        rss_before as f64 / 1024.0,
        peak as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    match crowd_ms.load(Ordering::Relaxed) {
        u64::MAX => println!("  the crowd was still connecting when the run ended"),
        ms => println!(
            "  the crowd: {} of {} sockets connected within {:.1} s of the attack's start",
            crowd_open.load(Ordering::Relaxed),
            o.idle,
            ms as f64 / 1e3
        ),
    }
    println!(
        "  attacker: {} silent sockets reopened; bodies refused 503 {} (signer counts {}); connections closed to make room {}, refused {}",
        reopened.load(Ordering::Relaxed),
        refused_bodies.load(Ordering::Relaxed),
        line("palisade_http_bodies_refused_total"),
        line("palisade_http_connections_evicted_total"),
        line("palisade_http_connections_refused_total"),
    );
    Ok(())
}
