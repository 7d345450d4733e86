//! What the process does to keep secrets in memory: no core dumps (an abort must not write
//! every key to disk), and key pages locked out of swap where the host allows.

use std::sync::atomic::{AtomicBool, Ordering};

/// Turns core dumps off for this process (and keeps debuggers of other users out).
pub fn disable_core_dumps() {
    // SAFETY: plain system calls with constant arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        let none = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &none);
    }
}

static LOCK_WARNED: AtomicBool = AtomicBool::new(false);

/// Locks the pages holding `value` in RAM (never swapped out). Pages stay locked for the
/// life of the process: a key's page may hold other keys, so none is unlocked on drop.
/// When the host refuses (RLIMIT_MEMLOCK), warns once and goes on.
pub fn lock_in_memory<T>(value: &T) {
    let ptr = value as *const T as usize;
    let len = std::mem::size_of::<T>();
    // SAFETY: the range covers memory we own; mlock only changes its paging.
    let locked = unsafe {
        let page = libc::sysconf(libc::_SC_PAGESIZE).max(4096) as usize;
        let start = ptr & !(page - 1);
        libc::mlock(start as *const libc::c_void, ptr + len - start) == 0
    };
    if !locked && !LOCK_WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot lock key memory into RAM (keys may be swapped to disk): raise the memlock limit \
             (LimitMEMLOCK= in the systemd unit, --ulimit memlock in Docker) or use encrypted swap"
        );
    }
}
