//! Failover behind HAProxy: two replicas on one PostgreSQL, HAProxy checking `/readyz` and
//! retrying a 503 on the other replica, clients signing protected attestations through it.
//! Replica A's database connection is broken twice (reset, then a silent blackhole); the
//! numbers are how long a client waited and whether it ever saw an error.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use crate::fixtures::raw_key_config;
use crate::load::{MakeRequest, attestation_loop, http_get, ms, percentile};
use crate::messages;
use crate::protection_bench::wait_for_keys;
use crate::proxy::Proxy;
use testkit::pg::PgCluster;
use testkit::procs::{lease_port, spawn_tied};
use testkit::server::Palisade;

#[derive(clap::Args)]
pub struct Options {
    /// Concurrent client connections to HAProxy.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    #[arg(long, default_value_t = 16)]
    validators: usize,
    /// How long each fault lasts.
    #[arg(long, default_value_t = 5.0)]
    fault_seconds: f64,
    /// Normal operation before, between and after the faults.
    #[arg(long, default_value_t = 3.0)]
    calm_seconds: f64,
    /// The replicas' --database-timeout-ms: in a silent partition it bounds the failover.
    #[arg(long, default_value_t = 1500)]
    database_timeout_ms: u64,
}

/// One answered (or failed) request as the client saw it.
struct Sample {
    sent: Duration,
    latency: Duration,
    status: u16,
    server: String,
}

/// HAProxy as a deployment runs it in front of the replicas: the shipped configuration, which
/// docs/high-availability.md shows and deploy/ha-local.sh runs.
const HAPROXY_CONFIG: &str = include_str!("../../deploy/haproxy/palisade.cfg");

