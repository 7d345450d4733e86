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

/// A free TCP port on 127.0.0.1 (free when asked; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
