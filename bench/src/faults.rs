//! The fault-injection harness: N Palisade replicas on one PostgreSQL, M clients that behave
//! like validator-client replicas on different chain heads, and faults injected while they
//! race: replicas started together on an empty database, SIGKILL mid-request, PostgreSQL
//! stopped with `pg_ctl stop -m immediate` and started again, a replica's database
//! connections cut mid-transaction (through a proxy), a replica paused with SIGSTOP and
//! resumed, the database restored from a backup taken at the start. The independent checker
//! then reads every response and the database's export.
//!
//! (Past 500 lines on purpose: the scenario, its fault schedule and the client loop are one
//! experiment and read best in one place; the checker is its own module.)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade::network::Network;
use palisade::protection::SlashingDatabase;
use palisade::types::PublicKey;
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::check::{self, Exchange, Outage};
use crate::fixtures::raw_key_config;
use crate::proxy::Proxy;
use testkit::pg::PgCluster;
use testkit::procs;
use testkit::server::Palisade;

const FORK: &str = r#"{"fork":{"previous_version":"0x05000000","current_version":"0x06000000","epoch":"0"},"genesis_validators_root":"0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"}"#;
/// A client gives a replica this long before trying the next one.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const ROUND: Duration = Duration::from_millis(250);

#[derive(clap::Args)]
pub struct Options {
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    #[arg(long, default_value_t = 12)]
    pub validators: usize,
    /// How long the load runs; faults are injected in turn until 14 s before the end.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keep the run's files (responses, export, outages, logs) even when it passes.
    #[arg(long)]
    pub keep: bool,
    /// Run against this PostgreSQL (an empty database on 127.0.0.1, such as a Patroni
    /// cluster behind HAProxy) instead of starting one. The database faults that need the
    /// cluster in hand (restart, backup restored) are left out.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// An external fault, `NAME=COMMAND`: the shell command injects it and returns once the
    /// database accepts writes again (repeatable; taken in turn with the others).
    #[arg(long = "fault", value_name = "NAME=COMMAND")]
    pub faults: Vec<String>,
    /// Which built-in faults to inject (comma separated; default all that apply).
    #[arg(long, value_delimiter = ',', value_name = "KIND,..")]
    pub kinds: Vec<String>,
}

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * 1e3
}

fn hex32(rng: &mut StdRng) -> String {
    let b: [u8; 32] = rng.random();
    format!("0x{}", hex::encode(b))
}

fn attestation(source: u64, target: u64, head: &str) -> serde_json::Value {
    let fork: serde_json::Value = serde_json::from_str(FORK).unwrap();
    serde_json::json!({
        "type": "ATTESTATION", "fork_info": fork,
        "attestation": {"slot": (target * 32).to_string(), "index": "0", "beacon_block_root": head,
            "source": {"epoch": source.to_string(), "root": format!("0x{}", "11".repeat(32))},
            "target": {"epoch": target.to_string(), "root": format!("0x{}", "22".repeat(32))}}
    })
}

fn block(slot: u64, state_root: &str) -> serde_json::Value {
    let fork: serde_json::Value = serde_json::from_str(FORK).unwrap();
    serde_json::json!({
        "type": "BLOCK_V2", "fork_info": fork,
        "beacon_block": {"version": "FULU", "block_header": {"slot": slot.to_string(), "proposer_index": "7",
            "parent_root": format!("0x{}", "33".repeat(32)), "state_root": state_root,
            "body_root": format!("0x{}", "44".repeat(32))}}
    })
}

/// One replica: its process, address and database proxy.
struct Replica {
    name: String,
    workdir: PathBuf,
    args: Vec<String>,
    process: Mutex<Option<Palisade>>,
    base: RwLock<Option<String>>,
}

impl Replica {
    fn start(&self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let p = Palisade::serve_in(&self.workdir, &args);
        *self.base.write().unwrap() = Some(p.base.clone());
        *self.process.lock().unwrap() = Some(p);
    }

    fn pid(&self) -> Option<u32> {
        self.process.lock().unwrap().as_ref().map(|p| p.pid())
    }
}