pub fn run(opts: Options) -> anyhow::Result<()> {
    if Command::new("haproxy").arg("-v").output().is_err() {
        anyhow::bail!("haproxy is not installed (apt-get install haproxy)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let pg = PgCluster::start_with(&[]);
    let db = pg.new_database();
    let db_name = db.rsplit('/').next().unwrap().to_string();
    let work = tempfile::Builder::new().prefix("palisade-failover.").tempdir()?;
    let keys_dir = work.path().join("keys");
    let keys = raw_key_config(&keys_dir, opts.validators)?;

    let proxies = [rt.block_on(Proxy::start(pg.port))?, rt.block_on(Proxy::start(pg.port))?];
    let replicas: Vec<Palisade> = proxies
        .iter()
        .enumerate()
        .map(|(i, proxy)| {
            let dir = work.path().join(format!("r{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            Palisade::serve_in(
                &dir,
                &[
                    "--future-tolerance-secs",
                    "off",
                    "--network",
                    "mainnet",
                    "--key-config-path",
                    keys_dir.to_str().unwrap(),
                    "--database-timeout-ms",
                    &opts.database_timeout_ms.to_string(),
                    "--database-url",
                    &format!("postgres://postgres@127.0.0.1:{}/{db_name}", proxy.port),
                ],
            )
        })
        .collect();
    let addrs: Vec<String> = replicas
        .iter()
        .map(|r| r.base.trim_start_matches("http://").to_string())
        .collect();
    for a in &addrs {
        wait_for_keys(a, keys.len())?;
    }
    let front_lease = lease_port();
    let front = front_lease.port;
    let port = |a: &str| a.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let cfg = work.path().join("haproxy.cfg");
    std::fs::write(&cfg, HAPROXY_CONFIG)?;
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-q").arg("-f").arg(&cfg);
    cmd.env("PALISADE_LISTEN", format!("127.0.0.1:{front}"));
    cmd.env("PALISADE_REPLICA_1", format!("127.0.0.1:{}", port(&addrs[0])));
    cmd.env("PALISADE_REPLICA_2", format!("127.0.0.1:{}", port(&addrs[1])));
    let mut haproxy = spawn_tied(cmd, libc::SIGKILL)?;
    let front = format!("127.0.0.1:{front}");
    wait_both_served(&front)?;

    // A's own readiness, as HAProxy sees it, polled every 20 ms.
    let start = Instant::now();
    let readiness: Arc<Mutex<Vec<(Duration, bool)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (readiness, stop, a) = (readiness.clone(), stop.clone(), addrs[0].clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ready = http_get(&a, "/readyz").map(|(s, _)| s == 200).unwrap_or(false);
                readiness.lock().unwrap().push((start.elapsed(), ready));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let calm = Duration::from_secs_f64(opts.calm_seconds);
    let fault = Duration::from_secs_f64(opts.fault_seconds);
    let faults = [("reset", calm), ("blackhole", calm * 2 + fault)];
    let total = calm * 3 + fault * 2;
    let make = attestation_loop(&keys, opts.clients.min(keys.len()), messages::FULU_EPOCH + 1_000);
    let samples = rt.block_on(async {
        let clients: Vec<_> = (0..opts.clients.min(keys.len()))
            .map(|c| tokio::spawn(client(front.clone(), c, make.clone(), start, total)))
            .collect();
        for (kind, at) in faults {
            tokio::time::sleep_until((start + at).into()).await;
            match kind {
                "reset" => proxies[0].cut(fault),
                _ => proxies[0].blackhole(fault),
            }
        }
        let mut all = Vec::new();
        for c in clients {
            all.extend(c.await.unwrap());
        }
        all
    });
    // A is ready again only at its first database check after the last fault: watch for it
    // even when the clients stopped before (a short calm on a slow machine).
    let last_fault_end = faults[faults.len() - 1].1 + fault;
    let watch_until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < watch_until
        && !readiness
            .lock()
            .unwrap()
            .iter()
            .any(|(t, r)| *t >= last_fault_end && *r)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    poller.join().unwrap();
    let _ = haproxy.kill();
    let _ = haproxy.wait();

    println!(
        "failover: 2 replicas on one PostgreSQL behind HAProxy (/readyz check every 250 ms, retry-on 503), \
         {} clients, {} validators, replica A's database connection broken for {:.1} s twice, --database-timeout-ms {}",
        opts.clients.min(keys.len()),
        keys.len(),
        opts.fault_seconds,
        opts.database_timeout_ms
    );
    report("before any fault", &samples, Duration::ZERO, calm);
    let readiness = readiness.lock().unwrap();
    for (kind, at) in faults {
        let window_end = at + fault + Duration::from_secs(1);
        report(&format!("{kind} of A's database connection"), &samples, at, window_end);
        let down = readiness.iter().find(|(t, r)| *t >= at && !r).map(|(t, _)| *t - at);
        let back = readiness
            .iter()
            .find(|(t, r)| *t >= at + fault && *r)
            .map(|(t, _)| *t - at - fault);
        println!(
            "    A's /readyz: 503 after {}; 200 again {} after the fault ended",
            down.map_or("never".into(), |d| format!("{:.0} ms", ms(d))),
            back.map_or("never".into(), |d| format!("{:.0} ms", ms(d)))
        );
    }
    drop(replicas);
    Ok(())
}

/// Until HAProxy has passed a ready answer from each replica (its first checks done): a fixed
/// pause would be too short on a loaded machine.
fn wait_both_served(front: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "HAProxy did not serve from both replicas within 30 s (seen: {seen:?})"
        );
        let answer = std::net::TcpStream::connect(front).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(s, "GET /readyz HTTP/1.1\r\nHost: {front}\r\nConnection: close\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        });
        if let Ok(text) = answer
            && text.starts_with("HTTP/1.1 200")
            && let Some(server) = text
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-served-by: ").map(str::to_string))
        {
            seen.insert(server.trim().to_string());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn report(label: &str, samples: &[Sample], from: Duration, to: Duration) {
    let window: Vec<&Sample> = samples.iter().filter(|s| s.sent >= from && s.sent < to).collect();
    let mut lat: Vec<Duration> = window.iter().map(|s| s.latency).collect();
    lat.sort();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut servers: BTreeMap<&str, u64> = BTreeMap::new();
    for s in &window {
        *statuses.entry(s.status).or_default() += 1;
        *servers.entry(s.server.as_str()).or_default() += 1;
    }
    println!(
        "  {label}: {} requests, statuses {statuses:?}, served by {servers:?}; p50 {:.1} ms  p99 {:.1} ms  \
         longest a client waited {:.0} ms (target < 1000)",
        window.len(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(percentile(&lat, 1.0)),
    );
}

/// One keep-alive client connection, reconnecting after a transport error (status 0).
async fn client(addr: String, conn: usize, make: MakeRequest, start: Instant, total: Duration) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut seq = 0u64;
    'connect: while start.elapsed() < total {
        let Ok(stream) = tokio::net::TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
            continue;
        };
        tokio::spawn(connection);
        while start.elapsed() < total {
            let (path, body) = make(conn, seq);
            seq += 1;
            let req = crate::load::post(&addr, &path, body);
            let sent = start.elapsed();
            let sample = |status, server: &str| Sample {
                sent,
                latency: start.elapsed() - sent,
                status,
                server: server.to_string(),
            };
            match sender.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let server = resp
                        .headers()
                        .get("x-served-by")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string();
                    let _ = resp.into_body().collect().await;
                    out.push(sample(status, &server));
                }
                Err(_) => {
                    out.push(sample(0, "-"));
                    continue 'connect;
                }
            }
        }
    }
    out
}
