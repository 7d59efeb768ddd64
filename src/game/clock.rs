//! The game's sense of time, a parameter so tests are deterministic: wall time for presence
//! and chat, and the pauses of long actions (a mining attempt, a battle step, story text).
//!
//! The session's own polling of the world runs on tokio's timer, not on this clock: it only
//! decides how soon news is noticed, never what the game does.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;

/// Time as the game sees it.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Waits out a pause of a long action.
    fn pause(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// The real clock: wall time and real sleeps.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn pause(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock for tests: pauses end at once and move the time forward by their length, so long
/// actions run instantly and deterministically.
#[derive(Debug)]
pub struct InstantClock {
    /// Current time in milliseconds since the Unix epoch.
    now_ms: AtomicU64,
}

impl InstantClock {
    /// A clock starting at `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        InstantClock {
            now_ms: AtomicU64::new(start_ms),
        }
    }

    /// A clock starting at the real time now (so heartbeats look fresh to other clocks).
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now_ms())
    }

    /// Moves time forward.
    pub fn advance(&self, duration: Duration) {
        let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        self.now_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

impl Clock for InstantClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }

    fn pause(&self, duration: Duration) -> BoxFuture<'static, ()> {
        self.advance(duration);
        Box::pin(tokio::task::yield_now())
    }
}