struct Run {
    replicas: Vec<Arc<Replica>>,
    log: Mutex<Vec<Exchange>>,
    transport_errors: Mutex<u64>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Run {
    /// Sends to the client's preferred replica, failing over like a validator client with
    /// several signer URLs: on a transport error, a timeout or a 5xx, the next one.
    async fn sign(&self, client: usize, pubkey: &PublicKey, request: serde_json::Value) {
        let n = self.replicas.len();
        let body = Bytes::from(serde_json::to_vec(&request).unwrap());
        for k in 0..n {
            let r = &self.replicas[(client + k) % n];
            let Some(base) = r.base.read().unwrap().clone() else {
                continue;
            };
            let req = hyper::Request::post(format!("{base}/api/v1/eth2/sign/{pubkey}"))
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))
                .unwrap();
            let t0 = now_ms();
            let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
                let resp = self.http.request(req).await.ok()?;
                let status = resp.status().as_u16();
                let bytes = resp.into_body().collect().await.ok()?.to_bytes();
                Some((status, bytes))
            })
            .await;
            let Ok(Some((status, bytes))) = answer else {
                *self.transport_errors.lock().unwrap() += 1;
                continue;
            };
            self.log.lock().unwrap().push(Exchange {
                pubkey: pubkey.to_string(),
                request: request.clone(),
                status,
                response: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
                t0,
                t1: now_ms(),
                source: format!("client-{client}"),
                backend: Some(r.name.clone()),
            });
            if status < 500 {
                return;
            }
        }
    }
}

/// One client on its own chain head: every round, for every validator, an attestation with
/// a random source and target just above the last round's, and every other round a block;
/// sometimes with the common head (so that replicas of one client repeat each other),
/// mostly with its own (so that clients conflict).
async fn client(
    run: Arc<Run>,
    id: usize,
    keys: Arc<Vec<PublicKey>>,
    start: Instant,
    deadline: Arc<Mutex<Instant>>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64 * 0x9e37_79b9));
    let mut round = 0u64;
    while Instant::now() < *deadline.lock().unwrap() {
        let tick = start + ROUND * round as u32;
        tokio::time::sleep_until(tick.into()).await;
        let mut sends = Vec::new();
        for (v, key) in keys.iter().enumerate() {
            // Fulu-era epochs and slots in the past: real-looking duties inside the clock window.
            let base = crate::messages::FULU_EPOCH + 3 * round + 2;
            let target = base + rng.random_range(1..=3);
            let source = rng.random_range(base.saturating_sub(3)..target);
            let common = rng.random_bool(0.4);
            let head = if common {
                format!("0x{}", hex::encode([(v as u8) ^ (target as u8); 32]))
            } else {
                hex32(&mut rng)
            };
            sends.push((*key, attestation(source, target, &head)));
            if round.is_multiple_of(2) {
                let slot = crate::messages::FULU_EPOCH * 32 + 4 * round + rng.random_range(0..4);
                let state = if common {
                    format!("0x{}", hex::encode([(slot as u8) ^ (v as u8); 32]))
                } else {
                    hex32(&mut rng)
                };
                sends.push((*key, block(slot, &state)));
            }
        }
        let tasks: Vec<_> = sends
            .into_iter()
            .map(|(key, req)| {
                let run = run.clone();
                tokio::spawn(async move { run.sign(id, &key, req).await })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        round += 1;
    }
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(opts))
}

