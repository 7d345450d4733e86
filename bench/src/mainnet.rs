//! `palisade-bench load`: a load generator shaped like a mainnet validator fleet.
//!
//! Every slot (12 s, or `--slot-seconds`): at 0 s a block and its RANDAO reveal; at 4 s the
//! slot's attesters (1/32 of the validators) sign their attestation and selection proof, and
//! the sync-committee members their message and selection proof; at 8 s the aggregators
//! (16 per committee) sign their aggregate, and sync aggregators their contribution. With
//! `--duplicates P`, a share P of attestations is also sent by a second client replica on
//! another head: one of each pair must be refused. Latency is measured from the time each
//! request was due, so a slow signer cannot hide behind a slow generator.
//!
//! Other shapes for the targets: `--burst N` (one slot's burst), `--rate R` (a steady rate of
//! attestations), `--saturate` (as many protected attestations as the signer takes, against
//! raw blst on the same cores).

use std::time::Duration;

use palisade::types::PublicKey;

use crate::blst_bench;
use crate::breakdown::{Breakdown, Commits, Cpu, database_alone, memory_mib};
use crate::dispatch::{Work, dispatch, http_client, print_stats};
use crate::fixtures::raw_key_config;
use crate::load::{attestation_loop, closed_loop, http_get, ms, percentile};
use crate::messages::{self, FULU_EPOCH, root};
use crate::protection_bench::wait_for_keys;
use testkit::pg::PgCluster;
use testkit::server::Palisade;

#[derive(clap::Args)]
pub struct Options {
    /// Drive this running signer instead of starting one (it must sign for mainnet).
    #[arg(long)]
    pub url: Option<String>,
    /// PostgreSQL for the signer started here (default: a throwaway cluster under /var/tmp/palisade-bench-pg, or PALISADE_PG_SCRATCH).
    #[arg(long)]
    pub database_url: Option<String>,
    #[arg(long, default_value_t = 10_000)]
    pub validators: usize,
    #[arg(long, default_value_t = 8)]
    pub slots: u64,
    #[arg(long, default_value_t = 12.0)]
    pub slot_seconds: f64,
    /// Share of attestations also sent by a second client replica on another head.
    #[arg(long, default_value_t = 0.0)]
    pub duplicates: f64,
    /// Size of the whole network, for committee sizes and sync-committee seats.
    #[arg(long, default_value_t = 1_000_000)]
    pub network_validators: u64,
    /// One burst of N attestations due at the same instant (after an unmeasured one).
    #[arg(long)]
    pub burst: Option<usize>,
    /// A steady rate of attestations per second (for --seconds).
    #[arg(long)]
    pub rate: Option<f64>,
    #[arg(long, default_value_t = 30.0)]
    pub seconds: f64,
    /// Protected attestations as fast as the signer takes them, vs raw blst.
    #[arg(long)]
    pub saturate: bool,
    /// Rows of attestation history to put in the database first.
    #[arg(long, default_value_t = 0)]
    pub history_rows: u64,
    #[arg(long, default_value_t = 512)]
    pub max_in_flight: usize,
}

