//! Joins that really join: `join` and `--join` succeed only once connected to a node of this
//! world with the peer id the address names, and say in one line why not otherwise.

use super::harness::{NetNode, Player, options};

/// Runs `join addr` and waits for its one line of outcome (it may come after the prompt).
async fn join(p: &mut Player, addr: &str) -> String {
    let outcome = |l: &str| l.starts_with("Could not join") || l.starts_with("Joined");
    let out = p.run(&format!("join {addr}")).await;
    match out.iter().find(|l| outcome(l)) {
        Some(line) => line.clone(),
        None => p.wait_for_line(outcome).await,
    }
}

#[tokio::test]
async fn joins_say_in_one_line_what_went_wrong_and_succeed_only_when_connected() {
    let a = NetNode::start(&[]).await;
    let b = NetNode::start(&[]).await;
    let other = NetNode::start_with(&[], &["--world", "elsewhere"]).await;
    let (mut p, _) = Player::start(b.kv.clone(), options(Some("jay"), None, 5)).await;
    let a_addr = a.node.shareable_addrs()[0].clone();
    let (a_base, _) = a_addr.rsplit_once("/p2p/").unwrap();
    let other_id = other.node.peer_id().to_owned();

    // Nothing listens on a port just freed.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let nothing = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{}", a.node.peer_id());
    let out = join(&mut p, &nothing).await;
    assert!(out.ends_with(": nothing answers at that address."), "{out}");
    // A node answers at a's address, but it is not the peer the address names.
    let out = join(&mut p, &format!("{a_base}/p2p/{other_id}")).await;
    assert!(
        out.contains(&format!(": the node there is {}", a.node.peer_id())),
        "{out}"
    );
    // A node of another world.
    let out = join(&mut p, &other.node.shareable_addrs()[0]).await;
    assert!(
        out.contains(": the node there is not of this world ("),
        "{out}"
    );
    assert!(out.contains("elsewhere"), "{out}");
    // Not a multiaddr at all.
    assert_eq!(
        p.run("join not-a-multiaddr").await,
        ["Could not join not-a-multiaddr: that is not a multiaddr."]
    );
    assert!(p.joined.is_empty(), "nothing is remembered: {:?}", p.joined);
    // A node of this world: joined, and remembered.
    let out = join(&mut p, &a_addr).await;
    assert!(
        out.ends_with(": connected to a node of this world, which syncs in the background."),
        "{out}"
    );
    assert_eq!(p.joined, [a_addr]);
    a.stop().await;
    b.stop().await;
    other.stop().await;
}

#[tokio::test]
async fn a_join_from_the_command_line_is_reported_and_remembered() {
    let a = NetNode::start(&[]).await;
    let a_addr = a.node.shareable_addrs()[0].clone();
    let b = NetNode::start(std::slice::from_ref(&a_addr)).await;
    let mut opts = options(Some("kit"), None, 6);
    opts.joins = vec![a_addr.clone()];
    let (mut p, greeting) = Player::start(b.kv.clone(), opts).await;
    let outcome = |l: &str| l.starts_with("Could not join") || l.starts_with("Joined");
    let out = match greeting.iter().find(|l| outcome(l)) {
        Some(line) => line.clone(),
        None => p.wait_for_line(outcome).await,
    };
    assert!(out.starts_with("Joined"), "{out}");
    assert_eq!(p.joined, [a_addr]);
    a.stop().await;
    b.stop().await;
}
