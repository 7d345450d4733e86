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

/// This process's resources, for the standard `process_*` metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    pub start_time_seconds: f64,
}

/// Reads `ProcessStats` from `/proc/self` (Linux); `None` where there is no such file.
pub fn stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    // SAFETY: sysconf and getrlimit only read system settings.
    let (ticks, page, max_fds) = unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
            limit.rlim_cur,
        )
    };
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<u64>().ok()))?;
    Some(ProcessStats {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page,
        open_fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64),
        max_fds,
        start_time_seconds: boot as f64 + field(22)? as f64 / ticks,
    })
}

#[cfg(test)]
mod stats_tests {
    #[test]
    fn this_process_has_sensible_stats() {
        let s = super::stats().expect("/proc/self/stat");
        assert!(s.resident_bytes > 1 << 20, "{s:?}");
        assert!(s.virtual_bytes >= s.resident_bytes, "{s:?}");
        assert!(s.open_fds >= 3 && s.open_fds <= s.max_fds, "{s:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            s.start_time_seconds <= now + 1.0 && s.start_time_seconds > now - 86_400.0 * 365.0,
            "{s:?}"
        );
    }
}
