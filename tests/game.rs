//! The game against real nodes: transcripts, bad input, two players, coins and progress under
//! concurrency, restarts, and the `--plain` binary. All game integration tests live in this
//! one test binary (each test binary links the whole crate).

#[path = "game/claims.rs"]
mod claims;
#[path = "game/harness.rs"]
mod harness;
#[path = "game/joins.rs"]
mod joins;
#[path = "game/social.rs"]
mod social;
#[path = "game/watch.rs"]
mod watch;
// Shared with the network tests, which use more of it.
#[allow(dead_code)]
#[path = "p2p/proxy.rs"]
mod proxy;

use std::sync::Arc;
use std::time::Duration;

use cmud::game::clock::SystemClock;
use cmud::game::content::Content;
use cmud::game::events::{Input, LineKind, Mode};
use cmud::game::ledger;
use cmud::game::player::{Change, Count, Outcome, PlayerHandle};
use cmud::game::schema::World;
use cmud::rpc::{Kv, KvClient};
use harness::{
    DEADLINE, NetNode, Player, TestNode, content_with, joined_nodes, node_args, options,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

async fn world(kv: &KvClient) -> World {
    World::from_pairs(kv.list("p/").await.unwrap())
}

/// Runs each (input, expected output) row against a session and compares them all.
async fn check_transcript(player: &mut Player, rows: &[(&str, &[&str])]) {
    for (input, expected) in rows {
        let got = player.run(input).await;
        assert_eq!(got, *expected, "after {input:?}");
    }
}

#[tokio::test]
async fn transcript_of_a_first_game() {
    let node = TestNode::start().await;
    let (mut alice, greeting) = Player::start(node.kv.clone(), options(None, None, 7)).await;
    assert!(
        greeting
            .iter()
            .any(|l| l.contains("What should the world call you"))
    );
    assert_eq!(alice.status.mode, Mode::Naming);
    let named = alice.run("alice").await;
    assert!(named[0].starts_with("The autumn of 2010"), "{named:?}");
    assert_eq!(alice.chosen, ["alice"]);
    check_transcript(
        &mut alice,
        &[
            (
                "stats",
                &[
                    "Name: alice",
                    "Rank: Undergraduate",
                    "Location: Gates 5th Floor",
                    "Coins: 0",
                    "Power: 1",
                    "Problem: 100 of 100 steps remaining",
                ],
            ),
            (
                "shop",
                &[
                    "The shop sells:",
                    "  cpu          Xeon CPUs                1 coin each, power 1",
                    "More machines arrive with each promotion.",
                ],
            ),
            (
                "buy cpu",
                &["You cannot afford that: it costs 1 coin and you have 0."],
            ),
            ("mine 3", &["Mined 3 coins in 3 attempts."]),
            (
                "buy cpu 2",
                &["You have purchased 2 Xeon CPUs for 2 coins."],
            ),
            (
                "buy gpu",
                &["Nvidia GPUs are not sold to you yet: they unlock at Masters."],
            ),
            (
                "buy cpu max",
                &["You have purchased 1 Xeon CPUs for 1 coin."],
            ),
            ("inv", &["Coins: 0", "  Xeon CPUs: 4", "Power: 4"]),
            ("move fence", &["You walk to The Fence."]),
            ("move fence", &["You are already at The Fence."]),
            (
                "move mars",
                &[
                    "(404) Location not found: mars",
                    "Locations: fence, bridge, 1, 2, 3, 4, 5, 6, 7, 8, 9",
                ],
            ),
            ("map", &["--- The Fence (fence) ---", "alice"]),
            ("say hello, world", &["You say: hello, world"]),
            (
                "who",
                &["Online now (1):", "  alice - Undergraduate, The Fence"],
            ),
            (
                "top",
                &[
                    "Leaderboard (rank, then net worth):",
                    "  1. alice - Undergraduate, worth 4 coins (0 + hardware 4)",
                ],
            ),
            (
                "give alice 1",
                &["Giving coins to yourself changes nothing."],
            ),
            ("give bob 1", &["There is no player called \"bob\"."]),
            (
                "resign",
                &["`resign` only works inside a battle (`solve`)."],
            ),
            ("stop", &["Nothing to stop."]),
            (
                "addr",
                &["This node is not listening on the network yet, so nobody can join it."],
            ),
            (
                "join /ip4/127.0.0.1/tcp/9",
                &["Could not join /ip4/127.0.0.1/tcp/9: this node runs without a network."],
            ),
            (
                "help buy",
                &["buy <hardware> [n|max] - buys n units of hardware (default 1), or as many as you can afford"],
            ),
            (
                "s",
                &["\"s\" could be stats, shop, solve, stop, say or shout. Type more of it."],
            ),
        ],
    )
    .await;
    let battle = alice.run("solve").await;
    assert_eq!(
        battle.last().unwrap(),
        "The problem has 100 remaining steps. `solve [n]` computes, `resign` gives up."
    );
    assert_eq!(alice.status.mode, Mode::Solving);
    check_transcript(
        &mut alice,
        &[
            (
                "shop",
                &["You are in a battle: use `help`, `look`, `inv`, `solve`, `resign`, `stop`, `who`, `say`, `emote`, `shout`, `tell`, `mail`, `top`, `addr`, `join`, `quit`, or `resign` first."],
            ),
            (
                "solve 2",
                &[
                    "--- Computing problem... ---",
                    "The problem has 96 remaining steps.",
                    "--- Computing problem... ---",
                    "The problem has 92 remaining steps.",
                ],
            ),
            (
                "resign",
                &["You close the laptop. Let's come back to it another day."],
            ),
        ],
    )
    .await;
    assert_eq!(alice.status.mode, Mode::Mining);
    let bye = alice.quit().await;
    assert_eq!(
        bye,
        ["Goodbye, alice. The world keeps your character until you come back."]
    );
}

#[tokio::test]
async fn bad_input_never_crashes_a_command() {
    let node = TestNode::start().await;
    let (mut p, _) = Player::start(node.kv.clone(), options(Some("tester"), None, 1)).await;
    let huge = "9".repeat(40);
    let long = "ü".repeat(5000);
    let nasty: Vec<String> = [
        "mine -1",
        "mine 0",
        "mine 1 2 3",
        "mine x",
        "mine 1001",
        "buy",
        "buy cpu -1",
        "buy cpu 0",
        "buy cpu 18446744073709551615",
        "buy cpu 18446744073709551616",
        "buy cpu 1 2",
        "buy 🦀",
        "buy dark_matter max",
        "give",
        "give tester",
        "give ü 5",
        "give tester -5",
        "give nobody 18446744073709551616",
        "move",
        "move 🦀 🦀",
        "say",
        "shout    ",
        "help 💥",
        "solve 5",
        "join",
        "join a b",
        "join not-a-multiaddr",
        "\u{0}\u{7}",
        "ｍｉｎｅ",
        "resign",
        "/etc/passwd",
        "p/x/name",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("mine {huge}"),
        format!("give tester {huge}"),
        long.clone(),
        format!("say {long}"),
    ])
    .collect();
    for input in &nasty {
        let out = p.run_raw(input).await;
        assert!(
            out.iter().any(|(kind, _)| *kind == LineKind::Error),
            "{input:?} should be refused with an error line, got {out:?}"
        );
        let stats = p.run("stats").await;
        assert_eq!(
            stats.first().map(String::as_str),
            Some("Name: tester"),
            "after {input:?}"
        );
    }
    // The same inside a battle.
    p.run("solve").await;
    for input in [
        "solve -1",
        "solve 99999999999999999999",
        "solve x",
        "mine 1",
        "give a 1",
    ] {
        let out = p.run_raw(input).await;
        assert!(
            out.iter().any(|(kind, _)| *kind == LineKind::Error),
            "{input:?}: {out:?}"
        );
    }
    assert_eq!(p.run("resign").await.len(), 1);
    // Names are checked too.
    // Each player is a node: the next two get nodes of their own.
    let other = TestNode::start().await;
    let (mut q, _) = Player::start(other.kv.clone(), options(None, None, 2)).await;
    for bad in ["a/b", "x#y", &"n".repeat(17), "\u{202e}"] {
        let out = q.run_raw(bad).await;
        assert!(
            out.iter().any(|(kind, _)| *kind == LineKind::Error),
            "{bad:?}: {out:?}"
        );
        assert_eq!(q.status.mode, Mode::Naming);
    }
    q.run("Zoë").await;
    assert_eq!(q.status.name, "Zoë");
    // `quit` at the name prompt leaves without creating a character.
    let undecided = TestNode::start().await;
    let (r, _) = Player::start(undecided.kv.clone(), options(None, None, 3)).await;
    assert_eq!(r.quit().await, ["Goodbye."]);
    assert!(!world(&undecided.kv).await.player(&undecided.id()).exists());
}

