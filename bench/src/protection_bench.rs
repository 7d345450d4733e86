//! Protected attestations through the real signer on PostgreSQL, and the slashing check's
//! latency as history grows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade::protection::{SlashableMessage, SlashingDatabase};
use palisade::types::{Epoch, PublicKey, SigningRoot};

use crate::blst_bench::{self, cores};
use crate::fixtures::{raw_key_config, secret};
use crate::load::{attestation_loop, closed_loop_over, http_get, ms, percentile};
use crate::messages;
use testkit::pg::PgCluster;
use testkit::server::Palisade;

/// Waits until the signer has every key loaded.
pub fn wait_for_keys(addr: &str, count: usize) -> anyhow::Result<()> {
    for _ in 0..2400 {
        let (_, body) = http_get(addr, "/healthcheck")?;
        let h: serde_json::Value = serde_json::from_str(&body)?;
        if h["checks"][1]["data"]["loaded"] == count {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("keys did not load")
}

pub fn run(
    database_url: Option<String>,
    validators: usize,
    clients: &[usize],
    replicas: &[usize],
    seconds: f64,
    history_rows: u64,
) -> anyhow::Result<()> {
    let _cluster;
    let (url, history_url) = match database_url {
        Some(u) => (u.clone(), u),
        None => {
            // On disk, not tmpfs: every commit pays a real fsync.
            crate::bench_pg_scratch();
            let c = PgCluster::start_with(&["max_connections=300"]);
            let urls = (c.new_database(), c.new_database());
            _cluster = c;
            urls
        }
    };
    let raw = blst_bench::rate(cores(), 3.0);
    println!("raw blst on {} cores: {raw:.0} signatures/s", cores());

    let work = tempfile::tempdir()?;
    let keys_dir = work.path().join("keys");
    let pubkeys = raw_key_config(&keys_dir, validators)?;
    let mut run = 0u64;
    for &n in replicas {
        // Every replica on the same database, as an HA deployment runs them.
        let signers: Vec<Palisade> = (0..n)
            .map(|i| {
                let dir = work.path().join(format!("r{n}-{i}"));
                std::fs::create_dir_all(&dir).unwrap();
                Palisade::serve_in(
                    &dir,
                    &[
                        // Synthetic duties run ahead of the clock (many epochs per second): no window.
                        "--future-tolerance-secs",
                        "off",
                        "--key-config-path",
                        keys_dir.to_str().unwrap(),
                        "--network",
                        "mainnet",
                        "--database-url",
                        &url,
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = signers
            .iter()
            .map(|p| p.base.trim_start_matches("http://").to_string())
            .collect();
        for a in &addrs {
            wait_for_keys(a, validators)?;
        }
        println!(
            "protected ATTESTATION through {n} replica(s) on one PostgreSQL, {validators} validators, \
             connections spread over the replicas:"
        );
        for &c in clients {
            let c = crate::load::loop_connections(c, pubkeys.len());
            run += 1;
            // Each run starts far above the last one's targets.
            let make = attestation_loop(&pubkeys, c, messages::FULU_EPOCH + 1_000_000 * run);
            let r = closed_loop_over(&addrs, c, seconds, make);
            println!(
                "  {c:>2} clients: {:>6.0} attestations/s  {}  ({:.0}% of raw blst)",
                r.rate(),
                r.summary(),
                100.0 * r.rate() / raw
            );
        }
    }

    if history_rows > 0 {
        history_latency(&history_url, validators, history_rows, seconds)?;
    }
    Ok(())
}

/// The check alone (one statement, one round trip) at 8 concurrent clients, with one row of
/// history per validator and then `rows` rows.
fn history_latency(url: &str, validators: usize, rows: u64, seconds: f64) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let db = Arc::new(SlashingDatabase::open(url, &testkit::db_options()).await?);
        db.pin_chain(messages::MAINNET_GVR.parse()?).await?;
        let keys: Vec<PublicKey> = (0..validators).map(|i| secret(100_000 + i).public_key()).collect();
        db.register(&keys).await?;
        let pool = sqlx::PgPool::connect(url).await?;
        let per_validator = (rows / validators as u64).max(1);

        let mut next_target = 2u64;
        // One row per validator first (1,000 with the defaults), then `rows`.
        for (label, fill_to) in [(validators as u64, 1u64), (rows, per_validator)] {
            // History rows for targets 1..=fill_to per validator, watermarks at the top.
            sqlx::query(
                "INSERT INTO signed_attestations (validator_id, source_epoch, target_epoch, client, imported)
                 SELECT v.id, t - 1 - 9223372036854775808, t - 9223372036854775808, 'bench', TRUE
                   FROM validators v CROSS JOIN generate_series(1::bigint, $2::bigint) t
                  WHERE v.pubkey = ANY($1)
                 ON CONFLICT DO NOTHING",
            )
            .bind(keys.iter().map(|k| k.0.to_vec()).collect::<Vec<_>>())
            .bind(fill_to as i64)
            .execute(&pool)
            .await?;
            let top = fill_to.max(next_target);
            sqlx::query(
                "UPDATE validators SET att_source = $2 - 1 - 9223372036854775808, att_target = $2 - 9223372036854775808
                  WHERE pubkey = ANY($1)",
            )
            .bind(keys.iter().map(|k| k.0.to_vec()).collect::<Vec<_>>())
            .bind(top as i64)
            .execute(&pool)
            .await?;
            sqlx::query("VACUUM ANALYZE signed_attestations").execute(&pool).await?;
            sqlx::query("VACUUM ANALYZE validators").execute(&pool).await?;
            let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM signed_attestations").fetch_one(&pool).await?;

            let start_target = top + 1;
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            let mut tasks = Vec::new();
            for w in 0..8usize {
                let db = db.clone();
                let keys: Vec<PublicKey> = keys.iter().skip(w).step_by(8).copied().collect();
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut round = 0u64;
                    'outer: loop {
                        for k in &keys {
                            if Instant::now() >= deadline {
                                break 'outer;
                            }
                            let t = start_target + round;
                            let p = SlashableMessage::Attestation {
                                source: Epoch(t - 1),
                                target: Epoch(t),
                                root: SigningRoot([7; 32]),
                            };
                            let s = Instant::now();
                            db.check_and_record(k, &p, "bench").await.map(|c| c.recorded).expect("check");
                            lat.push(s.elapsed());
                        }
                        round += 1;
                    }
                    (lat, round)
                }));
            }
            let mut lat = Vec::new();
            let mut rounds = 0;
            for t in tasks {
                let (l, r) = t.await?;
                lat.extend(l);
                rounds = rounds.max(r);
            }
            next_target = start_target + rounds + 1;
            lat.sort();
            println!(
                "  check with {label:>9} rows of history ({count} in the table): {:>6.0} checks/s  p50 {:.3} ms  p99 {:.3} ms",
                lat.len() as f64 / seconds,
                ms(percentile(&lat, 0.5)),
                ms(percentile(&lat, 0.99)),
            );
        }
        anyhow::Ok(())
    })
}
