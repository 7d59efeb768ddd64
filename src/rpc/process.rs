//! Process-wide settings the RPC port's limits rely on: the file limit, raised to the hard
//! limit at start as Redis does so that `maxclients` connections fit, and where the allocator
//! puts large buffers, so that memory a closed client held goes back to the system.

/// Allocations from this size up get pages of their own (glibc's mmap threshold), returned to
/// the system when freed. glibc raises its threshold up to 32 MiB after each such free, after
/// which a large reply lives in a heap that rarely shrinks: a few clients' replies would stay
/// resident long after the clients were closed.
pub const LARGE_ALLOCATION_BYTES: usize = 1024 * 1024;

/// Fixes the allocator's mmap threshold at [`LARGE_ALLOCATION_BYTES`] (glibc only; elsewhere
/// nothing to do).
pub fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a tuning parameter of the allocator; any value is valid.
    unsafe {
        libc::mallopt(
            libc::M_MMAP_THRESHOLD,
            LARGE_ALLOCATION_BYTES as libc::c_int,
        );
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Returns the soft limit in force
/// afterwards and the one before, or `None` where there is no such limit (or it cannot be read).
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every unix
pub fn raise_fd_limit() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let before = limit.rlim_cur as u64;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own; failure leaves the limit as it was.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    Some((limit.rlim_cur as u64, before))
}

/// No file limit to raise on this platform.
#[cfg(not(unix))]
pub fn raise_fd_limit() -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    #[cfg(unix)]
    #[test]
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not on every unix
    fn the_soft_limit_ends_at_the_hard_limit() {
        let (now, before) = super::raise_fd_limit().expect("a unix process has a file limit");
        assert!(now >= before);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, limit.rlim_max);
        assert_eq!(limit.rlim_cur as u64, now);
    }
}