/// Alice and Bob, each in their own session, see each other's moves, chat, map and gifts
/// without typing anything.
async fn see_each_other(alice: &mut Player, bob: &mut Player) {
    bob.run("say hi alice").await;
    alice.wait_for_line(|l| l == "bob says: hi alice").await;
    bob.run("move fence").await;
    alice
        .wait_for_line(|l| l == "--- bob leaves for The Fence. ---")
        .await;
    bob.run("say psst").await;
    bob.run("shout HELLO").await;
    alice.wait_for_line(|l| l == "bob shouts: HELLO").await;
    assert!(
        !alice.backlog.iter().any(|(_, l)| l.contains("psst")),
        "a say at the Fence was heard on Gates 5"
    );
    alice
        .run_until("map", |out| {
            out.windows(2)
                .any(|w| w[0] == "--- The Fence (fence) ---" && w[1] == "bob")
        })
        .await;
    alice.run("move fence").await;
    bob.wait_for_line(|l| l == "--- alice arrives here. ---")
        .await;
    let mined = bob.run("mine 10").await;
    assert!(mined.iter().any(|l| l.starts_with("Mined ")), "{mined:?}");
    assert_eq!(bob.run("give alice 1").await, ["You gave 1 coin to alice."]);
    alice
        .wait_for_line(|l| l == "--- bob gave you 1 coin. ---")
        .await;
    alice
        .run_until("stats", |out| out.iter().any(|l| l == "Coins: 1"))
        .await;
    alice
        .run_until("who", |out| {
            out.first().map(String::as_str) == Some("Online now (2):")
        })
        .await;
}

