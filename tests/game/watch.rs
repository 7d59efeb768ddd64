//! The session's view of the world against real nodes: an idle session does not read the
//! world on a timer, and a change made on another node reaches the player soon after it
//! reaches the player's node.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cmud::rpc::{Kv, KvClient, RpcEndpoint};
use tokio::time::Instant;

use crate::harness::{DEADLINE, NetNode, Player, TestNode, options};
use crate::proxy::Proxy;

/// Keys of padding in the world, so that one read of all of `p/` is large.
const PADDING_KEYS: usize = 2000;

/// Bytes of each padding value.
const PADDING_VALUE_BYTES: usize = 100;

/// How long the session is watched while idle: six looks at the world by the old timer.
const IDLE: Duration = Duration::from_secs(3);

/// Longest a change may take from the player's node to the player here. The design's figure
/// is 500 ms; the rest is room for a loaded CI machine.
const CHANGE_SHOWN_WITHIN: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn an_idle_session_does_not_read_the_world_on_a_timer() {
    let node = TestNode::start().await;
    let id = node.id();
    let value = "x".repeat(PADDING_VALUE_BYTES);
    let padding: Vec<(String, String)> = (0..PADDING_KEYS)
        .map(|n| (format!("p/{id}/pad/{n:05}"), value.clone()))
        .collect();
    for chunk in padding.chunks(500) {
        node.kv.put_many(chunk).await.unwrap();
    }
    let listing_bytes: usize = padding.iter().map(|(k, v)| k.len() + v.len()).sum();
    // The session talks to its node through a proxy that counts what the node sends it.
    let proxy = Proxy::start(node.node.game_endpoint().addr, Duration::ZERO).await;
    let endpoint = RpcEndpoint {
        addr: proxy.addr,
        ..node.node.game_endpoint()
    };
    let kv = KvClient::connect(&endpoint).await.unwrap();
    let (mut player, _) = Player::start(kv, options(Some("idler"), None, 1)).await;
    assert!(
        player
            .run("stats")
            .await
            .contains(&"Name: idler".to_owned())
    );
    assert!(
        proxy.bytes_from_target() as usize > listing_bytes,
        "the session read the world once at the start"
    );
    let before = proxy.bytes_from_target();
    tokio::time::sleep(IDLE).await;
    let idle = (proxy.bytes_from_target() - before) as usize;
    eprintln!("idle session: {idle} bytes from its node in {IDLE:?}; p/ is {listing_bytes} bytes");
    assert!(
        idle < listing_bytes / 2,
        "an idle session read {idle} bytes in {IDLE:?}; all of p/ is {listing_bytes}"
    );
    // The view still has the world: a command that shows every player works.
    let who = player.run("who").await;
    assert_eq!(who.first().map(String::as_str), Some("Online now (1):"));
    player.quit().await;
    node.stop().await;
}

#[tokio::test]
async fn a_change_on_another_node_reaches_the_player_soon_after_it_reaches_the_node() {
    let [a, b] = NetNode::pair().await;
    let (mut alice, _) = Player::start(a.kv.clone(), options(Some("alice"), None, 1)).await;
    let (mut bob, _) = Player::start(b.kv.clone(), options(Some("bob"), None, 2)).await;
    alice
        .wait_for_line(|l| l == "--- bob has joined the world. ---")
        .await;
    // When alice's node first holds bob's shout, seen from another connection to it.
    let reached: Arc<Mutex<Option<Instant>>> = Arc::default();
    let watcher = {
        let kv = KvClient::connect(&a.node.rpc_endpoint()).await.unwrap();
        let reached = reached.clone();
        let chat = format!("p/{}/chat/", b.node.peer_id());
        tokio::spawn(async move {
            loop {
                let lines = kv.list(&chat).await.unwrap();
                if lines.iter().any(|(_, v)| v.ends_with("over here")) {
                    *reached.lock().unwrap() = Some(Instant::now());
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    bob.run("shout over here").await;
    tokio::time::timeout(
        DEADLINE,
        alice.wait_for_line(|l| l == "bob shouts: over here"),
    )
    .await
    .expect("alice never heard bob");
    let shown = Instant::now();
    tokio::time::timeout(DEADLINE, watcher)
        .await
        .expect("the shout never reached alice's node")
        .unwrap();
    let reached = reached.lock().unwrap().expect("set by the watcher");
    let late = shown.saturating_duration_since(reached);
    eprintln!("bob's shout reached alice {late:?} after alice's node");
    assert!(
        late < CHANGE_SHOWN_WITHIN,
        "bob's shout reached alice {late:?} after alice's node held it"
    );
    alice.quit().await;
    bob.quit().await;
    a.stop().await;
    b.stop().await;
}
