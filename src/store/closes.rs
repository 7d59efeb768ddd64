//! The order in which the gateway tells persistence that an actor closed a log segment.
//!
//! Persistence trims a closed segment after its next commit, so it may hear of the close only
//! once every local batch handed over before it has been signed and passed on to it; batches
//! come back from signing in any order (their chunks run on blocking threads). This file owns
//! that bookkeeping, as plain data: which batches are out, which closes wait for them.

use std::collections::{BTreeSet, VecDeque};

/// A log segment an actor closed: (actor, segment).
pub type Closed = (usize, u64);

/// Local batches out for signing, and the log closes waiting behind them.
#[derive(Debug, Default)]
pub struct CloseOrder {
    /// Number of the next batch handed over.
    next: u64,
    /// Batches out for signing, by number.
    out: BTreeSet<u64>,
    /// Closes not passed on yet, in arrival order, each with the number the next batch was
    /// to get when it came: every batch below that must be back first.
    waiting: VecDeque<(u64, Closed)>,
}

impl CloseOrder {
    /// A batch goes out for signing; returns its number.
    pub fn handed_over(&mut self) -> u64 {
        let number = self.next;
        self.next += 1;
        self.out.insert(number);
        number
    }

    /// An actor closed a log segment after handing over its batches in it; returns the closes
    /// that may be passed on now, in order.
    pub fn closed(&mut self, closed: Closed) -> Vec<Closed> {
        self.waiting.push_back((self.next, closed));
        self.ready()
    }

    /// Batch `number` came back and went to persistence; returns the closes that may be
    /// passed on now, in order.
    pub fn returned(&mut self, number: u64) -> Vec<Closed> {
        self.out.remove(&number);
        self.ready()
    }

    /// Whether any batch is still out for signing.
    pub fn signing(&self) -> bool {
        !self.out.is_empty()
    }

    fn ready(&mut self) -> Vec<Closed> {
        let oldest_out = self.out.first().copied().unwrap_or(u64::MAX);
        let mut ready = Vec::new();
        while let Some(&(before, closed)) = self.waiting.front() {
            if before > oldest_out {
                break;
            }
            ready.push(closed);
            self.waiting.pop_front();
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_close_waits_for_every_batch_before_it_and_no_later_one() {
        let mut order = CloseOrder::default();
        let (a, b) = (order.handed_over(), order.handed_over());
        assert!(order.closed((0, 7)).is_empty());
        let c = order.handed_over();
        assert!(order.returned(b).is_empty(), "batch a is still out");
        assert_eq!(order.returned(a), vec![(0, 7)], "c came after the close");
        assert!(order.signing());
        assert!(order.returned(c).is_empty());
        assert!(!order.signing());
        assert_eq!(order.closed((1, 3)), vec![(1, 3)], "nothing out: at once");
    }

    proptest! {
        /// Whatever order batches come back in, a close is passed on exactly when every batch
        /// handed over before it is back, and closes keep their order.
        #[test]
        fn closes_follow_their_batches(steps in prop::collection::vec((0u8..3, any::<u16>()), 1..60)) {
            let mut order = CloseOrder::default();
            let mut out: Vec<u64> = Vec::new();
            let mut back = BTreeSet::new();
            let mut closes: Vec<(u64, Closed)> = Vec::new();
            let mut passed: Vec<Closed> = Vec::new();
            for (n, (kind, pick)) in steps.into_iter().enumerate() {
                let ready = match kind {
                    0 => {
                        out.push(order.handed_over());
                        Vec::new()
                    }
                    1 => {
                        let handed = out.len() as u64 + back.len() as u64;
                        closes.push((handed, (n, n as u64)));
                        order.closed((n, n as u64))
                    }
                    _ if !out.is_empty() => {
                        let number = out.remove(pick as usize % out.len());
                        back.insert(number);
                        order.returned(number)
                    }
                    _ => Vec::new(),
                };
                passed.extend(ready);
                // Passed on: exactly the longest run of closes, in order, whose batches are
                // all back.
                let expected: Vec<Closed> = closes
                    .iter()
                    .take_while(|(before, _)| (0..*before).all(|b| back.contains(&b)))
                    .map(|(_, closed)| *closed)
                    .collect();
                prop_assert_eq!(&passed, &expected);
            }
        }
    }
}
