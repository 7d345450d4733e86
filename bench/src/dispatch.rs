//! The open-loop dispatcher of `palisade-bench load`: requests sent when they are due (not
//! when the previous one is answered), latency measured from that moment, results per type.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};
use palisade::types::PublicKey;
use tokio::sync::Semaphore;

use crate::load::{ms, percentile};

/// One request due at `at` (relative to the start).
pub struct Work {
    pub at: Duration,
    pub kind: &'static str,
    pub pubkey: PublicKey,
    pub body: serde_json::Value,
}

#[derive(Default)]
pub struct TypeStats {
    pub latencies: Vec<Duration>,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: u64,
}

pub type Stats = BTreeMap<&'static str, TypeStats>;

/// Sends every work at its time, at most `max_in_flight` at once; latency from the due time.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One client per run, so that a warm-up leaves its connections open for the measured part,
/// as a validator client's are.
pub fn http_client(max_in_flight: usize) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(max_in_flight)
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http()
}

pub async fn dispatch(client: &HttpClient, base: &str, works: Vec<Work>, max_in_flight: usize) -> (Stats, Duration) {
    let stats: Arc<Mutex<Stats>> = Arc::default();
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let bar = ProgressBar::new(works.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
            .unwrap()
            .progress_chars("=> "),
    );
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(works.len());
    for w in works {
        tokio::time::sleep_until((start + w.at).into()).await;
        let permit = permits.clone().acquire_owned().await.unwrap();
        let (client, stats, bar) = (client.clone(), stats.clone(), bar.clone());
        let url = format!("{base}/api/v1/eth2/sign/{}", w.pubkey);
        let due = start + w.at;
        tasks.push(tokio::spawn(async move {
            let req = hyper::Request::post(url)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(serde_json::to_vec(&w.body).unwrap())))
                .unwrap();
            let answer = tokio::time::timeout(Duration::from_secs(30), async {
                let resp = client.request(req).await.ok()?;
                let status = resp.status().as_u16();
                resp.into_body().collect().await.ok()?;
                Some(status)
            })
            .await;
            let latency = due.elapsed();
            drop(permit);
            let mut s = stats.lock().unwrap();
            let t = s.entry(w.kind).or_default();
            match answer {
                Ok(Some(status)) => {
                    t.latencies.push(latency);
                    *t.statuses.entry(status).or_default() += 1;
                }
                _ => t.errors += 1,
            }
            let (ok, refused, other): (u64, u64, u64) = s.values().fold((0, 0, 0), |acc, t| {
                let ok = t.statuses.get(&200).copied().unwrap_or(0);
                let refused = t.statuses.get(&412).copied().unwrap_or(0);
                let all: u64 = t.statuses.values().sum::<u64>() + t.errors;
                (acc.0 + ok, acc.1 + refused, acc.2 + all - ok - refused)
            });
            drop(s);
            bar.inc(1);
            bar.set_message(format!("200: {ok}  412: {refused}  other: {other}"));
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    bar.finish();
    let elapsed = start.elapsed();
    let mut stats = std::mem::take(&mut *stats.lock().unwrap());
    for t in stats.values_mut() {
        t.latencies.sort();
    }
    (stats, elapsed)
}

pub fn print_stats(stats: &Stats, elapsed: Duration) {
    println!(
        "  {:<40} {:>7} {:>7} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8} {:>9}",
        "type", "sent", "200", "412", "5xx", "errors", "p50 ms", "p99 ms", "max ms", "per s"
    );
    let mut all = Vec::new();
    for (kind, t) in stats {
        let sent: u64 = t.statuses.values().sum::<u64>() + t.errors;
        let five: u64 = t.statuses.iter().filter(|(s, _)| **s >= 500).map(|(_, n)| n).sum();
        println!(
            "  {:<40} {:>7} {:>7} {:>6} {:>6} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>9.1}",
            kind,
            sent,
            t.statuses.get(&200).unwrap_or(&0),
            t.statuses.get(&412).unwrap_or(&0),
            five,
            t.errors,
            ms(percentile(&t.latencies, 0.5)),
            ms(percentile(&t.latencies, 0.99)),
            ms(percentile(&t.latencies, 1.0)),
            t.statuses.get(&200).copied().unwrap_or(0) as f64 / elapsed.as_secs_f64()
        );
        all.extend(&t.latencies);
    }
    all.sort();
    println!(
        "  {:<40} {:>7} {:>50.2} {:>8.2}",
        "all",
        all.len(),
        ms(percentile(&all, 0.99)),
        ms(percentile(&all, 1.0))
    );
}