fn slot_schedule(o: &Options, keys: &[PublicKey], first_slot: u64) -> Vec<Work> {
    let v = keys.len();
    let spe = 32u64;
    // Committees per slot and their size, for a network of `network_validators`.
    let per_slot = (o.network_validators / spe).max(1);
    let committees = (per_slot / 128).clamp(1, 64);
    let committee_size = (per_slot / committees).max(1) as usize;
    let aggregator_share = (16.0 / committee_size as f64).min(1.0);
    // Our share of the 512 sync-committee seats.
    let sync_members = ((512.0 * v as f64 / o.network_validators as f64).round() as usize).clamp(1, v.min(512));
    let sync_aggregator_share = 16.0 / 128.0;
    let slot_len = Duration::from_secs_f64(o.slot_seconds);
    let mut works = Vec::new();
    for i in 0..o.slots {
        let slot = first_slot + i;
        let epoch = slot / spe;
        let start = slot_len * i as u32;
        let at = |frac: f64| start + slot_len.mul_f64(frac);
        let head = root(slot);
        let proposer = (slot as usize * 7919) % v;
        works.push(Work {
            at: at(0.0),
            kind: "RANDAO_REVEAL",
            pubkey: keys[proposer],
            body: messages::randao(epoch),
        });
        works.push(Work {
            at: at(0.0),
            kind: "BLOCK_V2",
            pubkey: keys[proposer],
            body: messages::block(slot, proposer as u64, &root(slot ^ 0x5747)),
        });
        for a in (0..v).filter(|a| (*a as u64 + epoch) % spe == slot % spe) {
            works.push(Work {
                at: at(1.0 / 3.0),
                kind: "ATTESTATION",
                pubkey: keys[a],
                body: messages::attestation(slot, epoch - 1, epoch, &head),
            });
            works.push(Work {
                at: at(1.0 / 3.0),
                kind: "AGGREGATION_SLOT",
                pubkey: keys[a],
                body: messages::aggregation_slot(slot),
            });
            // Deterministic pseudo-randomness: spread over validators and slots.
            let draw = ((a as u64).wrapping_mul(2_654_435_761) ^ slot.wrapping_mul(40_503)) % 10_000;
            if (draw as f64) < o.duplicates * 10_000.0 {
                let other_head = root(slot ^ 0xdead_beef);
                works.push(Work {
                    at: at(1.0 / 3.0) + Duration::from_millis(20),
                    kind: "ATTESTATION (duplicate)",
                    pubkey: keys[a],
                    body: messages::attestation(slot, epoch - 1, epoch, &other_head),
                });
            }
            if (draw as f64) < aggregator_share * 10_000.0 {
                works.push(Work {
                    at: at(2.0 / 3.0),
                    kind: "AGGREGATE_AND_PROOF_V2",
                    pubkey: keys[a],
                    body: messages::aggregate(slot, a as u64, epoch - 1, epoch, &head, committee_size),
                });
            }
        }
        for (m, key) in keys.iter().enumerate().take(sync_members) {
            let sub = (m % 4) as u64;
            works.push(Work {
                at: at(1.0 / 3.0),
                kind: "SYNC_COMMITTEE_MESSAGE",
                pubkey: *key,
                body: messages::sync_message(slot, &head),
            });
            works.push(Work {
                at: at(1.0 / 3.0),
                kind: "SYNC_COMMITTEE_SELECTION_PROOF",
                pubkey: *key,
                body: messages::sync_selection(slot, sub),
            });
            let draw = ((m as u64 + 1).wrapping_mul(2_246_822_519) ^ slot) % 10_000;
            if (draw as f64) < sync_aggregator_share * 10_000.0 {
                works.push(Work {
                    at: at(2.0 / 3.0),
                    kind: "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF",
                    pubkey: *key,
                    body: messages::contribution(slot, m as u64, sub, &head),
                });
            }
        }
    }
    works.sort_by_key(|w| w.at);
    works
}

/// The signer under test: the given URL, or a `palisade` started here with `validators`
/// keys on PostgreSQL. Returns the base URL, the pubkeys, and what must stay alive.
struct Target {
    base: String,
    keys: Vec<PublicKey>,
    process: Option<Palisade>,
    _cluster: Option<PgCluster>,
    database_url: Option<String>,
    _work: tempfile::TempDir,
}

fn start_target(o: &Options) -> anyhow::Result<Target> {
    let work = tempfile::tempdir()?;
    if let Some(url) = &o.url {
        let addr = url.trim_start_matches("http://").to_string();
        let (_, body) = http_get(&addr, "/api/v1/eth2/publicKeys")?;
        let keys: Vec<PublicKey> = serde_json::from_str::<Vec<String>>(&body)?
            .iter()
            .map(|k| k.parse().map_err(|e: String| anyhow::anyhow!(e)))
            .collect::<Result<_, _>>()?;
        anyhow::ensure!(!keys.is_empty(), "the signer at {url} holds no key");
        return Ok(Target {
            base: url.clone(),
            keys: keys.into_iter().take(o.validators).collect(),
            process: None,
            _cluster: None,
            database_url: o.database_url.clone(),
            _work: work,
        });
    }
    let (cluster, db_url) = match &o.database_url {
        Some(u) => (None, u.clone()),
        None => {
            crate::bench_pg_scratch();
            let c = PgCluster::start_with(&["max_connections=300"]);
            let u = c.new_database();
            (Some(c), u)
        }
    };
    let keys_dir = work.path().join("keys");
    let keys = raw_key_config(&keys_dir, o.validators)?;
    let p = Palisade::serve_in(
        work.path(),
        &[
            // Synthetic duties run ahead of the clock (many epochs per second): no window.
            "--future-tolerance-secs",
            "off",
            "--metrics",
            "--key-config-path",
            keys_dir.to_str().unwrap(),
            "--network",
            "mainnet",
            "--database-url",
            &db_url,
        ],
    );
    wait_for_keys(p.base.trim_start_matches("http://"), o.validators)?;
    Ok(Target {
        base: p.base.clone(),
        keys,
        process: Some(p),
        _cluster: cluster,
        database_url: Some(db_url),
        _work: work,
    })
}

