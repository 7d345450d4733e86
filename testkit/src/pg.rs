//! A throwaway PostgreSQL cluster per test process (initdb + postgres on a free loopback
//! port). As root, initdb refuses to run, so the cluster runs as the `postgres` user.
//! Data lives under /dev/shm when it exists: fsync stays on (so durability checks pass) but
//! costs nothing.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use super::procs::{PortLease, is_root, lease_port, spawn_tied};

pub struct PgCluster {
    pub port: u16,
    _lease: PortLease,
    data: PathBuf,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    child: Mutex<Option<Child>>,
    extra: Vec<String>,
}

fn find_bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("PALISADE_PG_BIN") {
        return dir.into();
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    candidates.sort();
    if let Some(dir) = candidates.into_iter().rev().find(|d| d.join("initdb").exists()) {
        return dir;
    }
    for p in std::env::var("PATH").unwrap_or_default().split(':') {
        if Path::new(p).join("initdb").exists() {
            return p.into();
        }
    }
    panic!("PostgreSQL server binaries (initdb, postgres) not found: install them or set PALISADE_PG_BIN");
}

pub fn postgres_user() -> (u32, u32) {
    let name = CString::new("postgres").unwrap();
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root needs a `postgres` user to run the test cluster"
    );
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// Where cluster data lives: `PALISADE_PG_SCRATCH`, else /dev/shm (benchmarks point it at a
/// disk so that fsync costs what it costs).
fn scratch_root() -> PathBuf {
    if let Ok(dir) = std::env::var("PALISADE_PG_SCRATCH") {
        let _ = std::fs::create_dir_all(&dir);
        return dir.into();
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm.into() } else { std::env::temp_dir() }
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

impl PgCluster {
    /// A new cluster; `extra` are `-c name=value` settings.
    pub fn start_with(extra: &[&str]) -> PgCluster {
        let bin = find_bindir();
        let run_as = is_root().then(postgres_user);
        let data = scratch_root().join(format!(
            "palisade-test-pg-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        if let Some((uid, gid)) = run_as {
            let c = CString::new(data.to_str().unwrap()).unwrap();
            assert_eq!(unsafe { libc::chown(c.as_ptr(), uid, gid) }, 0);
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = run_as {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().expect("running initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lease = lease_port();
        let cluster = PgCluster {
            port: lease.port,
            _lease: lease,
            data,
            bin,
            run_as,
            child: Mutex::new(None),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        cluster.start();
        cluster
    }

    /// Starts (or restarts) the server on the same data and port.
    pub fn start(&self) {
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.args(["-D", self.data.to_str().unwrap(), "-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="])
            .args(["-c", "max_connections=300", "-c", "shared_buffers=128MB"])
            .args([
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
                "-c",
                "full_page_writes=on",
            ]);
        for e in &self.extra {
            cmd.args(["-c", e]);
        }
        // Its log beside the data (appended across restarts), shown when a test fails.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("opening the PostgreSQL log");
        cmd.stdout(Stdio::null()).stderr(log);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        // SIGQUIT is PostgreSQL's immediate shutdown: it takes its backends with it.
        let child = spawn_tied(cmd, libc::SIGQUIT).expect("starting postgres");
        *self.child.lock().unwrap() = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        super::wait::until_blocking("postgres accepts connections", Duration::from_secs(60), || {
            if let Some(child) = self.child.lock().unwrap().as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                panic!("postgres exited at startup ({status}) on port {}:\n{log}", self.port);
            }
            Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
                .then_some(())
        });
    }

    /// `pg_ctl stop -m immediate`: no checkpoint, backends killed at once.
    pub fn stop_immediate(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            super::procs::signal(child.id(), libc::SIGQUIT);
            let _ = child.wait();
        }
    }

    /// `pg_ctl stop -m immediate`, literally (as the cluster's user).
    pub fn pg_ctl_stop_immediate(&self) {
        let mut cmd = Command::new(self.bin.join("pg_ctl"));
        cmd.args(["stop", "-D", self.data.to_str().unwrap(), "-m", "immediate", "-w"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        let _ = cmd.status();
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.wait();
        }
    }

    fn log_path(&self) -> PathBuf {
        self.data.with_extension("log")
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL with psql as the superuser.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let psql = if self.bin.join("psql").exists() {
            self.bin.join("psql")
        } else {
            "psql".into()
        };
        let out = Command::new(psql)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn tool(&self, name: &str) -> std::path::PathBuf {
        let p = self.bin.join(name);
        if p.exists() { p } else { name.into() }
    }

    /// `pg_dump -Fc` of the database at `url` into `to`: a backup an operator would take.
    pub fn dump(&self, url: &str, to: &Path) {
        let out = Command::new(self.tool("pg_dump"))
            .args(["-Fc", "-d", url, "-f", to.to_str().unwrap()])
            .output()
            .expect("running pg_dump");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Restores `from` as the database at `url`, as after a disk failure: its sessions are
    /// cut, it is dropped, created again and filled from the dump.
    pub fn restore(&self, url: &str, from: &Path) {
        let name = url.rsplit('/').next().unwrap();
        self.psql(
            "postgres",
            &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"),
        );
        self.psql("postgres", &format!("DROP DATABASE {name} WITH (FORCE)"));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        let out = Command::new(self.tool("pg_restore"))
            .args(["-d", url, from.to_str().unwrap()])
            .output()
            .expect("running pg_restore");
        assert!(
            out.status.success(),
            "pg_restore failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// From now on every user but the superuser must give a password (SCRAM) over TCP; adds
    /// `role` with `password` and a database it owns, and returns that database's URL without
    /// the password. The cluster restarts to apply the rule (a reload applies it later).
    pub fn password_role(&self, role: &str, password: &str) -> String {
        self.psql("postgres", &format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"));
        let db = format!("{role}_db");
        self.psql("postgres", &format!("CREATE DATABASE {db} OWNER {role}"));
        let hba = self.data.join("pg_hba.conf");
        std::fs::write(
            &hba,
            "host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&hba, Some(uid), Some(gid)).unwrap();
        }
        self.stop_immediate();
        self.start();
        format!("postgres://{role}@127.0.0.1:{}/{db}", self.port)
    }

    /// A new, empty database on this cluster; returns its URL.
    pub fn new_database(&self) -> String {
        let name = format!("t{}_{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop_immediate();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "----- PostgreSQL on port {} (last {} log lines) -----\n{}",
                self.port,
                tail.len(),
                tail.join("\n")
            );
        }
        let _ = std::fs::remove_dir_all(&self.data);
        let _ = std::fs::remove_file(self.log_path());
    }
}

/// The cluster shared by the tests of one test binary (tests use their own databases).
pub fn shared() -> &'static PgCluster {
    static SHARED: OnceLock<PgCluster> = OnceLock::new();
    SHARED.get_or_init(|| {
        sweep_stale();
        PgCluster::start_with(&[])
    })
}

/// Removes data directories left by test processes that no longer exist.
fn sweep_stale() {
    let Ok(rd) = std::fs::read_dir(scratch_root()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(rest) = name.strip_prefix("palisade-test-pg-") {
            let pid: i32 = rest.split('-').next().and_then(|p| p.parse().ok()).unwrap_or(0);
            if pid > 0 && unsafe { libc::kill(pid, 0) } != 0 {
                // The data folder, and its log beside it.
                let _ = std::fs::remove_dir_all(e.path());
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
