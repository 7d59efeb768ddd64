//! The hybrid logical clock each query actor stamps its writes with, and the wall clock.
//!
//! Owns version assignment only; which versions are accepted from peers is `validate`'s job.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::entry::{NodeId, Version};

/// Milliseconds since the Unix epoch on this machine's wall clock (0 if it is before 1970).
pub fn wall_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}

/// A hybrid logical clock: never goes backwards, and moves past every version it observes.
///
/// Seeded from the largest persisted version on start, so a wall clock that stepped back never
/// makes this node's new writes lose to its own old ones.
#[derive(Clone, Debug)]
pub struct Hlc {
    /// Physical part of the last reading, in Unix milliseconds.
    millis: u64,
    /// Logical part of the last reading.
    counter: u32,
    /// The writer id stamped on every version this clock issues.
    node: NodeId,
    /// The actor index stamped on every version this clock issues.
    actor: u16,
}

impl Hlc {
    /// A clock for writer (`node`, `actor`) that has seen nothing yet.
    pub fn new(node: NodeId, actor: u16) -> Self {
        Hlc {
            millis: 0,
            counter: 0,
            node,
            actor,
        }
    }

    /// The writer id this clock stamps.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// A version greater than every version issued or observed so far, at wall time `now_ms`.
    pub fn tick(&mut self, now_ms: u64) -> Version {
        if now_ms > self.millis {
            self.millis = now_ms;
            self.counter = 0;
        } else if self.counter == u32::MAX {
            // The logical counter is exhausted within one millisecond: borrow the next one.
            self.millis += 1;
            self.counter = 0;
        } else {
            self.counter += 1;
        }
        Version {
            millis: self.millis,
            counter: self.counter,
            node: self.node.clone(),
            actor: self.actor,
        }
    }

    /// Moves the clock to at least `seen`, so the next tick wins over it.
    ///
    /// Only call this with versions that passed validation (not from the future): a far-future
    /// version would drag every later local write with it.
    pub fn observe(&mut self, seen: &Version) {
        if (seen.millis, seen.counter) > (self.millis, self.counter) {
            self.millis = seen.millis;
            self.counter = seen.counter;
        }
    }

    /// The last reading's physical part, in Unix milliseconds.
    pub fn millis(&self) -> u64 {
        self.millis
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hlc() -> Hlc {
        Hlc::new(NodeId::new("n"), 0)
    }

    #[test]
    fn ticks_are_strictly_increasing_when_wall_clock_stalls_or_steps_back() {
        let mut clock = hlc();
        let a = clock.tick(1_000);
        let b = clock.tick(1_000);
        let c = clock.tick(500);
        assert!(a < b && b < c);
        assert_eq!(c.millis, 1_000);
    }

    #[test]
    fn observed_versions_are_beaten_by_the_next_tick() {
        let mut clock = hlc();
        let remote = Version {
            millis: 5_000,
            counter: 7,
            node: NodeId::new("z"),
            actor: 9,
        };
        clock.observe(&remote);
        let next = clock.tick(1_000);
        assert!((next.millis, next.counter) > (remote.millis, remote.counter));
    }

    #[test]
    fn counter_overflow_borrows_a_millisecond() {
        let mut clock = hlc();
        clock.observe(&Version {
            millis: 10,
            counter: u32::MAX,
            node: NodeId::new("n"),
            actor: 0,
        });
        let next = clock.tick(0);
        assert_eq!((next.millis, next.counter), (11, 0));
    }
}
