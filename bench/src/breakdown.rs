//! Where the time of a protected signing goes: CPU per signing of the signer, of PostgreSQL
//! and of the load generator (all on the same cores), the signer's share split into BLS,
//! request parsing and signing root, the database client and the rest (HTTP, routing, the
//! async runtime), and what the group commit did.

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade::network::Network;
use palisade::protection::SlashingDatabase;
use palisade::signing::parse_signing_request;
use palisade::types::PublicKey;

use crate::load::http_get_text;
use crate::messages;

const TICKS: f64 = 100.0; // USER_HZ on Linux

/// CPU seconds (user + system) of a process so far.
pub(crate) fn cpu_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / TICKS)
}

/// CPU seconds of every `postgres` process (the server's backends and its helpers).
fn postgres_cpu() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "postgres"))
        .filter_map(|p| cpu_of(&p))
        .sum()
}

/// CPU used so far by the signer, PostgreSQL and this process.
#[derive(Clone, Copy)]
pub struct Cpu {
    signer: f64,
    postgres: f64,
    generator: f64,
}

impl Cpu {
    pub fn now(signer_pid: Option<u32>) -> Cpu {
        Cpu {
            signer: signer_pid.and_then(|p| cpu_of(&p.to_string())).unwrap_or(0.0),
            postgres: postgres_cpu(),
            generator: cpu_of("self").unwrap_or(0.0),
        }
    }
}

/// The group commit's counters from the signer's /metrics.
#[derive(Clone, Copy, Default)]
pub struct Commits {
    statements: f64,
    decided: f64,
    conflicts: f64,
}

impl Commits {
    pub fn scrape(addr: &str) -> Commits {
        let Ok(text) = http_get_text(addr, "/metrics") else {
            return Commits::default();
        };
        let value = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        Commits {
            statements: value("palisade_database_statements_total"),
            decided: value("palisade_database_decided_total"),
            conflicts: value("palisade_database_conflicts_total"),
        }
    }
}

/// Microseconds of one core to parse an attestation request and compute its signing root.
fn parse_us() -> f64 {
    let network = Network::load("mainnet").expect("mainnet");
    let pubkey = PublicKey([0xa0; 48]).to_string();
    let bodies: Vec<Vec<u8>> = (0..256u64)
        .map(|i| {
            let epoch = messages::FULU_EPOCH + 10 + i;
            serde_json::to_vec(&messages::attestation(epoch * 32, epoch - 1, epoch, &messages::root(i))).unwrap()
        })
        .collect();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_millis(700) {
        std::hint::black_box(parse_signing_request(&network, &pubkey, &bodies[n as usize % bodies.len()]).is_ok());
        n += 1;
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// The database alone, from this process: `connections` tasks each checking attestations for
/// their own validators as fast as the database takes them. Returns (per second, client CPU
/// us, server CPU us per check).
pub fn database_alone(
    url: &str,
    keys: &[PublicKey],
    connections: usize,
    first_epoch: u64,
    seconds: f64,
) -> (f64, f64, f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = Arc::new(
            SlashingDatabase::open(url, &testkit::db_options())
                .await
                .expect("database"),
        );
        let before = Cpu::now(None);
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(seconds);
        let mut tasks = Vec::new();
        for c in 0..connections.min(keys.len()) {
            let db = db.clone();
            let mine: Vec<PublicKey> = keys.iter().skip(c).step_by(connections).copied().collect();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let key = mine[n as usize % mine.len()];
                    let epoch = first_epoch + n / mine.len() as u64;
                    let p = palisade::protection::SlashableMessage::Attestation {
                        source: palisade::types::Epoch(epoch - 1),
                        target: palisade::types::Epoch(epoch),
                        root: palisade::types::SigningRoot([n as u8 | 1; 32]),
                    };
                    db.check_and_record(&key, &p, "bench").await.expect("database check");
                    n += 1;
                }
                n
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        let elapsed = start.elapsed().as_secs_f64();
        let after = Cpu::now(None);
        let per = |a: f64, b: f64| (b - a) * 1e6 / total as f64;
        (
            total as f64 / elapsed,
            per(before.generator, after.generator),
            per(before.postgres, after.postgres),
        )
    })
}

/// Prints the breakdown of a run that signed `signed` protected attestations.
pub struct Breakdown {
    pub signed: u64,
    pub seconds: f64,
    pub before: Cpu,
    pub after: Cpu,
    pub commits_before: Commits,
    pub commits_after: Commits,
    /// The database alone: (per second, client us, server us).
    pub database_alone: Option<(f64, f64, f64)>,
}

impl Breakdown {
    pub fn print(&self) {
        let n = self.signed.max(1) as f64;
        let per = |a: f64, b: f64| (b - a) * 1e6 / n;
        let signer = per(self.before.signer, self.after.signer);
        let postgres = per(self.before.postgres, self.after.postgres);
        let generator = per(self.before.generator, self.after.generator);
        let bls = 1e6 / crate::blst_bench::rate(1, 1.0);
        let parse = parse_us();
        let total = signer + postgres + generator;
        let cores = crate::blst_bench::cores() as f64;
        println!(
            "where the time goes, CPU per protected attestation at {:.0}/s:",
            n / self.seconds
        );
        println!("  signer process      {signer:>7.1} us");
        println!("    BLS signature     {bls:>7.1} us  (raw blst on one core)");
        println!("    JSON and root     {parse:>7.1} us  (parse_signing_request alone)");
        let mut rest = signer - bls - parse;
        if let Some((rate, client, server)) = self.database_alone {
            println!(
                "    database client   {client:>7.1} us  (check_and_record alone from this process: {rate:.0}/s, server {server:.1} us each)"
            );
            rest -= client;
        }
        println!("    HTTP and the rest {rest:>7.1} us  (hyper, axum, routing, metrics, logging, runtime)");
        println!("  PostgreSQL server   {postgres:>7.1} us");
        println!("  load generator      {generator:>7.1} us");
        println!(
            "  total               {total:>7.1} us: {cores:.0} cores / total = {:.0}/s ceiling, measured {:.0}/s",
            cores * 1e6 / total,
            n / self.seconds
        );
        let (a, b) = (self.commits_before, self.commits_after);
        let statements = b.statements - a.statements;
        if statements > 0.0 {
            println!(
                "  group commit: {statements:.0} statements, {:.1} signings each on average, {:.0} conflicts (rolled back and run again)",
                (b.decided - a.decided) / statements,
                b.conflicts - a.conflicts
            );
        }
    }
}

/// Resident and peak memory of a process, in MiB.
pub fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}
