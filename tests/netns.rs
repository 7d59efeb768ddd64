//! NAT traversal between real `cmud` processes behind real NATs, built by the test out of
//! Linux network namespaces (see `netns/lab.rs`). Root and `ip`, `iptables`, `nft` and
//! `miniupnpd` are needed; the tests run with `CMUD_NETNS_TESTS=1` (which `.ci/run` sets) and
//! are skipped with a printed reason without it.
//!
//! Run alone: `CMUD_NETNS_TESTS=1 cargo test --test netns -- --nocapture`.

mod netns {
    pub mod lab;
    pub mod resp;
    pub mod stun;
}

use std::time::{Duration, Instant};

use netns::lab::{Lab, Nat, Node, P2P_PORT, enabled, note};

/// The backbone's address on the test internet.
const BACKBONE_IP: &str = "203.0.113.1";

/// How long two players behind NATs may take to hold a direct connection.
const DIRECT_DEADLINE: Duration = Duration::from_secs(30);

/// The nodes' default wait before a relayed connection carries the world.
const DEFAULT_RELAY_FALLBACK: Duration = Duration::from_secs(30);

/// The shorter wait the symmetric-NAT test gives its nodes (`relay_fallback_secs`).
const RELAY_FALLBACK_SECS: u64 = 15;

/// How long a Put may take to reach the other player.
const PUT_DEADLINE: Duration = Duration::from_secs(2);

/// How long a newcomer may take to join a player by an address it was given.
const JOIN_DEADLINE: Duration = Duration::from_secs(20);

/// How long AutoNAT and UPnP may take to conclude.
const REACHABILITY_DEADLINE: Duration = Duration::from_secs(45);

/// How many times the hole-punching scenario runs in `hole_punching_*` (the issue asks for 5;
/// `CMUD_NETNS_REPEAT` changes it).
const REPETITIONS: usize = 5;

