//! Child processes that cannot outlive the test process.
//!
//! Linux delivers the parent-death signal when the *thread* that forked the child exits, and
//! test threads come and go; so every child is forked by one thread that never exits.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Request = (Command, libc::c_int, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<Request>> {
    static TX: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                for (mut cmd, sig, reply) in rx {
                    unsafe {
                        cmd.pre_exec(move || {
                            // After setuid (std applies uid/gid before pre_exec), so the
                            // kernel does not clear it again.
                            if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
            })
            .unwrap();
        Mutex::new(tx)
    })
}

/// Spawns `cmd`; the child receives `death_signal` when the test process ends.
pub fn spawn_tied(cmd: Command, death_signal: libc::c_int) -> std::io::Result<Child> {
    let (tx, rx) = mpsc::channel();
    spawner().lock().unwrap().send((cmd, death_signal, tx)).unwrap();
    rx.recv().unwrap()
}

pub fn signal(pid: u32, sig: libc::c_int) {
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A loopback port held for this process until the lease is dropped, for servers that bind
/// it themselves (PostgreSQL, PgBouncer, HAProxy) and may be restarted on it.
///
/// A port the kernel hands out for `bind(0)` is in the ephemeral range, where any outgoing
/// connection may take it while the server is stopped, and another test may be handed it at
/// the same moment. So leases come from below that range, and each is an exclusive `flock` on a
/// per-port file, which other test processes respect and which the kernel drops if this
/// process dies.
pub struct PortLease {
    pub port: u16,
    _lock: std::fs::File,
}

/// Where leases come from: below the kernel's ephemeral range (from
/// /proc/sys/net/ipv4/ip_local_port_range; Linux's default is 32768-60999) and above the
/// well-known services a developer's machine may run, or above the range if it starts low.
fn lease_range() -> std::ops::Range<u16> {
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    let below = low.saturating_sub(12_000).max(10_000)..low.max(10_000);
    let above = high.saturating_add(1)..u16::MAX;
    if below.len() >= above.len() { below } else { above }
}

pub fn lease_port() -> PortLease {
    use std::os::fd::AsRawFd;
    let dir = std::env::temp_dir().join(format!("palisade-test-ports-{}", unsafe { libc::geteuid() }));
    std::fs::create_dir_all(&dir).expect("creating the port lease folder");
    let range = lease_range();
    // Start somewhere different in every process so that concurrent runs rarely probe alike.
    let span = (range.end - range.start) as u64;
    assert!(span > 0, "no loopback ports outside the ephemeral range");
    let seed = std::process::id() as u64 * 7919
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
    for i in 0..span {
        // A step coprime with most spans, so that every port is tried once.
        let port = range.start + ((seed + i * 7919) % span) as u16;
        let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
        else {
            continue;
        };
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue;
        }
        // Held by nobody else of ours; also free of anything else on this machine?
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return PortLease { port, _lock: file };
        }
    }
    panic!("no free loopback port in {range:?}");
}