#[tokio::test]
async fn two_players_on_connected_nodes_see_each_other() {
    let [a, b] = NetNode::pair().await;
    let (mut alice, _) = Player::start(a.kv.clone(), options(Some("alice"), None, 1)).await;
    let (mut bob, _) = Player::start(b.kv.clone(), options(Some("bob"), None, 2)).await;
    alice
        .run_until("who", |out| {
            out.first().map(String::as_str) == Some("Online now (2):")
        })
        .await;
    see_each_other(&mut alice, &mut bob).await;
    a.stop().await;
    b.stop().await;
}

/// Whether a settled view conserves coins: balances plus spending equal mining, which also
/// means no balance went below zero (balances are clamped at zero).
fn conserved(world: &World) -> bool {
    let (held, mined) = ledger::total_coins(world);
    held == mined
}

/// Waits until every client's view has stopped changing and shows every player's writes.
async fn settled(kvs: &[KvClient], players: usize) -> Vec<World> {
    let start = tokio::time::Instant::now();
    let mut last: Vec<World> = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut now = Vec::new();
        for kv in kvs {
            now.push(world(kv).await);
        }
        let complete = now.iter().all(|w| w.characters().count() == players);
        if complete && now == last && now.windows(2).all(|w| w[0] == w[1]) {
            return now;
        }
        assert!(start.elapsed() < DEADLINE, "the views never settled");
        last = now;
    }
}

