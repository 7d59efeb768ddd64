//! The rules every peer checks, on real nodes: three players on three nodes, two of them
//! behind delaying proxies (so entries arrive late, and the middle node relays them), mine,
//! buy, give, work and break down with seeded randomness; for a third of the game one node
//! is cut off, and catches up by sync, which brings entries in key order rather than in the
//! order they were written. Every read the test makes, on every node, while they play and
//! after, shows no honest player flagged; once the world settles, everyone is consistent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use cmud::game::claims::{self, Verdict};
use cmud::game::clock::{Clock, SystemClock};
use cmud::game::content::Content;
use cmud::game::ledger;
use cmud::game::player::{Change, Count, Outcome, PlayerHandle};
use cmud::game::schema::World;
use cmud::rpc::{Kv, KvClient};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::harness::{DEADLINE, Player, TestNode, content_with, joined_nodes, options};
use super::proxy::Proxy;

/// One-way delay of each proxy.
const DELAY: Duration = Duration::from_millis(40);

/// Changes each player makes.
const STEPS: usize = 60;

/// What the reads saw.
#[derive(Default)]
struct Seen {
    /// Worlds read and checked.
    reads: AtomicUsize,
    /// Players found pending (supports still on the way) in those reads.
    pending: AtomicUsize,
}

/// Reads `kv`'s world and fails if any player there is flagged.
async fn checked_read(content: &Content, kv: &KvClient, seen: &Seen) -> World {
    let world = World::from_pairs(kv.list("p/").await.unwrap());
    for id in world.players.keys() {
        let report = claims::check(content, &world, id);
        assert!(
            report.broken.is_empty(),
            "honest {id} flagged: {report:?}\n{world:#?}"
        );
        if report.verdict() == Verdict::Pending {
            seen.pending.fetch_add(1, Relaxed);
        }
    }
    seen.reads.fetch_add(1, Relaxed);
    world
}

