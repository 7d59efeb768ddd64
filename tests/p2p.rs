//! The network, end to end: real nodes on loopback (mDNS off), some behind a delaying proxy.
//!
//! Run the slow ones separately: `cargo test --release --test p2p -- --ignored --nocapture`.

#[path = "p2p/harness.rs"]
mod harness;
#[path = "p2p/proxy.rs"]
mod proxy;

use std::time::Duration;

use harness::{SETTLE, TestNode, pair_via_proxy, wait_connected, wait_everywhere, wait_until};
use proxy::Proxy;
use tokio::time::Instant;

/// One-way latency of the slow link.
const LINK_DELAY: Duration = Duration::from_millis(200);

/// The visibility deadline the design promises for links up to 250 ms one way.
const VISIBLE_WITHIN: Duration = Duration::from_millis(2000);

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

// ---- Startup: the original five server-startup cases ------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_before_the_second_node_starts_reaches_it() {
    let a = TestNode::start(2, vec![], true).await;
    a.set(0, "early", "1").await;
    a.set(1, "early/2", "2").await;
    let b = TestNode::start(2, vec![a.addr()], true).await;
    wait_everywhere(&[&a, &b], "early", "1", SETTLE).await;
    wait_everywhere(&[&a, &b], "early/2", "2", SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_made_while_a_node_connects_are_not_lost() {
    let a = TestNode::start(2, vec![], true).await;
    let b = TestNode::start(2, vec![a.addr()], true).await;
    // Write on both sides from the first moment, across the connection and sync handshake.
    for i in 0..40 {
        a.set(i % 2, &format!("connecting/a/{i}"), "a").await;
        b.set(i % 2, &format!("connecting/b/{i}"), "b").await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..40 {
        wait_everywhere(&[&a, &b], &format!("connecting/a/{i}"), "a", SETTLE).await;
        wait_everywhere(&[&a, &b], &format!("connecting/b/{i}"), "b", SETTLE).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrites_around_start_converge_to_the_last_write() {
    let a = TestNode::start(1, vec![], true).await;
    a.set(0, "over/k", "a-before").await;
    let b = TestNode::start(1, vec![a.addr()], true).await;
    a.set(0, "over/k", "a-during").await;
    b.set(0, "over/j", "b-during").await;
    wait_connected(&b, 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    b.set(0, "over/k", "b-after").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    a.set(0, "over/j", "a-after").await;
    wait_everywhere(&[&a, &b], "over/k", "b-after", SETTLE).await;
    wait_everywhere(&[&a, &b], "over/j", "a-after", SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_started_one_after_another_converge() {
    let first = TestNode::start(1, vec![], true).await;
    first.set(0, "chain/0", "0").await;
    let mut nodes = vec![first];
    for i in 1..4 {
        let previous = nodes[i - 1].addr();
        let node = TestNode::start(1, vec![previous], true).await;
        node.set(0, &format!("chain/{i}"), &i.to_string()).await;
        nodes.push(node);
    }
    let all: Vec<&TestNode> = nodes.iter().collect();
    for i in 0..4 {
        wait_everywhere(&all, &format!("chain/{i}"), &i.to_string(), SETTLE).await;
    }
    // Every node provides the world's key, so the last one finds the first through the DHT.
    wait_connected(&nodes[3], 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_hub_everyone_joined_does_not_split_the_world() {
    let hub = TestNode::start(1, vec![], true).await;
    let b = TestNode::start(1, vec![hub.addr()], true).await;
    let c = TestNode::start(1, vec![hub.addr()], true).await;
    // b and c find each other through the hub's DHT (both provide the world's key).
    wait_connected(&b, 2).await;
    wait_connected(&c, 2).await;
    hub.stop().await;
    wait_until("the hub to be gone", SETTLE, || async {
        b.info_u64("connected_peers").await == 1
    })
    .await;
    b.set(0, "after-hub", "b").await;
    wait_everywhere(&[&b, &c], "after-hub", "b", SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_id_and_catches_up() {
    let a = TestNode::start(1, vec![], true).await;
    let b = TestNode::start(1, vec![a.addr()], true).await;
    a.set(0, "restart/1", "1").await;
    wait_everywhere(&[&a, &b], "restart/1", "1", SETTLE).await;
    let id = b.node().peer_id().to_owned();
    let dir = b.stop().await;
    a.set(0, "restart/2", "2").await;
    let b = TestNode::start_in(dir, 1, vec![a.addr()], true).await;
    assert_eq!(b.node().peer_id(), id);
    wait_everywhere(&[&a, &b], "restart/2", "2", SETTLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_of_many_pages_arrives_whole_with_progress() {
    let a = TestNode::start(1, vec![], false).await;
    let mut conn = a.actors[0].clone();
    // About 4 MB: four pages of `PAGE_TARGET_BYTES`.
    let keys = 6000;
    let value = "p".repeat(600);
    for chunk in 0..keys / 500 {
        let mut mset = redis::cmd("MSET");
        for i in 0..500 {
            mset.arg(format!("pages/{:05}", chunk * 500 + i))
                .arg(&value);
        }
        let _: () = mset.query_async(&mut conn).await.unwrap();
    }
    wait_until("a's gateway to hold the world", SETTLE, || async {
        a.dbsize(0).await == keys as u64
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Watch b's progress before it joins, so no page can pass unseen.
    let b = TestNode::start(2, vec![], false).await;
    let mut progress = b.node().network().unwrap().sync_progress();
    let watcher = tokio::spawn(async move {
        let mut seen_active = 0;
        while progress.changed().await.is_ok() {
            let now = *progress.borrow_and_update();
            if now.active {
                seen_active += 1;
            } else {
                return (seen_active, now);
            }
        }
        (seen_active, Default::default())
    });
    b.node()
        .network()
        .unwrap()
        .join(&a.addr().to_string())
        .await
        .unwrap();
    wait_until("the world to arrive", SETTLE, || async {
        b.dbsize(0).await == keys as u64 && b.dbsize(1).await == keys as u64
    })
    .await;
    let (seen_active, done) = tokio::time::timeout(SETTLE, watcher)
        .await
        .unwrap()
        .unwrap();
    assert!(
        seen_active >= 2,
        "progress reported {seen_active} times while active"
    );
    assert_eq!((done.received, done.total), (keys as u64, keys as u64));
}

// ---- Listening, JOIN and PEERS -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_an_error_for_a_host_and_a_fallback_for_a_player() {
    let a = TestNode::start(1, vec![], false).await;
    let taken: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", a.socket_addr().port())
        .parse()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut options = harness::options(&dir, 1, vec![], false);
    let network = options.network.as_mut().unwrap();
    network.listen = vec![taken.clone()];
    network.strict_listen = true;
    let err = cmud::node::Node::start(options.clone())
        .await
        .err()
        .expect("a taken port fails a host");
    assert!(err.to_string().contains("taken"), "{err}");

    options.network.as_mut().unwrap().strict_listen = false;
    let node = cmud::node::Node::start(options)
        .await
        .expect("a player falls back");
    let addrs = node.shareable_addrs();
    assert_eq!(addrs.len(), 1);
    assert!(
        !addrs[0].contains(&format!("/tcp/{}/", a.socket_addr().port())),
        "{addrs:?}"
    );
    assert!(
        addrs[0].ends_with(&format!("/p2p/{}", node.peer_id())),
        "{addrs:?}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_peers_work_over_rpc() {
    let a = TestNode::start(1, vec![], false).await;
    let b = TestNode::start(1, vec![], false).await;
    let mut conn = b.actors[0].clone();
    // ADDRS: [address, kind] pairs, best first; loopback addresses are LAN ones.
    let addrs: Vec<(String, String)> = redis::cmd("ADDRS").query_async(&mut conn).await.unwrap();
    let plain: Vec<String> = addrs.iter().map(|(addr, _)| addr.clone()).collect();
    assert_eq!(plain, b.node().shareable_addrs());
    assert!(addrs.iter().all(|(_, kind)| kind == "lan"), "{addrs:?}");

    let _: () = redis::cmd("JOIN")
        .arg(a.addr().to_string())
        .query_async(&mut conn)
        .await
        .expect("JOIN a live peer");
    let peers: Vec<Vec<String>> = redis::cmd("PEERS").query_async(&mut conn).await.unwrap();
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0][0], a.node().peer_id());
    assert_eq!(
        b.info().await.get("connected_peers").map(String::as_str),
        Some("1")
    );
    // A loopback node is not reachable from the internet, and its one connection is direct.
    let info = b.info().await;
    assert_eq!(info.get("reachability").map(String::as_str), Some("none"));
    assert_eq!(info.get("upnp").map(String::as_str), Some("off"));
    assert_eq!(
        info.get("connections_direct").map(String::as_str),
        Some("1"),
        "{info:?}"
    );
    assert_eq!(
        info.get("connections_relayed").map(String::as_str),
        Some("0")
    );

    // A DNS name dials too (a host's friends may share /dns4/ addresses).
    let c = TestNode::start(1, vec![], false).await;
    let by_name = format!(
        "/dns4/localhost/tcp/{}/p2p/{}",
        c.socket_addr().port(),
        c.node().peer_id()
    );
    let _: () = redis::cmd("JOIN")
        .arg(&by_name)
        .query_async(&mut conn)
        .await
        .expect("JOIN by DNS name");

    // A port nobody listens on (bound and released at once).
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("/ip4/127.0.0.1/tcp/{free}");
    let err = redis::cmd("JOIN")
        .arg(&dead)
        .query_async::<()>(&mut conn)
        .await
        .expect_err("JOIN an unreachable address");
    assert!(err.to_string().contains("join"), "{err}");
    let err = redis::cmd("JOIN")
        .arg("not-a-multiaddr")
        .query_async::<()>(&mut conn)
        .await
        .expect_err("JOIN garbage");
    assert!(err.to_string().contains("multiaddr"), "{err}");
}

// ---- Untrusted peers ------------------------------------------------------------------------

/// A batch of entries as a crafted peer would encode it.
/// The wire format this cmud speaks.
const FORMAT: u16 = cmud::p2p::wire::FORMAT_VERSION;

fn crafted_batch(
    format: u16,
    world: &str,
    sent_ms: u64,
    entries: Vec<cmud::store::KeyedEntry>,
) -> Vec<u8> {
    postcard::to_allocvec(&cmud::p2p::wire::WireBatch {
        format,
        world: world.into(),
        sent_ms,
        entries,
    })
    .unwrap()
}

/// An entry by `signer`'s node under `key`, dated `millis`, signed.
fn crafted_entry(
    signer: &cmud::store::Signer,
    key: &str,
    value_len: usize,
    millis: u64,
) -> cmud::store::KeyedEntry {
    let version = cmud::store::Version {
        millis,
        counter: 0,
        node: signer.node().clone(),
        actor: 0,
    };
    let entry = cmud::store::Entry::value(version, bytes::Bytes::from(vec![b'x'; value_len]));
    (
        bytes::Bytes::copy_from_slice(key.as_bytes()),
        signer.sign(key.as_bytes(), &entry),
    )
}

/// A crafted peer: a bare swarm with cmud's behaviours that dials `target` and publishes
/// what `messages` builds (given a signer of its own identity for the test world) once the
/// target has subscribed. Abort the returned task to stop it.
fn spawn_crafted_peer(
    target: libp2p::Multiaddr,
    messages: impl FnOnce(&cmud::store::Signer) -> Vec<Vec<u8>> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    use futures::StreamExt;
    use libp2p::gossipsub;
    use libp2p::swarm::SwarmEvent;

    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let signer = cmud::store::Signer::new(&keypair, harness::WORLD).unwrap();
    let mut swarm = cmud::p2p::behaviour::build_swarm(keypair, false, true).unwrap();
    let topic = cmud::p2p::puts_topic(harness::WORLD);
    swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
    swarm.dial(target).unwrap();
    let mut pending = Some(messages(&signer));
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(cmud::p2p::behaviour::BehaviourEvent::Gossipsub(
                gossipsub::Event::Subscribed { .. },
            )) = swarm.select_next_some().await
                && let Some(messages) = pending.take()
            {
                for message in messages {
                    swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(topic.clone(), message)
                        .unwrap();
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_from_a_crafted_peer_are_rejected_and_touch_no_replica() {
    let node = TestNode::start(2, vec![], false).await;
    let now = cmud::store::clock::wall_millis();
    let hour = 3_600_000;
    let world = harness::WORLD;
    let crafted = spawn_crafted_peer(node.addr(), move |me| {
        vec![
            b"\x01garbage that is not a batch".to_vec(),
            crafted_batch(
                FORMAT,
                world,
                now,
                vec![crafted_entry(me, "bad/oversized", 40 * 1024, now)],
            ),
            crafted_batch(
                FORMAT,
                world,
                now + hour,
                vec![crafted_entry(me, "bad/future-batch", 1, now)],
            ),
            crafted_batch(7, world, now, vec![crafted_entry(me, "bad/format", 1, now)]),
            crafted_batch(
                FORMAT,
                "another-world",
                now,
                vec![crafted_entry(me, "bad/world", 1, now)],
            ),
            // A good batch with one future-dated entry: the entry alone is skipped.
            crafted_batch(
                FORMAT,
                world,
                now,
                vec![
                    crafted_entry(me, "good/now", 1, now),
                    crafted_entry(me, "good/future", 1, now + hour),
                ],
            ),
            // A sender whose clock is 40 s ahead: accepted (under the 60 s limit), but reported.
            crafted_batch(
                FORMAT,
                world,
                now + 40_000,
                vec![crafted_entry(me, "good/skewed", 1, now)],
            ),
        ]
    });

    wait_everywhere(&[&node], "good/now", "x", SETTLE).await;
    wait_everywhere(&[&node], "good/skewed", "x", SETTLE).await;
    let offset: i64 = node.info().await["clock_offset_ms"].parse().unwrap();
    assert!(
        (39_000..=41_000).contains(&offset),
        "clock_offset_ms {offset}"
    );
    wait_until("5 rejected batches", SETTLE, || async {
        node.info_u64("rejected_batches").await >= 5
    })
    .await;
    let info = node.info().await;
    println!(
        "rejected_batches {} rejected_entries {} rejected_versions {}",
        info["rejected_batches"], info["rejected_entries"], info["rejected_versions"]
    );
    assert_eq!(node.info_u64("rejected_batches").await, 5);
    assert!(node.info_u64("rejected_entries").await >= 1);
    assert!(node.info_u64("rejected_versions").await >= 1);
    for actor in 0..2 {
        for key in [
            "bad/oversized",
            "bad/future-batch",
            "bad/format",
            "bad/world",
            "good/future",
        ] {
            assert_eq!(
                node.get(actor, key).await,
                None,
                "{key} reached actor {actor}"
            );
        }
    }
    crafted.abort();
}

/// What a rogue peer sends, by gossip and by answering sync: entries that are well formed and
/// signed, but not acceptable. `victim` signs as the honest node would (its identity key).
fn rogue_entries(
    rogue: &cmud::store::Signer,
    victim: &cmud::store::Signer,
    tag: &str,
) -> Vec<cmud::store::KeyedEntry> {
    let now = cmud::store::clock::wall_millis();
    let victim_ns = format!("p/{}/", victim.node());
    // Correctly signed by the rogue, under someone else's namespace.
    let foreign = crafted_entry(rogue, &format!("{victim_ns}name"), 7, now);
    // The victim's genuine entry, with its value changed.
    let mut tampered = crafted_entry(victim, &format!("{victim_ns}mined"), 3, now);
    tampered.1.value = Some(bytes::Bytes::from_static(b"1000000"));
    // Signed by the rogue for another world.
    let elsewhere = cmud::store::Signer::new(
        &libp2p::identity::Keypair::generate_ed25519(),
        "another-world",
    )
    .unwrap();
    let other_world = crafted_entry(&elsewhere, &format!("rogue/{tag}/other-world"), 1, now);
    // Random signature bytes.
    let mut random = crafted_entry(rogue, &format!("rogue/{tag}/random-signature"), 1, now);
    random.1.signature = Some(bytes::Bytes::from(
        (0..64).map(|i| (i * 37 + 11) as u8).collect::<Vec<u8>>(),
    ));
    // No signature at all.
    let mut unsigned = crafted_entry(rogue, &format!("rogue/{tag}/unsigned"), 1, now);
    unsigned.1.signature = None;
    vec![foreign, tampered, other_world, random, unsigned]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_peer_reaches_no_replica_by_gossip_or_sync() {
    let a = TestNode::start(1, vec![], false).await;
    let b = TestNode::start(2, vec![a.addr()], false).await;
    wait_connected(&a, 1).await;
    let key_file = a
        .dir
        .path()
        .join(harness::WORLD)
        .join(cmud::p2p::identity::IDENTITY_FILE);
    let victim_key = cmud::p2p::identity::load_or_create(&key_file).unwrap();
    let victim = cmud::store::Signer::new(&victim_key, harness::WORLD).unwrap();
    let victim_ns = format!("p/{}/", victim.node());
    a.set(0, &format!("{victim_ns}name"), "alice").await;
    a.set(0, &format!("{victim_ns}mined"), "5").await;
    wait_everywhere(&[&a, &b], &format!("{victim_ns}mined"), "5", SETTLE).await;

    // By gossip: each bad entry in a batch of its own, then an honest entry of the rogue.
    let victim_for_gossip = cmud::store::Signer::new(&victim_key, harness::WORLD).unwrap();
    let gossip = spawn_crafted_peer(a.addr(), move |rogue| {
        let now = cmud::store::clock::wall_millis();
        let mut messages: Vec<Vec<u8>> = rogue_entries(rogue, &victim_for_gossip, "gossip")
            .into_iter()
            .map(|entry| crafted_batch(FORMAT, harness::WORLD, now, vec![entry]))
            .collect();
        let fine = crafted_entry(rogue, "rogue/gossip/fine", 1, now);
        messages.push(crafted_batch(FORMAT, harness::WORLD, now, vec![fine]));
        messages
    });
    // By answering sync: every page holds the same bad entries.
    let rogue_key = libp2p::identity::Keypair::generate_ed25519();
    let rogue = cmud::store::Signer::new(&rogue_key, harness::WORLD).unwrap();
    let page = rogue_entries(&rogue, &victim, "sync");
    let (responder, requests) =
        spawn_crafted_responder(a.addr(), move |_| cmud::p2p::wire::SyncResponse::Reply {
            format: FORMAT,
            message: cmud::store::ranger::Message {
                parts: vec![cmud::store::ranger::Part::Entries {
                    range: cmud::store::ranger::Range::all(),
                    entries: page.clone(),
                }],
            },
            total: 5,
            sent_ms: cmud::store::clock::wall_millis(),
        });

    // Honest traffic keeps flowing meanwhile.
    wait_everywhere(&[&a, &b], "rogue/gossip/fine", "x", SETTLE).await;
    wait_until("a to ask the rogue responder", SETTLE, || async {
        requests.load(std::sync::atomic::Ordering::Relaxed) >= 1
    })
    .await;
    a.set(0, "honest/after", "1").await;
    wait_everywhere(&[&a, &b], "honest/after", "1", SETTLE).await;
    // 4 signature failures (tampered, other world, random, unsigned) and 1 namespace, by
    // each path.
    wait_until("every bad entry to be counted", SETTLE, || async {
        a.info_u64("rejected_signatures").await >= 8 && a.info_u64("rejected_namespaces").await >= 2
    })
    .await;
    assert!(a.info_u64("rejected_entries").await >= 10);
    assert!(
        a.info_u64("rejected_batches").await >= 5,
        "gossip rejects each bad batch"
    );
    for node in [&a, &b] {
        for actor in 0..node.actors.len() {
            assert_eq!(
                node.get(actor, &format!("{victim_ns}name"))
                    .await
                    .as_deref(),
                Some("alice")
            );
            assert_eq!(
                node.get(actor, &format!("{victim_ns}mined"))
                    .await
                    .as_deref(),
                Some("5")
            );
            for tag in ["gossip", "sync"] {
                for bad in ["other-world", "random-signature", "unsigned"] {
                    let key = format!("rogue/{tag}/{bad}");
                    assert_eq!(node.get(actor, &key).await, None, "{key} reached a replica");
                }
            }
        }
    }
    // Bad gossip is not forwarded: b never even saw it.
    assert_eq!(b.info_u64("rejected_signatures").await, 0);
    gossip.abort();
    responder.abort();
}

/// A node whose writers may have at most `max_keys` keys each.
async fn start_with_quota(actors: usize, join: Vec<libp2p::Multiaddr>, max_keys: u64) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let mut options = harness::options(&dir, actors, join, false);
    options.limits.max_keys_per_writer = max_keys;
    harness::TestNode::start_with(dir, options).await
}

/// `rogue`'s entries for keys `q/<n>` of `numbers`, signed on every core.
fn rogue_keys(
    rogue: &cmud::store::Signer,
    numbers: &[usize],
    now: u64,
) -> Vec<cmud::store::KeyedEntry> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = numbers.len().div_ceil(cores).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = numbers
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|n| crafted_entry(rogue, &format!("q/{n:06}"), 1, now))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_peer_past_its_quota_fills_no_replica() {
    // 20,000 keys past a quota of 1,000 keep this under 20 s in debug on 2 cores (signing is
    // the costly part, on both sides); the ignored test below sends the full 200,000.
    rogue_past_its_quota(1_000, 20_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "200,000 signed keys: run with --release --ignored --nocapture"]
async fn a_rogue_peer_200000_keys_past_its_quota_fills_no_replica() {
    rogue_past_its_quota(1_000, 200_000).await;
}

/// A rogue writer with `quota + excess` keys q/000000, q/000001, ...: its quota admits the
/// first `quota` in key order. Gossip brings half of the excess from the top down, then the
/// admitted keys from the top down (each pushes a later one out); every sync answer brings the
/// admitted keys and the other half. None of the excess may reach a replica, whatever arrives
/// first; honest traffic keeps flowing meanwhile.
async fn rogue_past_its_quota(quota: usize, excess: usize) {
    let started = Instant::now();
    let a = start_with_quota(1, vec![], quota as u64).await;
    let b = start_with_quota(2, vec![a.addr()], quota as u64).await;
    wait_connected(&a, 1).await;
    a.set(0, "honest/before", "1").await;
    wait_everywhere(&[&a, &b], "honest/before", "1", SETTLE).await;

    let rogue_key = libp2p::identity::Keypair::generate_ed25519();
    let rogue = cmud::store::Signer::new(&rogue_key, harness::WORLD).unwrap();
    let now = cmud::store::clock::wall_millis();
    let admitted: Vec<usize> = (0..quota).rev().collect();
    let by_gossip: Vec<usize> = (quota..quota + excess).rev().step_by(2).collect();
    let by_sync: Vec<usize> = (quota..quota + excess).step_by(2).collect();
    let admitted = rogue_keys(&rogue, &admitted, now);
    let mut gossip_entries = rogue_keys(&rogue, &by_gossip, now);
    gossip_entries.extend(admitted.iter().cloned());
    let mut sync_entries = admitted;
    sync_entries.extend(rogue_keys(&rogue, &by_sync, now));
    println!(
        "signed {} entries in {:?}",
        quota + excess,
        started.elapsed()
    );
    let gossip = spawn_crafted_peer(a.addr(), move |_| {
        gossip_entries
            .chunks(1_000)
            .map(|chunk| crafted_batch(FORMAT, harness::WORLD, now, chunk.to_vec()))
            .collect()
    });
    let total = sync_entries.len() as u64;
    let (responder, requests) =
        spawn_crafted_responder(a.addr(), move |_| cmud::p2p::wire::SyncResponse::Reply {
            format: FORMAT,
            message: cmud::store::ranger::Message {
                parts: vec![cmud::store::ranger::Part::Entries {
                    range: cmud::store::ranger::Range::all(),
                    entries: sync_entries.clone(),
                }],
            },
            total,
            sent_ms: cmud::store::clock::wall_millis(),
        });

    // Honest traffic keeps flowing meanwhile.
    wait_until("a to ask the rogue responder", SETTLE, || async {
        requests.load(std::sync::atomic::Ordering::Relaxed) >= 1
    })
    .await;
    a.set(0, "honest/during", "1").await;
    b.set(1, "honest/from-b", "1").await;
    wait_everywhere(&[&a, &b], "honest/during", "1", SETTLE).await;
    wait_everywhere(&[&a, &b], "honest/from-b", "1", SETTLE).await;
    let last_admitted = format!("q/{:06}", quota - 1);
    wait_everywhere(&[&a, &b], "q/000000", "x", SETTLE).await;
    wait_everywhere(&[&a, &b], &last_admitted, "x", SETTLE).await;
    // Every key past the quota is counted (sync answers bring theirs again each round).
    wait_until("the excess to be turned away", SETTLE, || async {
        a.info_u64("rejected_quota").await + a.info_u64("evicted_quota").await >= excess as u64
    })
    .await;
    let (a_info, b_info) = (a.info().await, b.info().await);
    println!(
        "a: rejected_quota {} evicted_quota {} rejected_entries {}; b: rejected_quota {} \
         evicted_quota {}; {:?}",
        a_info["rejected_quota"],
        a_info["evicted_quota"],
        a_info["rejected_entries"],
        b_info["rejected_quota"],
        b_info["evicted_quota"],
        started.elapsed()
    );
    assert!(a.info_u64("rejected_entries").await >= excess as u64);
    // Exactly the rogue's quota and the honest keys, on every actor of both nodes.
    let honest = 3;
    for node in [&a, &b] {
        for actor in 0..node.actors.len() {
            wait_until("the evictions to reach every actor", SETTLE, || async {
                node.dbsize(actor).await == (quota + honest) as u64
            })
            .await;
            for n in [quota, quota + 1, quota + excess / 2, quota + excess - 1] {
                let key = format!("q/{n:06}");
                assert_eq!(node.get(actor, &key).await, None, "{key} reached a replica");
            }
        }
    }
    gossip.abort();
    responder.abort();
}

/// A node whose writers may have at most `max_bytes` bytes each (no key limit), in `dir`.
async fn start_with_byte_quota(
    dir: tempfile::TempDir,
    join: Vec<libp2p::Multiaddr>,
    max_bytes: u64,
) -> TestNode {
    let mut options = harness::options(&dir, 1, join, false);
    options.limits.max_keys_per_writer = 0;
    options.limits.max_bytes_per_writer = max_bytes;
    harness::TestNode::start_with(dir, options).await
}

/// Sync counters of a node: (syncs completed, entries received by sync, entries turned away
/// or evicted by a quota).
async fn sync_counters(node: &TestNode) -> (u64, u64, u64) {
    (
        node.info_u64("syncs_completed").await,
        node.info_u64("sync_entries_received").await,
        node.info_u64("rejected_quota").await + node.info_u64("evicted_quota").await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_while_a_rogue_is_cut_keeps_the_cut() {
    // Bytes are key + value: r/a (43) fits in 50, r/b (63) does not and cuts the rogue there;
    // r/c (4) would fit beside r/a, but it comes after the cut.
    const MAX_BYTES: u64 = 50;
    let a = start_with_byte_quota(tempfile::tempdir().unwrap(), vec![], MAX_BYTES).await;
    let b = start_with_byte_quota(tempfile::tempdir().unwrap(), vec![a.addr()], MAX_BYTES).await;
    wait_connected(&a, 1).await;
    let rogue_key = libp2p::identity::Keypair::generate_ed25519();
    let rogue = cmud::store::Signer::new(&rogue_key, harness::WORLD).unwrap();
    let now = cmud::store::clock::wall_millis();
    let first = vec![
        crafted_entry(&rogue, "r/a", 40, now),
        crafted_entry(&rogue, "r/b", 60, now),
    ];
    // Both replicas see the rogue cut at r/b.
    let mut relays = Vec::new();
    for node in [&a, &b] {
        let batch = crafted_batch(FORMAT, harness::WORLD, now, first.clone());
        relays.push(spawn_crafted_peer(node.addr(), move |_| vec![batch]));
    }
    wait_everywhere(&[&a, &b], "r/a", &"x".repeat(40), SETTLE).await;
    for node in [&a, &b] {
        wait_until("the rogue to be cut at r/b", SETTLE, || async {
            node.info_u64("rejected_quota").await >= 1
        })
        .await;
    }

    // b restarts; then a relay brings it r/c.
    let b_dir = b.stop().await;
    let b = start_with_byte_quota(b_dir, vec![a.addr()], MAX_BYTES).await;
    wait_connected(&b, 1).await;
    let turned_away = b.info_u64("rejected_quota").await;
    let late = crafted_batch(
        FORMAT,
        harness::WORLD,
        now,
        vec![crafted_entry(&rogue, "r/c", 1, now)],
    );
    relays.push(spawn_crafted_peer(b.addr(), move |_| vec![late]));
    wait_until("b to judge r/c", SETTLE, || async {
        b.info_u64("rejected_quota").await > turned_away || b.get(0, "r/c").await.is_some()
    })
    .await;
    for (name, node) in [("a", &a), ("b (restarted)", &b)] {
        assert_eq!(
            node.get(0, "r/c").await,
            None,
            "{name} took r/c past the cut"
        );
        assert_eq!(node.get(0, "r/b").await, None, "{name} took r/b");
    }

    // Anti-entropy settles: two more rounds each way receive and turn away nothing. The
    // relays go first: they answer no sync request, and a node may pick them to pull from.
    for relay in relays {
        relay.abort();
    }
    for node in [&a, &b] {
        wait_until("the relays to be gone", SETTLE, || async {
            node.info_u64("connected_peers").await == 1
        })
        .await;
    }
    let (a_before, b_before) = (sync_counters(&a).await, sync_counters(&b).await);
    wait_until("two more syncs each way", SETTLE, || async {
        sync_counters(&a).await.0 >= a_before.0 + 2 && sync_counters(&b).await.0 >= b_before.0 + 2
    })
    .await;
    let (a_after, b_after) = (sync_counters(&a).await, sync_counters(&b).await);
    assert_eq!(
        (a_after.1, a_after.2),
        (a_before.1, a_before.2),
        "a: {a_before:?} -> {a_after:?}"
    );
    assert_eq!(
        (b_after.1, b_after.2),
        (b_before.1, b_before.2),
        "b: {b_before:?} -> {b_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_from_the_future_is_delayed_not_lost() {
    // `b` allows the usual 60 s of skew; `a` allows 1 s, so an entry dated 3 s ahead is too
    // early for `a`: skipped when gossip brings it, fetched by anti-entropy once it is due.
    let b = TestNode::start(1, vec![], false).await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = harness::options(&dir, 1, vec![b.addr()], false);
    options.limits.max_clock_skew = Duration::from_secs(1);
    let a = harness::TestNode::start_with(dir, options).await;
    wait_connected(&a, 1).await;

    let due = cmud::store::clock::wall_millis() + 3_000;
    let crafted = spawn_crafted_peer(b.addr(), move |me| {
        vec![crafted_batch(
            FORMAT,
            harness::WORLD,
            cmud::store::clock::wall_millis(),
            vec![crafted_entry(me, "early", 1, due)],
        )]
    });
    wait_everywhere(&[&b], "early", "x", SETTLE).await;
    wait_until("a to skip the early entry", SETTLE, || async {
        a.info_u64("rejected_versions").await >= 1
    })
    .await;
    // Acceptable from `due - 1 s` on (a's skew limit); before that it must not be there.
    let acceptable_from = due - 1_000;
    if cmud::store::clock::wall_millis() + 200 < acceptable_from {
        assert_eq!(a.get(0, "early").await, None, "merged while in the future");
    }
    wait_everywhere(&[&a], "early", "x", SETTLE).await;
    assert!(
        cmud::store::clock::wall_millis() >= acceptable_from,
        "merged while in the future"
    );
    crafted.abort();
}

// ---- Scale ----------------------------------------------------------------------------------

/// Nodes in the simulation.
const SIM_NODES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_in_one_process_converge() {
    let started = Instant::now();
    let mut nodes: Vec<TestNode> = Vec::new();
    for i in 0..SIM_NODES {
        // A tree of joins: the rest of the world is found through the DHT.
        let join = if i == 0 {
            vec![]
        } else {
            vec![nodes[(i - 1) / 2].addr()]
        };
        nodes.push(TestNode::start(1, join, true).await);
    }
    println!("{SIM_NODES} nodes started in {:?}", started.elapsed());
    let writes = Instant::now();
    for (i, node) in nodes.iter().enumerate() {
        node.set(0, &format!("sim/{i}"), &i.to_string()).await;
    }
    let all: Vec<&TestNode> = nodes.iter().collect();
    for i in 0..SIM_NODES {
        wait_everywhere(
            &all,
            &format!("sim/{i}"),
            &i.to_string(),
            Duration::from_secs(60),
        )
        .await;
    }
    println!(
        "{SIM_NODES} Puts visible on all {SIM_NODES} nodes after {:?}",
        writes.elapsed()
    );
    let alive = started.elapsed().as_secs_f64();
    for (i, node) in nodes.iter().enumerate() {
        let info = node.info().await;
        let sent: f64 = info["sync_messages_sent_remote"].parse().unwrap_or(0.0);
        println!(
            "node {i:2}: peers {:>2}, published {sent} batches ({:.2}/s), received {} bytes",
            info["connected_peers"],
            sent / alive,
            info["sync_bytes_received_remote"],
        );
    }
}

/// A node with quotas off, for worlds larger than one writer's quota.
async fn start_without_quota(actors: usize, join: Vec<libp2p::Multiaddr>) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let mut options = harness::options(&dir, actors, join, false);
    options.limits = options.limits.without_quota();
    harness::TestNode::start_with(dir, options).await
}

/// Keys in the large world (the target is under 10 s on loopback, in release).
const LARGE_WORLD_KEYS: usize = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a timing figure: run with --release --ignored --nocapture"]
async fn a_large_world_reaches_a_new_node() {
    let a = start_without_quota(1, vec![]).await;
    let mut conn = a.actors[0].clone();
    let value = "v".repeat(64);
    for chunk in 0..LARGE_WORLD_KEYS / 500 {
        let mut mset = redis::cmd("MSET");
        for i in 0..500 {
            mset.arg(format!("world/{:06}", chunk * 500 + i))
                .arg(&value);
        }
        let _: () = mset.query_async(&mut conn).await.unwrap();
    }
    wait_until("the gateway to hold the world", SETTLE, || async {
        a.dbsize(0).await == LARGE_WORLD_KEYS as u64
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let b = start_without_quota(2, vec![a.addr()]).await;
    wait_until("the world to arrive", Duration::from_secs(120), || async {
        b.dbsize(0).await == LARGE_WORLD_KEYS as u64 && b.dbsize(1).await == LARGE_WORLD_KEYS as u64
    })
    .await;
    let took = started.elapsed();
    println!("{LARGE_WORLD_KEYS} keys reached a new node in {took:?}");
    assert!(took < Duration::from_secs(10), "bootstrap took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_world_gets_nothing() {
    let a = TestNode::start(1, vec![], false).await;
    a.set(0, "mine", "1").await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = harness::options(&dir, 1, vec![a.addr()], false);
    options.world = "elsewhere".into();
    options.network.as_mut().unwrap().world = "elsewhere".into();
    let other = cmud::node::Node::start(options).await.unwrap();
    let mut conn = harness::connect(&other.rpc_endpoint()).await;
    wait_connected(&a, 1).await;
    // Long enough for a sync exchange and a gossip round to have happened if they were allowed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got: Option<String> = redis::cmd("GET")
        .arg("mine")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(got, None, "another world's node received our entries");
    other.shutdown().await;
}

// ---- Decoding peers' messages --------------------------------------------------------------

/// The largest single allocation made by the current thread, so a test can tell what decoding
/// a peer's message made this node reserve.
mod alloc_meter {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static LARGEST: Cell<usize> = const { Cell::new(0) };
    }

    /// The system allocator, noting each thread's largest allocation.
    pub struct Meter;

    fn note(size: usize) {
        let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
    }

    // SAFETY: every call is forwarded unchanged to the system allocator.
    unsafe impl GlobalAlloc for Meter {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    /// Runs `f` and returns its result with the largest allocation this thread made meanwhile.
    pub fn largest_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
        LARGEST.with(|largest| largest.set(0));
        let result = f();
        (result, LARGEST.with(Cell::get))
    }
}

#[global_allocator]
static ALLOC: alloc_meter::Meter = alloc_meter::Meter;

#[test]
fn a_claimed_frame_length_reserves_nothing_before_the_bytes_arrive() {
    use libp2p::request_response::Codec;

    // A peer claims a request of 4 MiB (the limit) and sends 16 bytes of it.
    let claimed = cmud::p2p::wire::MAX_REQUEST_BYTES as u32;
    let mut frame = claimed.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0u8; 16]);
    let mut stream = futures::io::Cursor::new(frame);
    let mut codec = cmud::p2p::wire::SyncCodec;
    let (result, largest) = alloc_meter::largest_during(|| {
        futures::executor::block_on(
            codec.read_request(&cmud::p2p::wire::SYNC_PROTOCOL, &mut stream),
        )
    });
    assert!(result.is_err(), "a truncated frame decoded");
    assert!(
        largest < 64 * 1024,
        "reading 20 bytes of a frame allocated {largest} bytes"
    );
}

/// A crafted peer that dials `target` and answers every sync request it gets with `answer`.
/// Returns the task (abort it to stop) and the number of requests received so far.
fn spawn_crafted_responder(
    target: libp2p::Multiaddr,
    answer: impl Fn(&cmud::p2p::wire::SyncRequest) -> cmud::p2p::wire::SyncResponse + Send + 'static,
) -> (
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use futures::StreamExt;
    use libp2p::request_response::{Event, Message};
    use libp2p::swarm::SwarmEvent;
    use std::sync::atomic::Ordering::Relaxed;

    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let mut swarm = cmud::p2p::behaviour::build_swarm(keypair, false, true).unwrap();
    swarm.dial(target).unwrap();
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = requests.clone();
    let task = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(cmud::p2p::behaviour::BehaviourEvent::Sync(
                Event::Message {
                    message:
                        Message::Request {
                            request, channel, ..
                        },
                    ..
                },
            )) = swarm.select_next_some().await
            {
                counter.fetch_add(1, Relaxed);
                let _ = swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, answer(&request));
            }
        }
    });
    (task, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_answers_never_settle_cannot_keep_a_node_asking() {
    use cmud::store::fingerprint::Summary;
    use cmud::store::ranger::{MAX_IDLE_ROUNDS, Message, Part, Range};
    use std::sync::atomic::Ordering::Relaxed;

    let node = TestNode::start(1, vec![], false).await;
    // Whatever it is asked, the crafted peer claims the whole key space differs.
    let (crafted, requests) =
        spawn_crafted_responder(node.addr(), |_| cmud::p2p::wire::SyncResponse::Reply {
            format: cmud::p2p::wire::FORMAT_VERSION,
            message: Message {
                parts: vec![Part::Fingerprint {
                    range: Range::all(),
                    summary: Summary {
                        count: u64::MAX,
                        ..Summary::default()
                    },
                }],
            },
            total: 0,
            sent_ms: cmud::store::clock::wall_millis(),
        });
    wait_until("the node to ask the crafted peer", SETTLE, || async {
        requests.load(Relaxed) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A session ends after MAX_IDLE_ROUNDS answers that bring nothing; in 2 s there is the
    // session on connecting and at most one anti-entropy session. Unbounded, loopback round
    // trips of a millisecond or so would make it thousands.
    let asked = requests.load(Relaxed);
    let most = 2 * (MAX_IDLE_ROUNDS as usize + 1);
    assert!(asked <= most, "the node asked {asked} times in 2 s");
    crafted.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_joined_without_a_peer_id_is_redialled_whoever_listens_there() {
    let a = TestNode::start(1, vec![], false).await;
    let plain: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", a.socket_addr().port())
        .parse()
        .unwrap();
    let b = TestNode::start(1, vec![plain.clone()], false).await;
    wait_connected(&b, 1).await;
    a.stop().await;
    wait_until("b to notice the host is gone", SETTLE, || async {
        b.info_u64("connected_peers").await == 0
    })
    .await;
    // The host comes back at the same address with a new identity (a fresh data folder).
    let dir = tempfile::tempdir().unwrap();
    let mut options = harness::options(&dir, 1, vec![], false);
    let network = options.network.as_mut().unwrap();
    network.listen = vec![plain];
    network.strict_listen = true;
    let host = TestNode::start_with(dir, options).await;
    wait_connected(&host, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_puts_before_a_node_stops_reach_its_peers() {
    let a = TestNode::start(1, vec![], false).await;
    let b = TestNode::start(1, vec![a.addr()], false).await;
    wait_connected(&a, 1).await;
    a.set(0, "warmup", "1").await;
    wait_everywhere(&[&a, &b], "warmup", "1", SETTLE).await;
    // A player's last command, then quit at once: b must not wait for a to come back.
    a.set(0, "last-words", "bye").await;
    a.stop().await;
    wait_everywhere(&[&b], "last-words", "bye", Duration::from_secs(5)).await;
}

/// Tombstone lifetime in the purge tests: long enough for a delete to reach the other node
/// on a busy machine, short enough to wait for.
const SHORT_TTL: Duration = Duration::from_secs(3);

/// A node whose tombstones live [`SHORT_TTL`], in `dir`, joining `join`.
async fn short_ttl_node(dir: tempfile::TempDir, join: Vec<libp2p::Multiaddr>) -> TestNode {
    let mut options = harness::options(&dir, 1, join, true);
    options.limits.tombstone_ttl = SHORT_TTL;
    TestNode::start_with(dir, options).await
}

/// `DEL key` on a node's first actor.
async fn del(node: &TestNode, key: &str) {
    let mut conn = node.actors[0].clone();
    let _: u64 = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("DEL");
}

/// Waits until `node`'s gateway has purged at least `n` tombstones.
async fn wait_purged(node: &TestNode, n: u64) {
    let stats = node.node().stats().clone();
    wait_until("tombstones to be purged", SETTLE, || {
        let stats = stats.clone();
        async move {
            stats
                .tombstones_purged
                .load(std::sync::atomic::Ordering::Relaxed)
                >= n
        }
    })
    .await;
}

/// Entries and tombstones in a stopped node's world folder.
fn on_disk(dir: &tempfile::TempDir) -> cmud::admin::CheckReport {
    cmud::admin::check(
        &dir.path().join(harness::WORLD),
        harness::WORLD,
        &cmud::store::Limits::default(),
    )
    .expect("cmud check")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_keys_are_purged_from_both_nodes_after_the_ttl() {
    let a = short_ttl_node(tempfile::tempdir().unwrap(), vec![]).await;
    let b = short_ttl_node(tempfile::tempdir().unwrap(), vec![a.addr()]).await;
    a.set(0, "t/kept", "1").await;
    a.set(0, "t/gone", "1").await;
    wait_everywhere(&[&a, &b], "t/gone", "1", SETTLE).await;
    del(&a, "t/gone").await;
    wait_until("the delete to reach b", SETTLE, || async {
        b.get(0, "t/gone").await.is_none()
    })
    .await;
    wait_purged(&a, 1).await;
    wait_purged(&b, 1).await;
    for node in [a, b] {
        let report = on_disk(&node.stop().await);
        assert_eq!((report.live, report.tombstones), (1, 0), "{report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_past_the_ttl_brings_no_deleted_key_back() {
    let a = short_ttl_node(tempfile::tempdir().unwrap(), vec![]).await;
    let b = short_ttl_node(tempfile::tempdir().unwrap(), vec![a.addr()]).await;
    b.set(0, "t/deleted-while-away", "old").await;
    a.set(0, "t/mine", "a's own").await;
    wait_everywhere(&[&a, &b], "t/deleted-while-away", "old", SETTLE).await;
    wait_everywhere(&[&a, &b], "t/mine", "a's own", SETTLE).await;
    let dir = a.stop().await;
    del(&b, "t/deleted-while-away").await;
    // Purged a whole TTL after the delete, so a has been away for longer than that.
    wait_purged(&b, 1).await;

    let a = short_ttl_node(dir, vec![b.addr()]).await;
    // It answers LOADING until it has fetched the world from b (tests/replica/resync.rs).
    wait_until("a to fetch the world", SETTLE, || async {
        a.info_u64("loading").await == 0
    })
    .await;
    assert_eq!(
        a.get(0, "t/deleted-while-away").await,
        None,
        "dropped on start"
    );
    assert_eq!(a.get(0, "t/mine").await.as_deref(), Some("a's own"));
    // Once a's newer write reached b (and b's world reached a), the sync has run both ways.
    a.set(0, "t/back", "1").await;
    wait_everywhere(&[&a, &b], "t/back", "1", SETTLE).await;
    wait_everywhere(&[&a, &b], "t/mine", "a's own", SETTLE).await;
    assert_eq!(b.get(0, "t/deleted-while-away").await, None);
    assert_eq!(a.get(0, "t/deleted-while-away").await, None);
}
