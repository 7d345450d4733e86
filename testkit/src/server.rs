//! The real `palisade` binary as a child process, driven over real HTTP on loopback.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use super::procs::spawn_tied;

/// The `palisade` binary: `PALISADE_BIN` if set, else the one cargo built beside the running
/// executable (a test runs from `target/<profile>/deps/`, the bench from `target/<profile>/`).
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PALISADE_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current executable");
    let dir = exe.parent().expect("executable's folder");
    let candidates = [dir.join("palisade"), dir.join("../palisade")];
    candidates
        .iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no palisade binary beside {}: run `cargo build` first", dir.display()))
        .clone()
}

pub struct Palisade {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub workdir: PathBuf,
    log: Arc<Mutex<String>>,
    _tmp: Option<tempfile::TempDir>,
}

/// Spawns the binary and collects its log, returning the child and the log buffer.
fn spawn(
    args: &[String],
    workdir: &Path,
    env: &[(&str, &str)],
) -> (
    Child,
    Arc<Mutex<String>>,
    mpsc::Receiver<String>,
    std::thread::JoinHandle<()>,
) {
    let mut cmd = Command::new(bin());
    if !args.iter().any(|a| a == "--database-timeout-ms") {
        // Room for a loaded test machine: the production limit (1.5 s) exists so that a client
        // can try another replica, and the tests about it set it themselves.
        cmd.env("PALISADE_DATABASE_TIMEOUT_MS", "10000");
    }
    cmd.envs(env.iter().copied());
    cmd.args(args)
        .current_dir(workdir)
        .env("PALISADE_LOG_LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = spawn_tied(cmd, libc::SIGKILL).expect("spawning palisade");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let sink = log.clone();
    let collector = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(i) = line.find("listening on http") {
                let addr = line[i + "listening on ".len()..]
                    .split(|c: char| c.is_whitespace() || c == '"')
                    .next()
                    .unwrap_or("");
                let _ = tx.send(addr.to_string());
            }
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    (child, log, rx, collector)
}

impl Palisade {
    /// `palisade serve ARGS --http-port 0` in a fresh working directory.
    pub fn serve(args: &[&str]) -> Palisade {
        let tmp = tempfile::tempdir().unwrap();
        let workdir = tmp.path().to_path_buf();
        let mut p = Self::serve_in(&workdir, args);
        p._tmp = Some(tmp);
        p
    }

    /// `palisade serve ARGS --http-port 0` in `workdir` (kept by the caller).
    pub fn serve_in(workdir: &Path, args: &[&str]) -> Palisade {
        match Self::try_serve_in(workdir, args) {
            Ok(p) => p,
            Err(log) => panic!("palisade did not start:\n{log}"),
        }
    }

    /// `palisade serve ARGS` in a fresh working directory, with `env` set for it.
    pub fn serve_with_env(args: &[&str], env: &[(&str, &str)]) -> Palisade {
        let tmp = tempfile::tempdir().unwrap();
        let workdir = tmp.path().to_path_buf();
        match Self::try_serve_with(&workdir, args, env) {
            Ok(mut p) => {
                p._tmp = Some(tmp);
                p
            }
            Err(log) => panic!("palisade did not start:\n{log}"),
        }
    }

    /// Like `serve_in`, but returns the log when the process exits instead of listening.
    pub fn try_serve_in(workdir: &Path, args: &[&str]) -> Result<Palisade, String> {
        Self::try_serve_with(workdir, args, &[])
    }

    fn try_serve_with(workdir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Palisade, String> {
        let mut all: Vec<String> = vec!["serve".into(), "--http-port".into(), "0".into()];
        all.extend(args.iter().map(|s| s.to_string()));
        let (mut child, log, rx, collector) = spawn(&all, workdir, env);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(50)) {
                return Ok(Palisade {
                    child: Some(child),
                    base: addr,
                    workdir: workdir.to_path_buf(),
                    log,
                    _tmp: None,
                });
            }
            if let Ok(Some(_)) = child.try_wait() {
                // Every line it wrote: the collector ends when the process's stderr closes.
                let _ = collector.join();
                return Err(log.lock().unwrap().clone());
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("timed out; log:\n{}", log.lock().unwrap()));
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log once it holds `needle` (lines are collected by a thread as the process writes
    /// them, so a line logged just now may not be there yet); panics with the log after 30 s.
    pub async fn wait_for_log(&self, needle: &str) -> String {
        let what = format!("log line {needle:?}");
        let found = super::wait::within(&what, Duration::from_secs(30), || async {
            let log = self.log();
            log.contains(needle).then_some(log)
        })
        .await;
        found.unwrap_or_else(|| panic!("no {what} within 30 s:\n{}", self.log()))
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.workdir.join("palisade-api-token.txt"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends `sig` and waits for the process to exit; returns its exit status.
    pub fn stop(&mut self, sig: libc::c_int) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        super::procs::signal(child.id(), sig);
        child.wait().ok()
    }
}

impl Drop for Palisade {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // A failing test shows what each signer it started said (the harness prints a failed
        // test's captured output, so a passing test stays quiet).
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            eprintln!(
                "----- palisade at {} (last {} of {} log lines) -----\n{}",
                self.base,
                tail.len(),
                lines.len(),
                tail.join("\n")
            );
        }
    }
}

/// Log lines of each signer a failing test prints.
const LOG_TAIL: usize = 60;

/// `palisade serve --help` with its words joined by single spaces (clap wraps lines), for
/// checking that an option or an environment variable is one `serve` takes.
pub fn serve_help() -> String {
    let out = Command::new(bin())
        .args(["serve", "--help"])
        .output()
        .expect("running palisade");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `palisade ARGS` to completion: (success, stdout, stderr).
pub fn run(args: &[&str], workdir: &Path) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(args)
        .current_dir(workdir)
        .output()
        .expect("running palisade");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}
