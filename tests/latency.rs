//! Timing figures of sync: how soon a write is seen on the other actors of its node and on every
//! actor of a peer behind a slow link, and the message rates under a steady load. They measure,
//! so they are ignored in the normal run (whose tests keep generous deadlines):
//!
//! `cargo test --release --test latency -- --ignored --nocapture --test-threads 1`

#[allow(dead_code)]
#[path = "p2p/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "p2p/proxy.rs"]
mod proxy;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use cmud::store::stats::Stats;
use futures::future::join_all;
use harness::{SETTLE, TestNode, pair_via_proxy, wait_everywhere};
use tokio::time::{Instant, MissedTickBehavior, interval, sleep};

/// Query actors per node.
const ACTORS: usize = 4;

/// One-way latency of the slow link.
const LINK_DELAY: Duration = Duration::from_millis(200);

/// The most messages one ordered pair of local participants may carry per second, and the
/// most batches a node may publish per second.
const MAX_PER_SECOND: u64 = 10;

/// How long after `started` every actor of `node` in `readers` reads `key` as `value`. Polls
/// each actor as fast as it answers, so the figure is not rounded up to a polling period.
async fn seen_after(node: &TestNode, readers: &[usize], key: &str, value: &str) -> Duration {
    let started = Instant::now();
    let each = readers.iter().map(|&actor| async move {
        while node.get(actor, key).await.as_deref() != Some(value) {
            assert!(
                started.elapsed() < SETTLE,
                "{key} not on actor {actor} after {SETTLE:?}"
            );
            tokio::task::yield_now().await;
        }
        started.elapsed()
    });
    join_all(each).await.into_iter().max().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a timing figure: run with --release --ignored --nocapture"]
async fn a_set_is_seen_on_the_other_local_actors_within_10_ms() {
    let node = TestNode::start(ACTORS, vec![], false).await;
    let readers: Vec<usize> = (1..ACTORS).collect();
    let mut times = Vec::new();
    for round in 0..20 {
        sleep(Duration::from_millis(300)).await;
        let key = format!("local/{round}");
        let (_, seen) = tokio::join!(
            node.set(0, &key, "x"),
            seen_after(&node, &readers, &key, "x")
        );
        times.push(seen);
    }
    let worst = times.iter().max().copied().unwrap_or_default();
    println!("local visibility, 20 SETs 300 ms apart on actor 0 of {ACTORS}: worst {worst:?}");
    println!("  each: {times:?}");
    assert!(worst <= Duration::from_millis(10), "worst {worst:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a timing figure: run with --release --ignored --nocapture"]
async fn a_put_reaches_every_actor_of_a_peer_200_ms_away_within_230_ms() {
    let (a, _proxy, b) = pair_via_proxy(ACTORS, LINK_DELAY).await;
    let readers: Vec<usize> = (0..ACTORS).collect();
    let mut times = Vec::new();
    for round in 0..10 {
        sleep(Duration::from_millis(500)).await;
        let key = format!("remote/{round}");
        let (_, seen) = tokio::join!(
            a.set(round % ACTORS, &key, "x"),
            seen_after(&b, &readers, &key, "x")
        );
        times.push(seen);
    }
    let worst = times.iter().max().copied().unwrap_or_default();
    println!(
        "remote visibility through a {LINK_DELAY:?} link, 10 Puts 500 ms apart, all {ACTORS} \
         actors of the peer: worst {worst:?}"
    );
    println!("  each: {times:?}");
    assert!(worst <= Duration::from_millis(230), "worst {worst:?}");
    a.stop().await;
    b.stop().await;
}

/// Messages sent so far between each ordered pair of local participants, then batches
/// published.
fn counters(stats: &Stats) -> Vec<u64> {
    let mut all: Vec<u64> = stats
        .senders
        .iter()
        .flat_map(|s| &s.messages_to)
        .map(|c| c.load(Relaxed))
        .collect();
    all.push(stats.remote.messages_sent.load(Relaxed));
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a timing figure: run with --release --ignored --nocapture"]
async fn under_100_puts_a_second_the_rate_limits_hold() {
    const SECONDS: usize = 5;
    let (a, _proxy, b) = pair_via_proxy(ACTORS, LINK_DELAY).await;
    let nodes = [&a, &b];
    let mut samples = vec![nodes.map(|n| counters(n.node().stats()))];
    let mut puts = interval(Duration::from_millis(10));
    puts.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut next_sample = started + Duration::from_secs(1);
    let mut put = 0usize;
    while samples.len() <= SECONDS {
        puts.tick().await;
        let key = format!("load/{}", put % 100);
        a.set(put % ACTORS, &key, &put.to_string()).await;
        put += 1;
        if Instant::now() >= next_sample {
            samples.push(nodes.map(|n| counters(n.node().stats())));
            next_sample += Duration::from_secs(1);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let last = format!("load/{}", (put - 1) % 100);
    wait_everywhere(&nodes, &last, &(put - 1).to_string(), SETTLE).await;
    println!(
        "{put} Puts in {secs:.2} s ({:.1}/s) on node a",
        put as f64 / secs
    );
    for (n, name) in ["a", "b"].iter().enumerate() {
        // Per one-second window: the busiest ordered pair, and batches published.
        let windows: Vec<(u64, u64)> = samples
            .windows(2)
            .map(|w| {
                let delta: Vec<u64> = w[1][n].iter().zip(&w[0][n]).map(|(x, y)| x - y).collect();
                let (published, pairs) = delta.split_last().expect("published is last");
                (pairs.iter().copied().max().unwrap_or(0), *published)
            })
            .collect();
        let busiest = windows.iter().map(|w| w.0).max().unwrap_or(0);
        let published = windows.iter().map(|w| w.1).max().unwrap_or(0);
        println!(
            "node {name}: messages of the busiest pair per 1 s window {:?} (max {busiest}); \
             batches published per window {:?} (max {published})",
            windows.iter().map(|w| w.0).collect::<Vec<_>>(),
            windows.iter().map(|w| w.1).collect::<Vec<_>>(),
        );
        // A window is timed by this test, so it may run a little over a second: one more.
        assert!(
            busiest <= MAX_PER_SECOND + 1,
            "node {name}: a pair got {busiest}/s"
        );
        assert!(
            published <= MAX_PER_SECOND + 1,
            "node {name}: published {published}/s"
        );
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a timing figure: run with --release --ignored --nocapture"]
async fn a_round_after_1000_fillers_costs_what_a_round_before_did() {
    let node = TestNode::start(ACTORS, vec![], false).await;
    let stats = node.node().stats().clone();
    // Bytes sent between local participants for one Put on actor 0, once every actor has it.
    let round = async |key: &str| {
        let before = stats.local_bytes();
        node.set(0, key, "same-size").await;
        wait_everywhere(&[&node], key, "same-size", SETTLE).await;
        stats.local_bytes() - before
    };
    sleep(Duration::from_millis(300)).await;
    let first = round("round/a").await;
    for n in 0..1000 {
        node.set(0, &format!("filler/{n:04}"), "some value").await;
    }
    wait_everywhere(&[&node], "filler/0999", "some value", SETTLE).await;
    sleep(Duration::from_millis(300)).await;
    let second = round("round/b").await;
    println!("bytes of local sync for one Put: {first} before 1,000 fillers, {second} after");
    assert!(second <= 2 * first, "{second} > 2 x {first}");
    node.stop().await;
}