async fn run_async(opts: Options) -> anyhow::Result<()> {
    let work = tempfile::Builder::new().prefix("palisade-faults.").tempdir()?;
    let (pg, url) = match &opts.database_url {
        Some(u) => (None, u.clone()),
        None => {
            let pg = Arc::new(PgCluster::start_with(&[]));
            let url = pg.new_database();
            (Some(pg), url)
        }
    };
    // Replicas reach the database through one proxy each (for the connection-cut fault).
    let target = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|hp| hp.rsplit(':').next())
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or_else(|| anyhow::anyhow!("the database URL needs user@127.0.0.1:PORT/db"))?;
    let through = |port: u16| {
        let (head, rest) = url.split_once('@').expect("checked above");
        let db = rest.split_once('/').map_or("", |(_, d)| d);
        format!("{head}@127.0.0.1:{port}/{db}")
    };
    let keys_dir = work.path().join("keys");
    let keys = Arc::new(raw_key_config(&keys_dir, opts.validators)?);
    palisade::fsutil::write_private(
        &work.path().join("token.txt"),
        b"faults-harness-token",
        palisade::fsutil::Existing::Replace,
    )?;

    let mut proxies = Vec::new();
    let mut replicas = Vec::new();
    for i in 0..opts.replicas {
        let proxy = Proxy::start(target).await?;
        let dir = work.path().join(format!("r{i}"));
        std::fs::create_dir_all(&dir)?;
        let args = vec![
            "--network".into(),
            "mainnet".into(),
            "--key-config-path".into(),
            keys_dir.display().to_string(),
            "--database-url".into(),
            through(proxy.port),
            "--api-token-file".into(),
            work.path().join("token.txt").display().to_string(),
            "--database-timeout-ms".into(),
            "1500".into(),
        ];
        replicas.push(Arc::new(Replica {
            name: format!("r{i}"),
            workdir: dir,
            args,
            process: Mutex::new(None),
            base: RwLock::new(None),
        }));
        proxies.push(proxy);
    }
    let mut injected: BTreeMap<String, u32> = BTreeMap::new();

    // Fault 1: every replica started at the same moment on an empty database.
    let starts: Vec<_> = replicas
        .iter()
        .map(|r| {
            let r = r.clone();
            tokio::task::spawn_blocking(move || r.start())
        })
        .collect();
    for s in starts {
        s.await?;
    }
    *injected.entry("cold start together".into()).or_default() += 1;
    println!(
        "faults: {} replicas started together on an empty database",
        opts.replicas
    );
    // Keys load in the background: wait until every replica can sign.
    for r in &replicas {
        let addr = r.base.read().unwrap().clone().expect("started above");
        let addr = addr.trim_start_matches("http://").to_string();
        let n = opts.validators;
        tokio::task::spawn_blocking(move || crate::protection_bench::wait_for_keys(&addr, n)).await??;
    }

    let run = Arc::new(Run {
        replicas: replicas.clone(),
        log: Mutex::new(Vec::new()),
        transport_errors: Mutex::new(0),
        http: Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(10))
            .build_http(),
    });
    let start = Instant::now();
    let load_for = Duration::from_secs(opts.seconds);
    // Extended when a slow machine needs longer to inject every kind of fault once.
    let deadline = Arc::new(Mutex::new(start + load_for));
    let clients: Vec<_> = (0..opts.clients)
        .map(|c| tokio::spawn(client(run.clone(), c, keys.clone(), start, deadline.clone(), opts.seed)))
        .collect();

    // The schedule: kill, database restart, connection cut, pause, in turn, until 8 s
    // before the end (time for signing to resume and be seen).
    let mut outages: Vec<Outage> = Vec::new();
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let own_cluster = ["database restart", "backup restored"];
    let external: Vec<(String, String)> = opts
        .faults
        .iter()
        .map(|f| {
            f.split_once('=')
                .map(|(n, c)| (n.to_string(), c.to_string()))
                .ok_or_else(|| anyhow::anyhow!("--fault {f}: expected NAME=COMMAND"))
        })
        .collect::<Result<_, _>>()?;
    let mut kinds: Vec<String> = if opts.kinds.is_empty() {
        ["kill", "database restart", "connection cut", "pause", "backup restored"]
            .iter()
            .filter(|k| pg.is_some() || !own_cluster.contains(k))
            .map(|k| k.to_string())
            .collect()
    } else {
        opts.kinds.clone()
    };
    if let Some(k) = kinds.iter().find(|k| pg.is_none() && own_cluster.contains(&k.as_str())) {
        anyhow::bail!("fault `{k}` needs the harness's own PostgreSQL (no --database-url)");
    }
    kinds.extend(external.iter().map(|(n, _)| n.clone()));
    let mut i = 0;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The backup an operator restores later, after a disk failure.
    let backup = work.path().join("backup.dump");
    if let Some(pg) = pg.clone().filter(|_| kinds.iter().any(|k| k == "backup restored")) {
        let (u, b) = (url.clone(), backup.clone());
        tokio::task::spawn_blocking(move || pg.dump(&u, &b)).await?;
        println!("faults: {:>5.1}s pg_dump taken", start.elapsed().as_secs_f64());
    }
    let mut recoveries: Vec<(String, f64)> = Vec::new();
    // Each kind at least once whatever the machine's speed, then in turn while time is left.
    while i < kinds.len() || start.elapsed() + Duration::from_secs(14) < load_for {
        let kind = kinds[i % kinds.len()].clone();
        let k = rng.random_range(0..replicas.len());
        let r = replicas[k].clone();
        match kind.as_str() {
            "kill" => {
                if let Some(pid) = r.pid() {
                    procs::signal(pid, libc::SIGKILL);
                    *r.base.write().unwrap() = None;
                    if let Some(mut p) = r.process.lock().unwrap().take() {
                        p.stop(libc::SIGKILL);
                    }
                    let t0 = now_ms();
                    println!("faults: {:>5.1}s SIGKILL {}", start.elapsed().as_secs_f64(), r.name);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let again = r.clone();
                    tokio::task::spawn_blocking(move || again.start()).await?;
                    // A restarted replica may refuse while its keys decrypt and its first
                    // database check runs: an outage of that replica, not of the database.
                    outages.push(Outage {
                        start: t0,
                        end: now_ms(),
                        replica: Some(r.name.clone()),
                        lost_history: false,
                    });
                    println!("faults: {:>5.1}s {} restarted", start.elapsed().as_secs_f64(), r.name);
                }
            }
            "database restart" => {
                let t0 = now_ms();
                let p = pg.clone().expect("checked above");
                tokio::task::spawn_blocking(move || p.pg_ctl_stop_immediate()).await?;
                println!(
                    "faults: {:>5.1}s pg_ctl stop -m immediate",
                    start.elapsed().as_secs_f64()
                );
                tokio::time::sleep(Duration::from_secs(3)).await;
                let p = pg.clone().expect("checked above");
                tokio::task::spawn_blocking(move || p.start()).await?;
                outages.push(Outage {
                    start: t0,
                    end: now_ms(),
                    replica: None,
                    lost_history: false,
                });
                println!(
                    "faults: {:>5.1}s PostgreSQL started again",
                    start.elapsed().as_secs_f64()
                );
            }
            "connection cut" => {
                let t0 = now_ms();
                proxies[k].cut(Duration::from_secs(3));
                println!(
                    "faults: {:>5.1}s cut {}'s database connections for 3 s",
                    start.elapsed().as_secs_f64(),
                    r.name
                );
                tokio::time::sleep(Duration::from_secs(3)).await;
                outages.push(Outage {
                    start: t0,
                    end: now_ms(),
                    replica: Some(r.name.clone()),
                    lost_history: false,
                });
            }
            "backup restored" => {
                let t0 = now_ms();
                let (p, u, b) = (pg.clone().expect("checked above"), url.clone(), backup.clone());
                tokio::task::spawn_blocking(move || p.restore(&u, &b)).await?;
                outages.push(Outage {
                    start: t0,
                    end: now_ms(),
                    replica: None,
                    lost_history: true,
                });
                println!(
                    "faults: {:>5.1}s database restored from the backup taken at the start",
                    start.elapsed().as_secs_f64()
                );
            }
            name if external.iter().any(|(n, _)| n == name) => {
                let command = &external.iter().find(|(n, _)| n == name).expect("matched").1;
                let t0 = now_ms();
                println!("faults: {:>5.1}s {name}: {command}", start.elapsed().as_secs_f64());
                let cmd = command.clone();
                let out = tokio::task::spawn_blocking(move || {
                    std::process::Command::new("sh")
                        .args(["-c", &cmd])
                        .stderr(std::process::Stdio::inherit())
                        .output()
                })
                .await??;
                let said = String::from_utf8_lossy(&out.stdout);
                print!("{said}");
                anyhow::ensure!(out.status.success(), "fault command `{command}` failed: {}", out.status);
                // The command may prepare first (wait for a healthy cluster): time from the
                // moment it says it injected the fault.
                let t0 = said
                    .lines()
                    .find_map(|l| l.strip_prefix("fault-at-ms "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or(t0);
                outages.push(Outage {
                    start: t0,
                    end: now_ms(),
                    replica: None,
                    // The command says when the database went back in time (a Patroni that
                    // let an old leader take its key back): records committed meanwhile are
                    // gone, and only the replicas' memory protects what they covered.
                    lost_history: said.lines().any(|l| l.trim() == "history-lost"),
                });
                recoveries.push((name.to_string(), t0));
                println!(
                    "faults: {:>5.1}s {name}: the database accepts writes again ({:.1} s after the fault)",
                    start.elapsed().as_secs_f64(),
                    (now_ms() - t0) / 1e3
                );
            }
            _ => {
                if let Some(pid) = r.pid() {
                    let t0 = now_ms();
                    procs::signal(pid, libc::SIGSTOP);
                    println!("faults: {:>5.1}s SIGSTOP {}", start.elapsed().as_secs_f64(), r.name);
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    procs::signal(pid, libc::SIGCONT);
                    // Resumed, the replica finds the database check it was running overdue and
                    // refuses at once until the next one passes: its own outage.
                    outages.push(Outage {
                        start: t0,
                        end: now_ms(),
                        replica: Some(r.name.clone()),
                        lost_history: false,
                    });
                    println!("faults: {:>5.1}s SIGCONT {}", start.elapsed().as_secs_f64(), r.name);
                }
            }
        }
        *injected.entry(kind.clone()).or_default() += 1;
        i += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Time after the last fault for signing to resume and be seen.
    {
        let mut d = deadline.lock().unwrap();
        *d = (*d).max(Instant::now() + Duration::from_secs(12));
    }
    for c in clients {
        let _ = c.await;
    }

    // Read the database directly (not through a replica) for the checker.
    let db = SlashingDatabase::open(&url, &testkit::db_options()).await?;
    let export = db.export(None).await?;
    let registered = export.data.len().to_string();
    let log = std::mem::take(&mut *run.log.lock().unwrap());
    let lines: Vec<String> = log
        .iter()
        .map(|x| {
            serde_json::json!({"pubkey": x.pubkey, "request": x.request, "status": x.status, "response": x.response,
                               "t0": x.t0, "t1": x.t1, "source": x.source, "backend": x.backend})
            .to_string()
        })
        .collect();
    std::fs::write(work.path().join("responses.jsonl"), lines.join("\n"))?;
    std::fs::write(work.path().join("export.json"), serde_json::to_string(&export)?)?;
    std::fs::write(work.path().join("outages.json"), serde_json::to_string(&outages)?)?;

    let network = Network::load("mainnet").map_err(|e| anyhow::anyhow!(e))?;
    let report = check::check(&network, &log, &export, Some(&outages));
    println!("faults injected: {injected:?}");
    println!(
        "requests: {} answered, {} transport errors or timeouts (failed over); validators registered: {}",
        log.len(),
        run.transport_errors.lock().unwrap(),
        registered.trim()
    );
    report.print();
    let every_kind = kinds.iter().all(|k| injected.contains_key(k));
    for (name, t0) in &recoveries {
        let first = log
            .iter()
            .filter(|x| x.status == 200 && x.t0 >= *t0)
            .filter(|x| matches!(x.request["type"].as_str(), Some("ATTESTATION" | "BLOCK_V2")))
            .map(|x| x.t1 - t0)
            .fold(f64::INFINITY, f64::min);
        println!(
            "faults: {name}: first block or attestation signed {:.0} ms after the fault",
            first
        );
    }
    let registered_ok = registered.trim() == opts.validators.to_string();
    if !report.ok() || !every_kind || !registered_ok {
        // What each replica said, in the output of the failed run.
        for r in &replicas {
            if let Some(p) = r.process.lock().unwrap().as_ref() {
                let log = p.log();
                let lines: Vec<&str> = log.lines().collect();
                println!("----- replica {} (last 40 log lines) -----", r.name);
                println!("{}", lines[lines.len().saturating_sub(40)..].join("\n"));
            }
        }
        let kept = work.keep();
        anyhow::bail!(
            "fault run failed (every fault kind injected: {every_kind}, validators registered once: {registered_ok}); files kept in {}",
            kept.display()
        );
    }
    if opts.keep {
        println!("faults: files kept in {}", work.keep().display());
    }
    println!("faults: PASS");
    Ok(())
}