/// Fills `rows` of attestation history below `first_epoch` for the given validators.
async fn prefill_history(url: &str, keys: &[PublicKey], rows: u64, first_epoch: u64) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(url).await?;
    let per = (rows / keys.len() as u64).max(1);
    let bytes: Vec<Vec<u8>> = keys.iter().map(|k| k.0.to_vec()).collect();
    let lowest = first_epoch.saturating_sub(per + 2);
    // The signer registers keys after decrypting them; do not race it.
    sqlx::query(
        "INSERT INTO validators (pubkey) SELECT p FROM UNNEST($1::bytea[]) AS t(p) ORDER BY p ON CONFLICT DO NOTHING",
    )
    .bind(&bytes)
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO signed_attestations (validator_id, source_epoch, target_epoch, client, imported)
         SELECT v.id, t - 1 - 9223372036854775808, t - 9223372036854775808, 'prefill', TRUE
           FROM validators v CROSS JOIN generate_series($2::bigint, $3::bigint) t
          WHERE v.pubkey = ANY($1) ON CONFLICT DO NOTHING",
    )
    .bind(&bytes)
    .bind(lowest as i64)
    .bind((lowest + per - 1) as i64)
    .execute(&pool)
    .await?;
    sqlx::query(
        "UPDATE validators SET att_source = $2 - 1 - 9223372036854775808, att_target = $2 - 9223372036854775808
          WHERE pubkey = ANY($1)",
    )
    .bind(&bytes)
    .bind((lowest + per - 1) as i64)
    .execute(&pool)
    .await?;
    sqlx::query("VACUUM ANALYZE signed_attestations").execute(&pool).await?;
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM signed_attestations")
        .fetch_one(&pool)
        .await?;
    println!("history: {n} attestation rows in the database");
    Ok(())
}

/// The current mainnet epoch, so runs against a kept database keep moving forward.
fn current_epoch() -> u64 {
    let genesis = 1_606_824_023u64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    ((now - genesis) / 384).max(FULU_EPOCH + 10)
}

