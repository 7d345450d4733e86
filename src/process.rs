//! What the process sets up about itself: no core dumps (an abort must not write every key
//! to disk), key pages locked out of swap where the host allows, and enough open files.

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

/// Raises the soft limit of open files to the hard one (at most 65536), as Go and most
/// servers do: the default soft limit (1024) would cap connections at 512.
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            let wanted = limit.rlim_max.min(65536);
            if wanted > limit.rlim_cur {
                limit.rlim_cur = wanted;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
    }
}