/// Random mining, buying and giving by every player at once, two streams per player (like a
/// background `mine` and typed commands), driven by `seed`.
async fn trade_randomly(handles: Vec<(String, PlayerHandle)>, seed: u64) {
    let ids: Vec<String> = handles.iter().map(|(id, _)| id.clone()).collect();
    let mut tasks = Vec::new();
    for (i, (id, handle)) in handles.into_iter().enumerate() {
        for stream in 0..2u64 {
            let (ids, handle, id) = (ids.clone(), handle.clone(), id.clone());
            let mut rng = StdRng::seed_from_u64(seed * 1000 + i as u64 * 10 + stream);
            tasks.push(tokio::spawn(async move {
                for _ in 0..25 {
                    let change = match rng.random_range(0..4) {
                        0 => Change::Mined(rng.random_range(1..40)),
                        1 => Change::Buy {
                            hw: "cpu".into(),
                            count: if rng.random() {
                                Count::Max
                            } else {
                                Count::Exactly(rng.random_range(1..20))
                            },
                        },
                        _ => {
                            let to = ids[rng.random_range(0..ids.len())].clone();
                            Change::Give {
                                to,
                                amount: rng.random_range(1..60),
                            }
                        }
                    };
                    handle.apply(change).await.unwrap();
                    if rng.random_range(0..4) == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                id
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
}

async fn enter(kv: &KvClient, id: &str) -> PlayerHandle {
    let clock = Arc::new(SystemClock);
    let handle = PlayerHandle::spawn(kv.clone(), id.to_owned(), Content::embedded(), clock);
    let name = format!("n{id}");
    assert!(matches!(
        handle
            .apply(Change::Enter {
                name,
                tell_key: None
            })
            .await
            .unwrap(),
        Outcome::Entered { created: true }
    ));
    handle
}

#[tokio::test]
async fn no_interleaving_on_three_nodes_creates_or_destroys_coins() {
    for seed in 0..2 {
        let nodes = joined_nodes(3).await;
        let mut handles = Vec::new();
        for node in &nodes {
            handles.push((node.id(), enter(&node.client().await, &node.id()).await));
        }
        let clients = || async {
            let mut kvs = Vec::new();
            for node in &nodes {
                kvs.push(node.client().await);
            }
            kvs
        };
        // Wait until everyone exists everywhere, so gifts find their recipients.
        settled(&clients().await, 3).await;
        trade_randomly(handles, seed).await;
        let views = settled(&clients().await, 3).await;
        assert!(
            conserved(&views[0]),
            "seed {seed}: {:?}",
            ledger::total_coins(&views[0])
        );
        let w = &views[0];
        assert!(
            w.players.values().any(|p| !p.gave.is_empty()),
            "seed {seed}: no gifts"
        );
        for node in nodes {
            node.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_progress_on_two_nodes_is_kept_and_simultaneous_finishers_are_promoted() {
    // b reaches a through a proxy only, so the test can part them.
    let a = TestNode::start_joined(&[], false).await;
    let proxy = proxy::Proxy::start(a.swarm_addr(), Duration::ZERO).await;
    let b = TestNode::start_joined(&[a.addr_via(proxy.addr)], false).await;
    let (pa, pb) = (a.id(), b.id());
    let alice = enter(&a.kv, &pa).await;
    let bob = enter(&b.kv, &pb).await;
    settled(&[a.client().await, b.client().await], 2).await;
    let work = |h: PlayerHandle| {
        tokio::spawn(async move {
            for _ in 0..40 {
                let outcome = h.apply(Change::Work { rank: 0 }).await.unwrap();
                assert!(
                    matches!(outcome, Outcome::Progress { epoch: 1, .. }),
                    "{outcome:?}"
                );
            }
        })
    };
    let (ta, tb) = (work(alice.clone()), work(bob.clone()));
    ta.await.unwrap();
    tb.await.unwrap();
    let content = Content::embedded();
    for view in settled(&[a.client().await, b.client().await], 2).await {
        let problem = ledger::problem(&content, &view, 0).unwrap();
        assert_eq!((problem.epoch, problem.done), (1, 80), "progress was lost");
    }
    // Now both finish at once, each before seeing the other's last step (a step does at most
    // a fifth of the problem: the 20 steps left).
    proxy.cut().await;
    let start = tokio::time::Instant::now();
    while a.kv.info().await.unwrap()["connected_peers"] != "0" {
        assert!(start.elapsed() < DEADLINE, "the nodes never parted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.kv.put(&format!("p/{pa}/hw/cpu"), "40").await.unwrap();
    b.kv.put(&format!("p/{pb}/hw/cpu"), "40").await.unwrap();
    let (ra, rb) = tokio::join!(
        alice.apply(Change::Work { rank: 0 }),
        bob.apply(Change::Work { rank: 0 })
    );
    assert_eq!(ra.unwrap(), Outcome::Promoted { rank: 1 });
    assert_eq!(rb.unwrap(), Outcome::Promoted { rank: 1 });
    proxy.restore();
    for view in settled(&[a.client().await, b.client().await], 2).await {
        for id in [&pa, &pb] {
            assert_eq!(view.player(id).rank.as_deref(), Some("Masters"));
            assert_eq!(view.player(id).solved["Undergraduate"], 1);
        }
        let problem = ledger::problem(&content, &view, 0).unwrap();
        assert_eq!((problem.epoch, problem.done), (2, 0), "a new epoch starts");
    }
}

#[tokio::test]
async fn a_character_survives_a_restart() {
    let node = TestNode::start().await;
    let id = node.node.peer_id().to_owned();
    let (mut p, _) = Player::start(node.kv.clone(), options(Some("carol"), None, 3)).await;
    p.run("mine 5").await;
    p.run("buy cpu").await;
    p.run("move bridge").await;
    p.run("say remember me").await;
    let before = p.run("stats").await;
    p.quit().await;
    let dir = node.stop().await;
    let node = TestNode::start_in(dir).await;
    assert_eq!(node.node.peer_id(), id, "the node identity is kept");
    let (mut p, greeting) = Player::start(node.kv.clone(), options(None, None, 4)).await;
    assert!(
        greeting
            .iter()
            .any(|l| l == "Welcome back, carol! Your replica kept your seat warm."),
        "{greeting:?}"
    );
    assert_eq!(p.status.mode, Mode::Mining, "no name is asked again");
    assert_eq!(
        p.chosen,
        ["carol"],
        "the front end is told the name to remember"
    );
    assert_eq!(p.run("stats").await, before);
    assert!(before.contains(&"Location: Randy Pausch Bridge".to_owned()));
    let w = world(&node.kv).await;
    assert_eq!(w.player(&id).chat.last().unwrap().text, "remember me");
}

#[tokio::test]
async fn long_actions_leave_input_live_and_can_be_interrupted() {
    let node = TestNode::start().await;
    let mut opts = options(Some("dora"), None, 5);
    opts.clock = Some(Arc::new(SystemClock));
    opts.content = Some(content_with(&[
        ("max_attempt_ms: 4000", "max_attempt_ms: 600000"),
        ("max_step_ms: 4000", "max_step_ms: 600000"),
    ]));
    let (mut p, _) = Player::start(node.kv.clone(), opts).await;
    p.inputs.send(Input::Line("mine 3".into())).await.unwrap();
    while !p.busy {
        p.next().await;
    }
    let started = tokio::time::Instant::now();
    assert_eq!(p.run("stats").await[0], "Name: dora");
    assert_eq!(
        p.run("mine").await,
        ["You are busy mining: wait, or type `stop` (Esc) first."]
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "input waited for mining"
    );
    p.inputs.send(Input::Interrupt).await.unwrap();
    p.wait_for_line(|l| l == "Mining stopped after 0 of 3 attempts: mined 0 coins.")
        .await;
    p.wait_idle().await;
    // A battle step, stopped with the `stop` command, then `resign`.
    p.run("solve").await;
    p.inputs.send(Input::Line("solve 2".into())).await.unwrap();
    p.wait_for_line(|l| l == "--- Computing problem... ---")
        .await;
    assert_eq!(p.status.mode, Mode::Solving);
    p.inputs.send(Input::Line("stop".into())).await.unwrap();
    p.wait_for_line(|l| l == "Stopped after 0 of 2 steps.")
        .await;
    p.run("resign").await;
    assert_eq!(p.status.mode, Mode::Mining);
}

#[tokio::test]
async fn story_text_pauses_and_can_be_skipped() {
    let node = TestNode::start().await;
    let mut opts = options(Some("eve"), None, 6);
    opts.no_pauses = false;
    opts.clock = Some(Arc::new(SystemClock));
    opts.content = Some(content_with(&[(
        "story_pause_ms: 2000",
        "story_pause_ms: 600000",
    )]));
    let (mut p, greeting) = Player::start(node.kv.clone(), opts).await;
    let first = "The autumn of 2010. You have just enrolled at Carnegie Mellon as a computer science undergraduate.";
    let last = "Your laptop has one CPU, a broken fan and no consensus algorithm. You start mining anyway.";
    assert!(greeting.contains(&first.to_owned()) || p.wait_for_line(|l| l == first).await == first);
    assert!(
        !greeting.contains(&last.to_owned()),
        "the story did not pause"
    );
    // Input is live during the story; Esc (Interrupt) tells the rest at once.
    assert_eq!(p.run("stats").await.len(), 6);
    p.inputs.send(Input::Interrupt).await.unwrap();
    p.wait_for_line(|l| l == last).await;
}

#[tokio::test]
async fn promotion_unlocks_hardware_and_breakdowns_restart_on_one_cpu() {
    let node = TestNode::start().await;
    let mut opts = options(Some("fay"), None, 8);
    opts.content = Some(content_with(&[
        ("problem: Some(100)", "problem: Some(3)"),
        ("progress_percent: 80", "progress_percent: 100"),
        ("break_percent: 15", "break_percent: 0"),
    ]));
    let (mut p, _) = Player::start(node.kv.clone(), opts).await;
    p.run("solve").await;
    let out = p.run("solve 10").await;
    assert_eq!(
        out[..5],
        [
            "--- Computing problem... ---",
            "The problem has 2 remaining steps.",
            "--- Computing problem... ---",
            "The problem has 1 remaining steps.",
            "--- Computing problem... ---",
        ]
    );
    assert_eq!(out[5], "--- Promoted to Masters! ---");
    assert_eq!(out.last().unwrap(), "(new machines added to your shop)");
    assert_eq!(p.status.mode, Mode::Mining, "the battle is over");
    assert_eq!(p.status.rank, "Masters");
    let shop = p.run("shop").await;
    assert!(shop.iter().any(|l| l.contains("Nvidia GPUs")), "{shop:?}");

    // Breakdowns: every step breaks something until nothing is left.
    let gus_node = TestNode::start().await;
    let mut opts = options(Some("gus"), None, 9);
    opts.content = Some(content_with(&[
        ("progress_percent: 80", "progress_percent: 0"),
        ("break_percent: 15", "break_percent: 100"),
    ]));
    let (mut g, _) = Player::start(gus_node.kv.clone(), opts).await;
    g.run("mine 20").await;
    g.run("buy cpu 5").await;
    g.run("solve").await;
    let out = g.run("solve 10").await;
    assert_eq!(
        out[1],
        "Disaster! Your Xeon CPUs overheat: 1 of 6 still work."
    );
    assert_eq!(
        out[3],
        "Disaster! Your Xeon CPUs overheat: 0 of 1 still work."
    );
    assert!(out.contains(
        &"You log in to a Hunt Library computer and start again on a single CPU.".to_owned()
    ));
    assert_eq!(g.status.mode, Mode::Mining);
    assert_eq!(g.status.power, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_names_are_told_apart_and_gifts_accept_the_tag() {
    let nodes = joined_nodes(2).await;
    let (mut a, _) = Player::start(nodes[0].client().await, options(Some("sam"), None, 1)).await;
    let (mut b, _) = Player::start(nodes[1].client().await, options(Some("sam"), None, 2)).await;
    a.run("mine 10").await;
    let out = a
        .run_until("give sam 1", |out| out[0].starts_with("Several players"))
        .await;
    let shown = cmud::game::names::display_names(&world(&nodes[0].kv).await);
    let (sam_a, sam_b) = (&shown[&nodes[0].id()], &shown[&nodes[1].id()]);
    assert!(sam_a.starts_with("sam#") && sam_b.starts_with("sam#") && sam_a != sam_b);
    let mut both = [sam_a.as_str(), sam_b.as_str()];
    both.sort();
    assert_eq!(
        out,
        [format!(
            "Several players are called that: {}, {}.",
            both[0], both[1]
        )]
    );
    assert_eq!(
        a.run(&format!("give {sam_b} 1")).await,
        [format!("You gave 1 coin to {sam_b}.")]
    );
    b.wait_for_line(|l| l == format!("--- {sam_a} gave you 1 coin. ---"))
        .await;
    b.run_until("stats", |out| out[0] == format!("Name: {sam_b}"))
        .await;
}

/// Runs `cmud --plain` on `dir` with `stdin`, returning (exit code, stdout, stderr).
async fn plain(dir: &std::path::Path, extra: &[&str], stdin: &str) -> (i32, String, String) {
    use tokio::io::AsyncWriteExt;
    use tokio::process::Command;
    let mut args = vec!["--plain".to_owned()];
    args.extend(node_args(dir));
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_cmud"))
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("cmud --plain did not exit")
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test]
async fn plain_transcript_asks_for_a_name_and_exits_zero_at_end_of_input() {
    let dir = tempfile::tempdir().unwrap();
    let content = Content::embedded();
    let story = &content.story;
    let mut expected: Vec<String> = story.banner.clone();
    expected.extend(story.ask_name.clone());
    let rows: &[(&str, &[&str])] = &[
        ("", &[]),
        ("# a comment is ignored", &[]),
        ("alice", &[]),
        (
            "stats",
            &[
                "Name: alice",
                "Rank: Undergraduate",
                "Location: Gates 5th Floor",
                "Coins: 0",
                "Power: 1",
                "Problem: 100 of 100 steps remaining",
            ],
        ),
        ("move fence", &["You walk to The Fence."]),
        ("map", &["--- The Fence (fence) ---", "alice"]),
        ("say hi", &["You say: hi"]),
        (
            "buy gpu",
            &["Nvidia GPUs are not sold to you yet: they unlock at Masters."],
        ),
        (
            "mine -1",
            &["The number of attempts must be a whole number from 1 to 1000, not \"-1\"."],
        ),
        (
            "frobnicate",
            &["Unknown command \"frobnicate\". Type `help` for the list."],
        ),
    ];
    let mut stdin = String::new();
    for (input, output) in rows {
        stdin.push_str(input);
        stdin.push('\n');
        if *input == "alice" {
            expected.extend(story.intro.clone());
        }
        expected.extend(output.iter().map(|s| s.to_string()));
    }
    expected.push("Goodbye, alice. The world keeps your character until you come back.".into());
    let (code, stdout, stderr) = plain(dir.path(), &[], &stdin).await;
    assert_eq!(code, 0, "stderr: {stderr}");
    let got: Vec<&str> = stdout.lines().collect();
    assert_eq!(got, expected, "stderr: {stderr}");
    let profile = std::fs::read_to_string(dir.path().join("profile.ron")).unwrap();
    assert!(profile.contains("\"alice\""), "{profile}");

    // The name is remembered; `quit` ends the game before the rest of the input; a script
    // waits for mining before its next command.
    let (code, stdout, stderr) = plain(dir.path(), &[], "mine 1\nstats\nquit\nstats\n").await;
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("Welcome back, alice!"), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let mined = lines
        .iter()
        .position(|l| l.starts_with("Mined "))
        .expect("a mining result");
    let named: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i] == "Name: alice")
        .collect();
    assert_eq!(
        named.len(),
        2,
        "once on entering, once for `stats`: {stdout}"
    );
    assert!(
        named[1] > mined,
        "stats ran before mining finished: {stdout}"
    );
    assert!(lines.last().unwrap().starts_with("Goodbye, alice."));
}

#[tokio::test]
async fn plain_takes_the_name_from_the_flag_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, _) = plain(dir.path(), &["--name", "a/b"], "bob\nstats\n").await;
    assert_eq!(code, 0);
    assert!(stdout.contains("Cannot play as \"a/b\""), "{stdout}");
    assert!(stdout.contains("Name: bob"), "{stdout}");
}

#[tokio::test]
async fn players_without_a_recent_heartbeat_are_offline() {
    let nodes = joined_nodes(2).await;
    let clock = Arc::new(cmud::game::clock::InstantClock::starting_now());
    let mut opts = options(Some("hal"), None, 1);
    opts.clock = Some(clock.clone());
    let (mut hal, _) = Player::start(nodes[0].client().await, opts).await;
    let (mut ivy, _) = Player::start(nodes[1].client().await, options(Some("ivy"), None, 2)).await;
    hal.run_until("who", |out| out[0] == "Online now (2):")
        .await;
    // ivy sees hal online too. (Checked before hal's clock jumps: hal's next heartbeat is then
    // 40 s ahead of ivy's clock, which ivy rightly does not count as online either.)
    ivy.run_until("who", |out| out[0] == "Online now (2):")
        .await;
    // Forty seconds later by hal's clock, ivy's heartbeat (every 10 s) is too old.
    clock.advance(Duration::from_secs(40));
    assert_eq!(
        hal.run("who").await,
        ["Online now (1):", "  hal - Undergraduate, Gates 5th Floor"]
    );
    assert_eq!(
        hal.run("map").await,
        ["--- Gates 5th Floor (5) ---", "hal, ivy (offline)"]
    );
}

#[tokio::test]
async fn a_problem_finished_by_someone_else_starts_over_for_the_others() {
    let nodes = joined_nodes(2).await;
    // alice's one step of four is under the co-op share, so she is not promoted with bob.
    let content = content_with(&[
        ("problem: Some(100)", "problem: Some(4)"),
        ("progress_percent: 80", "progress_percent: 100"),
        ("break_percent: 15", "break_percent: 0"),
        ("coop_share_percent: 10", "coop_share_percent: 50"),
    ]);
    let mut opts = options(Some("alice"), None, 1);
    opts.content = Some(content.clone());
    let (mut alice, _) = Player::start(nodes[0].client().await, opts).await;
    let mut opts = options(Some("bob"), None, 2);
    opts.content = Some(content);
    let (mut bob, _) = Player::start(nodes[1].client().await, opts).await;
    alice.run("solve").await;
    assert_eq!(
        alice.run("solve").await,
        [
            "--- Computing problem... ---",
            "The problem has 3 remaining steps."
        ]
    );
    bob.run("solve").await;
    let out = bob.run("solve 10").await;
    assert!(
        out.contains(&"--- Promoted to Masters! ---".to_owned()),
        "{out:?}"
    );
    alice
        .run_until("top", |out| out.iter().any(|l| l.contains("bob - Masters")))
        .await;
    assert_eq!(
        alice.run("solve").await,
        [
            "--- Computing problem... ---",
            "Someone else finished this problem first: it starts over.",
            "The problem has 5 remaining steps."
        ]
    );
}

/// A script pasted into a terminal: the REPL passes lines on at once, and many commands with
/// long answers must not stall it (reading input while the game waits to be read).
#[tokio::test]
async fn plain_survives_a_long_paste_into_a_terminal() {
    let node = TestNode::start().await;
    let (inputs, events) =
        cmud::game::session::spawn(node.kv.clone(), options(Some("pat"), None, 11));
    let script = "help\n".repeat(300);
    let mut out = Vec::new();
    let driven = tokio::time::timeout(
        DEADLINE,
        cmud::tui::plain::drive(
            cmud::tui::plain::Game { inputs, events },
            script.as_bytes(),
            &mut out,
            cmud::tui::plain::Frontend {
                interactive: true,
                output: cmud::tui::plain::Output::Text,
            },
            &mut |_| {},
        ),
    )
    .await;
    assert!(matches!(driven, Ok(Ok(()))), "the REPL hung: {driven:?}");
    let text = String::from_utf8(out).unwrap();
    let helps = text.lines().filter(|l| *l == "Commands:").count();
    assert_eq!(helps, 300, "every pasted command was answered");
    assert!(text.contains("Goodbye, pat."), "end of input quits");
}

/// Keys and values are bytes and a peer may write any: one that is not text must not hide
/// the rest of the world from the game.
#[tokio::test]
async fn a_value_that_is_not_text_does_not_hide_the_world() {
    let node = TestNode::start().await;
    let (mut p, _) = Player::start(node.kv.clone(), options(Some("uma"), None, 12)).await;
    let own = format!("p/{}/", node.id());
    let client = redis::Client::open(node.node.rpc_endpoint().redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // Bytes that are not text, in a key and in values, written in one command with a move
    // the game can see (so once it sees the move, it has the rest too).
    let _: () = redis::cmd("MSET")
        .arg(format!("{own}junk"))
        .arg(&b"\xff\xfe"[..])
        .arg([own.as_bytes(), &b"\xff"[..]].concat())
        .arg("1")
        .arg("world/note")
        .arg(&b"\xff"[..])
        .arg(format!("{own}loc"))
        .arg("fence")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Written through another connection: it reaches the game's within 500 ms.
    let map = p
        .run_until("map", |out| out.iter().any(|l| l.contains("The Fence")))
        .await;
    assert_eq!(map, ["--- The Fence (fence) ---", "uma"]);
    assert_eq!(p.run("stats").await[0], "Name: uma");
}
