//! Giving freed memory back to the system after a burst of writes.
//!
//! A burst (a million new keys, a bootstrap) leaves the persist backlog, batches in flight and
//! unsigned copies freed all over glibc's heaps, in holes between live entries that glibc keeps
//! for reuse; the process's resident size stays at the peak of the burst. `malloc_trim` hands
//! the whole free pages of every arena back. Owns nothing else.

use std::time::{Duration, Instant};

/// Commits at least this large end a burst worth trimming after.
pub const BURST_ENTRIES: usize = 10_000;

/// Least time between two trims (each walks every arena).
const TRIM_PERIOD: Duration = Duration::from_secs(1);

/// Trims after bursts, at most once per [`TRIM_PERIOD`].
#[derive(Debug)]
pub struct Trim {
    /// When the last trim ran, if ever.
    last: Option<Instant>,
    /// Whether a burst ended since the last trim.
    owed: bool,
}

impl Default for Trim {
    fn default() -> Self {
        Trim::new()
    }
}

impl Trim {
    /// Nothing owed yet.
    pub fn new() -> Trim {
        Trim {
            last: None,
            owed: false,
        }
    }

    /// Notes a commit of `entries` entries.
    pub fn committed(&mut self, entries: usize) {
        self.owed |= entries >= BURST_ENTRIES;
    }

    /// Gives free memory back if a burst ended and the last trim is old enough; call when the
    /// backlog is empty (the burst is over). Returns whether it trimmed.
    pub fn if_due(&mut self, now: Instant) -> bool {
        if !self.owed || self.last.is_some_and(|last| now - last < TRIM_PERIOD) {
            return false;
        }
        self.owed = false;
        self.last = Some(now);
        give_back_free_memory();
        true
    }
}

/// Returns the free pages of every heap to the system (glibc only; elsewhere nothing to do).
fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free; it takes the arenas'
    // locks itself and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_per_burst_and_not_too_often() {
        let start = Instant::now();
        let mut trim = Trim::new();
        trim.committed(BURST_ENTRIES - 1);
        assert!(!trim.if_due(start), "a small commit is no burst");
        trim.committed(BURST_ENTRIES);
        assert!(trim.if_due(start));
        assert!(!trim.if_due(start), "owed once");
        trim.committed(BURST_ENTRIES);
        assert!(!trim.if_due(start + TRIM_PERIOD / 2), "too soon");
        assert!(trim.if_due(start + TRIM_PERIOD));
    }
}
