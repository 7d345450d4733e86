//! A closed-loop HTTP load driver (keep-alive connections, one request in flight on each)
//! and the RANDAO_REVEAL throughput benchmark.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

use crate::blst_bench;
use crate::fixtures::raw_key_config;
use testkit::server::Palisade;

/// Builds request number `seq` of connection `conn`: (path, JSON body).
pub type MakeRequest = Arc<dyn Fn(usize, u64) -> (String, String) + Send + Sync>;

#[derive(Default)]
pub struct LoadResult {
    pub latencies: Vec<Duration>,
    pub statuses: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub elapsed: Duration,
}

impl LoadResult {
    pub fn ok(&self) -> u64 {
        self.statuses.get(&200).copied().unwrap_or(0)
    }

    pub fn rate(&self) -> f64 {
        self.ok() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
}

/// A JSON POST of `body` to `path` on `addr`, for a hyper client connection.
pub fn post(addr: &str, path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("host", addr)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .expect("a valid request")
}

impl LoadResult {
    /// `p50 .. p99 .. max .. statuses .. errors`, as every closed-loop benchmark prints it.
    pub fn summary(&self) -> String {
        format!(
            "p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  statuses {:?}  transport errors {}",
            ms(self.percentile(0.50)),
            ms(self.percentile(0.99)),
            ms(self.percentile(1.0)),
            self.statuses,
            self.transport_errors
        )
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Runs `connections` connections against `addr` for `seconds`, each sending its next
/// request as soon as the previous one is answered.
pub fn closed_loop(addr: &str, connections: usize, seconds: f64, make: MakeRequest) -> LoadResult {
    closed_loop_over(&[addr.to_string()], connections, seconds, make)
}

/// `closed_loop` with connection `c` on signer `addrs[c % addrs.len()]`.
pub fn closed_loop_over(addrs: &[String], connections: usize, seconds: f64, make: MakeRequest) -> LoadResult {
    // One thread for the whole load generator: it shares the machine with the signer.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(seconds);
        let mut tasks = Vec::new();
        for conn in 0..connections {
            let addr = addrs[conn % addrs.len()].clone();
            let make = make.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = LoadResult::default();
                let Ok(stream) = tokio::net::TcpStream::connect(&addr).await else {
                    out.transport_errors += 1;
                    return out;
                };
                let _ = stream.set_nodelay(true);
                let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
                tokio::spawn(connection);
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    let (path, body) = make(conn, seq);
                    seq += 1;
                    let req = post(&addr, &path, body);
                    let sent = Instant::now();
                    match sender.send_request(req).await {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let _ = resp.into_body().collect().await;
                            out.latencies.push(sent.elapsed());
                            *out.statuses.entry(status).or_default() += 1;
                        }
                        Err(_) => {
                            out.transport_errors += 1;
                            break;
                        }
                    }
                }
                out
            }));
        }
        let mut all = LoadResult::default();
        for t in tasks {
            let r = t.await.unwrap();
            all.latencies.extend(r.latencies);
            for (k, v) in r.statuses {
                *all.statuses.entry(k).or_default() += v;
            }
            all.transport_errors += r.transport_errors;
        }
        all.elapsed = start.elapsed();
        all.latencies.sort();
        all
    })
}

/// Protected attestations for a closed loop over `connections` connections: connection `c`
/// owns the validators `v` with `v % connections == c`, so each validator's target epochs rise
/// strictly from `first_epoch` and nothing is refused. Needs at least as many keys as
/// connections (see `loop_connections`), or two connections would race one validator.
/// The connections to use for `attestation_loop` over `keys` keys.
pub fn loop_connections(wanted: usize, keys: usize) -> usize {
    wanted.min(keys).max(1)
}

pub fn attestation_loop(keys: &[palisade::types::PublicKey], connections: usize, first_epoch: u64) -> MakeRequest {
    let paths: Arc<Vec<String>> = Arc::new(keys.iter().map(|k| format!("/api/v1/eth2/sign/{k}")).collect());
    Arc::new(move |conn, seq| {
        let conn = conn % paths.len();
        let mine = (paths.len() - conn).div_ceil(connections).max(1);
        let v = conn + connections * (seq as usize % mine);
        let epoch = first_epoch + seq / mine as u64;
        let slot = epoch * 32 + (v % 32) as u64;
        let body = crate::messages::attestation(slot, epoch - 1, epoch, &crate::messages::root(slot ^ seq));
        (paths[v].clone(), body.to_string())
    })
}

/// A minimal blocking GET: (status, body as sent, chunked transfer decoded).
fn get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, mut body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Ok((status, body.to_string()));
    }
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16)?;
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    Ok((status, out))
}

/// The body of a GET as sent (metrics text).
pub fn http_get_text(addr: &str, path: &str) -> anyhow::Result<String> {
    Ok(get(addr, path)?.1)
}

/// A GET for polling health endpoints: (status, the JSON value in the body).
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let (status, body) = get(addr, path)?;
    let body = match (body.find(['{', '[']), body.rfind(['}', ']'])) {
        (Some(a), Some(b)) if b >= a => body[a..=b].to_string(),
        _ => body.trim().to_string(),
    };
    Ok((status, body))
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// HTTP signing throughput for RANDAO_REVEAL vs raw blst on the same cores.
pub fn http_randao(seconds: f64, connections: usize, keys: usize) -> anyhow::Result<()> {
    let raw_before = blst_bench::report(seconds.min(5.0));
    let work = tempfile::tempdir()?;
    let pubkeys = raw_key_config(&work.path().join("keys"), keys)?;
    let p = Palisade::serve_in(
        work.path(),
        &[
            // Synthetic duties run ahead of the clock (many epochs per second): no window.
            "--future-tolerance-secs",
            "off",
            "--key-config-path",
            work.path().join("keys").to_str().unwrap(),
            "--network",
            "mainnet",
        ],
    );
    let addr = p.base.trim_start_matches("http://").to_string();
    let gvr = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95";
    let paths: Vec<String> = pubkeys.iter().map(|k| format!("/api/v1/eth2/sign/{k}")).collect();
    let make: MakeRequest = Arc::new(move |conn, seq| {
        let key = (conn + seq as usize * 7) % paths.len();
        let body = format!(
            r#"{{"type":"RANDAO_REVEAL","fork_info":{{"fork":{{"previous_version":"0x05000000","current_version":"0x06000000","epoch":"411392"}},"genesis_validators_root":"{gvr}"}},"randao_reveal":{{"epoch":"{}"}}}}"#,
            411392 + seq
        );
        (paths[key].clone(), body)
    });
    // Warm up connections and caches.
    closed_loop(&addr, connections, 1.0, make.clone());
    let r = closed_loop(&addr, connections, seconds, make);
    println!("HTTP RANDAO_REVEAL, {connections} connections, load generator on the same machine:");
    println!("  {:>9.0} signatures/s   {}", r.rate(), r.summary());
    drop(p);
    // This machine's all-core rate drifts; compare with the mean of before and after.
    let raw_after = blst_bench::rate(blst_bench::cores(), seconds.min(5.0));
    let raw = (raw_before + raw_after) / 2.0;
    println!(
        "  raw blst on all cores: {raw_before:.0}/s before, {raw_after:.0}/s after; ratio to their mean: {:.1}% (target >= 80%)",
        100.0 * r.rate() / raw
    );
    Ok(())
}