/// A random change for a player whose world (on their own node) is `world`.
fn random_change(
    content: &Content,
    rng: &mut StdRng,
    me: &str,
    ids: &[String],
    world: &World,
) -> Change {
    match rng.random_range(0..10) {
        0..=1 => Change::Mined(rng.random_range(1..60)),
        2..=3 => Change::Buy {
            hw: ["cpu", "gpu"][rng.random_range(0..2)].into(),
            count: if rng.random() {
                Count::Max
            } else {
                Count::Exactly(rng.random_range(1..10))
            },
        },
        4..=5 => Change::Give {
            to: ids[rng.random_range(0..ids.len())].clone(),
            amount: rng.random_range(1..40),
        },
        6 => Change::Break { pick: rng.random() },
        _ => Change::Work {
            rank: ledger::rank_index(content, &world.player(me)),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_players_trading_on_three_nodes_behind_delays_are_never_flagged() {
    // Small problems, so that players are promoted within the test.
    let content = content_with(&[
        ("problem: Some(100)", "problem: Some(40)"),
        ("problem: Some(1000)", "problem: Some(120)"),
    ]);
    let hub = TestNode::start_joined(&[], false).await;
    let mut proxies = Vec::new();
    let mut nodes = vec![hub];
    for _ in 0..2 {
        let proxy = Proxy::start(nodes[0].swarm_addr(), DELAY).await;
        let via = nodes[0].addr_via(proxy.addr);
        nodes.push(TestNode::start_joined(&[via], false).await);
        proxies.push(proxy);
    }
    let start = tokio::time::Instant::now();
    while nodes[0].kv.info().await.unwrap()["connected_peers"] != "2" {
        assert!(start.elapsed() < DEADLINE, "the nodes never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids: Vec<String> = nodes.iter().map(TestNode::id).collect();
    let mut handles = Vec::new();
    for node in &nodes {
        let handle = PlayerHandle::spawn(
            node.client().await,
            node.id(),
            content.clone(),
            Arc::new(SystemClock),
        );
        let enter = Change::Enter {
            name: format!("p{}", handles.len()),
            tell_key: None,
        };
        assert_eq!(
            handle.apply(enter).await.unwrap(),
            Outcome::Entered { created: true }
        );
        handles.push(handle);
    }
    let mut kvs = Vec::new();
    for node in &nodes {
        kvs.push(node.client().await);
    }
    let seen = Arc::new(Seen::default());
    // Everyone exists everywhere before they trade, so gifts find their recipients.
    for kv in &kvs {
        while checked_read(&content, kv, &seen).await.characters().count() < 3 {
            assert!(start.elapsed() < DEADLINE, "the players never met");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // A watcher reads every node over and over while the players play.
    let playing = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (content, kvs, seen, playing) =
            (content.clone(), kvs.clone(), seen.clone(), playing.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(30));
            while playing.load(Relaxed) {
                tick.tick().await;
                for kv in &kvs {
                    checked_read(&content, kv, &seen).await;
                }
            }
        })
    };
    let steps = Arc::new(AtomicUsize::new(0));
    let mut players = Vec::new();
    for (i, handle) in handles.into_iter().enumerate() {
        let (content, kv, seen, ids) = (content.clone(), kvs[i].clone(), seen.clone(), ids.clone());
        let steps = steps.clone();
        players.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(440 + i as u64);
            for _ in 0..STEPS {
                let world = checked_read(&content, &kv, &seen).await;
                let change = random_change(&content, &mut rng, &ids[i], &ids, &world);
                handle.apply(change).await.unwrap();
                steps.fetch_add(1, Relaxed);
            }
        }));
    }
    // The last node is cut off for the middle third of the game.
    let reached = |n: usize| {
        let steps = steps.clone();
        async move {
            while steps.load(Relaxed) < n {
                assert!(start.elapsed() < DEADLINE * 2, "the players stalled");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    reached(STEPS).await;
    proxies[1].cut().await;
    reached(2 * STEPS).await;
    proxies[1].restore();
    for player in players {
        player.await.unwrap();
    }
    playing.store(false, Relaxed);
    watcher.await.unwrap();

    // Once every node holds the same world, every player in it is consistent.
    let world = loop {
        let mut views = Vec::new();
        for kv in &kvs {
            views.push(checked_read(&content, kv, &seen).await);
        }
        if views.windows(2).all(|w| w[0] == w[1]) {
            break views.remove(0);
        }
        assert!(start.elapsed() < DEADLINE * 2, "the views never settled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for id in &ids {
        let report = claims::check(&content, &world, id);
        assert_eq!(report.verdict(), Verdict::Consistent, "{id}: {report:?}");
    }
    let gifts = world
        .players
        .values()
        .filter(|p| !p.gave.is_empty())
        .count();
    let promoted = world
        .players
        .values()
        .filter(|p| !p.solved.is_empty())
        .count();
    // Work at the rank a promotion reached names that promotion, and was checked too.
    let first = &content.rank(0).id;
    let worked_above = world
        .players
        .values()
        .filter(|p| p.work.keys().any(|(rank, _)| rank != first))
        .count();
    assert!(
        gifts > 0 && promoted > 0 && worked_above > 0,
        "no gift, no promotion or no work after one: {world:#?}"
    );
    println!(
        "{} reads checked, {} pending players seen in them, {gifts} givers, {promoted} promoted, \
         {worked_above} worked after a promotion, {:?}",
        seen.reads.load(Relaxed),
        seen.pending.load(Relaxed),
        start.elapsed()
    );
    drop(proxies);
}

#[tokio::test]
async fn a_cheater_is_shown_unverified_and_last_and_their_gifts_count_for_nothing() {
    let nodes = joined_nodes(2).await;
    let (mut alice, _) = Player::start(nodes[0].kv.clone(), options(Some("alice"), None, 1)).await;
    let alice_id = nodes[0].id();
    // Another player's modified client signs what it likes under its own namespace: a rank
    // above alice's, and a gift of coins it never had.
    let cheat = &nodes[1];
    let key = |field: &str| format!("p/{}/{field}", cheat.id());
    let now = SystemClock.now_ms().to_string();
    let mut records = vec![
        (key("name"), "aaron".to_owned()),
        (key("loc"), "5".to_owned()),
        (key("seen"), now),
        (key("hw/cpu"), "1|s=0".to_owned()),
    ];
    cheat.kv.put_many(&records).await.unwrap();
    // Once alice's game has seen aaron arrive, what he writes next is news to her.
    alice
        .wait_for_line(|l| l.contains("aaron has joined the world"))
        .await;
    records.extend([
        (key("rank"), "Masters".to_owned()),
        (key("work/Undergraduate/1"), "100".to_owned()),
        (
            key("solved/Undergraduate"),
            format!("1|w={}:100", cheat.id()),
        ),
        (key(&format!("gave/{alice_id}")), "500|o=500|m=0".to_owned()),
    ]);
    cheat.kv.put_many(&records).await.unwrap();
    // The gift is news, said to count for nothing.
    let news = alice
        .wait_for_line(|l| l.contains("gave you 500 coins"))
        .await;
    assert_eq!(
        news,
        "--- aaron (unverified) gave you 500 coins: they count for nothing until aaron's records hold together. ---"
    );
    let who = alice
        .run_until("who", |out| out.iter().any(|l| l.contains("aaron")))
        .await;
    // News (the problem aaron claims to have solved) may come with it.
    let who: Vec<&String> = who
        .iter()
        .skip_while(|l| !l.starts_with("Online"))
        .collect();
    assert_eq!(
        who,
        [
            "Online now (2):",
            "  alice - Undergraduate, Gates 5th Floor",
            "  aaron (unverified) - Masters, Gates 5th Floor",
        ]
    );
    assert_eq!(alice.run("map").await[1], "alice, aaron (unverified)");
    let top = alice.run("top").await;
    assert!(top[1].contains("1. alice - Undergraduate"), "{top:?}");
    assert!(
        top[2].contains("2. aaron (unverified) - Masters"),
        "{top:?}"
    );
    assert!(alice.run("stats").await.contains(&"Coins: 0".to_owned()));
    let refused = alice.run("give aaron 1").await;
    assert_eq!(refused, ["You cannot give 1 coin: you have 0."]);
    // Once the giver's state holds together, the gift counts.
    records.push((key("mined"), "500".to_owned()));
    records.push((
        key(&format!("gave/{alice_id}")),
        "500|o=500|m=500".to_owned(),
    ));
    cheat.kv.put_many(&records).await.unwrap();
    alice
        .run_until("stats", |out| out.contains(&"Coins: 500".to_owned()))
        .await;
    let who = alice.run("who").await;
    assert_eq!(who[1], "  aaron - Masters, Gates 5th Floor");
}
