//! The rate budget of one sender: a token bucket with room for one message, refilled once per
//! period. Every hop of sync (actor -> actors and gateway, gateway -> network, gateway ->
//! actors, persist -> disk) sends at once when the bucket holds its token and gathers what
//! comes meanwhile into the send the refill allows.
//!
//! A [`Pace`] never reads the clock: time is a parameter (`now`), so its rules are tested
//! without sleeping. [`until`] is the one clock-reading helper, for the senders' loops.
//! A bucket starts empty and fills one period after it is made: over any span from then, a
//! sender sends at most span / period messages, so a rate counted from the node's start never
//! exceeds one per period, not even in its first second.

use std::time::{Duration, Instant};

/// A token bucket of capacity one.
#[derive(Clone, Debug)]
pub struct Pace {
    /// Time for the bucket to refill; the least gap between two sends.
    period: Duration,
    /// When the bucket holds its token (again). At or before `now`: it holds it.
    full_at: Instant,
}

impl Pace {
    /// A bucket, made at `now`, that lets one message go per `period`.
    pub fn new(period: Duration, now: Instant) -> Self {
        Pace {
            period,
            full_at: now + period,
        }
    }

    /// Takes the token if the bucket holds it at `now`; true means the caller may send now.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if now < self.full_at {
            return false;
        }
        self.full_at = now + self.period;
        true
    }

    /// The earliest time, not before `now`, at which a message may go.
    pub fn ready_at(&self, now: Instant) -> Instant {
        self.full_at.max(now)
    }
}

/// Sleeps until `due`, or forever for `None` (nothing to send): a `select!` branch for a
/// paced flush. A time already past returns at once, without the timer (which would round it
/// up to its next millisecond tick).
pub async fn until(due: Option<Instant>) {
    match due {
        Some(due) if due > Instant::now() => {
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await
        }
        Some(_) => {}
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_millis(100);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_fresh_bucket_fills_one_period_after_it_is_made() {
        let t0 = Instant::now();
        let mut pace = Pace::new(PERIOD, t0);
        assert!(!pace.try_take(t0));
        assert!(!pace.try_take(t0 + ms(99)));
        assert_eq!(pace.ready_at(t0 + ms(99)), t0 + PERIOD);
        assert!(pace.try_take(t0 + PERIOD));
    }

    #[test]
    fn the_first_send_after_a_quiet_spell_goes_at_once() {
        let t0 = Instant::now();
        let mut pace = Pace::new(PERIOD, t0);
        assert!(pace.try_take(t0 + ms(5_000)));
        // Quiet again for longer than a period: the token is back, without waiting.
        assert_eq!(pace.ready_at(t0 + ms(5_250)), t0 + ms(5_250));
        assert!(pace.try_take(t0 + ms(5_250)));
    }

    #[test]
    fn a_send_within_a_period_of_the_last_waits_for_the_refill() {
        let t0 = Instant::now();
        let mut pace = Pace::new(PERIOD, t0);
        assert!(pace.try_take(t0 + ms(1_000)));
        assert!(!pace.try_take(t0 + ms(1_030)));
        assert_eq!(pace.ready_at(t0 + ms(1_030)), t0 + ms(1_100));
        // A refused try takes nothing: the refill time stays.
        assert!(!pace.try_take(t0 + ms(1_099)));
        assert!(pace.try_take(t0 + ms(1_100)));
        assert_eq!(pace.ready_at(t0 + ms(1_100)), t0 + ms(1_200));
    }

    #[test]
    fn the_bucket_holds_one_token_however_long_it_was_quiet() {
        let t0 = Instant::now();
        let mut pace = Pace::new(PERIOD, t0);
        assert!(pace.try_take(t0 + ms(60_000)));
        assert!(!pace.try_take(t0 + ms(60_000)));
        assert!(!pace.try_take(t0 + ms(60_050)));
    }

    #[test]
    fn a_sender_trying_all_the_time_sends_once_per_period() {
        // Every millisecond for ten seconds, from the bucket's birth: never more than one
        // send per period over any span from the start, and no two sends closer than that.
        let t0 = Instant::now();
        let mut pace = Pace::new(PERIOD, t0);
        let mut sends = Vec::new();
        for n in 0..=10_000 {
            let now = t0 + ms(n);
            if pace.try_take(now) {
                sends.push(n);
            }
            assert!(
                sends.len() as u64 <= n / 100,
                "{} sends by {n} ms",
                sends.len()
            );
        }
        assert_eq!(sends.len(), 100);
        assert!(sends.windows(2).all(|w| w[1] - w[0] >= 100));
    }

    #[test]
    fn sends_at_random_times_keep_the_budget() {
        // A deterministic pseudo-random walk of attempt times.
        let t0 = Instant::now();
        let mut pace = Pace::new(PERIOD, t0);
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut at = 0u64;
        let mut last_send: Option<u64> = None;
        for _ in 0..5_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            at += state % 60;
            let now = t0 + ms(at);
            let may = at >= 100 && last_send.is_none_or(|last| at - last >= 100);
            assert_eq!(pace.try_take(now), may, "at {at} ms");
            if may {
                last_send = Some(at);
            }
        }
    }
}
