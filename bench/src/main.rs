//! palisade-bench: measures Palisade against the machine it runs on.
//!
//!   palisade-bench blst         raw blst signatures per second, one core and all cores
//!   palisade-bench http         HTTP signing throughput (RANDAO_REVEAL) vs raw blst
//!   palisade-bench keystores    keystore loading time vs the ideal (N x one-key cost / cores)
//!   palisade-bench stores       startup of N keys from AWS Secrets Manager (moto) vs local keys
//!   palisade-bench reload       N keystores reloaded while a client signs: time, latency
//!   palisade-bench protection   protected attestations per second on PostgreSQL, and the
//!                               check's latency with 1,000 vs 1,000,000 rows of history
//!   palisade-bench load         mainnet-shaped load, slot bursts, steady rates, saturation
//!   palisade-bench failover     two replicas behind HAProxy, one replica's database cut
//!   palisade-bench attack      signing while silent sockets and large bodies flood the signer
//!   palisade-bench faults       fault injection on N replicas and one PostgreSQL, then the checker
//!   palisade-bench check        the independent checker of end-to-end and fault runs
//!
//! Build with `cargo build --release`; the signer under test is the `palisade` binary next to
//! this one. Benchmarks print numbers; they assert nothing.

mod attack;
mod blst_bench;
mod breakdown;
mod check;
mod dispatch;
mod failover;
mod faults;
mod fixtures;
mod key_sources;
mod keys;
mod load;
mod mainnet;
mod messages;
mod protection_bench;
mod proxy;
mod threshold;

use clap::{Parser, Subcommand};

/// Benchmark clusters keep their data on a disk (every commit pays a real fsync), outside the
/// checkout and where the `postgres` user can reach it: `PALISADE_PG_SCRATCH`, else
/// /var/tmp/palisade-bench-pg.
fn bench_pg_scratch() {
    if std::env::var_os("PALISADE_PG_SCRATCH").is_none() {
        // SAFETY: called before any thread is started; the harness reads it when starting.
        unsafe { std::env::set_var("PALISADE_PG_SCRATCH", "/var/tmp/palisade-bench-pg") };
    }
}

#[derive(Parser)]
#[command(name = "palisade-bench", about = "Benchmarks for Palisade (numbers, not pass/fail)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Raw blst signing rate on one core and on all cores.
    Blst {
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// HTTP signing throughput for RANDAO_REVEAL on all cores, with the ratio to raw blst.
    Http {
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Concurrent HTTP connections of the load generator.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Distinct validator keys.
        #[arg(long, default_value_t = 64)]
        keys: usize,
    },
    /// Keystore loading: N keystores decrypted at startup vs N x one-key cost / cores.
    Keystores {
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// scrypt (n=2^18, the EIP-2335 default) or pbkdf2 (c=2^18).
        #[arg(long, default_value = "pbkdf2")]
        kdf: String,
        /// Where to keep the generated keystores between runs.
        #[arg(long, default_value = "target/bench-keystores")]
        dir: std::path::PathBuf,
        /// Then drive protected attestations this long and report the signer's memory.
        #[arg(long, default_value_t = 10.0)]
        load_seconds: f64,
    },
    /// Startup of N keys from AWS Secrets Manager (moto, bulk loading) vs the same keys as
    /// local file-raw definitions and as local pbkdf2 keystores.
    Stores {
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// The local keystores' pbkdf2 iterations (EIP-2335's default is 262144).
        #[arg(long, default_value_t = 16_384)]
        pbkdf2_c: u32,
    },
    /// N new keystores reloaded (POST /reload) while a client signs protected attestations
    /// with other keys: the reload's time and the signing latency before and during it.
    Reload {
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        #[arg(long, default_value_t = 16_384)]
        pbkdf2_c: u32,
        #[arg(long, default_value_t = 8)]
        connections: usize,
    },
    /// Checks a run: signatures valid, nothing slashable signed, everything signed recorded.
    Check {
        /// `mainnet`, ..., or a config YAML (as given to the signer).
        #[arg(long)]
        network: String,
        /// JSON lines: {pubkey, request, status, response, t0, t1} per signing request.
        #[arg(long)]
        responses: std::path::PathBuf,
        /// The signer's EIP-3076 export taken after the run.
        #[arg(long)]
        export: std::path::PathBuf,
        /// JSON [{"start": ms, "end": ms, "replica": name?}, ...] of database outages; a 5xx
        /// outside them, or an outage not followed by signing, fails the check.
        #[arg(long)]
        outages: Option<std::path::PathBuf>,
    },
    /// Fault injection: replicas killed, paused and cut off, the database crash-stopped, while
    /// clients on different heads race conflicting messages; then the independent checker.
    Faults(faults::Options),
    /// Mainnet-shaped load (blocks, attestation bursts at 4 s, aggregates, sync committee),
    /// or a slot burst (--burst), a steady rate (--rate), or saturation (--saturate).
    Load(mainnet::Options),
    /// A validator client signing while thousands of silent sockets and hundreds of
    /// large-body senders attack: latency before and during, new connections, peak memory.
    Attack(attack::Options),
    /// Two replicas behind HAProxy; one replica's database connection broken: how long
    /// clients wait and whether they see an error.
    Failover(failover::Options),
    /// Protected attestations per second through the real signer on PostgreSQL.
    Protection {
        /// A PostgreSQL URL; by default a throwaway cluster is started on disk under /var/tmp/palisade-bench-pg (or PALISADE_PG_SCRATCH).
        #[arg(long)]
        database_url: Option<String>,
        #[arg(long, default_value_t = 1000)]
        validators: usize,
        /// Client counts to measure (comma separated).
        #[arg(long, default_value = "8,32", value_delimiter = ',')]
        clients: Vec<usize>,
        /// Replica counts to measure (comma separated), all on the same database.
        #[arg(long, default_value = "1", value_delimiter = ',')]
        replicas: Vec<usize>,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Rows of history for the latency comparison (0 skips it).
        #[arg(long, default_value_t = 1_000_000)]
        history_rows: u64,
    },
    /// A 3-of-4 threshold group (4 share nodes over mutual TLS, a coordinator) against a plain
    /// signer: latency, rate and CPU per signature, next to raw BLS.
    Threshold {
        #[arg(long, default_value_t = 16)]
        validators: usize,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Blst { seconds } => {
            blst_bench::report(seconds);
            Ok(())
        }
        Command::Http {
            seconds,
            connections,
            keys,
        } => load::http_randao(seconds, connections, keys),
        Command::Check {
            network,
            responses,
            export,
            outages,
        } => check::run(&network, &responses, &export, outages.as_deref()),
        Command::Faults(options) => faults::run(options),
        Command::Failover(options) => failover::run(options),
        Command::Attack(options) => attack::run(options),
        Command::Load(options) => mainnet::run(options),
        Command::Keystores {
            count,
            kdf,
            dir,
            load_seconds,
        } => keys::keystore_loading(count, &kdf, &dir, load_seconds),
        Command::Stores { count, pbkdf2_c } => key_sources::stores(count, pbkdf2_c),
        Command::Reload {
            count,
            pbkdf2_c,
            connections,
        } => key_sources::reload(count, pbkdf2_c, connections),
        Command::Protection {
            database_url,
            validators,
            clients,
            replicas,
            seconds,
            history_rows,
        } => protection_bench::run(database_url, validators, &clients, &replicas, seconds, history_rows),
        Command::Threshold {
            validators,
            connections,
            seconds,
        } => threshold::run(validators, connections, seconds),
    }
}