/// Polls `check` every 100 ms until it holds or `deadline` passes; returns the time taken.
fn wait_for(deadline: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The backbone's TCP multiaddr.
fn join_addr(node: &Node, ip: &str) -> String {
    format!("/ip4/{ip}/tcp/{P2P_PORT}/p2p/{}", node.peer_id)
}

/// Whether `from` holds a direct (not relayed) connection to `to`.
fn direct(from: &mut Node, to: &Node) -> bool {
    from.rpc
        .peers()
        .get(&to.peer_id)
        .is_some_and(|addrs| addrs.iter().any(|a| !a.contains("/p2p-circuit")))
}

/// Whether every connection `from` holds to `to` is direct (the relayed one, handed over,
/// is gone: gossip runs over the direct path).
fn direct_only(from: &mut Node, to: &Node) -> bool {
    from.rpc
        .peers()
        .get(&to.peer_id)
        .is_some_and(|addrs| !addrs.is_empty() && addrs.iter().all(|a| !a.contains("/p2p-circuit")))
}

/// Whether `from` holds any connection to `to`.
fn connected(from: &mut Node, to: &Node) -> bool {
    from.rpc.peers().contains_key(&to.peer_id)
}

/// A Put on `from` reaches `to` within the deadline.
fn put_crosses(from: &mut Node, to: &mut Node, key: &str) -> Option<Duration> {
    from.rpc.set(key, "crossed");
    wait_for(PUT_DEADLINE, || {
        to.rpc.get(key).as_deref() == Some("crossed")
    })
}

/// One backbone and two players behind their own NATs (the second of kind `p2_nat`).
struct World {
    backbone: Node,
    p1: Node,
    p2: Node,
    /// Dropped last: the namespaces go once the nodes are stopped.
    _lab: Lab,
}

fn world(p2_nat: Nat, relay_fallback_secs: Option<u64>) -> World {
    let mut lab = Lab::new();
    lab.relay_fallback_secs = relay_fallback_secs;
    let b = lab.host("b", BACKBONE_IP);
    let (_, p1) = lab.home("p1", "203.0.113.11", "198.51.100", Nat::PortPreserving);
    let (_, p2) = lab.home("p2", "203.0.113.12", "192.0.2", p2_nat);
    let backbone = lab.node(&b, &[], false);
    let join = [join_addr(&backbone, BACKBONE_IP)];
    let p1 = lab.node(&p1, &join, false);
    let p2 = lab.node(&p2, &join, false);
    World {
        backbone,
        p1,
        p2,
        _lab: lab,
    }
}

fn logs(world: &World) -> String {
    format!(
        "--- backbone\n{}\n--- p1\n{}\n--- p2\n{}",
        world.backbone.log(),
        world.p1.log(),
        world.p2.log()
    )
}

#[test]
fn hole_punching_gives_direct_connections_that_outlive_the_backbone() {
    if !enabled() {
        return;
    }
    let repetitions = std::env::var("CMUD_NETNS_REPEAT")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(REPETITIONS);
    let mut direct_count = 0;
    for round in 1..=repetitions {
        let mut w = world(Nat::PortPreserving, None);
        let (p1, p2) = (&mut w.p1, &mut w.p2);
        let took = wait_for(DIRECT_DEADLINE, || {
            direct_only(p1, p2) && direct_only(p2, p1)
        });
        let Some(took) = took else {
            panic!(
                "round {round}: no direct connection within {DIRECT_DEADLINE:?}\n{}",
                logs(&w)
            );
        };
        direct_count += 1;
        w.backbone.kill();
        let crossed = put_crosses(&mut w.p1, &mut w.p2, &format!("round/{round}"));
        let Some(crossed) = crossed else {
            panic!(
                "round {round}: a Put did not cross the direct connection\n{}",
                logs(&w)
            );
        };
        let info = w.p1.rpc.info();
        // The relay carried none of their game traffic: it waited for the hole punch.
        if took < DEFAULT_RELAY_FALLBACK {
            let streams = [
                w.p1.rpc.field("streams_relayed"),
                w.p2.rpc.field("streams_relayed"),
            ];
            assert_eq!(
                streams,
                ["0", "0"],
                "round {round}: gossip or sync ran over the relay (p1, p2) although the direct \
                 connection came after {took:?}\n{}",
                logs(&w)
            );
        }
        note(&format!(
            "round {round}: direct after {:.1} s, Put crossed in {} ms without the backbone \
             (p1 hole_punch_ok:{} connections_direct:{} streams_relayed:{})",
            took.as_secs_f64(),
            crossed.as_millis(),
            info["hole_punch_ok"],
            info["connections_direct"],
            info["streams_relayed"],
        ));
    }
    note(&format!("{direct_count} of {repetitions} direct"));
}

#[test]
fn a_symmetric_nat_falls_back_to_the_relay() {
    if !enabled() {
        return;
    }
    let mut w = world(Nat::Symmetric, Some(RELAY_FALLBACK_SECS));
    let relayed = wait_for(Duration::from_secs(60), || connected(&mut w.p1, &w.p2));
    assert!(relayed.is_some(), "p1 and p2 never met\n{}", logs(&w));
    let met = Instant::now();
    // While the relay waits for a hole punch, their Puts cross through the backbone.
    let there = put_crosses(&mut w.p1, &mut w.p2, "sym/1");
    let back = put_crosses(&mut w.p2, &mut w.p1, "sym/2");
    let through_backbone = met.elapsed();
    assert!(
        there.is_some() && back.is_some(),
        "Puts did not cross through the backbone\n{}",
        logs(&w)
    );
    // One INFO reply is one snapshot of the fields read from it.
    let relay_state = |node: &mut Node| {
        let info = node.rpc.info();
        let number = |field: &str| info[field].parse::<u64>().unwrap_or(0);
        (
            number("hole_punch_failed"),
            number("connections_relayed_world"),
            number("streams_relayed"),
        )
    };
    // Until a relayed connection carries the world, no gossip or sync stream crosses the
    // relay; after the wait (hole punching fails here), the relay carries their world.
    let fallback = Duration::from_secs(RELAY_FALLBACK_SECS);
    assert!(
        through_backbone < fallback,
        "the Puts took {through_backbone:?}: the relay may have carried them"
    );
    let (mut failed, mut fell_back) = (None, None);
    let watched = wait_for(fallback + Duration::from_secs(60), || {
        let (p1, p2) = (relay_state(&mut w.p1), relay_state(&mut w.p2));
        for (name, (_, world, streams)) in [("p1", p1), ("p2", p2)] {
            assert!(
                world > 0 || streams == 0,
                "{name}: {streams} game streams on the relay before the fallback\n{}",
                logs(&w)
            );
        }
        if failed.is_none() && p1.0 + p2.0 > 0 {
            failed = Some(met.elapsed());
        }
        let carrying = |(_, world, streams): (u64, u64, u64)| world > 0 && streams > 0;
        if fell_back.is_none() && carrying(p1) && carrying(p2) {
            fell_back = Some(met.elapsed());
        }
        failed.is_some() && fell_back.is_some()
    });
    assert!(
        watched.is_some(),
        "hole punch failure counted after {failed:?}, relay carrying the world after \
         {fell_back:?}\n{}",
        logs(&w)
    );
    let (failed, fell_back) = (failed.unwrap_or_default(), fell_back.unwrap_or_default());
    // Polling saw the connection at most a moment after it came up.
    assert!(
        fell_back + Duration::from_secs(1) >= fallback,
        "the relay carried the world after {fell_back:?}, before the {fallback:?} wait\n{}",
        logs(&w)
    );
    assert!(
        !direct(&mut w.p1, &w.p2),
        "a direct connection through a symmetric NAT?\n{}",
        logs(&w)
    );
    let later_there = put_crosses(&mut w.p1, &mut w.p2, "sym/3");
    let later_back = put_crosses(&mut w.p2, &mut w.p1, "sym/4");
    assert!(
        later_there.is_some() && later_back.is_some(),
        "Puts did not cross once the relay carried the world\n{}",
        logs(&w)
    );
    note(&format!(
        "symmetric NAT: hole punch failure counted {:.1} s and the relay carrying the world \
         {:.1} s after p1 and p2 met (wait {RELAY_FALLBACK_SECS} s); Puts crossed through the \
         backbone in {:?} and {:?}, then in {:?} and {:?} (p1 streams_relayed:{})",
        failed.as_secs_f64(),
        fell_back.as_secs_f64(),
        there.unwrap_or_default(),
        back.unwrap_or_default(),
        later_there.unwrap_or_default(),
        later_back.unwrap_or_default(),
        w.p1.rpc.field("streams_relayed"),
    ));
}

#[test]
fn upnp_mapping_makes_a_player_public_and_joinable() {
    if !enabled() {
        return;
    }
    let mut lab = Lab::new();
    let b = lab.host("b", BACKBONE_IP);
    let (r1, p1) = lab.home("p1", "203.0.113.11", "198.51.100", Nat::PortPreserving);
    lab.upnp(&r1, "198.51.100");
    let backbone = lab.node(&b, &[], false);
    let mut player = lab.node(&p1, &[join_addr(&backbone, BACKBONE_IP)], true);
    let public = wait_for(REACHABILITY_DEADLINE, || {
        let info = player.rpc.info();
        info["upnp"].starts_with("mapped") && info["nat_status"] == "public"
    });
    assert!(
        public.is_some(),
        "no mapping confirmed: {:?}\n--- player\n{}\n--- miniupnpd\n{}",
        player.rpc.info(),
        player.log(),
        lab.upnp_log(&r1)
    );
    let addrs = player.rpc.addrs();
    let (best, kind) = addrs.first().cloned().unwrap_or_default();
    assert_eq!(kind, "internet", "ADDRS: {addrs:?}");
    assert!(best.starts_with("/ip4/203.0.113.11/"), "ADDRS: {addrs:?}");
    // Every mapped port forwards, TCP and QUIC alike (AutoNAT may have confirmed only one of
    // them yet): a newcomer on the internet joins by each, a fresh one per address.
    let upnp = player.rpc.field("upnp");
    let mapped: Vec<String> = upnp
        .trim_start_matches("mapped ")
        .split(',')
        .map(|addr| format!("{addr}/p2p/{}", player.peer_id))
        .collect();
    assert!(
        mapped.contains(&best),
        "ADDRS {addrs:?} does not lead with a mapped address ({upnp})"
    );
    for (i, addr) in mapped.iter().enumerate() {
        let host = lab.host(&format!("n{i}"), &format!("203.0.113.{}", 3 + i));
        let mut newcomer = lab.node(&host, std::slice::from_ref(addr), false);
        let joined = wait_for(JOIN_DEADLINE, || connected(&mut newcomer, &player));
        assert!(
            joined.is_some(),
            "the newcomer could not join {addr}\n--- newcomer\n{}\n--- player\n{}\n\
             --- miniupnpd\n{}\n--- router\n{}",
            newcomer.log(),
            player.log(),
            lab.upnp_log(&r1),
            lab.router_state(&r1)
        );
        note(&format!(
            "UPnP: a newcomer joined {addr} in {:.1} s",
            joined.unwrap_or_default().as_secs_f64()
        ));
    }
    note(&format!(
        "UPnP: public after {:.1} s ({upnp})",
        public.unwrap_or_default().as_secs_f64(),
    ));
}

#[test]
fn autonat_tells_a_player_behind_nat_from_the_backbone() {
    if !enabled() {
        return;
    }
    let mut lab = Lab::new();
    let b = lab.host("b", BACKBONE_IP);
    let (_, p1) = lab.home("p1", "203.0.113.11", "198.51.100", Nat::PortPreserving);
    let mut backbone = lab.node(&b, &[], false);
    let mut player = lab.node(&p1, &[join_addr(&backbone, BACKBONE_IP)], false);
    let reach = |node: &mut Node| {
        let info = node.rpc.info();
        (info["nat_status"].clone(), info["kad_mode"].clone())
    };
    // Behind NAT the player only asks the DHT (its addresses would poison routing tables);
    // the backbone answers it.
    let player_behind_nat = ("private".to_owned(), "client".to_owned());
    let backbone_public = ("public".to_owned(), "server".to_owned());
    let known = wait_for(REACHABILITY_DEADLINE, || {
        reach(&mut player) == player_behind_nat && reach(&mut backbone) == backbone_public
    });
    assert!(
        known.is_some(),
        "player {:?}, backbone {:?}\n--- player\n{}\n--- backbone\n{}",
        reach(&mut player),
        reach(&mut backbone),
        player.log(),
        backbone.log()
    );
    note(&format!(
        "AutoNAT: player private (DHT client) and backbone public (DHT server) after {:.1} s",
        known.unwrap_or_default().as_secs_f64()
    ));
}