pub fn run(o: Options) -> anyhow::Result<()> {
    let target = start_target(&o)?;
    let keys = target.keys.clone();
    let base = target.base.clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let first_epoch = current_epoch();

    if o.history_rows > 0 {
        let url = target
            .database_url
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--history-rows needs the database (--database-url)"))?;
        rt.block_on(prefill_history(&url, &keys, o.history_rows, first_epoch))?;
    }
    let pid = target.process.as_ref().map(|p| p.pid());
    let client = rt.block_on(async { http_client(o.max_in_flight) });

    if let Some(n) = o.burst {
        let n = n.min(keys.len());
        println!(
            "one slot's attestation burst: {n} attestations due at the same instant ({} in flight at most)",
            o.max_in_flight
        );
        let burst = |epoch: u64| -> Vec<Work> {
            let slot = epoch * 32 + 4;
            keys[..n]
                .iter()
                .map(|k| Work {
                    at: Duration::ZERO,
                    kind: "ATTESTATION",
                    pubkey: *k,
                    body: messages::attestation(slot, epoch - 1, epoch, &root(slot)),
                })
                .collect()
        };
        // The slot before, unmeasured: a running client's connections are already open.
        rt.block_on(dispatch(&client, &base, burst(first_epoch), o.max_in_flight));
        rt.block_on(async { tokio::time::sleep(Duration::from_secs(1)).await });
        let (stats, elapsed) = rt.block_on(dispatch(&client, &base, burst(first_epoch + 1), o.max_in_flight));
        print_stats(&stats, elapsed);
        let t = &stats["ATTESTATION"];
        println!(
            "  burst of {n}: all answered in {:.0} ms (target <= 1000 ms), p99 {:.0} ms (target < 800 ms), {} signed",
            ms(elapsed),
            ms(percentile(&t.latencies, 0.99)),
            t.statuses.get(&200).unwrap_or(&0)
        );
    } else if let Some(rate) = o.rate {
        let count = (rate * o.seconds) as usize;
        println!(
            "steady load: {rate:.0} attestations/s for {:.0} s over {} validators",
            o.seconds,
            keys.len()
        );
        let gap = Duration::from_secs_f64(1.0 / rate);
        let works: Vec<Work> = (0..count)
            .map(|i| {
                let v = i % keys.len();
                let epoch = first_epoch + (i / keys.len()) as u64;
                let slot = epoch * 32 + (v % 32) as u64;
                Work {
                    at: gap * i as u32,
                    kind: "ATTESTATION",
                    pubkey: keys[v],
                    body: messages::attestation(slot, epoch - 1, epoch, &root(slot)),
                }
            })
            .collect();
        let (stats, elapsed) = rt.block_on(dispatch(&client, &base, works, o.max_in_flight));
        print_stats(&stats, elapsed);
        let t = &stats["ATTESTATION"];
        println!(
            "  p99 {:.2} ms at {rate:.0}/s (target < 10 ms)",
            ms(percentile(&t.latencies, 0.99))
        );
    } else if o.saturate {
        let raw_before = blst_bench::rate(blst_bench::cores(), 3.0);
        let addr = base.trim_start_matches("http://").to_string();
        let c = crate::load::loop_connections(32, keys.len());
        let make = attestation_loop(&keys, c, first_epoch);
        // Warm up connections and caches (a running client's are).
        closed_loop(&addr, c, 1.0, make.clone());
        let (cpu_before, commits_before) = (Cpu::now(pid), Commits::scrape(&addr));
        let r = closed_loop(&addr, c, o.seconds, attestation_loop(&keys, c, first_epoch + 1_000_000));
        let (cpu_after, commits_after) = (Cpu::now(pid), Commits::scrape(&addr));
        let raw_after = blst_bench::rate(blst_bench::cores(), 3.0);
        let raw = (raw_before + raw_after) / 2.0;
        println!(
            "saturation: {:.0} protected attestations/s (p50 {:.2} ms, p99 {:.2} ms, statuses {:?}); raw blst {raw:.0}/s on {} cores; ratio {:.1}%",
            r.rate(),
            ms(r.percentile(0.5)),
            ms(r.percentile(0.99)),
            r.statuses,
            blst_bench::cores(),
            100.0 * r.rate() / raw
        );
        // The database alone, on validators and epochs the run did not touch.
        let database_alone = target
            .database_url
            .as_deref()
            .filter(|_| keys.len() >= 2 * c)
            .map(|url| database_alone(url, &keys[keys.len() / 2..], c, first_epoch + 2_000_000, 5.0));
        Breakdown {
            signed: r.ok(),
            seconds: r.elapsed.as_secs_f64(),
            before: cpu_before,
            after: cpu_after,
            commits_before,
            commits_after,
            database_alone,
        }
        .print();
    } else {
        let first_slot = first_epoch * 32;
        let works = slot_schedule(&o, &keys, first_slot);
        println!(
            "mainnet-shaped load: {} validators (of a {}-validator network), {} slots of {:.1} s, {} requests, duplicates {:.0}%",
            keys.len(),
            o.network_validators,
            o.slots,
            o.slot_seconds,
            works.len(),
            o.duplicates * 100.0
        );
        let (stats, elapsed) = rt.block_on(dispatch(&client, &base, works, o.max_in_flight));
        print_stats(&stats, elapsed);
    }
    if let Some(pid) = pid
        && let Some((rss, peak)) = memory_mib(pid)
    {
        println!(
            "signer memory: {rss:.1} MiB resident now, {peak:.1} MiB peak, {} keys",
            keys.len()
        );
    }
    Ok(())
}
