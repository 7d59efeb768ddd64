//! The network, end to end: real nodes on loopback (mDNS off), some behind a delaying proxy.
//!
//! Run the slow ones separately: `cargo test --release --test p2p -- --ignored --nocapture`.

#[path = "p2p/harness.rs"]
mod harness;
#[path = "p2p/proxy.rs"]
mod proxy;

use std::time::Duration;

use harness::{SETTLE, TestNode, wait_connected, wait_everywhere, wait_until};
use proxy::Proxy;
use tokio::time::Instant;

/// One-way latency of the slow link.
const LINK_DELAY: Duration = Duration::from_millis(200);

/// The visibility deadline the design promises for links up to 250 ms one way.
const VISIBLE_WITHIN: Duration = Duration::from_millis(2000);

/// Two nodes of `actors` actors each, `b` joined to `a` through a proxy; no other route.
async fn pair_via_proxy(actors: usize, delay: Duration) -> (TestNode, Proxy, TestNode) {
    let a = TestNode::start(actors, vec![], false).await;
    let proxy = Proxy::start(a.socket_addr(), delay).await;
    let b = TestNode::start(actors, vec![a.addr_via(proxy.addr)], false).await;
    wait_connected(&a, 1).await;
    wait_connected(&b, 1).await;
    // The first Put after connecting may wait for gossipsub's subscription exchange.
    a.set(0, "warmup/a", "1").await;
    b.set(0, "warmup/b", "1").await;
    wait_everywhere(&[&a, &b], "warmup/a", "1", SETTLE).await;
    wait_everywhere(&[&a, &b], "warmup/b", "1", SETTLE).await;
    (a, proxy, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_reach_every_actor_of_both_nodes_within_2s_over_a_200ms_link() {
    let (a, _proxy, b) = pair_via_proxy(4, LINK_DELAY).await;
    let mut worst = Duration::ZERO;
    for round in 0..4 {
        let (writer, actor) = if round % 2 == 0 {
            (&a, round)
        } else {
            (&b, round)
        };
        let key = format!("vis/{round}");
        writer.set(actor, &key, "x").await;
        let took = wait_everywhere(&[&a, &b], &key, "x", SETTLE).await;
        println!("round {round}: visible on all 8 actors after {took:?}");
        worst = worst.max(took);
    }
    assert!(worst <= VISIBLE_WITHIN, "slowest visibility {worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_across_nodes_converge_to_the_later() {
    let (a, _proxy, b) = pair_via_proxy(4, LINK_DELAY).await;
    a.set(1, "lww", "from-a").await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    b.set(2, "lww", "from-b").await;
    wait_everywhere(&[&a, &b], "lww", "from-b", SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_four_actors_receives_no_more_than_twice_the_bytes_of_one_with_one() {
    let writer = TestNode::start(2, vec![], false).await;
    let proxy_1 = Proxy::start(writer.socket_addr(), Duration::ZERO).await;
    let proxy_4 = Proxy::start(writer.socket_addr(), Duration::ZERO).await;
    let one = TestNode::start(1, vec![writer.addr_via(proxy_1.addr)], false).await;
    let four = TestNode::start(4, vec![writer.addr_via(proxy_4.addr)], false).await;
    wait_connected(&writer, 2).await;
    writer.set(0, "warmup", "1").await;
    wait_everywhere(&[&writer, &one, &four], "warmup", "1", SETTLE).await;

    let (before_1, before_4) = (proxy_1.bytes_from_target(), proxy_4.bytes_from_target());
    let value = "v".repeat(200);
    let puts = 300;
    for i in 0..puts {
        writer.set(i % 2, &format!("bytes/{i}"), &value).await;
    }
    let last = format!("bytes/{}", puts - 1);
    wait_everywhere(&[&one, &four], &last, &value, SETTLE).await;
    wait_until("every Put to arrive", SETTLE, || async {
        one.dbsize(0).await > puts as u64 && four.dbsize(3).await > puts as u64
    })
    .await;
    let got_1 = proxy_1.bytes_from_target() - before_1;
    let got_4 = proxy_4.bytes_from_target() - before_4;
    println!("bytes received at the proxy: 1 actor {got_1}, 4 actors {got_4}");
    assert!(
        got_1 >= (puts * value.len()) as u64,
        "the proxy saw the Puts pass"
    );
    assert!(
        got_4 <= 2 * got_1,
        "4-actor node got {got_4} bytes, 1-actor node {got_1}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_heals_and_every_replica_converges() {
    let (a, proxy, b) = pair_via_proxy(2, Duration::from_millis(20)).await;
    proxy.cut().await;
    wait_until("the cut to be noticed", SETTLE, || async {
        a.info_u64("connected_peers").await == 0 && b.info_u64("connected_peers").await == 0
    })
    .await;
    a.set(0, "apart/a", "1").await;
    a.set(1, "apart/both", "a").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    b.set(1, "apart/b", "1").await;
    b.set(0, "apart/both", "b").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(b.get(0, "apart/a").await, None, "the partition holds");
    assert_eq!(a.get(0, "apart/b").await, None, "the partition holds");

    proxy.restore();
    let nodes = [&a, &b];
    wait_everywhere(&nodes, "apart/a", "1", SETTLE).await;
    wait_everywhere(&nodes, "apart/b", "1", SETTLE).await;
    wait_everywhere(&nodes, "apart/both", "b", SETTLE).await;
}
